"""Open-loop load: the arrival schedules (pure), the knee's rule, and a real ``sk-deploy serve`` with a queue of
one picture on loopback: far above its capacity it sheds (429) and the report shows the achieved rate below the
offered one with the drops and errors counted; at a low rate nothing is dropped or refused, and the report
carries the p99 beside the single-request latency of the same run. The gRPC protocol runs against the server's
KServe v2 gRPC port where the service has one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from sk_deploy.bench.http_load import load_payloads
from sk_deploy.bench.open_loop import RateConfig, RateStep, knee, run_rates, schedule
from sk_deploy.bench.stats import summarize
from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from tests.servers import LocalServer, served


def test_constant_arrivals_are_evenly_spaced_and_bounded() -> None:
    offsets = schedule(50, 2.0, 10_000)
    assert len(offsets) == 100 and offsets[0] == 0 and np.allclose(np.diff(offsets), 0.02)
    assert len(schedule(50, 2.0, 30)) == 30  # the count bound
    assert schedule(50, 2.0, 10_000).max() < 2.0  # the time bound


def test_poisson_arrivals_have_the_mean_rate_and_one_seed_one_schedule() -> None:
    offsets = schedule(200, 100.0, 100_000, "poisson", seed=7)
    assert offsets.max() < 100.0 and np.all(np.diff(offsets) >= 0)
    assert abs(len(offsets) / 100.0 - 200) < 200 * 0.03  # 20000 arrivals: 3% is over four standard deviations
    gaps = np.diff(offsets)
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # exponential gaps: standard deviation equals the mean
    assert np.array_equal(offsets, schedule(200, 100.0, 100_000, "poisson", seed=7))
    assert not np.array_equal(offsets[:100], schedule(200, 100.0, 100_000, "poisson", seed=8)[:100])
    assert len(schedule(200, 100.0, 500, "poisson", seed=7)) == 500


def _step(rate: float, p99: float, scheduled: int = 100, dropped: int = 0, errors: int = 0) -> RateStep:
    ok = scheduled - dropped - errors
    statuses = {"200": ok, **({"429": errors} if errors else {})}
    return RateStep(rate, scheduled=scheduled, sent=scheduled - dropped, drops={"cap": dropped} if dropped else {},
                    statuses=statuses, ok=ok, seconds=1.0, latency=summarize([p99 / 2] * 98 + [p99, p99]))


def test_the_knee_is_the_highest_rate_meeting_the_target_with_every_lower_one() -> None:
    steps = [_step(10, 20), _step(20, 40), _step(40, 90), _step(80, 300), _step(160, 50)]
    assert knee(steps, 100).rate == 40  # 160 meets it by p99, but 80 below it did not
    # a rate that sheds cannot pass, however fast its answers
    assert not _step(50, 10, dropped=2).meets(100) and not _step(50, 10, errors=1).meets(100)
    assert _step(50, 10, scheduled=1000, errors=9).meets(100)  # under 1%
    assert knee([_step(10, 500)], 100) is None


@pytest.fixture(scope="module")
def server(small_bundle: Bundle) -> Iterator[LocalServer]:
    with served(small_bundle.path, "--max-queue", "1", "--max-batch", "1", "--max-delay-ms", "0",
                "--no-access-log") as running:
        yield running


def test_far_above_capacity_the_server_sheds_and_a_low_rate_meets_the_target(server: LocalServer) -> None:
    result = CliRunner().invoke(app, ["bench-http", server.url, "--request-rate", "5,3000", "--duration-ms", "1000",
                                      "--max-in-flight", "32", "--p99-ms", "60000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    low, high = report["steps"]
    # low rate: every request sent and answered 200
    assert (low["scheduled"], low["sent"], low["ok"], low["dropped"], low["errors"]) == (5, 5, 5, 0, 0)
    single = report["single_request_ms"]
    assert single["n"] == 10 and low["p99_vs_single_p50"] == round(low["latency_ms"]["p99"] / single["p50"], 2)
    # far above capacity: refused by the full queue, capped in flight, achieved below offered
    assert high["scheduled"] == 3000 and high["sent"] + high["dropped"] == 3000
    assert high["errors_by_status"].get("429", 0) + high["errors_by_status"].get("503", 0) > 0
    assert high["dropped"] == high["drops"].get("cap", 0) + high["drops"].get("late", 0) > 0
    assert high["ok_per_s"] < high["answers_per_s"] and high["ok_per_s"] < 3000 * 0.5
    assert high["loss"] > 0.01 and high["meets"] is False and low["meets"] is True
    # the server's own batches were read around each step
    assert low["server"]["images"] == 5 and low["server"]["batch_size"]["distribution"] == {"1": 5}
    assert high["server"]["images"] == high["ok"]
    assert report["knee_per_s"] == 5  # a huge p99 target: the shedding rate still cannot pass


def test_the_grpc_protocol_sends_model_infer(small_bundle: Bundle) -> None:
    with served(small_bundle.path, "--grpc-port", "0", "--no-access-log") as running:
        config = RateConfig(url=running.url, rates=(20,), duration_s=0.5, protocol="grpc",
                            grpc_url=running.grpc_target, single_requests=2)
        run = run_rates(config, load_payloads(None))
    [step] = run.steps
    assert step.statuses == {"OK": 10} and step.ok == 10 and step.dropped == 0
    assert run.single is not None and step.server is not None and step.server["images"] == 10


@pytest.mark.parametrize(("args", "message"), [
    (["--request-rate", "10", "--protocol", "grpc"], "--protocol grpc needs --grpc-url HOST:PORT"),
    (["--request-rate", "10", "--protocol", "grpc", "--grpc-url", "10.1.2.3:8001"], "not a loopback address"),
    (["--request-rate", "10", "--concurrency", "4"], "two modes: give one"),
    (["--request-rate", "0"], "request rates must be positive"),
    (["--p99-ms", "50"], "go with --request-rate"),
])
def test_open_loop_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench-http", "http://127.0.0.1:9", *args])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1
