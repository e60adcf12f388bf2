"""What a request costs the server in memory, from the server process's own peak resident size (Linux
``/proc/PID/status`` VmHWM, reset through ``clear_refs`` before each measurement): a 1x4000 or 4000x1 picture
is answered in well under 64 MB (only its crop is resampled); 1000 tiny pictures in one JSON batch are
refused in under 32 MB (counted before any is decoded); after a burst of large requests the resident size
comes back near where it was (large buffers mapped on their own, malloc_trim); a KServe v2 JSON tensor of 25
224x224 pictures costs at most 4x its body (its data read straight into one float32 array; as Python floats it
cost 36x), and one of NaN is refused for less."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
from PIL import Image

from sk_deploy.bundle import Bundle
from tests.bundles import realistic_bundle
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


@pytest.fixture(scope="module")
def full_size(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """skresnet18 at 224x224 on ONNX Runtime, with room for a 25-picture request on a loaded machine."""
    bundle = realistic_bundle("skresnet18", tmp_path_factory.mktemp("skresnet18-224"), size=224)
    with served(bundle.path, "--backend", "ort-cpu", "--timeout-ms", "300000", "--no-access-log") as process:
        try:
            Path(f"/proc/{process.process.pid}/clear_refs").write_text("5")
        except OSError as exc:
            pytest.skip(f"cannot reset the server's peak RSS here ({exc})")
        yield process


def v2_json(data: list[int] | list[float]) -> bytes:
    """A compact KServe v2 JSON body of 25 pictures (FP32 [25, 3, 224, 224]) holding ``data``."""
    return json.dumps({"inputs": [{"name": "input", "shape": [25, 3, 224, 224], "datatype": "FP32", "data": data}]},
                      separators=(",", ":")).encode()


def test_a_v2_json_tensor_costs_at_most_four_times_its_body(full_size: ServerProcess) -> None:
    values = np.random.default_rng(0).integers(0, 10, 25 * 3 * 224 * 224)
    body = v2_json(values.tolist())  # one digit a value: 7.5 MB, the body whose Python floats cost 275 MB
    assert 7.4e6 < len(body) < 7.6e6
    pid = full_size.process.pid
    with httpx.Client(base_url=full_size.url, timeout=300) as client:

        def infer() -> httpx.Response:
            return client.post("/v2/models/skresnet18/infer", content=body,
                               headers={"Content-Type": "application/json"})

        for _ in range(2):  # ONNX Runtime's arena grows to a 25-picture batch and its memory pattern, then keeps it
            warm = infer()
            assert warm.status_code == 200, warm.text
        time.sleep(1.0)  # the trim after a large request is done
        growth, response = peak_growth(pid, infer)
        nan = v2_json(["NaN"] * values.size).replace(b'"NaN"', b"NaN")  # as Python's json writes NaN
        time.sleep(1.0)
        nan_growth, refused = peak_growth(pid, lambda: client.post(
            "/v2/models/skresnet18/infer", content=nan, headers={"Content-Type": "application/json"}))
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["shape"] == [25, 1000] and np.isfinite(out["data"]).all()
    assert growth <= 4 * len(body), f"{growth / 1e6:.1f} MB for a {len(body) / 1e6:.1f} MB body"
    assert refused.status_code == 400 and "inputs[0].data[0]: Input should be a finite number" in refused.text
    assert nan_growth <= 4 * len(nan), f"{nan_growth / 1e6:.1f} MB to refuse {len(nan) / 1e6:.1f} MB of NaN"
    print(f"v2 JSON of 25 pictures: body {len(body) / 1e6:.1f} MB, peak RSS growth {growth / 1e6:.1f} MB "
          f"({growth / len(body):.1f}x); {len(nan) / 1e6:.1f} MB of NaN refused for {nan_growth / 1e6:.1f} MB "
          f"({nan_growth / len(nan):.1f}x)")
