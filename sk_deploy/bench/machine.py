"""The machine a benchmark ran on: CPU model and cores, memory, GPU and driver, library versions, load."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from sk_deploy.bundle import tool_versions
from sk_deploy.machine import cpu_name, memory_gb, physical_cores, probe_machine, usable_cpus

_EXTRA_TOOLS = ("onnxruntime-gpu", "tensorrt", "openvino", "matplotlib", "httpx", "fastapi", "uvicorn")


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, to show whether something else was running."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def nvidia_driver() -> str | None:
    """The NVIDIA driver version (from /proc/driver/nvidia/version or nvidia-smi); None without one."""
    with contextlib.suppress(OSError):
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", Path("/proc/driver/nvidia/version").read_text())
        if match:
            return match.group(1)
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            return out.strip().splitlines()[0] if out.strip() else None
    return None


def gpu_info() -> dict[str, Any] | None:
    """The first CUDA GPU PyTorch sees: name, compute capability, memory, count, CUDA, cuDNN; None without."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "count": torch.cuda.device_count(),
            "compute_capability": list(torch.cuda.get_device_capability(0)),
            "memory_gb": round(props.total_memory / 1024**3, 1), "driver": nvidia_driver(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def library_versions() -> dict[str, str]:
    """Python and the versions of the packages a benchmark depends on (absent ones left out)."""
    versions = tool_versions()
    for name in _EXTRA_TOOLS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def describe_machine() -> dict[str, Any]:
    """Everything a reader needs to know about where figures came from, JSON-ready."""
    probed = probe_machine()
    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "cores_physical": physical_cores(), "cores_usable": usable_cpus(),
        "memory_gb": memory_gb(), "cpu_features": list(probed.cpu_features), "platform": platform.platform(),
        "gpu": gpu_info(),
        "ort_providers": list(probed.ort_providers), "tensorrt": probed.tensorrt_version,
        "libraries": library_versions(), "load_average": load_average(),
    }


def machine_slug(machine: dict[str, Any]) -> str:
    """A folder name for results of this kind of machine: ``nvidia-h100`` or ``cpu-2core``."""
    gpu = machine.get("gpu")
    if gpu:
        tokens = re.split(r"[\s\-_]+", gpu["name"].lower().removeprefix("nvidia").strip())
        kept = []
        for token in tokens:
            if re.fullmatch(r"\d+gb", token) or token in ("pcie", "sxm", "sxm4", "sxm5", "hbm3", "hbm3e", "nvl"):
                break
            kept.append(re.sub(r"[^a-z0-9]", "", token))
        return "-".join(["nvidia", *[k for k in kept if k]])
    return f"cpu-{machine.get('cores') or os.cpu_count()}core"


def describe_short(machine: dict[str, Any]) -> str:
    """One line: CPU and cores, GPU and driver or none."""
    gpu = machine.get("gpu")
    where = (f"{gpu['name']} (driver {gpu.get('driver') or '?'}, CUDA {gpu.get('cuda') or '?'})" if gpu
             else "no GPU")
    cores = machine.get("cores")
    physical = machine.get("cores_physical")
    usable = machine.get("cores_usable")
    core_text = (f"{cores} cores" + (f" ({physical} physical)" if physical and physical != cores else "")
                 + (f", {usable} usable by this process" if usable and usable != cores else ""))
    return f"{machine.get('cpu', '?')}, {core_text}, {machine.get('memory_gb', '?')} GB; {where}"


def machine_libraries(machine: dict[str, Any]) -> str:
    """The versions that decide the figures: ``torch 2.13.0, onnxruntime 1.32.0, ...`` (those installed)."""
    libs = machine.get("libraries", {})
    names = ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "openvino")
    return ", ".join(f"{k} {libs[k]}" for k in names if k in libs) or "no library versions recorded"
