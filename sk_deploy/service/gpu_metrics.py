"""The GPUs' figures in ``/metrics`` under Triton's names (``nv_gpu_utilization``, ``nv_gpu_memory_total_bytes``,
``nv_gpu_memory_used_bytes``, ``nv_gpu_power_usage``, ``nv_gpu_power_limit``, ``nv_energy_consumption``), one
sample per GPU labelled ``gpu_uuid`` as Triton labels them, read from NVML at each scrape. Where there is no GPU,
or a GPU does not report a figure, the figure is absent (a dashboard shows no data), never a zero that reads as
an idle GPU."""

from __future__ import annotations

from sk_deploy.nvml import Gpu, GpuReading, open_gpus
from sk_deploy.service.metrics import text_family

#: (Triton's name, its help text, its type, the reading's field)
FAMILIES = (
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", "gauge", "utilization"),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", "gauge", "memory_total_bytes"),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", "gauge", "memory_used_bytes"),
    ("nv_gpu_power_usage", "GPU power usage in watts", "gauge", "power_watts"),
    ("nv_gpu_power_limit", "GPU power management limit in watts", "gauge", "power_limit_watts"),
    ("nv_energy_consumption", "GPU energy consumption in joules since the server started", "counter",
     "energy_joules"),
)


def render_readings(readings: list[GpuReading], energy_at_start: dict[str, float]) -> bytes:
    """The families of ``FAMILIES`` for ``readings``, each sample a GPU that reports the figure; energy counted
    from ``energy_at_start`` (per GPU uuid). A family no GPU reports is left out whole."""
    out = []
    for name, help_text, kind, field in FAMILIES:
        samples = []
        for reading in readings:
            value = getattr(reading, field)
            if value is None:
                continue
            if field == "energy_joules":
                value -= energy_at_start.get(reading.uuid, 0.0)
            samples.append((f'gpu_uuid="{reading.uuid}"', value))
        if samples:
            out.append(text_family(name, help_text, kind, samples))
    return b"".join(out)


class GpuMetrics:
    """The GPUs this process may use, read at each scrape; energy counted from when this was made."""

    def __init__(self, gpus: list[Gpu]) -> None:
        self._gpus = gpus
        self._energy_at_start = {r.uuid: r.energy_joules for r in self._read() if r.energy_joules is not None}

    @classmethod
    def open(cls) -> GpuMetrics | None:
        """The machine's GPUs' metrics, or None where it has none that NVML sees."""
        gpus = open_gpus()
        return cls(gpus) if gpus else None

    def _read(self) -> list[GpuReading]:
        return [gpu.read() for gpu in self._gpus]

    def render(self) -> bytes:
        """Every GPU's figures now, in the Prometheus text format."""
        return render_readings(self._read(), self._energy_at_start)
