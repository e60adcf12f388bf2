"""What a request costs the server in memory, from the server process's own peak resident size (Linux
``/proc/PID/status`` VmHWM, reset through ``clear_refs`` before each measurement): a 1x4000 or 4000x1 picture
is answered in well under 64 MB (only its crop is resampled); 1000 tiny pictures in one JSON batch are
refused in under 32 MB (counted before any is decoded); after a burst of large requests the resident size
comes back near where it was (large buffers mapped on their own, malloc_trim)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
from PIL import Image

from sk_deploy.bundle import Bundle
from tests.servers import ServerProcess, served
from tests.service.test_errors import png_bytes

MB = 1024 * 1024
T = TypeVar("T")


def status_bytes(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` size field (VmRSS, VmHWM) in bytes."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def peak_growth(pid: int, action: Callable[[], T]) -> tuple[int, T]:
    """How far the process's resident size rose above where it was while ``action`` ran (bytes), and what
    ``action`` returned."""
    before = status_bytes(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := the current resident size
    result = action()
    return status_bytes(pid, "VmHWM") - before, result


@pytest.fixture(scope="module")
def lenient(small_bundle: Bundle) -> Iterator[ServerProcess]:
    """A server that accepts any aspect ratio, so the long, thin pictures are decoded and answered."""
    with served(small_bundle.path, "--max-aspect-ratio", "5000", "--no-access-log") as process:
        try:
            Path(f"/proc/{process.process.pid}/clear_refs").write_text("5")
        except OSError as exc:
            pytest.skip(f"cannot reset the server's peak RSS here ({exc})")
        yield process


def test_long_thin_pictures_are_answered_in_bounded_memory(lenient: ServerProcess) -> None:
    with httpx.Client(base_url=lenient.url, timeout=60) as client:
        for size in ((1, 4000), (4000, 1)):
            data = png_bytes(*size)
            growth, response = peak_growth(lenient.process.pid, lambda d=data: client.post(
                "/v1/classify", content=d, headers={"Content-Type": "image/png"}))
            assert response.status_code == 200, response.text
            assert growth < 64 * MB, f"{size}: {growth / MB:.1f} MB"


def test_a_thousand_tiny_pictures_are_refused_before_decoding(lenient: ServerProcess) -> None:
    tiny = base64.b64encode(png_bytes(2, 2)).decode()
    with httpx.Client(base_url=lenient.url, timeout=60) as client:
        growth, response = peak_growth(lenient.process.pid, lambda: client.post(
            "/v1/classify/batch", json={"images": [tiny] * 1000}))
    assert response.status_code == 413 and "--max-queue" in response.json()["error"]
    assert growth < 32 * MB, f"{growth / MB:.1f} MB"


def test_memory_is_given_back_after_a_burst(lenient: ServerProcess) -> None:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")  # 4 MB that decode to 4 MB each, 3 to a request
    files = [("files", (f"{i}.png", buffer.getvalue(), "image/png")) for i in range(3)]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=lenient.url, timeout=60) as client:
            return [r.status_code for r in
                    await asyncio.gather(*(client.post("/v1/classify/batch", files=files) for _ in range(12)))]

    pid = lenient.process.pid
    time.sleep(1.0)  # earlier requests' trims are done
    before = status_bytes(pid, "VmRSS")
    growth, statuses = peak_growth(pid, lambda: asyncio.run(burst()))
    assert statuses == [200] * 12
    assert growth > 64 * MB, "the burst must cost memory for the test to mean anything"
    settled = before + growth
    for _ in range(30):
        time.sleep(0.1)
        settled = status_bytes(pid, "VmRSS")
        if settled - before < 32 * MB:
            break
    assert settled - before < 32 * MB, (f"peak +{growth / MB:.0f} MB, still +{(settled - before) / MB:.0f} MB "
                                        f"after the burst")
