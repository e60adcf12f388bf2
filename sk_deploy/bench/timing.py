"""Timing loops: bounded by time and count, interleaved between variants, or with CUDA events; peak memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Loop:
    """What a timed loop saw: milliseconds per call, the extra figures each call returned, and wall seconds."""

    ms: list[float] = field(default_factory=list)
    extras: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def timed_loop(call: Callable[[], dict[str, float] | None], duration_s: float, min_runs: int = 1,
               max_runs: int | None = None) -> Loop:
    """Call ``call`` until ``duration_s`` seconds have passed and at least ``min_runs`` calls were made, or
    ``max_runs`` calls were made; the wall time of each call in ms, and what each call returned (a dict of
    figures such as device-side phase times, or None)."""
    loop = Loop()
    start = time.perf_counter()
    while True:
        begin = time.perf_counter()
        extra = call()
        loop.ms.append((time.perf_counter() - begin) * 1000)
        if extra is not None:
            loop.extras.append(extra)
        runs, elapsed = len(loop.ms), time.perf_counter() - start
        if (max_runs is not None and runs >= max_runs) or (runs >= min_runs and elapsed >= duration_s):
            loop.seconds = elapsed
            return loop


def warm_up(call: Callable[[], object], seconds: float, min_runs: int = 1) -> int:
    """Call ``call`` for ``seconds`` (at least ``min_runs`` times); the number of calls."""
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < seconds:
        call()
        runs += 1
    return runs


def wall_times(call: Callable[[], object], iters: int, warmup: int) -> list[float]:
    """Milliseconds per call of ``call`` by the wall clock, ``iters`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def cuda_event_times(call: Callable[[], object], iters: int, warmup: int) -> list[float]:
    """Milliseconds per call of ``call`` measured by the GPU with CUDA events on the current stream (the
    work ``call`` queues there), ``iters`` times after ``warmup`` calls. Needs a CUDA device."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            call()
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return times


def interleaved(sessions: Mapping[str, Any], feeds: Mapping[str, dict[str, Any]], rounds: int,
                warmup: int) -> dict[str, list[float]]:
    """Seconds per run of each ONNX Runtime session on its feed, interleaved round by round in a rotating
    order, so drift and background load hit every variant alike."""
    return interleaved_calls({name: _session_call(session, feeds[name]) for name, session in sessions.items()},
                             rounds, warmup)


def _session_call(session: Any, feed: dict[str, Any]) -> Callable[[], object]:
    return lambda: session.run(None, feed)


def interleaved_calls(calls: Mapping[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, ``warmup`` untimed calls each, then ``rounds`` rounds that call every
    variant once in a rotating order, so drift and background load hit every variant alike."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def reset_peak_rss() -> bool:
    """Restart the kernel's record of this process's peak resident memory (Linux); False where it cannot."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB since start or the last ``reset_peak_rss`` (Linux VmHWM)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
