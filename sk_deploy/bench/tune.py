"""``sk-deploy tune``: the batching settings with the highest sustained rate under a p99 target, measured.

For each candidate of max batch x max queue delay (x instances, where the backend runs several: see
``runtime.instances``) a fresh ``sk-deploy serve`` is started on 127.0.0.1 (``LocalServer``). A short
closed-loop probe (enough clients to fill every instance's batches) gives its capacity C; then open-loop steps
(``open_loop``) search the rate it sustains under the target by bisection on [0, 1.1 C], starting at 0.7 of
that: a rate that meets the target (``open_loop.MEETS_RULE``: p99 within it, drops + errors under 1%) raises
the lower bound (and, until some rate has missed, the upper one to 1.5 times it: the probe only estimates C),
one that misses it lowers the upper. The candidate's sustained rate is the highest offered rate
that met the target.

Short steps flatter a rate just above capacity: its queue grows too slowly to show in two seconds (measured on
skresnet18: 51 requests/s met p99 100 ms over 2 s and missed it, at 744 ms, over 10 s). So the ``finalists``
candidates with the highest sustained rates are served again and held at that rate for ``verify_factor`` times
as long, and while one misses, at 0.85 of the rate before (twice); the choice is the finalist with the highest
rate that held (ties: the lower p99), and none when no finalist held one.

With max batch 1 a batch never waits, so the delays are one setting: only the smallest is run, the others are
listed as the same. The whole tune is bounded by ``budget_s``: a candidate that would start past it (judged by
the mean time of those done) is listed as not run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sk_deploy.bench.http_load import LoadConfig, Payload, run_sweep
from sk_deploy.bench.local_server import LocalServer, ServerError
from sk_deploy.bench.open_loop import RateConfig, RateStep, run_rates
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.base import command_words
from sk_deploy.settings.serve import ServeSettings


class TuneError(SkDeployError, ValueError):
    """A tune that cannot start (a bad grid, a backend that cannot run); meant for a person."""


@dataclass(frozen=True)
class TuneConfig:
    """What to tune and how long each measurement takes."""

    bundle: Path
    p99_ms: float
    backend: str = "auto"
    precision: str = "fp32"
    max_batch: tuple[int, ...] = (1, 4, 8, 16)
    max_delay_ms: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0)
    instances: tuple[int, ...] = (1, 2)
    duration_s: float = 2.0
    """Each open-loop step."""
    probe_s: float = 1.0
    """The closed-loop capacity probe."""
    steps: int = 4
    """Open-loop steps per candidate (bisection)."""
    budget_s: float = 540.0
    max_queue: int = 256
    max_in_flight: int = 256
    arrivals: str = "constant"
    seed: int = 0
    finalists: int = 3
    """Candidates verified over longer steps (0: none; the choice is then the highest sustained rate)."""
    verify_factor: float = 5.0
    """A verification step lasts this many times ``duration_s``."""


#: each try of a finalist's verification offers this fraction of the rate before (the first: its sustained rate)
VERIFY_STEPS = (1.0, 0.85, 0.85)


@dataclass
class Candidate:
    """One setting and what it sustained."""

    max_batch: int
    max_delay_ms: float
    instances: int
    status: str = "pending"
    """ok (measured), same (equal to another setting), not run (budget), failed (the server or load failed)."""
    reason: str | None = None
    capacity_per_s: float | None = None
    sustained: RateStep | None = None
    tried: list[RateStep] = field(default_factory=list)
    seconds: float = 0.0
    verified: RateStep | None = None
    """The longer step that held a rate (finalists only)."""
    verify_tried: list[RateStep] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``batch 8, delay 2 ms, 1 instance``."""
        return (f"batch {self.max_batch}, delay {self.max_delay_ms:g} ms, {self.instances} "
                f"instance{'' if self.instances == 1 else 's'}")

    @property
    def settings(self) -> dict[str, Any]:
        """The settings, as ``serving_config`` writes them."""
        return {"max_batch": self.max_batch, "max_delay_ms": float(self.max_delay_ms), "instances": self.instances}

    @property
    def sustained_per_s(self) -> float:
        """The highest offered rate that met the target (0 when none did or it was not measured)."""
        return self.sustained.rate if self.sustained else 0.0

    @property
    def verified_per_s(self) -> float:
        """The rate held over the longer step (0 when none held or it was not verified)."""
        return self.verified.rate if self.verified else 0.0

    def to_dict(self, p99_ms: float) -> dict[str, Any]:
        """A JSON-ready form."""
        best = self.sustained.to_dict(p99_ms) if self.sustained else None
        held = self.verified.to_dict(p99_ms) if self.verified else None
        return {
            **self.settings, "status": self.status, "reason": self.reason,
            "capacity_per_s": None if self.capacity_per_s is None else round(self.capacity_per_s, 2),
            "sustained_per_s": round(self.sustained_per_s, 2) if self.status == "ok" else None,
            "p99_ms": best["latency_ms"]["p99"] if best else None, "ok_per_s": best["ok_per_s"] if best else None,
            "mean_batch_size": (best["server"] or {}).get("mean_batch_size") if best else None,
            "tried": [_tried(s, p99_ms) for s in self.tried],
            "finalist": bool(self.verify_tried),
            "verified_per_s": round(self.verified_per_s, 2) if self.verify_tried else None,
            "verified_p99_ms": held["latency_ms"]["p99"] if held else None,
            "verified_ok_per_s": held["ok_per_s"] if held else None,
            "verified_mean_batch_size": (held["server"] or {}).get("mean_batch_size") if held else None,
            "verify_tried": [_tried(s, p99_ms) for s in self.verify_tried],
            "seconds": round(self.seconds, 1),
        }


def _tried(step: RateStep, p99_ms: float) -> dict[str, Any]:
    return {"offered_per_s": round(step.rate, 2), "p99_ms": step.latency.p99 if step.latency else None,
            "ok_per_s": round(step.ok / step.seconds, 2) if step.seconds else 0.0, "loss": round(step.loss, 4),
            "seconds": round(step.seconds, 2), "meets": step.meets(p99_ms)}


@dataclass
class TuneResult:
    """The grid as measured, the backend it ran on, why the instances axis is what it is, and the choice."""

    backend: str
    candidates: list[Candidate]
    instances_note: str | None = None
    seconds: float = 0.0
    verified: bool = True
    """Whether the choice is among verified finalists (``finalists`` > 0)."""

    @property
    def choice(self) -> Candidate | None:
        """The finalist with the highest rate held over the longer step (without finalists: the candidate with
        the highest sustained rate); ties: the lower p99. None when none held (met) one."""
        def p99(step: RateStep | None) -> float:
            return step.latency.p99 if step and step.latency else float("inf")

        if self.verified:
            held = [c for c in self.candidates if c.verified is not None]
            return max(held, key=lambda c: (c.verified_per_s, -p99(c.verified))) if held else None
        met = [c for c in self.candidates if c.status == "ok" and c.sustained is not None]
        return max(met, key=lambda c: (c.sustained_per_s, -p99(c.sustained))) if met else None


def plan_grid(config: TuneConfig, backend: str, refusal: str | None) -> tuple[list[Candidate], str | None]:
    """The candidates in the order they run, and the note on the instances axis (collapsed to 1 with the reason
    when ``backend`` runs one instance)."""
    if not config.max_batch or not config.max_delay_ms or not config.instances:
        raise TuneError("each of --max-batch, --max-delay-ms and --instances needs at least one value")
    if min(config.max_batch) < 1 or min(config.instances) < 1 or min(config.max_delay_ms) < 0:
        raise TuneError("--max-batch and --instances take values of 1 or more, --max-delay-ms of 0 or more")
    instances = sorted(set(config.instances))
    note = None
    if refusal and instances != [1]:
        note = f"instances: 1 only, {backend} runs one ({refusal})"
        instances = [1]
    delays = sorted(set(config.max_delay_ms))
    candidates = []
    for count in instances:
        for batch in sorted(set(config.max_batch)):
            for delay in delays:
                candidate = Candidate(batch, delay, count)
                if batch == 1 and delay != delays[0]:
                    candidate.status = "same"
                    candidate.reason = f"as delay {delays[0]:g} ms: with max batch 1 a batch never waits"
                candidates.append(candidate)
    return candidates, note


def _server_args(config: TuneConfig, backend: str, candidate: Candidate) -> list[str]:
    """``sk-deploy serve``'s options for a candidate, made from serve's settings model (the bundle and the address
    are the server's own)."""
    settings = ServeSettings(target=str(config.bundle), backend=backend, precision=config.precision,
                             max_batch=candidate.max_batch, max_delay_ms=candidate.max_delay_ms,
                             instances=candidate.instances, max_queue=config.max_queue, drain_ms=0, access_log=False)
    return command_words(settings, always=("backend", "precision", "max_batch", "max_delay_ms", "instances",
                                           "max_queue"))[3:]


def _open_loop_step(config: TuneConfig, url: str, payloads: list[Payload], rate: float,
                    duration_s: float) -> RateStep:
    # a request past a few times the target has missed it anyway: a short timeout bounds a step's drain
    timeout_s = max(1.0, 4 * config.p99_ms / 1000)
    rates = RateConfig(url=url, rates=(rate,), arrivals=config.arrivals, seed=config.seed, duration_s=duration_s,
                       max_in_flight=config.max_in_flight, timeout_s=timeout_s, p99_ms=config.p99_ms,
                       single_requests=0)
    return run_rates(rates, payloads).steps[0]


def _serve(config: TuneConfig, backend: str, candidate: Candidate) -> LocalServer:
    server = LocalServer(config.bundle, *_server_args(config, backend, candidate))
    try:
        return server.wait_ready(timeout=180)
    except BaseException:
        server.stop()
        raise


def verify(config: TuneConfig, backend: str, candidate: Candidate, payloads: list[Payload]) -> None:
    """Serve a finalist again and hold its sustained rate for ``verify_factor`` x ``duration_s`` (then, while it
    misses, 0.85 of the rate before, twice): ``candidate.verified`` is the step that held a rate, None if none
    did."""
    started = time.perf_counter()
    try:
        server = _serve(config, backend, candidate)
    except (ServerError, SkDeployError) as exc:
        candidate.reason = f"verification failed: {str(exc).strip().splitlines()[0][:300]}"
        return
    try:
        rate = candidate.sustained_per_s
        for fraction in VERIFY_STEPS:
            rate *= fraction
            step = _open_loop_step(config, server.url, payloads, rate, config.duration_s * config.verify_factor)
            candidate.verify_tried.append(step)
            if step.meets(config.p99_ms):
                candidate.verified = step
                break
        if candidate.verified is None:
            candidate.reason = "no rate held over the longer step"
    except SkDeployError as exc:
        candidate.reason = f"verification failed: {str(exc).strip().splitlines()[0][:300]}"
    finally:
        server.stop()
        candidate.seconds += time.perf_counter() - started


def measure(config: TuneConfig, backend: str, candidate: Candidate, payloads: list[Payload]) -> None:
    """Start the candidate's server, probe its capacity, bisect its sustained rate, stop it (in ``candidate``)."""
    started = time.perf_counter()
    try:
        server = _serve(config, backend, candidate)
    except (ServerError, SkDeployError) as exc:
        candidate.status, candidate.reason = "failed", str(exc).strip().splitlines()[0][:300]
        candidate.seconds = time.perf_counter() - started
        return
    try:
        clients = min(64, max(4, 2 * candidate.max_batch * candidate.instances))
        [probe] = run_sweep(LoadConfig(url=server.url, concurrency=(clients,), duration_s=config.probe_s,
                                       max_requests=100_000, timeout_s=30.0), payloads)
        candidate.capacity_per_s = probe.ok / probe.seconds if probe.seconds else 0.0
        low, high, missed = 0.0, 1.1 * candidate.capacity_per_s, False
        rate = 0.7 * high
        for _ in range(config.steps):
            if rate < 0.5:  # below half a request a second there is nothing left to learn
                break
            step = _open_loop_step(config, server.url, payloads, rate, config.duration_s)
            candidate.tried.append(step)
            if step.meets(config.p99_ms):
                low, candidate.sustained = rate, step
                if not missed:  # the probe's capacity is an estimate: until a rate misses, the bound moves up
                    high = max(high, 1.5 * rate)
            else:
                high, missed = rate, True
            rate = (low + high) / 2
        candidate.status = "ok"
        if candidate.sustained is None:
            candidate.reason = f"no rate tried met p99 <= {config.p99_ms:g} ms"
    except SkDeployError as exc:
        candidate.status, candidate.reason = "failed", str(exc).strip().splitlines()[0][:300]
    finally:
        server.stop()
        candidate.seconds = time.perf_counter() - started


def finalists(candidates: list[Candidate], count: int) -> list[Candidate]:
    """The ``count`` measured candidates with the highest sustained rates (ties: lower p99), best first."""
    met = [c for c in candidates if c.status == "ok" and c.sustained is not None]
    met.sort(key=lambda c: (-c.sustained_per_s, c.sustained.latency.p99 if c.sustained.latency else 0.0))
    return met[:count]


def tune(config: TuneConfig, backend: str, refusal: str | None, payloads: list[Payload],
         on_start: Callable[[Candidate, int, int], None] | None = None,
         on_done: Callable[[Candidate], None] | None = None, result: TuneResult | None = None,
         on_verify: Callable[[Candidate], None] | None = None) -> TuneResult:
    """Measure every candidate of the grid on ``backend`` (``refusal``: why it runs one instance, or None) within
    the budget, then verify the finalists; ``result`` (when given) is filled as candidates finish, so an
    interrupted tune keeps them."""
    candidates, note = plan_grid(config, backend, refusal)
    result = result or TuneResult(backend, [])
    result.backend, result.candidates, result.instances_note = backend, candidates, note
    result.verified = config.finalists > 0
    started = time.perf_counter()
    runnable = [c for c in candidates if c.status == "pending"]
    # the finalists' time is kept aside: a server start and two longer steps each
    reserve = config.finalists * (config.duration_s * config.verify_factor * 2 + 5)
    done: list[float] = []
    for index, candidate in enumerate(runnable, 1):
        elapsed = time.perf_counter() - started
        expected = sum(done) / len(done) if done else 0.0
        if elapsed + expected > config.budget_s - reserve:
            candidate.status = "not run"
            candidate.reason = f"the budget ({config.budget_s:g} s) would be passed"
            continue
        if on_start:
            on_start(candidate, index, len(runnable))
        measure(config, backend, candidate, payloads)
        done.append(candidate.seconds)
        result.seconds = time.perf_counter() - started
        if on_done:
            on_done(candidate)
    for candidate in finalists(candidates, config.finalists):
        if on_verify:
            on_verify(candidate)
        verify(config, backend, candidate, payloads)
        result.seconds = time.perf_counter() - started
        if on_done:
            on_done(candidate)
    result.seconds = time.perf_counter() - started
    return result
