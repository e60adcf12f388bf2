"""``bench-http`` against a real ``sk-deploy serve`` on 127.0.0.1 (the service contract of issue 6): every
request answered, the server's batch-size histogram and Triton counters agreeing with what the clients sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sk_deploy.bench.http_load import LoadConfig, load_payloads, run_sweep
from sk_deploy.bundle import Bundle
from tests.servers import served

MAX_BATCH = 8


@pytest.fixture(scope="module")
def service(small_bundle: Bundle) -> Iterator[str]:
    """A ready ``sk-deploy serve`` of the small bundle on 127.0.0.1; its base URL."""
    with served(small_bundle.path, "--max-batch", str(MAX_BATCH), "--max-delay-ms", "5") as server:
        yield server.url


def test_sweep_against_the_service(service: str) -> None:
    steps = run_sweep(LoadConfig(url=service, concurrency=(1, 8), duration_s=1.5, max_requests=150),
                      load_payloads(None))
    for step in steps:
        assert 0 < step.requests <= 150 and step.statuses == {"200": step.requests} and step.ok == step.requests
        server = step.server
        assert server is not None, step.server_note
        assert server["images"] == step.ok  # one picture per request, and nothing else is loading this server
        assert server["request_success"] == step.ok
        histogram = server["batch_size"]
        assert histogram["count"] == server["batches"] and histogram["sum"] == server["images"]
        assert 1.0 <= server["mean_batch_size"] <= MAX_BATCH
        assert set(histogram["distribution"]) <= {"1", "2", "3-4", "5-8"}  # never above --max-batch
    assert steps[0].server is not None and steps[0].server["mean_batch_size"] == 1.0  # one client: batches of one


def test_cli_bench_http_against_the_service(service: str, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "sk_deploy", "bench-http", service, "--concurrency", "1,4",
                          "--duration-ms", "1000", "--max-requests", "40", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "bench-http.json").read_text())
    assert [s["concurrency"] for s in report["steps"]] == [1, 4] and report["complete"]
    assert all(s["errors"] == 0 and 0 < s["requests"] <= 40 for s in report["steps"])
    assert "mean" in run.stdout and "| 4 |" in (tmp_path / "bench-http.md").read_text()
