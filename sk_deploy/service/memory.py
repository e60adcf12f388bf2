"""Giving memory back after large requests: glibc keeps freed heap pages (decoded pictures, batches, request
bodies) mapped, so a burst of large requests would leave the server's resident size at its peak for good.
``malloc_trim(0)`` returns the free pages of every arena to the system; it runs on a worker thread, at most
once per ``interval`` seconds, after a request that read a large body."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import platform
import time
from pathlib import Path


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_blocks(threshold: int = 1 << 20) -> bool:
    """Serve every allocation of ``threshold`` bytes or more from its own mapping, returned to the system on
    free (glibc ``mallopt(M_MMAP_THRESHOLD)``; fixing it also stops glibc raising it after each large free, which
    would put picture-sized buffers back on the heap); False where there is no glibc."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_MMAP_THRESHOLD, threshold))


def trim() -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim(0)``); False where there is no glibc."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


def resident_bytes(pid: int | str = "self") -> int:
    """The resident set size of process ``pid`` (Linux ``/proc``), in bytes; 0 where there is no /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Trimmer:
    """``trim()`` on a worker thread after large requests: ``delay`` seconds after one (the threads that
    decoded and ran its pictures have let go of them by then), at most once per ``interval`` seconds, and
    always once after the last of a burst (a request that comes while none is scheduled schedules one)."""

    def __init__(self, interval: float = 0.5, delay: float = 0.2) -> None:
        self.interval, self.delay = interval, delay
        self._last = 0.0
        self._scheduled = False

    def soon(self) -> None:
        """Schedule a trim (called from the event loop)."""
        if _LIBC is None or self._scheduled:
            return
        self._scheduled = True
        wait = max(self.delay, self._last + self.interval - time.monotonic())
        asyncio.get_running_loop().call_later(wait, self._run)

    def _run(self) -> None:
        self._scheduled, self._last = False, time.monotonic()
        asyncio.get_running_loop().run_in_executor(None, trim)
