"""What this machine can run, and the one line a person reads when something is missing.

Every optional heavy package (tensorrt, onnxruntime-gpu, openvino) is imported here, lazily, and its absence becomes a
``BackendUnavailable`` whose message says what to install; nothing else in ``runtime/`` imports them directly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType

from sk_deploy.runtime.cpu_features import CpuFeatures, detect_cpu

TENSORRT_INSTALL = (
    "install it from NVIDIA's package index (pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13, "
    "or tensorrt-cu12 for CUDA 12) or run inside NVIDIA's NGC container nvcr.io/nvidia/tensorrt"
)
ORT_GPU_INSTALL = (
    "install onnxruntime-gpu in place of onnxruntime (pip uninstall -y onnxruntime && pip install onnxruntime-gpu; "
    "both provide the same module, so only one may be installed)"
)


OPENVINO_INSTALL = "pip install openvino (PyPI's wheel carries its own CPU plugin)"


class BackendUnavailable(RuntimeError):
    """A backend this machine cannot run (no GPU, a package missing); the message says what to do."""


@dataclass(frozen=True)
class Machine:
    """What the backends need to know about this machine."""

    cuda: bool
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    ort_providers: tuple[str, ...]
    tensorrt_version: str | None
    openvino_version: str | None = None
    cpu: CpuFeatures = field(default_factory=lambda: CpuFeatures("unknown", frozenset()))

    def describe(self) -> str:
        """A short line: GPU or none, ONNX Runtime providers, TensorRT version."""
        gpu = f"{self.gpu_name} (sm {self.compute_capability[0]}.{self.compute_capability[1]})" \
            if self.gpu_name and self.compute_capability else "no CUDA GPU"
        providers = ", ".join(p.removesuffix("ExecutionProvider") for p in self.ort_providers) or "none"
        return (f"{gpu}; ONNX Runtime providers: {providers}; TensorRT: {self.tensorrt_version or 'not installed'}; "
                f"OpenVINO: {self.openvino_version or 'not installed'}; CPU: {self.cpu.describe()}")


def probe_machine() -> Machine:
    """Look at this machine once: CUDA through PyTorch, ONNX Runtime's providers, TensorRT's version."""
    import torch

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    capability = tuple(torch.cuda.get_device_capability(0)) if cuda else None
    try:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
    except ImportError:
        providers = ()
    return Machine(cuda, name, capability, providers, tensorrt_version(),  # type: ignore[arg-type]
                   openvino_version(), detect_cpu())


def openvino_version() -> str | None:
    """The installed OpenVINO's version (``2026.4.1``), or None (read from its metadata: no import)."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or a BackendUnavailable saying how to install it."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise BackendUnavailable(f"OpenVINO is not installed: {OPENVINO_INSTALL}") from None


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None (without importing its CUDA libraries twice)."""
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailable:
        return None


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a BackendUnavailable saying how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise BackendUnavailable(f"TensorRT is not installed: {TENSORRT_INSTALL}") from None
    except OSError as exc:  # the wheel is there but its CUDA libraries are not
        raise BackendUnavailable(f"TensorRT is installed but cannot load its libraries ({exc})") from None


def require_cuda(what: str) -> None:
    """Raise a BackendUnavailable for ``what`` when PyTorch sees no CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"{what} needs an NVIDIA GPU, and none is visible here "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --backend ort-cpu"
        )


def require_ort_provider(provider: str, machine: Machine | None = None) -> None:
    """Raise a BackendUnavailable when ONNX Runtime lacks ``provider`` (CUDA or TensorRT)."""
    machine = machine or probe_machine()
    if provider in machine.ort_providers:
        return
    if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in machine.ort_providers:
        raise BackendUnavailable(
            f"ONNX Runtime's TensorRT provider is not available here (it needs TensorRT 10's libraries): "
            f"{TENSORRT_INSTALL}"
        )
    raise BackendUnavailable(
        f"ONNX Runtime has no {provider.removesuffix('ExecutionProvider')} provider here "
        f"(has: {', '.join(machine.ort_providers) or 'none'}): {ORT_GPU_INSTALL}"
    )
