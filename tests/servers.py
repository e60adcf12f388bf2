"""A real ``sk-deploy serve`` on 127.0.0.1 for the tests (``sk_deploy.bench.local_server``): waited for until
/readyz answers 200; a server that does not come up fails the test with its output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sk_deploy.bench.local_server import LocalServer, ServerError

ServerProcess = LocalServer


def start_server(bundle: Path, *args: str, module: str = "sk_deploy") -> LocalServer:
    """A ready server for ``bundle`` (``module``: the module run as the command line)."""
    try:
        return LocalServer(bundle, *args, module=module).wait_ready()
    except ServerError as exc:
        pytest.fail(str(exc))


@contextmanager
def served(bundle: Path, *args: str, module: str = "sk_deploy") -> Iterator[LocalServer]:
    """A ready server for ``bundle`` for the length of the block."""
    server = start_server(bundle, *args, module=module)
    try:
        yield server
    finally:
        server.stop()
