"""schemathesis, every check, against the real server's OpenAPI document (its request bodies described), with
a fixed seed and a bounded number of examples: no server error, no traceback, and every failure that remains
is of a kind docs/service.md explains (a schema-valid request the server still refuses with a 400, because the
schema cannot say "a decodable picture" or "as many values as the shape holds").

The one 5xx allowed: 504 to a request that set its own ``timeout_ms`` (the deadline the client asked for,
missed on a busy machine), which schemathesis counts as a server error like any 5xx."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ServerProcess

pytest.importorskip("schemathesis")

EXAMPLES, SEED = 25, 1
EXPLAINED = {"positive_data_acceptance"}
"""Failure kinds docs/service.md explains ("Soak, schemathesis and the tests")."""


@dataclass(frozen=True)
class Failure:
    """One failed check on one response."""

    check: str
    operation: str
    status: int
    error: str
    uri: str


def failures(ndjson: Path) -> list[Failure]:
    """Every failed check in schemathesis' NDJSON event stream, with the response it failed on."""
    found = []
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        recorder = event.get("ScenarioFinished", {}).get("recorder", {})
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] == "success":
                    continue
                interaction = recorder["interactions"][case_id]
                response = interaction["response"] or {}
                body = base64.b64decode((response.get("content") or {}).get("$base64", "")).decode(errors="replace")
                found.append(Failure(check["name"], recorder["label"], response.get("status_code", 0), body,
                                     interaction["request"]["uri"]))
    return found


def client_deadline(failure: Failure) -> bool:
    """A 504 answering a request's own timeout_ms."""
    return failure.status == 504 and "timeout_ms=" in failure.uri and "deadline" in failure.error


def test_schemathesis_all_checks(server: ServerProcess, tmp_path: Path) -> None:
    report = tmp_path / "events.ndjson"
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "all",
         "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--no-shrink", "--continue-on-failure",
         "--generation-database", "none", "--request-timeout", "30", "--report", "ndjson",
         "--report-ndjson-path", str(report)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    assert "Tested: 17" in run.stdout, run.stdout[-3000:]
    found = failures(report)
    server_errors = [f for f in found if f.status >= 500 and not client_deadline(f)]
    assert not server_errors, server_errors[:5]
    unexplained = [f for f in found if f.check not in EXPLAINED and not client_deadline(f)]
    assert not unexplained, unexplained[:5]
    for failure in found:
        if failure.check in EXPLAINED:
            assert failure.status == 400 and json.loads(failure.error)["error"], failure
    assert "Traceback" not in server.output
