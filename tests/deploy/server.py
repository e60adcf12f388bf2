"""A real server process on the loopback for tests: started, waited for until /readyz answers 200 (with a
deadline), and always stopped; when it fails to come up, the test fails with the tail of its output."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

READY_DEADLINE_S = 180.0  # import, model load and warm-up on a busy 2-core machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready_status(port: int, timeout: float = 2.0, path: str = "/readyz") -> int | None:
    """The HTTP status of GET ``path`` (/readyz), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def stop(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> int:
    """SIGTERM the process (its group), wait, then SIGKILL; its exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return int(process.returncode)


@contextlib.contextmanager
def running_server(argv: Sequence[str], port: int, env: dict[str, str] | None = None,
                   deadline_s: float = READY_DEADLINE_S, ready_path: str = "/readyz",
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (a server that will listen on ``port``) until the block ends; yield once ``ready_path``
    (/readyz) answers 200."""
    with tempfile.TemporaryDirectory(prefix="sk-server-") as folder:
        log = Path(folder) / "server.log"
        with open(log, "wb") as out:
            # its own process group, so a shell entrypoint and the server it execs are stopped together
            process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        try:
            deadline = time.monotonic() + deadline_s
            while ready_status(port, path=ready_path) != 200:
                if process.poll() is not None:
                    pytest.fail(f"server exited with {process.returncode} before it was ready:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready on port {port} after {deadline_s:.0f} s:\n{_tail(log)}")
                time.sleep(0.2)
            yield process
        except BaseException:
            print(f"--- server output ---\n{_tail(log)}")  # shown by pytest with the failure
            raise
        finally:
            stop(process)
