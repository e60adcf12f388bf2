"""Shared by the benchmark scripts: the machine's description and interleaved timing of ONNX Runtime sessions."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, to show whether something else was running."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def measure(
    sessions: dict, feeds: dict[str, dict[str, np.ndarray]], rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per run of each ONNX Runtime session on its feed, interleaved round by round in a rotating
    order, so drift and background load hit every variant alike."""
    names = list(sessions)
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append(time.perf_counter() - start)
    return times
