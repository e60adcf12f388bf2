"""Open-loop load at a request rate: arrivals that do not wait for answers, so queueing shows as it does in
production (perf_analyzer's ``--request-rate-range``).

At each offered rate a schedule of send instants is drawn for the step (``constant``: evenly spaced; ``poisson``:
exponential gaps from a seeded generator, the same schedule for the same seed and rate), bounded by the step's
time and its request count. Each request is sent at its instant whether or not earlier ones were answered, and
its latency is measured from that instant, not from when it actually left (no coordinated omission: a client
or server that falls behind shows as latency). A request is a *drop*, never sent, when the cap on requests in
flight is reached at its instant (``cap``) or when its instant passed more than the request timeout ago
(``late``). A request sent takes at most the timeout from its instant (then ``timeout``).

Per rate: the offered rate, answers/s and ok/s achieved (over the step's time, from its start to its last
answer), requests sent, drops, answers by status, latency percentiles of the successful ones, and the server's
own batch sizes read from ``/metrics`` around the step (as the closed-loop steps of ``http_load``). Before the
steps, a few requests one at a time give the single-request latency of the same run, beside which the p99s
are read.

The knee: the highest offered rate that *meets* the p99 target, every lower rate tried meeting it too. A rate
meets it when its p99 (successful requests) is within the target and drops plus errors are under
``LOSS_LIMIT`` (1%) of the requests scheduled: a rate the server sheds cannot pass however fast its few
answers were.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sk_deploy.bench.http_load import (
    LoadError,
    Payload,
    check_url,
    scrape_metrics,
    server_delta,
    wait_ready,
)
from sk_deploy.bench.stats import LatencyStats, per_second, summarize
from sk_deploy.settings.bench import ARRIVALS

PROTOCOLS = ("http", "grpc")
DEFAULT_MAX_IN_FLIGHT = 256
#: drops plus errors allowed at a rate that meets the target, as a share of the requests scheduled
LOSS_LIMIT = 0.01
MEETS_RULE = (f"p99 of the successful requests within the target, and drops + errors under {LOSS_LIMIT:.0%} of "
              "the requests scheduled")
KNEE_RULE = f"the highest offered rate that meets the target ({MEETS_RULE}), every lower rate tried meeting it too"


@dataclass(frozen=True)
class RateConfig:
    """Where to send open-loop load and how much: offered rates (requests/s), arrivals, the bounds of a step."""

    url: str
    rates: tuple[float, ...]
    arrivals: str = "constant"
    seed: int = 0
    duration_s: float = 10.0
    max_requests: int = 10_000
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    timeout_s: float = 30.0
    top_k: int = 5
    p99_ms: float | None = None
    protocol: str = "http"
    grpc_url: str | None = None
    """``HOST:PORT`` of the server's KServe v2 gRPC endpoint (``serve --grpc-port``), for ``protocol`` grpc."""
    allow_remote: bool = False
    single_requests: int = 10
    """Requests sent one at a time before the steps (the single-request latency); 0: none."""


def schedule(rate: float, duration_s: float, max_requests: int, arrivals: str = "constant",
             seed: int = 0) -> np.ndarray:
    """The send instants of one step, seconds from its start (ascending, all before ``duration_s``, at most
    ``max_requests``): every 1/rate s, or Poisson arrivals of mean rate ``rate`` (a generator seeded by ``seed``
    and the rate, so one seed gives the same schedule for each rate whatever the order of the steps)."""
    if rate <= 0 or duration_s <= 0 or max_requests < 1:
        raise ValueError("a schedule needs a positive rate, duration and request count")
    if arrivals == "constant":
        count = min(max_requests, math.ceil(duration_s * rate))
        offsets = np.arange(count, dtype=np.float64) / rate
    elif arrivals == "poisson":
        rng = np.random.default_rng([seed, round(rate * 1000)])
        count = min(max_requests, math.ceil(duration_s * rate * 1.5 + 10 * math.sqrt(duration_s * rate) + 10))
        offsets = np.cumsum(rng.exponential(1.0 / rate, size=count)) - 1.0 / rate  # the first at ~0, not 1/rate
        offsets = np.maximum(offsets, 0.0)
    else:
        raise ValueError(f"unknown arrivals {arrivals!r}; choose one of: {', '.join(ARRIVALS)}")
    return offsets[offsets < duration_s][:max_requests]


@dataclass
class RateStep:
    """One offered rate: what was scheduled, sent, dropped and answered, and what the server did meanwhile."""

    rate: float
    scheduled: int = 0
    sent: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    ok: int = 0
    seconds: float = 0.0
    window_s: float = 0.0
    """The time the schedule spanned (first to last instant, plus one gap): what the offered rate is over."""
    latency: LatencyStats | None = None
    server: dict[str, Any] | None = None
    server_note: str | None = None

    @property
    def answers(self) -> int:
        """Requests that ended (any status, timeouts and transport failures included)."""
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        """Requests sent that did not end in a success."""
        return self.answers - self.ok

    @property
    def dropped(self) -> int:
        """Requests never sent (the in-flight cap, or too late)."""
        return sum(self.drops.values())

    @property
    def loss(self) -> float:
        """Drops plus errors over the requests scheduled."""
        return (self.dropped + self.errors) / self.scheduled if self.scheduled else 1.0

    def meets(self, p99_ms: float) -> bool:
        """Whether this rate meets a p99 target (``MEETS_RULE``)."""
        return self.latency is not None and self.latency.p99 <= p99_ms and self.loss < LOSS_LIMIT

    def to_dict(self, p99_ms: float | None = None) -> dict[str, Any]:
        """A JSON-ready form (with ``meets`` when a target is given)."""
        errors = {k: v for k, v in self.statuses.items() if not succeeded(k)}
        return {
            "offered_per_s": self.rate, "scheduled": self.scheduled, "sent": self.sent, "dropped": self.dropped,
            "drops": self.drops, "answers": self.answers, "ok": self.ok, "errors": self.errors,
            "errors_by_status": errors, "statuses": self.statuses, "loss": round(self.loss, 4),
            "seconds": round(self.seconds, 3), "window_s": round(self.window_s, 3),
            "scheduled_per_s": round(per_second(self.scheduled, self.window_s), 2),
            "answers_per_s": round(per_second(self.answers, self.seconds), 2),
            "ok_per_s": round(per_second(self.ok, self.seconds), 2),
            "latency_ms": self.latency.to_dict() if self.latency else None,
            "meets": self.meets(p99_ms) if p99_ms is not None else None,
            "server": self.server, "server_note": self.server_note,
        }


@dataclass
class RateRun:
    """A run of rate steps: the single-request latency measured first, then each step as it finished."""

    single: LatencyStats | None = None
    single_note: str | None = None
    steps: list[RateStep] = field(default_factory=list)


def knee(steps: list[RateStep], p99_ms: float) -> RateStep | None:
    """The step of the highest offered rate meeting ``p99_ms`` with every lower rate meeting it too
    (``KNEE_RULE``); None when the lowest rate already misses it."""
    best = None
    for step in sorted(steps, key=lambda s: s.rate):
        if not step.meets(p99_ms):
            break
        best = step
    return best


def succeeded(status: str) -> bool:
    """Whether a request's status is a success: a 2xx code (HTTP) or OK (gRPC)."""
    return status.startswith("2") or status == "OK"


def _status_of(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else f"transport:{type(exc).__name__}"


class HttpSender:
    """Raw pictures posted to ``URL/v1/classify`` (as the closed-loop clients do); the answer's status code."""

    def __init__(self, client: Any, base: str, payloads: list[Payload], top_k: int) -> None:
        self.client, self.base, self.payloads, self.top_k = client, base, payloads, top_k

    async def send(self, index: int) -> str:
        """Post picture ``index`` (round robin); ``200``, ``429``, ... (exceptions are the caller's)."""
        payload = self.payloads[index % len(self.payloads)]
        response = await self.client.post(f"{self.base}/v1/classify", params={"top_k": self.top_k},
                                          content=payload.data, headers={"content-type": payload.content_type})
        return str(response.status_code)

    async def close(self) -> None:
        """Nothing of its own: the HTTP client is the run's."""


async def _send_one(sender: Any, index: int, scheduled: float, timeout_s: float) -> tuple[str, float]:
    """The status of one request and when it ended; it may take until ``timeout_s`` after its instant."""
    try:
        async with asyncio.timeout(max(0.0, scheduled + timeout_s - time.perf_counter())):
            status = await sender.send(index)
    except Exception as exc:  # the request's own failure, counted by kind; never the run's
        status = _status_of(exc)
    return status, time.perf_counter()


async def _single(sender: Any, count: int, timeout_s: float) -> tuple[LatencyStats | None, str | None]:
    """``count`` requests one at a time (after two not counted): the unloaded latency."""
    ms, failed = [], Counter()
    for index in range(count + 2):
        begin = time.perf_counter()
        status, end = await _send_one(sender, index, begin, timeout_s)
        if not succeeded(status):
            failed[status] += 1
        elif index >= 2:
            ms.append((end - begin) * 1000)
    note = ", ".join(f"{k} x{v}" for k, v in failed.items()) or None
    return (summarize(ms) if ms else None), (f"single requests failed: {note}" if note else None)


async def _rate_step(sender: Any, client: Any, base: str, config: RateConfig, rate: float) -> RateStep:
    offsets = schedule(rate, config.duration_s, config.max_requests, config.arrivals, config.seed)
    step = RateStep(rate, scheduled=len(offsets))
    step.window_s = float(offsets[-1] + 1.0 / rate) if len(offsets) else 0.0
    before, note = await scrape_metrics(client, base)
    statuses: Counter[str] = Counter()
    drops: Counter[str] = Counter()
    ok_ms: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    last = start

    async def one(index: int, scheduled: float) -> None:
        nonlocal last
        status, end = await _send_one(sender, index, scheduled, config.timeout_s)
        last = max(last, end)
        statuses[status] += 1
        if succeeded(status):
            ok_ms.append((end - scheduled) * 1000)

    for index, offset in enumerate(offsets):
        scheduled = start + float(offset)
        wait = scheduled - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        if time.perf_counter() - scheduled > config.timeout_s:
            drops["late"] += 1
        elif len(pending) >= config.max_in_flight:
            drops["cap"] += 1
        else:
            task = asyncio.create_task(one(index, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
    step.sent = step.scheduled - sum(drops.values())
    if pending:
        await asyncio.wait(set(pending))
    step.seconds = (last if statuses else time.perf_counter()) - start
    step.drops, step.statuses = dict(sorted(drops.items())), dict(sorted(statuses.items()))
    step.ok = len(ok_ms)
    step.latency = summarize(ok_ms) if ok_ms else None
    after, after_note = await scrape_metrics(client, base)
    if before is not None and after is not None:
        step.server = server_delta(before, after)
    else:
        step.server_note = note or after_note
    return step


async def _open_sender(config: RateConfig, client: Any, base: str, payloads: list[Payload]) -> Any:
    if config.protocol == "http":
        return HttpSender(client, base, payloads, config.top_k)
    from sk_deploy.bench.grpc_load import GrpcSender

    ready = (await client.get(f"{base}/readyz")).json()
    return await GrpcSender.open(config.grpc_url or "", str(ready.get("model", "")), payloads)


async def _run(config: RateConfig, payloads: list[Payload], ready_timeout_s: float,
               on_start: Callable[[float], None] | None, on_step: Callable[[RateStep], None] | None,
               run: RateRun) -> None:
    import httpx

    base = check_url(config.url, config.allow_remote)
    limits = httpx.Limits(max_connections=config.max_in_flight, max_keepalive_connections=config.max_in_flight)
    # trust_env off: a proxy from the environment must not carry loopback load elsewhere
    async with httpx.AsyncClient(timeout=config.timeout_s, limits=limits, trust_env=False) as client:
        await wait_ready(client, base, ready_timeout_s)
        sender = await _open_sender(config, client, base, payloads)
        try:
            if config.single_requests:
                run.single, run.single_note = await _single(sender, config.single_requests, config.timeout_s)
            for rate in config.rates:
                if on_start:
                    on_start(rate)
                run.steps.append(await _rate_step(sender, client, base, config, rate))
                if on_step:
                    on_step(run.steps[-1])
        finally:
            await sender.close()


def check_config(config: RateConfig) -> None:
    """A LoadError, in one line, for a configuration that cannot run."""
    if not config.rates or min(config.rates) <= 0:
        raise LoadError("request rates must be positive (requests per second)")
    if config.arrivals not in ARRIVALS:
        raise LoadError(f"unknown arrivals {config.arrivals!r}; choose one of: {', '.join(ARRIVALS)}")
    if config.protocol not in PROTOCOLS:
        raise LoadError(f"unknown protocol {config.protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if config.max_requests < 1 or config.duration_s <= 0 or config.max_in_flight < 1:
        raise LoadError("each step needs a positive --duration-ms, --max-requests and --max-in-flight")
    check_url(config.url, config.allow_remote)
    if config.protocol == "grpc":
        from sk_deploy.bench.grpc_load import check_target

        check_target(config.grpc_url, config.allow_remote)


def run_rates(config: RateConfig, payloads: list[Payload], ready_timeout_s: float = 10.0,
              on_start: Callable[[float], None] | None = None, on_step: Callable[[RateStep], None] | None = None,
              run: RateRun | None = None) -> RateRun:
    """The single-request latency, then every rate of ``config`` in turn (steps appended to ``run.steps`` as
    they finish, so a caller keeps the finished steps if the run is interrupted)."""
    if not payloads:
        raise LoadError("no pictures to send")
    check_config(config)
    run = RateRun() if run is None else run
    asyncio.run(_run(config, payloads, ready_timeout_s, on_start, on_step, run))
    return run
