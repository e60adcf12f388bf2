"""ONNX Runtime backends: CPU, CUDA (IO binding, optional CUDA graphs) and its TensorRT provider."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sk_deploy.backends import backend
from sk_deploy.machine import BackendUnavailable, require_cuda, require_ort_provider, runtime_threads
from sk_deploy.runtime.backend import Backend

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle


@dataclass(frozen=True)
class OrtOptions:
    """Session settings: threads (0: one per CPU this process is confined to, if it is, else ONNX Runtime's
    default, one per physical core: ``machine.runtime_threads``), optimisation level,
    CUDA graphs (GPU providers only; one captured graph per batch size, all in one session), TensorRT provider's
    engine cache, and ``tf32`` (the CUDA provider's TensorFloat-32 convolutions and matmuls: off unless the
    precision is tf32, so that fp32 is IEEE fp32; ONNX Runtime itself defaults it on)."""

    threads: int = 0
    optimization: str = "all"
    cuda_graph: bool = False
    device_id: int = 0
    trt_cache_dir: str | None = None
    trt_fp16: bool = False
    tf32: bool = False


# ONNX Runtime's WeightBiasQuantization (a basic-level optimizer) turns a float bias next to Q/DQ inputs into
# int32 with the scale input_scale * weight_scale computed in the graph's type: in float16 that product
# underflows (1e-2 * 1e-4 is below float16's normal range) and the biases come out wrong (measured on SKNet-50:
# cosine 0.91 against float32 instead of 0.996). TensorRT takes float biases; only ONNX Runtime needs it off.
ORT_UNSAFE_WITH_FP16_QDQ = ("WeightBiasQuantization",)


def ort_disabled_optimizers(path: str | Path) -> list[str]:
    """The ONNX Runtime optimizers to disable for the graph at ``path``: those that break float16 Q/DQ."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ours to report: ONNX Runtime says what is wrong with the file when it loads it
        return []
    half = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    has_fp16_qdq = any(n.op_type == "DequantizeLinear" and len(n.input) > 1 and n.input[1] in half
                       for n in model.graph.node)
    return list(ORT_UNSAFE_WITH_FP16_QDQ) if has_fp16_qdq else []


_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def session_options(options: OrtOptions) -> Any:
    """ONNX Runtime SessionOptions for ``options``."""
    import onnxruntime as ort

    if options.optimization not in _LEVELS:
        raise ValueError(f"unknown optimisation level {options.optimization!r}; use one of: {', '.join(_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[options.optimization])
    so.intra_op_num_threads = runtime_threads(options.threads)
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    return so


def provider_list(provider: str, options: OrtOptions) -> list[Any]:
    """The providers (with their options) behind ``provider``, most preferred first, CPU as the fallback."""
    cuda = {"device_id": str(options.device_id), "use_tf32": "1" if options.tf32 else "0"}
    if provider == "CPUExecutionProvider":
        return ["CPUExecutionProvider"]
    if provider == "CUDAExecutionProvider":
        return [("CUDAExecutionProvider", {**cuda, "enable_cuda_graph": "1" if options.cuda_graph else "0"}),
                "CPUExecutionProvider"]
    if provider == "TensorrtExecutionProvider":
        trt: dict[str, str] = {"device_id": str(options.device_id), "trt_fp16_enable": str(options.trt_fp16)}
        if options.trt_cache_dir:
            trt |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": options.trt_cache_dir,
                    "trt_timing_cache_enable": "True"}
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    raise ValueError(f"not an ONNX Runtime provider sk-deploy runs: {provider!r}")


class OrtBackend(Backend):
    """One ONNX file in ONNX Runtime with the provider its table entry names; ``run(batch) -> logits`` takes the
    graph's own input form. The subclasses below are the three backends of the table."""

    @classmethod
    def default_options(cls, precision: str, cuda_graph: bool = False) -> OrtOptions:
        """The session settings for ``precision`` when none are given."""
        return OrtOptions(cuda_graph=cuda_graph, trt_fp16=precision == "fp16", tf32=precision == "tf32")

    @classmethod
    def share_cores(cls, options: OrtOptions, instances: int, cores: int) -> OrtOptions:
        """``options`` for one of ``instances`` parallel instances on ``cores`` cores: the one shared session's
        intra-op threads are the cores over the instances (at least one)."""
        return dataclasses.replace(options, threads=max(1, cores // instances))

    def __init__(self, path: str | Path | None, bundle: Bundle | None = None, *, precision: str = "fp32",
                 options: OrtOptions | None = None) -> None:
        import onnxruntime as ort

        if path is None:
            raise ValueError(f"{self.name} runs an ONNX file: give its path")
        options = options or OrtOptions(trt_fp16=precision == "fp16")
        super().__init__(path, bundle, precision=precision, options=options)
        spec = backend(self.name)
        self.provider: str = spec.provider or "CPUExecutionProvider"
        if self.provider != "CPUExecutionProvider":
            require_cuda(self.name)
            require_ort_provider(self.provider)
            preload_cuda_libraries(ort)
        self.options: OrtOptions = options
        #: one CUDA graph per batch shape, so batches are best padded to a few sizes (the service does)
        self.captures_graphs = options.cuda_graph and spec.captures_graph
        self.runs_resident = self.provider == "CUDAExecutionProvider"  # binds device buffers to its runs
        self._ort = ort
        self._providers = provider_list(self.provider, options)
        self._graphs: dict[int, tuple[Any, Any, Any, Any]] = {}
        self.session: Any = self._new_session()
        used = self.session.get_providers()[0]
        if used != self.provider:
            raise BackendUnavailable(f"ONNX Runtime fell back to {used} instead of {self.provider} for {path}")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def input_dtype(self) -> str:
        """The input the graph takes, read from the session: ``uint8`` or ``float32``."""
        return "uint8" if self.session.get_inputs()[0].type == "tensor(uint8)" else "float32"

    def _new_session(self) -> Any:
        options = session_options(self.options)
        try:
            return self._ort.InferenceSession(os.fspath(self.path), sess_options=options, providers=self._providers,
                                              disabled_optimizers=ort_disabled_optimizers(self.path))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types without a shared base
            message = str(exc).strip().splitlines()[0][:200]
            raise BackendUnavailable(f"{self.path}: ONNX Runtime cannot load it ({message})") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32) of ``batch``."""
        if self.provider == "CPUExecutionProvider":
            return self.session.run([self.output_name], {self.input_name: batch})[0].astype(np.float32, copy=False)
        if self.options.cuda_graph:
            return self._run_graphed(batch)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        binding.bind_output(self.output_name, "cuda", self.options.device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)

    def _run_graphed(self, batch: np.ndarray) -> np.ndarray:
        """CUDA graphs need fixed device addresses: per batch size, a bound input and output and a graph id
        (``gpu_graph_id``, from 1: ONNX Runtime keeps every captured graph in the one session)."""
        size = batch.shape[0]
        if size not in self._graphs:
            device = ("cuda", self.options.device_id)
            x = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), *device)
            out_shape = (size, *self.session.get_outputs()[0].shape[1:])
            y = self._ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, *device)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, x)
            binding.bind_ortvalue_output(self.output_name, y)
            run_options = self._ort.RunOptions()
            run_options.add_run_config_entry("gpu_graph_id", str(len(self._graphs) + 1))
            self._graphs[size] = (binding, run_options, x, y)
        binding, run_options, x, y = self._graphs[size]
        x.update_inplace(np.ascontiguousarray(batch))
        self.session.run_with_iobinding(binding, run_options)
        return y.numpy()

    def resident(self, batch: np.ndarray) -> Callable[[], None]:
        """A run on ``batch`` already on the device (bound once), its logits left there: the captured graph's
        replay with CUDA graphs, else a plain device-to-device run."""
        if not self.runs_resident:
            return super().resident(batch)
        if self.options.cuda_graph:
            self._run_graphed(batch)  # bound, and captured, once
            binding, run_options, _, _ = self._graphs[batch.shape[0]]
            return lambda: self.session.run_with_iobinding(binding, run_options)
        device = ("cuda", self.options.device_id)
        x = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), *device)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x)
        binding.bind_output(self.output_name, *device)
        return lambda: self.session.run_with_iobinding(binding)

    @property
    def sessions(self) -> int:
        """How many ONNX Runtime sessions the backend holds (one; none once closed)."""
        return 0 if self.session is None else 1

    def _release(self) -> None:
        """Drop the session, its bound buffers and its device memory."""
        self._graphs.clear()
        self.session = None


_preloaded = False


def preload_cuda_libraries(ort: Any) -> None:
    """``onnxruntime.preload_dlls()`` once, where it exists (1.21 on), before the first CUDA session: it loads the
    CUDA and cuDNN libraries of the nvidia-* wheels that the provider would otherwise not find."""
    global _preloaded
    if not _preloaded and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    _preloaded = True


class OrtCpuBackend(OrtBackend):
    """ONNX Runtime's CPU provider."""

    name = "ort-cpu"


class OrtCudaBackend(OrtBackend):
    """ONNX Runtime's CUDA provider, with IO binding and optional CUDA graphs."""

    name = "ort-cuda"


class OrtTensorRTBackend(OrtBackend):
    """ONNX Runtime's TensorRT provider (CUDA, then CPU, behind it)."""

    name = "ort-tensorrt"
