"""`sk-deploy serve` on an address it cannot listen on fails at once, before loading anything, and never says
``ready:``."""

from __future__ import annotations

import socket
import subprocess
import sys

from sk_deploy.bundle import Bundle


def test_a_busy_port_fails_before_loading_and_never_logs_ready(small_bundle: Bundle) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "sk_deploy", "serve", str(small_bundle.path), "--port",
                               str(port)], capture_output=True, text=True, timeout=5)
    assert done.returncode == 1
    assert "ready:" not in done.stdout + done.stderr and "preparing" not in done.stderr
    assert done.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
