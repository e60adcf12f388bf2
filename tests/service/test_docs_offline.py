"""/docs and /redoc render with no network: every URL their pages load is the service's own, and each answers
with the real asset; the OpenAPI document they show lists the service's JSON error body, not FastAPI's 422."""

from __future__ import annotations

import re

import httpx
import pytest


def _loaded_urls(html: str) -> list[str]:
    """Every URL a page's HTML loads or links (src=, href=, url: ...)."""
    return re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_the_pages_load_nothing_from_another_host(client: httpx.Client, page: str, script: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    urls = [next(u for u in match if u) for match in _loaded_urls(answer.text)]
    assert f"/docs/assets/{script}" in urls
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", answer.text), "the page names another host"
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url


def test_the_assets_are_the_real_ones_and_nothing_else_is_served(client: httpx.Client) -> None:
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith("text/javascript") and b"SwaggerUIBundle" in script.content
    refused = client.get("/docs/assets/__init__.py")
    assert refused.status_code == 404 and "error" in refused.json()
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404


def test_the_openapi_document_lists_the_real_error_body(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    classify = document["paths"]["/v1/classify"]["post"]["responses"]
    assert {"400", "413", "415", "429", "503", "504"} <= set(classify)
    assert "HTTPValidationError" not in str(document)
    assert "/docs" not in document["paths"] and "/docs/assets/{name}" not in document["paths"]
