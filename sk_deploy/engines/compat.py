"""Whether a TensorRT engine recorded in a bundle can run on this machine, decided from its manifest entry alone.

A serialized engine is tied to the TensorRT version that built it and, unless built hardware-compatible, to
the GPU model; deserializing a mismatched one fails deep in TensorRT (or worse). So the metadata is checked
first and a mismatch is one line that says to rebuild.
"""

from __future__ import annotations

import re
from typing import Any

from sk_deploy.bundle import Bundle
from sk_deploy.errors import SkDeployError
from sk_deploy.machine import Machine


class EngineMismatch(SkDeployError, RuntimeError):
    """An engine built for another TensorRT version or GPU; the message says how to rebuild."""


def gpu_slug(name: str) -> str:
    """A file-name-safe short form of a GPU name: ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``."""
    name = re.sub(r"^(nvidia|geforce)\s+", "", name.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def engine_file_name(precision: str, gpu_name: str, tensorrt_version: str) -> str:
    """``model.<precision>.<gpu>.trt<major.minor>.plan``, as ``sk-deploy build`` writes it."""
    major_minor = ".".join(tensorrt_version.split(".")[:2])
    return f"model.{precision}.{gpu_slug(gpu_name)}.trt{major_minor}.plan"


def check_engine(
    entry: dict[str, Any], tensorrt_version: str | None, gpu_name: str | None,
    compute_capability: tuple[int, int] | None, file: str = "engine",
) -> None:
    """Raise EngineMismatch when the engine ``entry`` describes cannot run with this TensorRT on this GPU."""
    rebuild = f"rebuild it here: sk-deploy build BUNDLE --precision {entry.get('precision', 'fp32')}"
    built = entry.get("tensorrt", {})
    if tensorrt_version is None or gpu_name is None or compute_capability is None:
        raise EngineMismatch(f"{file}: a TensorRT engine needs TensorRT and an NVIDIA GPU, and this machine lacks one")
    if built.get("version") != tensorrt_version and not built.get("version_compatible"):
        raise EngineMismatch(f"{file}: built with TensorRT {built.get('version')}, this machine has "
                             f"{tensorrt_version}; {rebuild}")
    gpu = entry.get("gpu", {})
    built_cc = tuple(gpu.get("compute_capability", ()))
    level = entry.get("hardware_compat", "none")
    if level == "ampere+":
        if compute_capability < (8, 0):
            raise EngineMismatch(f"{file}: built hardware-compatible for Ampere and newer, this GPU is sm "
                                 f"{compute_capability[0]}.{compute_capability[1]}; {rebuild}")
        return
    if built_cc != tuple(compute_capability):
        raise EngineMismatch(f"{file}: built for {gpu.get('name')} (sm {'.'.join(map(str, built_cc))}), this GPU is "
                             f"{gpu_name} (sm {compute_capability[0]}.{compute_capability[1]}); {rebuild}")
    if level == "none" and gpu.get("name") != gpu_name:
        raise EngineMismatch(f"{file}: built for {gpu.get('name')}, this GPU is {gpu_name} (same compute capability, "
                             f"but the engine was not built with --hardware-compat same-cc); {rebuild}")


def find_engine(
    bundle: Bundle | dict[str, Any], precision: str, gpu_name: str | None, tensorrt_version: str | None
) -> str | None:
    """The bundle's engine file for ``precision``, preferring one built on this GPU with this TensorRT."""
    engines = Bundle.of(bundle).engines(precision, gpu_name, tensorrt_version)
    return engines[0] if engines else None


def fitting_engine(bundle: Bundle, precision: str, machine: Machine) -> tuple[str | None, str]:
    """The bundle's engine of ``precision`` that runs with this machine's GPU and TensorRT, and why; or None and
    why not (no engine of that precision, or the one there was built elsewhere)."""
    name = find_engine(bundle, precision, machine.gpu_name, machine.tensorrt_version)
    if name is None:
        return None, f"no {precision} TensorRT engine in the bundle (sk-deploy build)"
    try:
        check_engine(bundle.entry(name), machine.tensorrt_version, machine.gpu_name, machine.compute_capability, name)
    except EngineMismatch as exc:
        return None, str(exc)
    return name, f"TensorRT engine {name} matches this GPU and TensorRT"
