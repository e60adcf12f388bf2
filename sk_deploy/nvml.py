"""NVIDIA GPUs as NVML sees them (nvidia-ml-py's ``pynvml``): the ones this process may use, and what each reads
now (utilisation, memory, power, energy). On a machine without NVIDIA's driver there are none: ``open_gpus``
returns an empty list, and every figure built on it is absent rather than zero."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class GpuReading:
    """One GPU's figures at one instant; None where the GPU or driver does not report that figure."""

    uuid: str
    utilization: float | None
    """Fraction of the last sample period in which a kernel ran, 0.0 to 1.0."""
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    power_watts: float | None
    power_limit_watts: float | None
    energy_joules: float | None
    """Energy used since the driver was last loaded."""


def visible_indices(count: int, uuids: list[str], setting: str | None) -> list[int]:
    """The NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` (``setting``) leaves visible: all when unset; its
    entries matched as indices, or as (prefixes of) UUIDs; the list stops at the first entry that matches none,
    as CUDA's does. Indices are NVML's order, which is CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    if setting is None:
        return list(range(count))
    chosen: list[int] = []
    for entry in (e.strip() for e in setting.split(",")):
        if entry.isdigit() and int(entry) < count:
            index = int(entry)
        else:
            index = next((i for i, u in enumerate(uuids) if entry and u.startswith(entry)), -1)
        if index < 0 or index in chosen:
            break
        chosen.append(index)
    return chosen


class Gpu:
    """One GPU through NVML; ``read()`` takes its figures now."""

    def __init__(self, nvml: Any, handle: Any, uuid: str) -> None:
        self._nvml = nvml
        self._handle = handle
        self.uuid = uuid

    def _ask(self, query: Callable[[Any], T]) -> T | None:
        try:
            return query(self._handle)
        except self._nvml.NVMLError:  # NotSupported on this GPU, or a transient driver error: absent, not zero
            return None

    def memory_used_bytes(self) -> int | None:
        """Bytes of the GPU's memory in use now, by every process (one NVML call: cheap enough to sample)."""
        memory = self._ask(self._nvml.nvmlDeviceGetMemoryInfo)
        return None if memory is None else int(memory.used)

    def read(self) -> GpuReading:
        """The GPU's figures now (NVML's units converted: percent to a fraction, milliwatts to watts, millijoules
        to joules)."""
        nvml = self._nvml
        utilization = self._ask(lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
        memory = self._ask(nvml.nvmlDeviceGetMemoryInfo)
        power = self._ask(nvml.nvmlDeviceGetPowerUsage)
        limit = self._ask(nvml.nvmlDeviceGetEnforcedPowerLimit)
        energy = self._ask(nvml.nvmlDeviceGetTotalEnergyConsumption)
        return GpuReading(
            uuid=self.uuid,
            utilization=None if utilization is None else utilization / 100.0,
            memory_total_bytes=None if memory is None else int(memory.total),
            memory_used_bytes=None if memory is None else int(memory.used),
            power_watts=None if power is None else power / 1000.0,
            power_limit_watts=None if limit is None else limit / 1000.0,
            energy_joules=None if energy is None else energy / 1000.0,
        )


def open_gpus() -> list[Gpu]:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES`` honoured), or none where NVML is not installed
    or finds no driver (a CPU machine)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [str(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
    except Exception:  # not installed (ImportError), no driver library or no device (NVMLError): no GPU figures
        return []
    indices = visible_indices(len(handles), uuids, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return [Gpu(pynvml, handles[i], uuids[i]) for i in indices]
