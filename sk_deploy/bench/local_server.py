"""``sk-deploy serve`` in a subprocess on 127.0.0.1, for load tests, benchmarks and the test suite.

It listens on a port of its own choosing (``--port 0``; the URL is read from uvicorn's log; with ``--grpc-port 0``
among its arguments the gRPC address too, ``grpc_target``), its output is kept for error messages, and it is
stopped with SIGTERM (the service's graceful shutdown), then SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message carries its output."""


class LocalServer:
    """``sk-deploy serve BUNDLE --host 127.0.0.1 --port 0 ARGS...``; ``url`` once it listens, and with
    ``--grpc-port`` in ARGS ``grpc_target`` (``127.0.0.1:PORT``, what ``tritonclient.grpc`` takes). ``module``: the
    module run as the command line (``python -m MODULE``)."""

    def __init__(self, bundle: str | Path, *args: str, env: dict[str, str] | None = None,
                 module: str = "sk_deploy") -> None:
        self.args = ["serve", str(bundle), "--host", "127.0.0.1", "--port", "0", *args]
        env = {**(os.environ if env is None else env), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", module, *self.args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.url = ""
        self.grpc_target = ""
        self._listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            grpc_found = re.search(r"gRPC listening on (\S+)", line)
            if grpc_found:
                self.grpc_target = grpc_found.group(1)  # logged before uvicorn's line
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self._listening.set()

    @property
    def grpc_port(self) -> int:
        """The gRPC port (0 until the server logs it, or without ``--grpc-port``)."""
        return int(self.grpc_target.rsplit(":", 1)[1]) if self.grpc_target else 0

    @property
    def output(self) -> str:
        """Everything the server printed so far."""
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 120.0) -> LocalServer:
        """Block until /readyz answers 200; a ServerError (the server stopped) if it exits or takes longer."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited with {self.process.returncode}:\n{self.output}")
            if self._listening.is_set():
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=2, trust_env=False).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the server was not ready within {timeout:.0f} s:\n{self.output}")

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

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
