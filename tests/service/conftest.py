"""An HTTP client on the shared server (``server`` in tests/conftest.py): the small bundle behind a real
``sk-deploy serve`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ServerProcess


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client on the shared server."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
