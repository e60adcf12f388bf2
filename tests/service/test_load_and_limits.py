"""The server under load and at its limits, for real on 127.0.0.1: 64 concurrent clients for a bounded time
(every request answered, no 5xx other than deliberate 429/503/504, batches form); a full queue answers 429
with Retry-After; a request past its deadline 504; a client that goes away costs no inference; on SIGTERM
in-flight requests finish while new ones get 503."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sk_deploy.bundle import Bundle
from tests.conftest import make_image
from tests.servers import ServerProcess, served, start_server

JPEG = {"Content-Type": "image/jpeg"}
CLIENTS, SECONDS, MAX_REQUESTS = 64, 4.0, 3000


def metric(client: httpx.Client, prefix: str) -> float:
    """The sum of the samples whose line starts with ``prefix`` in /metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith(prefix))


async def hammer(url: str, pictures: list[bytes]) -> tuple[Counter[int | str], int]:
    """CLIENTS clients posting pictures back to back for SECONDS (MAX_REQUESTS at most): status counts
    (transport errors by name) and the number of requests sent."""
    statuses: Counter[int | str] = Counter()
    sent = 0
    stop = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def one_client(n: int) -> None:
            nonlocal sent
            i = n
            while time.monotonic() < stop and sent < MAX_REQUESTS:
                sent += 1
                try:
                    response = await client.post("/v1/classify", content=pictures[i % len(pictures)], headers=JPEG)
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        assert response.json()["predictions"]
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                i += 1

        await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    return statuses, sent


def test_64_concurrent_clients(server: ServerProcess, client: httpx.Client, tmp_path: Path) -> None:
    pictures = [make_image(tmp_path / f"{i}.jpg", size=(320 + 16 * i, 240), seed=i).read_bytes() for i in range(8)]
    images_before, batches_before = metric(client, "nv_inference_count{"), metric(client, "nv_inference_exec_count{")
    statuses, sent = asyncio.run(hammer(server.url, pictures))
    images = metric(client, "nv_inference_count{") - images_before
    batches = metric(client, "nv_inference_exec_count{") - batches_before
    assert sum(statuses.values()) == sent, f"requests lost: {statuses}"
    assert set(statuses) <= {200, 429, 503, 504}, statuses
    assert statuses[200] > 0 and images == statuses[200]
    assert images / batches > 1, f"no batches formed: {images} pictures in {batches} batches"
    assert client.post("/v1/classify", content=pictures[0], headers=JPEG).status_code == 200


@pytest.fixture(scope="module")
def slow_server(small_bundle: Bundle) -> Iterator[ServerProcess]:
    """Batches wait 400 ms to fill and at most 4 pictures may wait: limits are easy to reach."""
    with served(small_bundle.path, "--max-delay-ms", "400", "--max-queue", "4", "--max-batch", "8") as process:
        yield process


def test_full_queue_answers_429_with_retry_after(slow_server: ServerProcess, generated_jpeg: Path) -> None:
    data = generated_jpeg.read_bytes()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/classify", content=data, headers=JPEG) for _ in range(12)))

    responses = asyncio.run(burst())
    codes = Counter(r.status_code for r in responses)
    assert set(codes) == {200, 429} and codes[200] >= 4, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and "queue is full" in refused.json()["error"]


def test_more_pictures_than_the_queue_holds_is_413(slow_server: ServerProcess, generated_jpeg: Path) -> None:
    files = [("files", (f"{i}.jpg", generated_jpeg.read_bytes(), "image/jpeg")) for i in range(5)]
    response = httpx.post(f"{slow_server.url}/v1/classify/batch", files=files, timeout=30)
    assert response.status_code == 413 and "--max-queue" in response.json()["error"]


def test_deadline_answers_504_and_the_request_is_dropped(slow_server: ServerProcess, generated_jpeg: Path) -> None:
    with httpx.Client(base_url=slow_server.url, timeout=30) as client:
        dropped = metric(client, 'sk_rejected_requests_total{model="skresnet18",reason="deadline"}')
        inferred = metric(client, "nv_inference_count{")
        response = client.post("/v1/classify?timeout_ms=100", content=generated_jpeg.read_bytes(), headers=JPEG)
        assert response.status_code == 504 and "deadline" in response.json()["error"]
        time.sleep(0.6)  # the batch it would have joined has been formed by now
        assert metric(client, 'sk_rejected_requests_total{model="skresnet18",reason="deadline"}') == dropped + 1
        assert metric(client, "nv_inference_count{") == inferred


def test_a_client_that_disconnects_costs_no_inference(slow_server: ServerProcess, generated_jpeg: Path) -> None:
    with httpx.Client(base_url=slow_server.url, timeout=30) as client:
        cancelled = metric(client, 'sk_rejected_requests_total{model="skresnet18",reason="cancelled"}')
        inferred = metric(client, "nv_inference_count{")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{slow_server.url}/v1/classify", content=generated_jpeg.read_bytes(), headers=JPEG,
                       timeout=httpx.Timeout(30, read=0.1))
        time.sleep(0.6)
        assert metric(client, 'sk_rejected_requests_total{model="skresnet18",reason="cancelled"}') == cancelled + 1
        assert metric(client, "nv_inference_count{") == inferred


def test_sigterm_finishes_in_flight_and_refuses_new(small_bundle: Bundle, generated_jpeg: Path) -> None:
    server = start_server(small_bundle.path, "--max-delay-ms", "1500", "--drain-ms", "2000")
    data = generated_jpeg.read_bytes()
    in_flight: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: in_flight.update(
        response=httpx.post(f"{server.url}/v1/classify", content=data, headers=JPEG, timeout=30)))
    worker.start()
    time.sleep(0.4)  # the request is waiting in the batcher for its batch to fill
    server.process.terminate()
    time.sleep(0.3)
    refused = httpx.post(f"{server.url}/v1/classify", content=data, headers=JPEG, timeout=30)
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 503
    worker.join(30)
    assert in_flight["response"].status_code == 200, in_flight["response"].text
    server.process.wait(30)
    assert "stopped: skresnet18" in server.output  # the lifespan's shutdown ran: the queue was finished
