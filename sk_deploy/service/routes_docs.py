"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from the service itself: their scripts, style sheet and icon are
the ones the ``fastapi-offline`` wheel ships, served under ``/docs/assets/``, so the pages render with no network
(FastAPI's own pages load them from a CDN, and ReDoc its fonts from Google)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from sk_deploy.service.errors import ApiError

ASSETS = Path(fastapi_offline.__file__).parent / "static"
#: the files served, by name, with their media types: nothing else of the folder is reachable
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
         "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
OPENAPI = "/openapi.json"
ASSET_URL = "/docs/assets"

router = APIRouter()


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    """Swagger UI on the service's OpenAPI document, every asset from the service."""
    return get_swagger_ui_html(openapi_url=OPENAPI, title="sk-deploy - Swagger UI",
                               oauth2_redirect_url="/docs/oauth2-redirect",
                               swagger_js_url=f"{ASSET_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSET_URL}/swagger-ui.css",
                               swagger_favicon_url=f"{ASSET_URL}/favicon.png")


@router.get("/docs/oauth2-redirect", include_in_schema=False, response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (it has no asset)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False, response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    """ReDoc on the service's OpenAPI document, its script from the service and no web fonts."""
    return get_redoc_html(openapi_url=OPENAPI, title="sk-deploy - ReDoc",
                          redoc_js_url=f"{ASSET_URL}/redoc.standalone.js",
                          redoc_favicon_url=f"{ASSET_URL}/favicon.png", with_google_fonts=False)


@router.get(ASSET_URL + "/{name}", include_in_schema=False, response_class=FileResponse)
def asset(name: str) -> FileResponse:
    """One of the pages' assets (FILES); 404 for any other name."""
    if name not in FILES:
        raise ApiError(404, f"no documentation asset {name!r}")
    return FileResponse(ASSETS / name, media_type=FILES[name], headers={"Cache-Control": "max-age=86400"})
