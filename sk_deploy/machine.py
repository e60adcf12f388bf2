"""What this machine has: a CUDA GPU, TensorRT, ONNX Runtime's providers, the CPU's model, cores, memory and
instruction-set features; and the one line a person reads when something a backend needs is missing.

It sits below ``runtime/`` and ``engines/`` (both read it; it imports neither). Every optional heavy package
(tensorrt, onnxruntime-gpu) is imported here, lazily, and its absence becomes a ``BackendUnavailable`` whose
message says what to install.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sk_deploy.errors import SkDeployError

#: CPU flags (as /proc/cpuinfo spells them) that decide which ONNX Runtime / OpenVINO kernels are fast:
#: AVX2 and AVX-512 float, VNNI int8 dot products, AVX-512 BF16 and AMX tiles.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
_CPUINFO = Path("/proc/cpuinfo")

TENSORRT_INSTALL = (
    "install it from NVIDIA's package index (pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13, "
    "or tensorrt-cu12 for CUDA 12) or run inside NVIDIA's NGC container nvcr.io/nvidia/tensorrt"
)
ORT_GPU_INSTALL = (
    "install onnxruntime-gpu in place of onnxruntime (pip uninstall -y onnxruntime && pip install onnxruntime-gpu; "
    "both provide the same module, so only one may be installed)"
)


class BackendUnavailable(SkDeployError, RuntimeError):
    """A backend this machine cannot run (no GPU, a package missing); the message says what to do."""


@dataclass(frozen=True)
class Machine:
    """What the backends need to know about this machine."""

    cuda: bool
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    ort_providers: tuple[str, ...]
    tensorrt_version: str | None
    cpu_features: tuple[str, ...] = ()
    """The CPU's instruction-set extensions that decide which kernels run fast (see CPU_FEATURES)."""

    def has_cpu(self, feature: str) -> bool:
        """Whether the CPU has ``feature`` (``avx512_vnni``, ``amx_bf16``, ...)."""
        return feature in self.cpu_features

    def describe(self) -> str:
        """A short line: GPU or none, ONNX Runtime providers, TensorRT version."""
        gpu = f"{self.gpu_name} (sm {self.compute_capability[0]}.{self.compute_capability[1]})" \
            if self.gpu_name and self.compute_capability else "no CUDA GPU"
        providers = ", ".join(p.removesuffix("ExecutionProvider") for p in self.ort_providers) or "none"
        cpu = ", ".join(self.cpu_features) or "none of " + ", ".join(CPU_FEATURES)
        return (f"{gpu}; ONNX Runtime providers: {providers}; TensorRT: {self.tensorrt_version or 'not installed'}; "
                f"CPU: {cpu}")


def probe_machine() -> Machine:
    """Look at this machine once: CUDA through PyTorch, ONNX Runtime's providers, TensorRT's version, the CPU's
    features."""
    import torch

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else None
    capability = tuple(torch.cuda.get_device_capability(0)) if cuda else None
    try:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
    except ImportError:
        providers = ()
    return Machine(cuda, name, capability, providers, tensorrt_version(), cpu_features())  # type: ignore[arg-type]


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
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use the ort-cpu backend"
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


def _cpuinfo() -> str:
    with contextlib.suppress(OSError):
        return _CPUINFO.read_text()
    return ""


def cpu_features(cpuinfo: str | None = None) -> tuple[str, ...]:
    """Which of CPU_FEATURES the CPU has, from the ``flags`` line of /proc/cpuinfo (``cpuinfo``: its text);
    empty where there is no such file (the backends then assume none)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
            break
    return tuple(f for f in CPU_FEATURES if f in flags)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it does not say."""
    cores = set()
    for block in _cpuinfo().strip().split("\n\n"):
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def memory_gb() -> float | None:
    """Total memory from /proc/meminfo, in GB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None
