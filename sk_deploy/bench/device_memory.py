"""The GPU's peak used memory while a benchmark row runs, sampled on a thread: from NVML (``pynvml``, whole
device, every process's memory) when it is installed, else ``cudaMemGetInfo`` through PyTorch (the same
whole-device figure). Neither sees inside a process's allocator, so both count ONNX Runtime's arena and
TensorRT's buffers, which PyTorch's ``max_memory_allocated`` does not; neither is a per-process figure."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def used_bytes_reader(device: int = 0) -> tuple[Callable[[], int], str]:
    """A function giving the device's used bytes now, and the name of its source (``nvml`` or
    ``cudaMemGetInfo``)."""
    from sk_deploy.nvml import open_gpus

    gpus = open_gpus()  # the devices CUDA numbers, in its order under CUDA_VISIBLE_DEVICES
    if device < len(gpus) and gpus[device].memory_used_bytes() is not None:
        gpu = gpus[device]
        return (lambda: gpu.memory_used_bytes() or 0), "nvml"
    import torch  # no NVML (not installed, no driver library): the CUDA runtime's figure instead

    def used() -> int:
        free, total = torch.cuda.mem_get_info(device)
        return int(total - free)

    return used, "cudaMemGetInfo"


class PeakSampler:
    """``with PeakSampler(read) as peak: ...``; then ``peak.peak`` is the largest ``read()`` seen: once on entry,
    every ``interval`` seconds on a thread, and once on exit."""

    def __init__(self, read: Callable[[], int], interval: float = 0.002) -> None:
        self._read = read
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="device-memory", daemon=True)
        self.peak = 0
        self.samples = 0

    def _take(self) -> None:
        self.peak = max(self.peak, self._read())
        self.samples += 1

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._take()

    def __enter__(self) -> PeakSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._take()
