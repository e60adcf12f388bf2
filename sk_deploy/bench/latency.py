"""Latency and throughput of a bundle on every backend x precision x batch this machine can run.

Each row is one (backend, precision, batch): a first run (lazy initialisation, compilation, graph capture),
warm-up runs for ``warmup_s``, then timed runs for ``duration_s`` (at least ``min_runs``, at most
``max_runs``), each the wall time of one ``predict`` from host input to host logits. On a GPU, backends that
expose it (torch on CUDA, tensorrt) also give the GPU's own times of the three phases of every timed run, from
CUDA events: host-to-device copy, compute, device-to-host copy (trtexec's H2D / GPU compute / D2H). Every row's
``latency_ms`` is host-to-host (``timing``); on a GPU, a backend that can run on an input already on the device
also gives ``device_resident_ms`` (no copies: the figure the stand-alone CUDA-graph baselines give), so graph
rows carry both. Peak process memory is the kernel's high-water mark of resident memory while the row ran; on
a GPU also the device's peak used memory during the row (``gpu_device_peak_mb``, sampled from NVML or
cudaMemGetInfo: whole-device, every allocator) and, for torch rows, PyTorch's allocator peak. A combination
that cannot run here (no GPU, no graph of that precision in the bundle, a torch.compile that fails) is a
skipped row that says why.

Rows run in order, one backend and precision at a time (its session opened once for every batch), the
PyTorch eager float32 baseline first, so every later row's ratio to it comes from the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sk_deploy.backends import BACKENDS, bench_variants, default_bench_backends
from sk_deploy.backends import BASELINE as BASELINE_BACKEND
from sk_deploy.bench.machine import load_average
from sk_deploy.bench.stats import LatencyStats, per_second, summarize
from sk_deploy.bench.timing import peak_rss_mb, reset_peak_rss, timed_loop, warm_up
from sk_deploy.bundle import Bundle
from sk_deploy.errors import SkDeployError
from sk_deploy.machine import BackendUnavailable, Machine, probe_machine
from sk_deploy.precisions import PRECISIONS
from sk_deploy.runtime.predictor import Predictor


class BenchError(SkDeployError, ValueError):
    """A benchmark that cannot be set up as asked (unknown backend, bad batch size); meant for a person."""


BASELINE = (BASELINE_BACKEND, "fp32")
#: measured unless asked otherwise: every precision baked into a graph or compiled from one on the CPU (tf32, the
#: fp32 graph in TF32 arithmetic on a GPU, is asked for: --precisions fp32,tf32)
DEFAULT_PRECISIONS = tuple(str(p) for p in PRECISIONS if p.device != "gpu")


@dataclass(frozen=True)
class BenchConfig:
    """Which rows to measure and for how long (seconds per row, runs per row at least and at most)."""

    backends: tuple[str, ...] = field(default_factory=default_bench_backends)
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    batches: tuple[int, ...] = (1, 8, 32)
    warmup_s: float = 1.0
    duration_s: float = 3.0
    min_runs: int = 5
    max_runs: int = 100_000
    threads: int = 0

    def check(self) -> None:
        """Raise a BenchError naming the first thing that cannot be benchmarked as asked."""
        variants = bench_variants()
        unknown = [b for b in self.backends if b not in variants]
        if unknown:
            raise BenchError(f"unknown backend {unknown[0]!r}; choose from: {', '.join(variants)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise BenchError(f"unknown precision {bad[0]!r}; choose from: {', '.join(PRECISIONS)}")
        if not self.backends or not self.precisions or not self.batches:
            raise BenchError("nothing to measure: give at least one backend, precision and batch size")
        if min(self.batches) < 1:
            raise BenchError(f"batch sizes must be 1 or more, got {min(self.batches)}")
        if self.warmup_s < 0 or self.duration_s < 0:
            raise BenchError("--warmup-ms and --duration-ms must be 0 or more")
        if self.min_runs < 1 or self.max_runs < self.min_runs:
            raise BenchError(f"runs per row: need 1 <= min ({self.min_runs}) <= max ({self.max_runs})")

    def cases(self) -> list[tuple[str, str]]:
        """(backend, precision) pairs in the order they run: the baseline first, then as asked."""
        asked = [(b, p) for b in self.backends for p in self.precisions]
        return [BASELINE, *[case for case in asked if case != BASELINE]]


@dataclass
class Row:
    """One measured (or skipped) backend x precision x batch. Times in ms, memory in MB."""

    backend: str
    precision: str
    batch: int | None
    status: str = "ok"
    reason: str | None = None
    baseline: bool = False
    file: str | None = None
    device: str | None = None
    runs: int = 0
    warmup_runs: int = 0
    first_run_ms: float | None = None
    seconds: float = 0.0
    latency: LatencyStats | None = None
    images_per_s: float | None = None
    batches_per_s: float | None = None
    device_ms: dict[str, LatencyStats] | None = None
    split_note: str | None = None
    peak_rss_mb: float | None = None
    timing: str = "host-to-host"
    device_resident: LatencyStats | None = None
    torch_allocator_peak_mb: float | None = None
    gpu_device_peak_mb: float | None = None
    gpu_memory_source: str | None = None
    vs_baseline: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``ort-cpu int8 b8``."""
        return f"{self.backend} {self.precision}" + (f" b{self.batch}" if self.batch is not None else "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; latencies under ``latency_ms`` and ``device_ms`` (phase -> statistics)."""
        out: dict[str, Any] = {
            "backend": self.backend, "precision": self.precision, "batch": self.batch, "status": self.status,
            "reason": self.reason, "baseline": self.baseline, "file": self.file, "device": self.device,
        }
        if self.status != "ok":
            return out
        out |= {
            "runs": self.runs, "warmup_runs": self.warmup_runs,
            "first_run_ms": None if self.first_run_ms is None else round(self.first_run_ms, 3),
            "seconds": round(self.seconds, 3),
            "latency_ms": self.latency.to_dict() if self.latency else None,
            "images_per_s": _round(self.images_per_s), "batches_per_s": _round(self.batches_per_s),
            "device_ms": {k: v.to_dict() for k, v in self.device_ms.items()} if self.device_ms else None,
            "split_note": self.split_note, "peak_rss_mb": self.peak_rss_mb,
            "timing": self.timing,
            "device_resident_ms": self.device_resident.to_dict() if self.device_resident else None,
            "torch_allocator_peak_mb": self.torch_allocator_peak_mb, "gpu_device_peak_mb": self.gpu_device_peak_mb,
            "gpu_memory_source": self.gpu_memory_source,
            "vs_baseline": self.vs_baseline, **self.extra,
        }
        return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when empty), at most ``limit`` characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Runner:
    """A backend opened on a bundle, reduced to what a benchmark calls."""

    backend: str
    precision: str
    file: str | None
    device: str
    predict: Callable[[np.ndarray], object]
    example: Callable[[int], np.ndarray]
    close: Callable[[], None]
    timed: Callable[[np.ndarray], dict[str, float]] | None = None
    split_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """figures every row of this runner carries (``ran``: what ran, the compiled precision read back)"""
    resident: Callable[[np.ndarray], Callable[[], None]] | None = None
    """``resident(batch)``: a call running ``batch`` already on the device (None where not offered)."""
    torch_rows: bool = False


def open_runner(bundle: Bundle, backend: str, precision: str, machine: Machine, threads: int = 0) -> Runner:
    """Open ``backend`` (a bench variant of the backend table) at ``precision`` on ``bundle`` through the
    Predictor; a BackendUnavailable (or the backend's own error) when this machine or bundle cannot run it."""
    from sk_deploy.runtime.openvino_backend import OpenVinoOptions
    from sk_deploy.runtime.ort_backend import OrtOptions
    from sk_deploy.runtime.torch_options import TorchOptions

    variant = bench_variants()[backend]
    spec = BACKENDS[variant.backend]
    if variant.file is not None and precision not in variant.file_precisions:
        raise BackendUnavailable(f"{variant.file} is the float32 export; {backend} runs "
                                 f"{' and '.join(variant.file_precisions)} only")
    predictor = Predictor(
        bundle, variant.backend, precision, machine=machine, cuda_graph=variant.cuda_graph, file=variant.file,
        ort=OrtOptions(threads=threads, cuda_graph=variant.cuda_graph, trt_fp16=precision == "fp16",
                       tf32=precision == "tf32"),
        torch=TorchOptions(fp16=precision == "fp16", compile=variant.compile, tf32=precision == "tf32"),
        openvino=OpenVinoOptions(threads=threads),
    )
    on_gpu = spec.on_gpu(machine)
    runner = Runner(backend, precision, predictor.file, "cuda" if on_gpu else "cpu", predictor.predict,
                    predictor.example, predictor.close, torch_rows=spec.runs == "network",
                    extra={"ran": backend + predictor.description.removeprefix(predictor.backend)})
    if on_gpu and predictor.runs_resident:
        runner.resident = predictor.resident
    if predictor.device_timing:
        runner.timed = lambda batch: predictor.predict_timed(batch)[1]
    elif not on_gpu:
        runner.split_note = "not applicable: runs on the CPU"
    else:
        runner.split_note = "not exposed: ONNX Runtime copies and computes inside one run call"
    return runner


class BenchRun:
    """The rows of one benchmark of one bundle, filled in as ``execute`` measures them (so a run stopped half
    way still has the rows it finished)."""

    def __init__(self, bundle: Bundle, config: BenchConfig, machine: Machine | None = None) -> None:
        config.check()
        self.bundle = bundle
        self.config = config
        self.machine = machine or probe_machine()
        self.rows: list[Row] = []
        self.started = time.time()
        self.load_before = load_average()

    @property
    def planned(self) -> int:
        """How many (backend, precision, batch) cells the run covers."""
        return len(self.config.cases()) * len(self.config.batches)

    def execute(self, on_start: Callable[[str], None] | None = None,
                on_row: Callable[[Row, int], None] | None = None) -> list[Row]:
        """Measure every cell. ``on_start(description)`` before each; ``on_row(row, cells)`` after each row,
        with the number of cells it covers (all batches for a backend that could not open)."""
        batches = self.config.batches
        for backend, precision in self.config.cases():
            is_baseline = (backend, precision) == BASELINE
            if on_start:
                on_start(f"{backend} {precision}: opening")
            try:
                runner = open_runner(self.bundle, backend, precision, self.machine, self.config.threads)
            except Exception as exc:  # anything that keeps a backend from opening is a skipped row, not a crash
                row = Row(backend, precision, None, status="skipped", reason=one_line(exc), baseline=is_baseline)
                self._add(row, len(batches), on_row)
                continue
            try:
                for batch in batches:
                    if on_start:
                        on_start(f"{backend} {precision} batch {batch}")
                    self._add(self._measure(runner, batch, is_baseline), 1, on_row)
            finally:
                runner.close()
        return self.rows

    def _add(self, row: Row, cells: int, on_row: Callable[[Row, int], None] | None) -> None:
        self.rows.append(row)
        compute_ratios(self.rows)
        if on_row:
            on_row(row, cells)

    def _measure(self, runner: Runner, batch: int, is_baseline: bool) -> Row:
        row = Row(runner.backend, runner.precision, batch, baseline=is_baseline, file=runner.file,
                  device=runner.device, split_note=runner.split_note, extra=dict(runner.extra))
        try:
            self._time(runner, batch, row)
        except Exception as exc:  # a backend failing on this batch (torch.compile, out of memory): skipped, said why
            return Row(runner.backend, runner.precision, batch, status="skipped", reason=f"failed: {one_line(exc)}",
                       baseline=is_baseline, file=runner.file, device=runner.device)
        return row

    def _time(self, runner: Runner, batch: int, row: Row) -> None:
        config = self.config
        x = runner.example(batch)
        gpu = runner.device == "cuda"
        reset_peak_rss()
        if not gpu:
            self._timed_rows(runner, batch, row, x)
            return
        import torch

        from sk_deploy.bench.device_memory import PeakSampler, used_bytes_reader

        torch.cuda.reset_peak_memory_stats()
        read, row.gpu_memory_source = used_bytes_reader()
        with PeakSampler(read) as sampler:
            self._timed_rows(runner, batch, row, x)
        row.gpu_device_peak_mb = round(sampler.peak / 1e6, 1)
        if runner.torch_rows:
            row.torch_allocator_peak_mb = round(torch.cuda.max_memory_allocated() / 1e6, 1)
        if runner.resident is not None:
            replay = runner.resident(x)
            loop = timed_loop(replay, config.duration_s, config.min_runs, config.max_runs)
            row.device_resident = summarize(loop.ms)

    def _timed_rows(self, runner: Runner, batch: int, row: Row, x: np.ndarray) -> None:
        config = self.config
        start = time.perf_counter()
        runner.predict(x)
        row.first_run_ms = (time.perf_counter() - start) * 1000
        timed = runner.timed
        if timed is not None:
            try:
                timed(x)
            except BackendUnavailable as exc:  # e.g. a batch above an engine's profile runs in pieces
                timed, row.split_note = None, one_line(exc)
        row.warmup_runs = 1 + warm_up(lambda: runner.predict(x), config.warmup_s)

        def call() -> dict[str, float] | None:
            if timed is not None:
                return timed(x)
            runner.predict(x)
            return None

        loop = timed_loop(call, config.duration_s, config.min_runs, config.max_runs)
        row.runs, row.seconds = len(loop.ms), loop.seconds
        row.latency = summarize(loop.ms)
        row.images_per_s = per_second(batch * row.runs, loop.seconds)
        row.batches_per_s = per_second(row.runs, loop.seconds)
        if loop.extras:
            row.device_ms = device_phases(loop.extras)
            row.split_note = "CUDA events on the GPU (h2d, compute, d2h; latency = their sum)"
        row.peak_rss_mb = peak_rss_mb()


def device_phases(extras: Sequence[dict[str, float]]) -> dict[str, LatencyStats]:
    """Statistics of each device-side phase over the runs, and of their sum (trtexec's "Latency")."""
    names = list(extras[0])
    phases = {name: summarize([e[name] for e in extras]) for name in names}
    phases["latency"] = summarize([sum(e[name] for name in names) for e in extras])
    return phases


def compute_ratios(rows: Sequence[Row]) -> None:
    """Set each measured row's ratios to the baseline row of the same batch, where it was measured:
    ``speedup_p50`` (baseline p50 / this p50; above 1 is faster) and ``throughput`` (this images/s over the
    baseline's)."""
    base = {r.batch: r for r in rows if r.baseline and r.status == "ok" and r.latency is not None}
    for row in rows:
        b = base.get(row.batch)
        if row.status != "ok" or row.latency is None or b is None or b.latency is None:
            row.vs_baseline = None
            continue
        row.vs_baseline = {
            "speedup_p50": round(b.latency.p50 / row.latency.p50, 4),
            "throughput": round((row.images_per_s or 0.0) / (b.images_per_s or 1.0), 4),
        }
