"""OpenVINO on the CPU: the bundle's ONNX graph compiled with the precision asked for and nothing else.

OpenVINO picks its own inference precision per CPU: bf16 wherever the CPU has native bfloat16, whatever the
graph says. Here the precision is pinned instead: ``fp32`` compiles with ``INFERENCE_PRECISION_HINT`` f32,
``bf16`` with bf16 (only on a CPU with native bf16, refused in one line elsewhere), ``int8`` runs a Q/DQ graph,
its float parts in f32, or in bf16 on a CPU with native bf16 once that form passed its own gate on this graph
(``stages.precision[file].backends.openvino.bf16_float_parts``, measured by ``sk-deploy quantize``): the int8
path then computes what is not quantized at the bf16 rate, about twice f32's. The precision the compiled model
actually uses is read back from it (``compiled_precision``), so what is reported is what ran. Compiled models are cached
(``CACHE_DIR``) so the second start of the same graph on the same machine imports instead of compiling.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sk_deploy.backends import backend
from sk_deploy.machine import (
    BackendUnavailable,
    CpuFeatures,
    detect_cpu,
    import_openvino,
    openvino_version,
    runtime_threads,
)
from sk_deploy.precisions import Precision
from sk_deploy.runtime.backend import Backend

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle

#: OpenVINO's inference precision each precision of the table's openvino entry pins (int8: the graph's float parts)
INFERENCE_PRECISION = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.INT8: "f32"}
HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
_TYPE_NAMES = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "f16": "f16"}


def default_cache_dir() -> Path:
    """Where compiled models are cached: ``$SK_DEPLOY_CACHE/openvino`` or ~/.cache/sk-deploy/openvino."""
    return Path(os.environ.get("SK_DEPLOY_CACHE", Path.home() / ".cache" / "sk-deploy")) / "openvino"


@dataclass(frozen=True)
class OpenVinoOptions:
    """Compile settings: ``threads`` (INFERENCE_NUM_THREADS, 0: one per core, or per CPU the process is confined to
    where fewer: ``machine.runtime_threads``), ``streams`` (NUM_STREAMS, 0:
    what the hint implies), ``hint`` (PERFORMANCE_HINT: LATENCY for one request at a time, as the Predictor and
    the service's single inference thread run; THROUGHPUT for many in parallel), ``cache_dir`` (CACHE_DIR;
    None: ``default_cache_dir()``, "" turns caching off)."""

    threads: int = 0
    streams: int = 0
    hint: str = "LATENCY"
    cache_dir: str | None = None
    int8_float: str | None = None
    """int8: the precision of the graph's float parts, f32 or bf16; None: bf16 where the CPU has it natively and
    the bundle records that form's gate passed on this graph, else f32."""

    def config(self, precision: str, int8_float: str = "f32") -> dict[str, str]:
        """The OpenVINO compile configuration for ``precision`` (int8: its float parts in ``int8_float``)."""
        if self.hint not in HINTS:
            raise BackendUnavailable(f"unknown OpenVINO performance hint {self.hint!r}; use one of: {', '.join(HINTS)}")
        if self.threads < 0 or self.streams < 0:
            raise BackendUnavailable("OpenVINO threads and streams are 0 (its default) or more")
        inference = int8_float if precision == "int8" else INFERENCE_PRECISION[precision]
        config = {"PERFORMANCE_HINT": self.hint, "INFERENCE_PRECISION_HINT": inference}
        threads = runtime_threads(self.threads)
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if self.streams:
            config["NUM_STREAMS"] = str(self.streams)
        cache = default_cache_dir() if self.cache_dir is None else self.cache_dir
        if cache:
            config["CACHE_DIR"] = os.fspath(cache)
        return config


def check_precision(precision: str, cpu: CpuFeatures | None = None) -> None:
    """Raise a BackendUnavailable when OpenVINO cannot run ``precision`` on ``cpu`` (this machine's by default)."""
    runs = backend(OpenVinoBackend.name).precisions
    if precision not in runs:
        raise BackendUnavailable(f"the openvino backend runs {', '.join(runs)}, not {precision}")
    refusal = Precision(precision).cpu_refusal(cpu or detect_cpu())
    if refusal:
        raise BackendUnavailable(refusal)


def int8_float_parts(bundle: Bundle | None, path: Path, cpu: CpuFeatures) -> str:
    """bf16 where ``cpu`` computes it natively and ``bundle`` records that the int8 graph at ``path`` passed its
    gate with bf16 float parts on OpenVINO; else f32."""
    if bundle is None or not cpu.native_bf16:
        return "f32"
    entry = bundle.stage("precision").get(path.name) or {}
    gate = ((entry.get("backends") or {}).get(OpenVinoBackend.name) or {}).get("bf16_float_parts") or {}
    return "bf16" if gate.get("passed") else "f32"


def precision_name(value: Any) -> str:
    """OpenVINO's element type (``<Type: 'bfloat16'>``, ``bf16``) as a short name: f32, bf16 or f16."""
    text = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return _TYPE_NAMES.get(text, text)


class OpenVinoBackend(Backend):
    """One ONNX file of a bundle compiled by OpenVINO for the CPU. ``run(batch) -> logits`` float32."""

    name: ClassVar[str] = "openvino"

    @classmethod
    def default_options(cls, precision: str, cuda_graph: bool = False) -> OpenVinoOptions:
        """The compile settings when none are given (the same for every precision)."""
        return OpenVinoOptions()

    @classmethod
    def share_cores(cls, options: OpenVinoOptions, instances: int, cores: int) -> OpenVinoOptions:
        """``options`` for ``instances`` parallel instances: one stream each (NUM_STREAMS), over which OpenVINO
        shares the cores; each instance thread has its own infer request."""
        return dataclasses.replace(options, streams=instances)

    def __init__(self, path: str | Path | None, bundle: Bundle | None = None, *, precision: str = "fp32",
                 options: OpenVinoOptions | None = None, cpu: CpuFeatures | None = None) -> None:
        super().__init__(path, bundle, precision=precision, options=options or OpenVinoOptions())
        if self.path is None:
            raise BackendUnavailable("the openvino backend runs an ONNX file; none given")
        self.cpu = cpu or detect_cpu()
        check_precision(precision, self.cpu)
        ov = import_openvino()
        self.int8_float = self.options.int8_float or int8_float_parts(bundle, self.path, self.cpu)
        if self.int8_float == "bf16":
            check_precision("bf16", self.cpu)
        self.config = self.options.config(precision, self.int8_float)
        core = ov.Core()
        try:
            # From the path (not a read model) so that a cached blob is imported without reading the graph.
            self.compiled = core.compile_model(os.fspath(self.path), "CPU", self.config)
        except RuntimeError as exc:
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(f"{self.path}: OpenVINO cannot compile it ({message})") from None
        self.compiled_precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        wanted = self.config["INFERENCE_PRECISION_HINT"]
        if self.compiled_precision != wanted:
            raise BackendUnavailable(f"OpenVINO compiled {self.path.name} in {self.compiled_precision}, not the "
                                     f"{wanted} asked for")
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.hint = str(self.compiled.get_property("PERFORMANCE_HINT"))
        #: one infer request per calling thread: a compiled model is thread-safe, a request is not (the
        #: service's instances run in parallel, one request each, over NUM_STREAMS streams)
        self._local = threading.local()
        self._requests: list[Any] = []
        self._lock = threading.Lock()
        self._request()

    @property
    def description(self) -> str:
        """``OpenVINO 2026.4.1, bf16 compiled, 2 threads, 1 stream, LATENCY``."""
        return (f"OpenVINO {openvino_version()}, {self.compiled_precision} compiled"
                f"{' (int8 graph, float parts ' + self.int8_float + ')' if self.precision == 'int8' else ''}, "
                f"{self.threads} threads, "
                f"{self.streams} stream(s), {self.hint}")

    def _request(self) -> Any:
        """This thread's infer request (made on its first run)."""
        request = getattr(self._local, "request", None)
        if request is None:
            with self._lock:
                request = self._local.request = self.compiled.create_infer_request()
                self._requests.append(request)
        return request

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32) of ``batch``."""
        request = self._request()
        request.infer({0: batch}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    def _release(self) -> None:
        self._requests.clear()
        self._local = threading.local()
        self.compiled = None
