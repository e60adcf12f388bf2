"""What this machine has: a CUDA GPU, TensorRT, ONNX Runtime's providers, the CPU's model, cores, memory and
instruction-set features; and the one line a person reads when something a backend needs is missing.

It sits below ``runtime/`` and ``engines/`` (both read it; it imports neither). Every optional heavy package
(tensorrt, onnxruntime-gpu, openvino) is imported here, lazily, and its absence becomes a ``BackendUnavailable`` whose
message says what to install.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType

from sk_deploy.errors import SkDeployError

#: CPU flags (as /proc/cpuinfo spells them) that decide which ONNX Runtime / OpenVINO kernels are fast:
#: AVX2 and AVX-512 float, VNNI int8 dot products, AVX-512 BF16 and AMX tiles.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: native bfloat16 (AVX-512 BF16 dot products or AMX tiles); int8 dot products (VNNI or AMX int8)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: the flags a benchmark or a refusal names, widest first
REPORTED_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
_CPUINFO = Path("/proc/cpuinfo")

TENSORRT_INSTALL = (
    "install it from NVIDIA's package index (pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13, "
    "or tensorrt-cu12 for CUDA 12) or run inside NVIDIA's NGC container nvcr.io/nvidia/tensorrt"
)
ORT_GPU_INSTALL = (
    "install onnxruntime-gpu in place of onnxruntime (pip uninstall -y onnxruntime && pip install onnxruntime-gpu; "
    "both provide the same module, so only one may be installed)"
)
OPENVINO_INSTALL = "pip install openvino (PyPI's wheel carries its own CPU plugin)"


class BackendUnavailable(SkDeployError, RuntimeError):
    """A backend this machine cannot run (no GPU, a package missing); the message says what to do."""


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and its instruction-set flags (lower case, as /proc/cpuinfo spells them)."""

    name: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """Whether the CPU has int8 dot-product instructions (VNNI or AMX int8)."""
        return any(flag in self.flags for flag in INT8_FLAGS)

    def reported(self) -> list[str]:
        """The flags that decide CPU precisions, those present, widest first."""
        return [flag for flag in REPORTED_FLAGS if flag in self.flags]

    def describe(self) -> str:
        """``Intel(R) Xeon(R) Processor (amx_bf16, avx512_bf16, ...)``."""
        return f"{self.name} ({', '.join(self.reported()) or 'none of ' + ', '.join(REPORTED_FLAGS)})"


NO_CPU_FACTS = CpuFeatures("unknown", frozenset())


@dataclass(frozen=True)
class Machine:
    """What the backends need to know about this machine."""

    cuda: bool
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    ort_providers: tuple[str, ...]
    tensorrt_version: str | None
    openvino_version: str | None = None
    cpu: CpuFeatures = field(default=NO_CPU_FACTS)
    """The CPU's model and instruction-set flags (see CPU_FEATURES, BF16_FLAGS, INT8_FLAGS)."""

    @property
    def cpu_features(self) -> tuple[str, ...]:
        """Which of CPU_FEATURES the CPU has."""
        return tuple(f for f in CPU_FEATURES if f in self.cpu.flags)

    def describe(self) -> str:
        """A short line: GPU or none, ONNX Runtime providers, TensorRT and OpenVINO versions, the CPU."""
        gpu = f"{self.gpu_name} (sm {self.compute_capability[0]}.{self.compute_capability[1]})" \
            if self.gpu_name and self.compute_capability else "no CUDA GPU"
        providers = ", ".join(p.removesuffix("ExecutionProvider") for p in self.ort_providers) or "none"
        return (f"{gpu}; ONNX Runtime providers: {providers}; TensorRT: {self.tensorrt_version or 'not installed'}; "
                f"OpenVINO: {self.openvino_version or 'not installed'}; CPU: {self.cpu.describe()}")


def probe_machine() -> Machine:
    """Look at this machine once: CUDA through PyTorch, ONNX Runtime's providers, TensorRT's version, the CPU's
    features."""
    cuda, name, capability = False, None, None
    if nvidia_driver_visible():
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


def nvidia_driver_visible() -> bool:
    """Whether an NVIDIA driver's device may be here: on Linux its control node (``/dev/nvidiactl``, or WSL's
    ``/dev/dxg``), elsewhere always. Without one PyTorch sees no CUDA GPU, so on a CPU machine ``probe_machine``
    does not import it (2 to 3 s and 300 MB that serving an ONNX graph never needs)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/dxg"))


def openvino_version() -> str | None:
    """The installed OpenVINO's version (``2026.4.1``), or None (read from its metadata: no import)."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or a BackendUnavailable saying how to install it."""
    return _import_package("openvino", "OpenVINO", OPENVINO_INSTALL)


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, or None (without importing its CUDA libraries twice)."""
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailable:
        return None


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a BackendUnavailable saying how to install it."""
    return _import_package("tensorrt", "TensorRT", TENSORRT_INSTALL)


def _import_package(module: str, name: str, install: str) -> ModuleType:
    """``module``, or a BackendUnavailable: not installed (how to install it), or its libraries do not load."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(f"{name} is not installed: {install}") from None
    except OSError as exc:  # the wheel is there but its native (CUDA) libraries are not
        raise BackendUnavailable(f"{name} is installed but cannot load its libraries ({exc})") from None


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


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features of the first processor described in ``text`` (the format of /proc/cpuinfo; ARM's
    ``Features`` line counts as its flags)."""
    name, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name == "unknown":
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CpuFeatures(name, flags)


def detect_cpu() -> CpuFeatures:
    """This machine's CPU features; no flags where the kernel does not list them (so nothing is claimed)."""
    found = parse_cpuinfo(_cpuinfo())
    return found if found.name != "unknown" else CpuFeatures(platform.processor() or "unknown", found.flags)


def bf16_refusal(cpu: CpuFeatures) -> str | None:
    """Why bf16 cannot run on ``cpu`` (one line), or None when it can: bf16 is served only where the CPU computes
    it natively (``avx512_bf16`` or ``amx_bf16``); emulated, it is slower than float32."""
    if cpu.native_bf16:
        return None
    return (f"bf16 needs a CPU with native bfloat16 ({' or '.join(BF16_FLAGS)}); this one has none ({cpu.describe()}):"
            " use --precision fp32, or int8 where the bundle has it")


def cpu_features(cpuinfo: str | None = None) -> tuple[str, ...]:
    """Which of CPU_FEATURES the CPU has, from the ``flags`` line of /proc/cpuinfo (``cpuinfo``: its text);
    empty where there is no such file (the backends then assume none)."""
    flags = (detect_cpu() if cpuinfo is None else parse_cpuinfo(cpuinfo)).flags
    return tuple(f for f in CPU_FEATURES if f in flags)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess elsewhere)."""
    return detect_cpu().name


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None where it does not say."""
    cores = set()
    for block in _cpuinfo().strip().split("\n\n"):
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, membership: str | None = None) -> int | None:
    """The CPUs a cgroup CPU limit lets this process use, rounded up; None where there is none. Docker's
    ``--cpus`` and Kubernetes' ``limits.cpu`` are such a limit: a share of time, not a set of CPUs, so the process
    still sees every core. cgroup v2: ``cpu.max`` of the process's cgroup (``membership``: the text of
    /proc/self/cgroup) and of each above it, the tightest counting; v1: ``cpu/cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    own = next((line[3:] for line in membership.splitlines() if line.startswith("0::")), "/")
    folder, limits = root / own.strip().lstrip("/"), []
    for place in (folder, *(p for p in folder.parents if p.is_relative_to(root))):
        with contextlib.suppress(OSError, ValueError):
            quota, period = (place / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(-(-int(quota) // int(period)))
    with contextlib.suppress(OSError, ValueError):
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        if quota > 0:
            limits.append(-(-quota // int((root / "cpu" / "cpu.cfs_period_us").read_text())))
    return max(1, min(limits)) if limits else None


def usable_cpus() -> int:
    """How many CPUs this process may use: its CPU set (``taskset``, a container's cpuset, a CPU manager's
    exclusive cores; the machine's count where the system has no such call: macOS, Windows), or fewer where a
    cgroup CPU limit allows less (``cgroup_cpu_limit``)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    return min(allowed, cgroup_cpu_limit() or allowed)


def confined_cpus() -> int | None:
    """``usable_cpus()`` where that is fewer than the machine has; None where the process may use all of them."""
    usable = usable_cpus()
    return usable if usable < (os.cpu_count() or usable) else None


def runtime_threads(requested: int = 0) -> int:
    """The thread count to give a runtime (ONNX Runtime's intra-op threads, OpenVINO's ``INFERENCE_NUM_THREADS``):
    ``requested``, else the CPUs this process is confined to, else 0 (the runtime's own default). ONNX Runtime's
    default, one pinned thread per physical core, ignores the process's CPU set and a cgroup's CPU limit; OpenVINO
    keeps to a CPU set but not to a CPU limit: either spins threads the process may not run."""
    return requested or confined_cpus() or 0


def memory_gb() -> float | None:
    """Total memory from /proc/meminfo, in GB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None
