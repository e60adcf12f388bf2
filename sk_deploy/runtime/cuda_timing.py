"""The GPU's own clock for the phases of one run: CUDA events between host-to-device copy, compute and
device-to-host copy, recorded on the stream the work goes to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PHASES = ("h2d", "compute", "d2h")


class CudaPhases:
    """``mark()`` before the first phase and after each one (on the current CUDA stream, or ``stream``);
    ``elapsed()`` waits for the last mark and returns the milliseconds of each phase as the GPU measured them."""

    def __init__(self, names: Sequence[str] = PHASES) -> None:
        import torch

        self.names = tuple(names)
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(len(self.names) + 1)]
        self._marked = 0

    def mark(self, stream: Any = None) -> None:
        """Record the next phase boundary."""
        self._events[self._marked].record(stream)
        self._marked += 1

    def elapsed(self) -> dict[str, float]:
        """Milliseconds per phase, after the last event has completed."""
        if self._marked != len(self._events):
            raise RuntimeError(f"marked {self._marked} of {len(self._events)} phase boundaries")
        self._events[-1].synchronize()
        return {name: float(self._events[i].elapsed_time(self._events[i + 1])) for i, name in enumerate(self.names)}
