"""Connections that misbehave, on a real server with short deadlines: headers or a body that stall are a JSON
408 and the connection is closed; an idle connection is closed; a client gone mid-body is one log line and
status 499 in the metrics, never a 500; connections past ``--max-connections`` are refused with a JSON 503;
oversized headers are a 431. After each, the server classifies a good picture."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sk_deploy.bundle import Bundle
from tests.servers import ServerProcess, served

JPEG = {"Content-Type": "image/jpeg"}
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def guarded(small_bundle: Bundle) -> Iterator[ServerProcess]:
    """Headers and bodies must arrive within 0.5 s; at most MAX_CONNECTIONS connections."""
    with served(small_bundle.path, "--header-timeout-ms", "500", "--body-timeout-ms", "500", "--max-connections",
                str(MAX_CONNECTIONS)) as process:
        yield process


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], dict, bytes]:
    """(status, headers, JSON body, what follows once the server closes) of the one response on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    body, after = rest[: int(headers["content-length"])], sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body), after


def metric(server: ServerProcess, prefix: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def classifies(server: ServerProcess, photo: bytes) -> bool:
    return httpx.post(f"{server.url}/v1/classify", content=photo, headers=JPEG, timeout=30).status_code == 200


def test_stalled_headers_are_408_and_closed(guarded: ServerProcess, generated_jpeg: Path) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n")
        status, headers, body, after = answer(sock)
    assert (status, headers["connection"], after) == (408, "close", b"")
    assert "--header-timeout-ms" in body["error"]
    assert classifies(guarded, generated_jpeg.read_bytes())


def test_a_connection_that_sends_nothing_is_closed(guarded: ServerProcess) -> None:
    with connect(guarded) as sock:
        assert sock.recv(100) == b""  # closed by the server, without an answer to a request never made


def test_a_stalled_body_is_408_and_closed(guarded: ServerProcess, generated_jpeg: Path) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000"
                     b"\r\n\r\n" + generated_jpeg.read_bytes()[:100])
        status, headers, body, after = answer(sock)
    assert (status, headers["connection"], after) == (408, "close", b"")
    assert "--body-timeout-ms" in body["error"]
    assert classifies(guarded, generated_jpeg.read_bytes())


def test_a_client_gone_mid_body_is_499_and_one_log_line(guarded: ServerProcess, generated_jpeg: Path) -> None:
    gone = 'sk_requests_total{endpoint="/v1/classify",status="499"}'
    errors = 'sk_requests_total{endpoint="/v1/classify",status="500"}'
    before, errors_before = metric(guarded, gone), metric(guarded, errors)
    with connect(guarded) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000"
                     b"\r\n\r\n" + generated_jpeg.read_bytes()[:100])
        time.sleep(0.1)
    time.sleep(0.3)
    assert metric(guarded, gone) == before + 1
    assert metric(guarded, errors) == errors_before
    assert sum("went away after 100 bytes of the body of POST /v1/classify" in line for line in guarded.lines) == 1
    assert "Traceback" not in guarded.output
    assert classifies(guarded, generated_jpeg.read_bytes())


def test_connections_past_the_cap_are_refused(guarded: ServerProcess, generated_jpeg: Path) -> None:
    time.sleep(0.6)  # the other tests' connections are closed by now
    held = [connect(guarded) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(guarded) as extra:
            status, headers, body, after = answer(extra)
        assert (status, headers["connection"], after) == (503, "close", b"")
        assert "--max-connections" in body["error"]
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.1)
    assert classifies(guarded, generated_jpeg.read_bytes())


def test_oversized_headers_are_431(guarded: ServerProcess, generated_jpeg: Path) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 100_000 + b"\r\n")
        status, headers, body, _ = answer(sock)
    assert (status, headers["connection"]) == (431, "close") and "headers" in body["error"]
    assert classifies(guarded, generated_jpeg.read_bytes())


def test_a_request_the_http_parser_rejects_is_a_json_400(guarded: ServerProcess, generated_jpeg: Path) -> None:
    with connect(guarded) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1\xb2\r\n\r\n")
        status, headers, body, after = answer(sock)
    assert (status, headers["connection"], after) == (400, "close", b"")
    assert "malformed HTTP request" in body["error"]
    assert classifies(guarded, generated_jpeg.read_bytes())
