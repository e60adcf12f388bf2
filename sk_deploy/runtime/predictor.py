"""One interface over every backend: ``Predictor(bundle, backend=..., precision=...).predict(batch) -> logits``.

Backends: ``tensorrt`` (an engine built by ``sk-deploy build``), ``ort-tensorrt``, ``ort-cuda`` and ``ort-cpu``
(ONNX Runtime with that provider, on the bundle's ONNX graph of the precision), ``openvino`` (OpenVINO on the
CPU: fp32, bf16 on a CPU with native bfloat16, int8), and ``torch`` (the PyTorch network the bundle was exported
from; the baseline). ``auto`` picks the fastest one this machine can run and
says why. The input is what the bundle's graph takes: float32 NCHW, or uint8 NHWC crops when preprocessing is
fused into the graph; ``input_spec`` describes it, and a wrong array is a ``bundle.InputError`` naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.backends import BACKENDS, BackendSpec, auto_order
from sk_deploy.bundle import Bundle, InputSpec, MissingGraph
from sk_deploy.engines.compat import find_engine
from sk_deploy.machine import BackendUnavailable, Machine, import_openvino, import_tensorrt, probe_machine
from sk_deploy.precisions import PRECISIONS, Precision
from sk_deploy.runtime.auto_precision import AUTO, PrecisionChoice, resolve_precision
from sk_deploy.runtime.backend import Backend
from sk_deploy.runtime.cpu_choice import gated_file
from sk_deploy.runtime.openvino_backend import OpenVinoOptions
from sk_deploy.runtime.ort_backend import OrtOptions
from sk_deploy.runtime.torch_options import TorchOptions

__all__ = ["Choice", "InputSpec", "Predictor", "onnx_file", "plan"]


@dataclass(frozen=True)
class Choice:
    """Which backend runs which file, and why."""

    backend: str
    file: str | None
    reason: str


def onnx_file(bundle: Bundle | dict[str, Any], backend: str, precision: str) -> str:
    """The bundle's ONNX file for ``backend`` at ``precision``: its preferred form (the CPU INT8 form first on
    ort-cpu), unless only another form passed its gate on that backend (``cpu_choice.gated_file``)."""
    try:
        return gated_file(bundle, backend, precision)
    except MissingGraph as exc:
        raise BackendUnavailable(str(exc)) from None


def _engine(bundle: Bundle, precision: str, machine: Machine) -> str:
    if machine.tensorrt_version is None:
        import_tensorrt()  # raises the install message
    if not machine.cuda:
        raise BackendUnavailable("the TensorRT backend needs an NVIDIA GPU, and none is visible here")
    engine = find_engine(bundle, precision, machine.gpu_name, machine.tensorrt_version)
    if engine is None:
        raise BackendUnavailable(f"the bundle has no {precision} TensorRT engine; build one: "
                                 f"sk-deploy build BUNDLE --precision {precision}")
    return engine


def plan(bundle: Bundle | dict[str, Any], backend: str, precision: str, machine: Machine) -> Choice:
    """What ``backend`` (one named, or ``auto``) would run at ``precision`` (``auto``: as ``auto_precision``
    chooses) on ``machine``, or why it cannot.

    ``auto`` takes the first backend in its order (the table's ``auto``) whose rule (``runtime/auto.py``)
    applies: a TensorRT engine built for this GPU and TensorRT; ONNX Runtime's CUDA provider; PyTorch on the
    GPU; OpenVINO where ``cpu_choice`` says it is the faster CPU backend; ONNX Runtime on the CPU (faster than
    PyTorch eager there, see benchmarks/). A backend asked for by name that cannot run is a BackendUnavailable.
    """
    bundle = Bundle.of(bundle)
    if precision == AUTO:  # the precision first (runtime.auto_precision), then the backend for it
        precision = resolve_precision(bundle, backend, precision, machine).precision
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose one of: auto, {', '.join(PRECISIONS)}")
    if backend == "auto":
        return _auto(bundle, precision, machine)
    spec = BACKENDS.get(backend)
    if spec is None:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of: auto, {', '.join(BACKENDS)}")
    asked = Precision(precision)
    refusal = asked.gpu_only_refusal(backend) if spec.device == "cpu" else None
    if refusal:
        raise BackendUnavailable(refusal)
    if asked not in spec.precisions:
        runners = [name for name, other in BACKENDS.items() if asked in other.precisions]
        if len(runners) == 1:
            raise BackendUnavailable(f"{precision} runs on the {runners[0]} backend only ({asked.facts.about}), not "
                                     f"on {backend}: use --backend {runners[0]}")
        raise BackendUnavailable(f"the {backend} backend runs {', '.join(spec.precisions)}, not {precision}")
    _ready(spec, asked, machine)
    if spec.runs == "engine":
        return Choice(backend, _engine(bundle, precision, machine), "asked for")
    if spec.runs == "network":
        return Choice(backend, None, "asked for")
    return Choice(backend, onnx_file(bundle, backend, precision), "asked for")


def _ready(spec: BackendSpec, precision: Precision, machine: Machine) -> None:
    """Raise a BackendUnavailable when ``machine`` lacks the package ``spec`` needs, or the CPU support a CPU
    backend needs for ``precision``."""
    if spec.package == "openvino" and machine.openvino_version is None:
        import_openvino()  # raises the install message
    if spec.device == "cpu":
        refusal = precision.cpu_refusal(machine.cpu)
        if refusal:
            raise BackendUnavailable(refusal)


def _rule(spec: BackendSpec) -> Callable[[Bundle, str, Machine, BackendSpec], Choice]:
    """The function deciding whether ``auto`` takes ``spec`` here (its ``auto_rule``, or ``runs_here``)."""
    module, name = (spec.auto_rule or "sk_deploy.runtime.auto:runs_here").split(":")
    return getattr(importlib.import_module(module), name)


def auto_candidates(bundle: Bundle, precision: str, machine: Machine) -> list[Choice]:
    """Every backend ``auto`` could take, in order, each with its reason (those skipped before it included); a
    BackendUnavailable with every refusal when none applies."""
    skipped: list[str] = []
    choices = []
    for spec in auto_order():
        if precision not in spec.precisions:
            continue
        try:
            choice = _rule(spec)(bundle, precision, machine, spec)
        except BackendUnavailable as exc:
            if str(exc):
                skipped.append(str(exc))
            continue
        choices.append(dataclasses.replace(choice, reason="; ".join([*skipped, choice.reason])))
    if not choices:
        raise BackendUnavailable("; ".join(skipped) or f"no backend here runs {precision}")
    return choices


def _auto(bundle: Bundle, precision: str, machine: Machine) -> Choice:
    return auto_candidates(bundle, precision, machine)[0]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


class Predictor:
    """A bundle's model on one backend. ``predict(batch) -> logits (N, classes) float32``; ``warmup()`` first.

    ``backend``: auto or a name of the backend table (``sk_deploy.backends``). ``precision``: ``auto`` (the
    default: the fastest precision whose gate passed for this bundle and runs here, ``runtime.auto_precision``;
    ``precision_choice`` says which and why) or one of PRECISIONS, pinned (the bundle must hold that graph, or
    engine for tensorrt). ``options`` maps a backend family (``ort``, ``torch``, ``tensorrt``, ``openvino``) to
    its options; ``ort``, ``torch`` and ``openvino`` are shorthands for those three. ``cuda_graph`` replays one
    captured CUDA graph per batch size on tensorrt and ort-cuda (also when options are given). With ``auto``, a
    backend that fails to initialise is skipped for the next candidate, and ``reason`` says so.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        precision: str = AUTO,
        *,
        ort: OrtOptions | None = None,
        torch: TorchOptions | None = None,
        cuda_graph: bool = False,
        machine: Machine | None = None,
        options: dict[str, Any] | None = None,
        file: str | None = None,
        openvino: OpenVinoOptions | None = None,
    ) -> None:
        self.bundle = Bundle.of(bundle)
        self.machine = machine or probe_machine()
        if file is not None:  # a file of the bundle asked for by name runs as fp32 unless told otherwise
            precision = "fp32" if precision == AUTO else precision
        self.precision_choice: PrecisionChoice = resolve_precision(self.bundle, backend, precision, self.machine)
        precision = self.precision_choice.precision
        if file is not None:
            choices = [self._file(backend, file)]
        elif backend == "auto":
            plan(self.bundle, backend, precision, self.machine)  # the precision checked first
            choices = auto_candidates(self.bundle, precision, self.machine)
        else:
            choices = [plan(self.bundle, backend, precision, self.machine)]
        self.precision = precision
        self.input_spec = self.bundle.input_spec
        if file is not None:  # the raw export may take another form than model.onnx
            self.input_spec = InputSpec.from_description(self.bundle.entry(file).get("input") or
                                                         self.bundle.manifest_input())
        shorthands = {"ort": ort, "torch": torch, "openvino": openvino}
        given = {**(options or {}), **{family: given for family, given in shorthands.items() if given}}
        refused: list[str] = []
        for choice in choices:
            try:
                self._runner: Backend = self._open(choice, given, cuda_graph)
            except Exception as exc:  # a backend that fails to initialise: auto tries the next one
                if backend != "auto" or choice is choices[-1]:
                    if refused and isinstance(exc, BackendUnavailable):
                        raise BackendUnavailable("; ".join([*refused, f"{choice.backend}: {exc}"])) from None
                    raise
                refused.append(f"{choice.backend} failed to initialise ({_first_line(exc)})")
                continue
            self.backend, self.file = choice.backend, choice.file
            self.reason = "; ".join([*refused, choice.reason])
            break

    def _open(self, choice: Choice, given: dict[str, Any], cuda_graph: bool) -> Backend:
        """The backend of ``choice``, with the options given for its family (``cuda_graph`` applied to them)."""
        spec = BACKENDS[choice.backend]
        chosen = given.get(spec.family)
        if chosen is None:
            chosen = spec.default_options(self.precision, cuda_graph)
        elif cuda_graph and hasattr(chosen, "cuda_graph") and not chosen.cuda_graph:
            chosen = dataclasses.replace(chosen, cuda_graph=True)
        path = self.bundle.check_file(choice.file) if choice.file is not None else None
        return spec.open(path, self.bundle, self.precision, chosen)

    def _file(self, backend: str, file: str) -> Choice:
        """``file`` (an ONNX graph of the bundle, e.g. the raw export) on the ONNX backend ``backend``."""
        spec = BACKENDS.get(backend)
        if spec is None or spec.runs != "onnx":
            onnx = ", ".join(name for name, other in BACKENDS.items() if other.runs == "onnx")
            raise BackendUnavailable(f"{backend} does not run an ONNX file of the bundle; use one of: {onnx}")
        if not self.bundle.has(file):
            raise BackendUnavailable(f"the bundle has no {file}")
        return Choice(backend, file, f"{file} asked for")

    @property
    def runs_resident(self) -> bool:
        """Whether ``resident`` can time a batch already on the device (GPU backends)."""
        return self._runner.runs_resident

    def resident(self, batch: Any) -> Callable[[], None]:
        """A call running ``batch`` (copied to the device once, here) with no host copies: device-resident."""
        return self._runner.resident(self.input_spec.check(batch))

    @property
    def captures_graphs(self) -> bool:
        """Whether the backend captures a CUDA graph per batch shape (batches are best padded to a few sizes)."""
        return self._runner.captures_graphs

    @property
    def input_dtype(self) -> str:
        """The input's dtype (``float32`` or ``uint8``): with ``predict`` and ``max_batch``, what makes a Predictor
        a comparator runner (``compare.Runner``)."""
        return self.input_spec.dtype

    @property
    def max_batch(self) -> int | None:
        """The largest batch one run of the backend takes (an engine's profile); larger ones run in pieces."""
        return self._runner.max_batch

    @property
    def description(self) -> str:
        """``ort-cpu fp32 (model.onnx)``; ``openvino bf16 (model.onnx; compiled bf16)``: what ran, read back."""
        compiled = self._runner.compiled_precision
        detail = "; ".join(part for part in (self.file, compiled and f"compiled {compiled}") if part)
        return f"{self.backend} {self.precision}" + (f" ({detail})" if detail else "")

    def predict(self, batch: Any) -> np.ndarray:
        """Logits (N, classes) float32 of ``batch`` (or of one picture, without the batch axis)."""
        array = self.input_spec.check(batch)
        step = self.max_batch or len(array)
        if len(array) <= step:
            return self._runner.run(array)
        return np.concatenate([self._runner.run(array[i:i + step]) for i in range(0, len(array), step)])

    @property
    def device_timing(self) -> bool:
        """Whether ``predict_timed`` can split a run into h2d / compute / d2h by the GPU's clock (torch on a
        CUDA device, tensorrt); ONNX Runtime does its copies inside one call and exposes no such split."""
        return self._runner.device_timing

    def predict_timed(self, batch: Any) -> tuple[np.ndarray, dict[str, float]]:
        """Logits of ``batch`` and the GPU's milliseconds per phase (h2d, compute, d2h; CUDA events), for a
        backend with ``device_timing`` and a batch it runs in one go (within an engine's profile)."""
        if not self.device_timing:
            raise BackendUnavailable(f"{self.backend} on this machine exposes no device-side split of a run")
        array = self.input_spec.check(batch)
        if self.max_batch is not None and len(array) > self.max_batch:
            raise BackendUnavailable(f"a batch of {len(array)} is above the engine's profile ({self.max_batch}): "
                                     "it runs in pieces, so there is no single device-side split")
        return self._runner.run_timed(array)

    def example(self, size: int = 1, seed: int = 0) -> np.ndarray:
        """A random input batch of ``size`` pictures in this bundle's input form."""
        return self.input_spec.example(size, seed)

    def warmup(self, batch_sizes: Iterable[int] = (1,), repeats: int = 2) -> float:
        """Run each batch size ``repeats`` times (sessions initialise, kernels tune, graphs capture); seconds."""
        start = time.perf_counter()
        for size in batch_sizes:
            batch = self.example(size)
            for _ in range(repeats):
                self.predict(batch)
        return time.perf_counter() - start

    def close(self) -> None:
        """Release the backend (sessions, engine, device memory)."""
        self._runner.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
