"""The shared server of the service tests: the small bundle behind a real ``sk-deploy serve`` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sk_deploy.bundle import Bundle
from tests.servers import ServerProcess, served


@pytest.fixture(scope="session")
def server(small_bundle: Bundle) -> Iterator[ServerProcess]:
    """The small skresnet18 bundle on ort-cpu (what the tests compare against; openvino has its own server in
    test_openvino_serve.py) with default batching, a 1 MB body limit and a 1 megapixel limit (so the size and
    decompression-bomb refusals are cheap to provoke)."""
    with served(small_bundle.path, "--backend", "ort-cpu", "--max-body-mb", "1", "--max-pixels", "1000000") as process:
        yield process


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client on the shared server."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
