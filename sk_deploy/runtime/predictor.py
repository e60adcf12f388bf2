"""One interface over every backend: ``Predictor(bundle, backend=..., precision=...).predict(batch) -> logits``.

Backends: ``tensorrt`` (an engine built by ``sk-deploy build``), ``ort-tensorrt``, ``ort-cuda`` and ``ort-cpu``
(ONNX Runtime with that provider, on the bundle's ONNX graph of the precision), ``openvino`` (OpenVINO on the
CPU: fp32, bf16 on a CPU with native bfloat16, int8), and ``torch`` (the PyTorch network the bundle was exported
from; the baseline). ``auto`` picks the fastest one this machine can run and
says why. The input is what the bundle's graph takes: float32 NCHW, or uint8 NHWC crops when preprocessing is
fused into the graph; ``input_spec`` describes it, and a wrong array is a ``PredictorInputError`` naming it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sk_deploy.bundle import Bundle
from sk_deploy.engines.compat import EngineMismatch, check_engine, find_engine
from sk_deploy.runtime.availability import BackendUnavailable, Machine, probe_machine
from sk_deploy.runtime.cpu_choice import cpu_backend
from sk_deploy.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions, check_precision
from sk_deploy.runtime.ort_backend import OrtBackend, OrtOptions
from sk_deploy.runtime.torch_backend import TorchBackend, TorchOptions

BACKENDS = ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu", "openvino", "torch")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
# bf16 has no file of its own: OpenVINO compiles the float32 graph with bf16 inference precision.
ONNX_FILES = {"fp32": ("model.onnx",), "fp16": ("model.fp16.onnx",), "int8": ("model.int8.onnx",),
              "bf16": ("model.onnx",)}
CPU_ONNX_FILES = {**ONNX_FILES, "int8": ("model.int8-cpu.onnx", "model.int8.onnx")}
# OpenVINO runs the TensorRT form faster than the CPU form, whose grouped convolutions stay float
# (benchmarks/results/cpu-2core/openvino.md).
OPENVINO_ONNX_FILES = {**ONNX_FILES, "int8": ("model.int8.onnx", "model.int8-cpu.onnx")}
BACKEND_ONNX_FILES = {"ort-cpu": CPU_ONNX_FILES, "openvino": OPENVINO_ONNX_FILES}


class PredictorInputError(ValueError):
    """An input array of the wrong dtype or shape for the bundle; the message names the expected one."""


class Backend(Protocol):
    """What every backend offers the Predictor."""

    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class InputSpec:
    """The array a bundle's model takes: name, dtype, layout and the shape of one picture."""

    name: str
    dtype: str
    layout: str
    item_shape: tuple[int, ...]

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> InputSpec:
        """The manifest's ``input`` section as an InputSpec."""
        described = manifest["input"]
        return cls(str(described["name"]), str(described["dtype"]), str(described.get("layout", "NCHW")),
                   tuple(int(d) for d in described["shape"][1:]))

    def describe(self) -> str:
        """``float32 (N, 3, 224, 224)``."""
        return f"{self.dtype} (N, {', '.join(map(str, self.item_shape))})"

    def check(self, batch: Any) -> np.ndarray:
        """``batch`` as a contiguous array of this dtype and shape (floats of another width are cast)."""
        array = np.asarray(batch)
        if array.ndim == len(self.item_shape):
            array = array[None]
        wrong_dtype = array.dtype != np.dtype(self.dtype) and not (
            self.dtype == "float32" and np.issubdtype(array.dtype, np.floating))
        if wrong_dtype or tuple(array.shape[1:]) != self.item_shape or array.shape[0] < 1:
            raise PredictorInputError(f"expected a {self.describe()} {self.layout} array, got {array.dtype} "
                                      f"{tuple(array.shape)}")
        return np.ascontiguousarray(array, dtype=self.dtype)


@dataclass(frozen=True)
class Choice:
    """Which backend runs which file, and why."""

    backend: str
    file: str | None
    reason: str


def onnx_file(manifest: dict[str, Any], backend: str, precision: str) -> str:
    """The bundle's ONNX file for ``backend`` at ``precision`` (the CPU INT8 form first on ort-cpu)."""
    candidates = BACKEND_ONNX_FILES.get(backend, ONNX_FILES)[precision]
    for name in candidates:
        if name in manifest["files"]:
            return name
    hint = {"fp16": "sk-deploy quantize BUNDLE --precision fp16",
            "int8": "sk-deploy quantize BUNDLE --precision int8 --calib PHOTOS"}.get(precision, "sk-deploy export")
    raise BackendUnavailable(f"the bundle has no {precision} graph ({' or '.join(candidates)}); make it: {hint}")


def plan(manifest: dict[str, Any], backend: str, precision: str, machine: Machine) -> Choice:
    """What ``backend`` (one named, or ``auto``) would run at ``precision`` on ``machine``, or why it cannot.

    ``auto`` takes the first that applies: a TensorRT engine built for this GPU and TensorRT; ONNX Runtime's
    CUDA provider; PyTorch on the GPU; ONNX Runtime on the CPU (faster than PyTorch eager there, see
    benchmarks/). A backend asked for by name that cannot run is a BackendUnavailable.
    """
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if backend == "auto":
        return _auto(manifest, precision, machine)
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {backend!r}; choose one of: auto, {', '.join(BACKENDS)}")
    if precision == "bf16" and backend != "openvino":
        raise BackendUnavailable(f"bf16 runs on the openvino backend only (a CPU with native bfloat16), not on "
                                 f"{backend}: use --backend openvino")
    if backend == "openvino":
        if machine.openvino_version is None:
            from sk_deploy.runtime.availability import import_openvino

            import_openvino()  # raises the install message
        check_precision(precision, machine.cpu)
        return Choice("openvino", onnx_file(manifest, backend, precision), "asked for")
    if backend == "tensorrt":
        if machine.tensorrt_version is None:
            from sk_deploy.runtime.availability import import_tensorrt

            import_tensorrt()  # raises the install message
        if not machine.cuda:
            raise BackendUnavailable("the TensorRT backend needs an NVIDIA GPU, and none is visible here")
        engine = find_engine(manifest, precision, machine.gpu_name, machine.tensorrt_version)
        if engine is None:
            raise BackendUnavailable(f"the bundle has no {precision} TensorRT engine; build one: "
                                     f"sk-deploy build BUNDLE --precision {precision}")
        return Choice("tensorrt", engine, "asked for")
    if backend == "torch":
        if precision == "int8":
            raise BackendUnavailable("the torch backend runs fp32 (or fp16 autocast on a GPU), not int8")
        return Choice("torch", None, "asked for")
    return Choice(backend, onnx_file(manifest, backend, precision), "asked for")


def _auto(manifest: dict[str, Any], precision: str, machine: Machine) -> Choice:
    if precision == "bf16":  # a CPU precision: no GPU backend runs it
        backend, why = cpu_backend(precision, machine)
        return Choice(backend, onnx_file(manifest, backend, precision), why)
    skipped = []
    if machine.cuda and machine.tensorrt_version:
        engine = find_engine(manifest, precision, machine.gpu_name, machine.tensorrt_version)
        if engine is None:
            skipped.append(f"no {precision} TensorRT engine in the bundle (sk-deploy build)")
        else:
            try:
                check_engine(manifest["files"][engine], machine.tensorrt_version, machine.gpu_name,
                             machine.compute_capability, engine)
                return Choice("tensorrt", engine, f"TensorRT engine {engine} matches this GPU and TensorRT")
            except EngineMismatch as exc:
                skipped.append(str(exc))
    if machine.cuda and "CUDAExecutionProvider" in machine.ort_providers:
        try:
            return Choice("ort-cuda", onnx_file(manifest, "ort-cuda", precision),
                          "; ".join([*skipped, f"{machine.gpu_name} with ONNX Runtime's CUDA provider"]))
        except BackendUnavailable as exc:
            skipped.append(str(exc))
    if machine.cuda and precision != "int8":
        return Choice("torch", None, "; ".join([*skipped, f"{machine.gpu_name} through PyTorch "
                                                "(onnxruntime-gpu and TensorRT not available)"]))
    why = "no CUDA GPU here" if not machine.cuda else "no GPU backend can run this"
    backend, cpu_why = cpu_backend(precision, machine)
    return Choice(backend, onnx_file(manifest, backend, precision), "; ".join([*skipped, f"{why}: {cpu_why}"]))


class Predictor:
    """A bundle's model on one backend. ``predict(batch) -> logits (N, classes) float32``; ``warmup()`` first.

    ``backend``: auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, openvino or torch. ``precision``: fp32, fp16,
    int8 (the bundle must hold that graph, or engine for tensorrt) or bf16 (openvino on a CPU with native
    bfloat16). ``ort``, ``openvino`` and ``torch`` tune those backends;
    ``cuda_graph`` replays one captured CUDA graph per batch size on tensorrt and ort-cuda.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        precision: str = "fp32",
        *,
        ort: OrtOptions | None = None,
        torch: TorchOptions | None = None,
        cuda_graph: bool = False,
        machine: Machine | None = None,
        openvino: OpenVinoOptions | None = None,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        manifest = self.bundle.manifest
        self.machine = machine or probe_machine()
        choice = plan(manifest, backend, precision, self.machine)
        self.backend, self.file, self.reason = choice.backend, choice.file, choice.reason
        self.precision = precision
        self.input_spec = InputSpec.from_manifest(manifest)
        self.max_batch: int | None = None
        self._openvino = openvino
        self._runner = self._open(choice, ort, torch, cuda_graph)

    def _open(self, choice: Choice, ort: OrtOptions | None, torch: TorchOptions | None, cuda_graph: bool) -> Backend:
        if choice.backend == "torch":
            options = torch or TorchOptions(fp16=self.precision == "fp16")
            return TorchBackend(self.bundle.manifest, self.bundle.path, options)
        assert choice.file is not None
        path = self.bundle.check_file(choice.file)
        if choice.backend == "tensorrt":
            from sk_deploy.runtime.trt_backend import TensorRTBackend

            runner = TensorRTBackend(path, self.bundle.manifest["files"][choice.file], cuda_graph=cuda_graph)
            self.max_batch = runner.max_batch
            return runner
        if choice.backend == "openvino":
            return OpenVinoBackend(path, self.bundle, precision=self.precision, options=self._openvino,
                                   cpu=self.machine.cpu)
        options = ort or OrtOptions(cuda_graph=cuda_graph, trt_fp16=self.precision == "fp16")
        return OrtBackend(path, choice.backend, options)

    @property
    def description(self) -> str:
        """``ort-cpu fp32 (model.onnx)``; ``openvino bf16 (model.onnx; compiled bf16)``: what ran, read back."""
        compiled = getattr(self._runner, "compiled_precision", None)
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
        return bool(getattr(self._runner, "device_timing", False))

    def predict_timed(self, batch: Any) -> tuple[np.ndarray, dict[str, float]]:
        """Logits of ``batch`` and the GPU's milliseconds per phase (h2d, compute, d2h; CUDA events), for a
        backend with ``device_timing`` and a batch it runs in one go (within an engine's profile)."""
        if not self.device_timing:
            raise BackendUnavailable(f"{self.backend} on this machine exposes no device-side split of a run")
        array = self.input_spec.check(batch)
        if self.max_batch is not None and len(array) > self.max_batch:
            raise BackendUnavailable(f"a batch of {len(array)} is above the engine's profile ({self.max_batch}): "
                                     "it runs in pieces, so there is no single device-side split")
        return self._runner.run_timed(array)  # type: ignore[attr-defined]

    def example(self, size: int = 1, seed: int = 0) -> np.ndarray:
        """A random input batch of ``size`` pictures in this bundle's input form."""
        rng = np.random.default_rng(seed)
        shape = (size, *self.input_spec.item_shape)
        if self.input_spec.dtype == "uint8":
            return rng.integers(0, 256, shape, dtype=np.uint8)
        return rng.standard_normal(shape, dtype=np.float32)

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
