"""A real ``sk-deploy serve`` process on 127.0.0.1 for the tests: started on a port of its own choosing (``--port
0``, read from its log), waited for until /readyz answers 200, stopped with SIGTERM; its output is shown when
something goes wrong."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

READY_TIMEOUT = 120.0


class ServerProcess:
    """``sk-deploy serve BUNDLE --port 0 ARGS...`` in a subprocess; ``url`` once it listens."""

    def __init__(self, bundle: Path, *args: str) -> None:
        command = [sys.executable, "-m", "sk_deploy", "serve", str(bundle), "--host", "127.0.0.1", "--port", "0",
                   *args]
        env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self._listening.set()

    @property
    def output(self) -> str:
        """Everything the server printed so far."""
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until /readyz answers 200 (fails the test, with the server's output, otherwise)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.output}")
            if self._listening.is_set():
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server was not ready within {timeout:.0f} s:\n{self.output}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(bundle: Path, *args: str) -> ServerProcess:
    """A ready server for ``bundle``."""
    server = ServerProcess(bundle, *args)
    server.wait_ready()
    return server


@contextmanager
def served(bundle: Path, *args: str) -> Iterator[ServerProcess]:
    """A ready server for ``bundle`` for the length of the block."""
    server = start_server(bundle, *args)
    try:
        yield server
    finally:
        server.stop()
