"""HTTP load on the classification service: a concurrency sweep of closed-loop clients (httpx, asyncio).

At each concurrency level, that many clients each post one picture's raw bytes to ``URL/v1/classify``, wait for
the answer and post the next, until the step's time is up or its request count is reached (whichever comes
first; requests in flight then finish, each within the request timeout). Per step: requests/s, latency
percentiles of the successful requests, every answer counted by status (and transport failures by kind), and
what the server itself did meanwhile, read from ``URL/metrics`` before and after the step: the distribution of
its executed batch sizes (``sk_batch_size``) and the mean batch size (``nv_inference_count /
nv_inference_exec_count``). Only loopback addresses unless ``allow_remote`` is given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sk_deploy.bench.prometheus import Sample, counter_delta, histogram_delta, parse_metrics
from sk_deploy.bench.stats import LatencyStats, per_second, summarize
from sk_deploy.errors import SkDeployError

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class LoadError(SkDeployError, ValueError):
    """A load test that cannot start (remote host, no pictures, server unreachable); meant for a person."""


@dataclass(frozen=True)
class Payload:
    """One picture to post: its name, bytes and content type."""

    name: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class LoadConfig:
    """Where to send load and how much: concurrency levels, seconds and at most how many requests per level."""

    url: str
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    duration_s: float = 10.0
    max_requests: int = 10_000
    timeout_s: float = 30.0
    top_k: int = 5
    allow_remote: bool = False


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, allow_remote: bool = False) -> str:
    """The service's base URL without a trailing slash; a LoadError for a URL that is not http(s), or whose
    host is not loopback and ``allow_remote`` is off."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"{url!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8000")
    if not allow_remote and not is_loopback(parts.hostname):
        raise LoadError(f"{parts.hostname} is not a loopback address: load goes to 127.0.0.1 / localhost / ::1 "
                        "unless --allow-remote is given (and only to a server you run)")
    return url.rstrip("/")


def load_payloads(folder: Path | None, limit: int = 64) -> list[Payload]:
    """Up to ``limit`` JPEG/PNG/WebP pictures of ``folder`` (and below), or, without a folder, eight generated
    PNG pictures."""
    if folder is None:
        from sk_deploy.compare import generated_images

        return [Payload(f"generated-{i}.png", data, "image/png") for i, data in enumerate(generated_images(8))]
    from sk_deploy.images import ImageError, find_images

    try:
        files = [p for p in find_images(folder) if p.suffix.lower() in CONTENT_TYPES][:limit]
    except ImageError as exc:
        raise LoadError(str(exc)) from None
    if not files:
        raise LoadError(f"{folder}: no JPEG, PNG or WebP pictures (the service takes those)")
    return [Payload(p.name, p.read_bytes(), CONTENT_TYPES[p.suffix.lower()]) for p in files]


@dataclass
class StepResult:
    """One concurrency level: what the clients saw and what the server's metrics say it did."""

    concurrency: int
    requests: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latency: LatencyStats | None = None
    server: dict[str, Any] | None = None
    server_note: str | None = None

    @property
    def errors(self) -> int:
        """Requests that did not end in a 2xx answer."""
        return self.requests - self.ok

    @property
    def requests_per_s(self) -> float:
        """Completed requests (any outcome) per second of the step."""
        return per_second(self.requests, self.seconds)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "concurrency": self.concurrency, "requests": self.requests, "ok": self.ok, "errors": self.errors,
            "statuses": self.statuses, "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.requests_per_s, 2), "ok_per_s": round(per_second(self.ok, self.seconds), 2),
            "latency_ms": self.latency.to_dict() if self.latency else None,
            "server": self.server, "server_note": self.server_note,
        }


async def scrape_metrics(client: Any, base: str) -> tuple[list[Sample] | None, str | None]:
    """The server's /metrics samples, or None and why not."""
    import httpx

    try:
        response = await client.get(f"{base}/metrics")
    except httpx.HTTPError as exc:
        return None, f"GET /metrics failed: {type(exc).__name__}"
    if response.status_code != 200:
        return None, f"GET /metrics answered {response.status_code}"
    try:
        return parse_metrics(response.text), None
    except ValueError as exc:
        return None, f"/metrics is not Prometheus text ({exc})"


def server_delta(before: list[Sample], after: list[Sample]) -> dict[str, Any]:
    """What the server did between two scrapes: batches and images executed, mean batch size (Triton's
    counters), the batch-size histogram's distribution, requests it counted as succeeded or failed."""
    images = counter_delta(before, after, "nv_inference_count")
    batches = counter_delta(before, after, "nv_inference_exec_count")
    return {
        "images": images, "batches": batches,
        "mean_batch_size": round(images / batches, 3) if images is not None and batches else None,
        "batch_size": histogram_delta(before, after, "sk_batch_size"),
        "request_success": counter_delta(before, after, "nv_inference_request_success"),
        "request_failure": counter_delta(before, after, "nv_inference_request_failure"),
    }


async def _step(client: Any, base: str, config: LoadConfig, payloads: list[Payload], concurrency: int) -> StepResult:
    import httpx

    result = StepResult(concurrency)
    before, note = await scrape_metrics(client, base)
    statuses: Counter[str] = Counter()
    ok_ms: list[float] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + config.duration_s

    async def client_loop() -> None:
        nonlocal issued
        while issued < config.max_requests and time.perf_counter() < deadline:
            payload = payloads[issued % len(payloads)]
            issued += 1  # counted before the await: the event loop runs one client at a time, so never overshoots
            begin = time.perf_counter()
            try:
                response = await client.post(f"{base}/v1/classify", params={"top_k": config.top_k},
                                             content=payload.data, headers={"content-type": payload.content_type})
                status = str(response.status_code)
            except httpx.TimeoutException:
                status = "timeout"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses[status] += 1
            if status.startswith("2"):
                ok_ms.append((time.perf_counter() - begin) * 1000)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    result.requests, result.ok = sum(statuses.values()), len(ok_ms)
    result.statuses = dict(sorted(statuses.items()))
    result.latency = summarize(ok_ms) if ok_ms else None
    after, after_note = await scrape_metrics(client, base)
    if before is not None and after is not None:
        result.server = server_delta(before, after)
    else:
        result.server_note = note or after_note
    return result


#: how long the first request may wait for a connection: a dead URL fails in this long, not the ready timeout
CONNECT_S = 2.0


async def wait_ready(client: Any, base: str, timeout_s: float) -> None:
    """Return once /readyz answers 200; a LoadError when the server does not answer or is not ready in time."""
    import httpx

    start = time.perf_counter()
    deadline = start + timeout_s
    while True:
        try:
            response = await client.get(f"{base}/readyz", timeout=httpx.Timeout(timeout_s, connect=CONNECT_S))
            if response.status_code in (200, 404):  # 404: a server without /readyz; go on
                return
            problem = f"/readyz answered {response.status_code}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) and time.perf_counter() - start >= CONNECT_S:
                raise LoadError(f"{base} does not answer ({problem}); is `sk-deploy serve` running there?") from None
        if time.perf_counter() >= deadline:
            raise LoadError(f"{base} is not ready ({problem})")
        await asyncio.sleep(0.2)


async def _sweep(config: LoadConfig, payloads: list[Payload], ready_timeout_s: float,
                 on_start: Callable[[int], None] | None, on_step: Callable[[StepResult], None] | None,
                 results: list[StepResult]) -> None:
    import httpx

    base = check_url(config.url, config.allow_remote)
    limits = httpx.Limits(max_connections=max(config.concurrency), max_keepalive_connections=max(config.concurrency))
    # trust_env off: a proxy from the environment must not carry loopback load elsewhere
    async with httpx.AsyncClient(timeout=config.timeout_s, limits=limits, trust_env=False) as client:
        await wait_ready(client, base, ready_timeout_s)
        for concurrency in config.concurrency:
            if on_start:
                on_start(concurrency)
            results.append(await _step(client, base, config, payloads, concurrency))
            if on_step:
                on_step(results[-1])


def run_sweep(config: LoadConfig, payloads: list[Payload], ready_timeout_s: float = 10.0,
              on_start: Callable[[int], None] | None = None,
              on_step: Callable[[StepResult], None] | None = None,
              results: list[StepResult] | None = None) -> list[StepResult]:
    """Run every concurrency level of ``config`` in turn; the steps' results (appended to ``results`` as they
    finish, so a caller keeps the finished steps if the sweep is interrupted)."""
    if not payloads:
        raise LoadError("no pictures to send")
    if not config.concurrency or min(config.concurrency) < 1:
        raise LoadError("concurrency levels must be 1 or more")
    if config.max_requests < 1 or config.duration_s <= 0:
        raise LoadError("each step needs a positive --duration-ms and --max-requests")
    check_url(config.url, config.allow_remote)
    results = [] if results is None else results
    asyncio.run(_sweep(config, payloads, ready_timeout_s, on_start, on_step, results))
    return results
