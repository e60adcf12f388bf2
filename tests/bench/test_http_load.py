"""The HTTP load generator's own logic: loopback only unless allowed, the pictures it posts, the bounds of a
step (count and time), answers counted by status, and the server's metrics read around each step. The server
here is a scripted loopback HTTP server (every second request refused with 429), so every count is exact; the
real service is loaded in test_http_serve.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from typer.testing import CliRunner

from sk_deploy.bench.http_load import LoadConfig, LoadError, check_url, is_loopback, load_payloads, run_sweep
from sk_deploy.cli import app
from tests.conftest import make_image


class Scripted(ThreadingHTTPServer):
    """Answers /v1/classify 200 and 429 in turn, counts what it receives, exposes its batches on /metrics."""

    daemon_threads = True

    def __init__(self, metrics: bool = True, delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.metrics, self.delay_s = metrics, delay_s
        self.lock = threading.Lock()
        self.posted: list[tuple[str, int]] = []
        self.registry = CollectorRegistry()
        self.batch = Histogram("sk_batch_size", "batches", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                               registry=self.registry).labels(model="m")
        self.images = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/readyz":
            self._send(200, b"{}")
        elif self.path == "/metrics" and self.server.metrics:
            triton = (f"# TYPE nv_inference_count counter\nnv_inference_count{{model=\"m\"}} {self.server.images}\n"
                      f"# TYPE nv_inference_exec_count counter\nnv_inference_exec_count{{model=\"m\"}} "
                      f"{self.server.images}\n")
            self._send(200, generate_latest(self.server.registry) + triton.encode(), "text/plain")
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.delay_s)
        with self.server.lock:
            self.server.posted.append((self.headers["Content-Type"], len(body)))
            accepted = len(self.server.posted) % 2 == 1
            if accepted:
                self.server.images += 1
                self.server.batch.observe(1)
        if not self.path.startswith("/v1/classify?top_k="):
            self._send(404, b"{}")
        elif accepted:
            self._send(200, b'{"predictions": []}')
        else:
            self._send(429, b'{"error": "queue full"}')


def serve(server: Scripted) -> Iterator[Scripted]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def scripted() -> Iterator[Scripted]:
    yield from serve(Scripted())


def test_only_loopback_unless_allowed() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(host) for host in ("10.0.0.1", "0.0.0.0", "example.com", "localhost.example.com"))
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert check_url(f"http://{host}:8000/") == f"http://{host}:8000"
    for url in ("http://10.0.0.1:8000", "http://192.168.1.2", "https://example.com", "http://0.0.0.0:8000"):
        with pytest.raises(LoadError, match="not a loopback address"):
            check_url(url)
    assert check_url("http://10.0.0.1:8000", allow_remote=True) == "http://10.0.0.1:8000"
    with pytest.raises(LoadError, match="not an http"):
        check_url("ftp://127.0.0.1/")


def test_pictures_to_post(tmp_path: Path) -> None:
    generated = load_payloads(None)
    assert len(generated) == 8 and {p.content_type for p in generated} == {"image/png"}
    assert all(p.data.startswith(b"\x89PNG") for p in generated)
    make_image(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    make_image(tmp_path / "sub" / "b.png")
    make_image(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("not a picture")
    found = load_payloads(tmp_path)
    assert [(p.name, p.content_type) for p in found] == [("a.jpg", "image/jpeg"), ("b.png", "image/png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="no pictures"):
        load_payloads(tmp_path / "empty")


def test_a_step_stops_at_its_request_count_and_counts_by_status(scripted: Scripted) -> None:
    payloads = load_payloads(None)
    config = LoadConfig(url=scripted.url, concurrency=(1, 3), duration_s=60.0, max_requests=20)
    steps = run_sweep(config, payloads)
    assert [s.concurrency for s in steps] == [1, 3]
    for step in steps:
        assert (step.requests, step.ok, step.errors) == (20, 10, 10)
        assert step.statuses == {"200": 10, "429": 10}
        assert step.latency is not None and step.latency.n == 10 and step.requests_per_s > 0
        server = step.server
        assert server is not None and server["images"] == 10 and server["batches"] == 10
        assert server["mean_batch_size"] == 1.0 and server["batch_size"]["distribution"] == {"1": 10}
        assert server["request_success"] is None  # not exposed by this server: absent, not invented
    assert len(scripted.posted) == 40  # the count bound holds across clients: not one request more
    sizes = {len(p.data) for p in payloads}
    assert {c for c, _ in scripted.posted} == {"image/png"} and {n for _, n in scripted.posted} <= sizes


def test_a_step_stops_in_time_and_says_when_metrics_are_missing() -> None:
    for server in serve(Scripted(metrics=False, delay_s=0.02)):
        [step] = run_sweep(LoadConfig(url=server.url, concurrency=(2,), duration_s=0.3, max_requests=100_000),
                           load_payloads(None))
        assert 0 < step.requests < 100_000 and step.requests == len(server.posted)
        assert step.server is None and step.server_note == "GET /metrics answered 404"


def test_cli_bench_http(scripted: Scripted, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench-http", scripted.url, "--concurrency", "2", "--duration-ms", "30000",
                                      "--max-requests", "6", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench-http.json").read_text())
    [step] = report["steps"]
    assert (step["requests"], step["ok"], step["statuses"]) == (6, 3, {"200": 3, "429": 3})
    assert report["complete"] and report["pictures"] == 8
    assert "429 x3" in (tmp_path / "bench-http.md").read_text()
    remote = CliRunner().invoke(app, ["bench-http", "http://192.0.2.1:8000"])
    assert remote.exit_code == 1 and "not a loopback address" in remote.output
