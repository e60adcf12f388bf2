"""The FastAPI application: its lifespan, its error handlers, its middleware and one router per protocol.

``create_app(ServiceConfig(bundle=...))`` returns the app. Its lifespan loads the bundle's model on the chosen
backend and warms it up in a worker thread, so the server answers ``/healthz`` at once and ``/readyz`` (and
inference) only once the model is warm; with a gRPC socket it also starts the KServe v2 gRPC server
(``grpc_v2``) on the same ``Service`` before the model loads, and stops it after uvicorn's shutdown. Every
answer other than 200 is a JSON body ``{"error": "..."}`` with a 4xx/5xx status (``errors``); request bodies
are declared and validated in ``bodies``; the routes are in ``routes_v1`` (classification), ``routes_v2``
(KServe v2) and ``routes_health``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

import sk_deploy
from sk_deploy.service import routes_docs, routes_health, routes_v1, routes_v2
from sk_deploy.service.bodies import BODY_MODELS
from sk_deploy.service.errors import ApiError, error_response
from sk_deploy.service.listen import BindError
from sk_deploy.service.middleware import Guard
from sk_deploy.service.served import VERSION, Service, ServiceConfig, log

__all__ = ["Service", "ServiceConfig", "create_app"]


def _lifespan(service: Service, on_load_error: Callable[[str], None] | None,
              grpc_socket: socket.socket | None) -> Callable[..., Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        grpc_server = None
        if grpc_socket is not None:
            from sk_deploy.service.grpc_v2.server import start_grpc  # grpc loads only when asked for

            try:
                grpc_server = await start_grpc(service, grpc_socket)
            except BindError as exc:  # the port was taken in the instant between its reservation and grpc's bind
                log.error("%s", exc)
                if on_load_error:
                    on_load_error(str(exc))

        def loaded(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                service.error = str(task.exception())
                log.error("cannot serve %s: %s", service.config.bundle, service.error)
                if on_load_error:
                    on_load_error(service.error)

        loading = asyncio.ensure_future(asyncio.to_thread(service.load))
        loading.add_done_callback(loaded)
        yield
        service.draining = True
        if grpc_server is not None:  # after uvicorn's own shutdown; the batcher still runs for gRPC's in flight
            await grpc_server.stop(grace=service.config.timeout_ms / 1e3 + 1)
        await asyncio.wait({loading})
        await asyncio.to_thread(service.close)
        log.info("stopped: %s", service.model)

    return lifespan


async def api_error(_: Request, exc: Exception) -> JSONResponse:
    """An ApiError as its JSON answer."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.headers)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) as JSON; a 405 keeps its Allow header."""
    assert isinstance(exc, StarletteHTTPException)
    message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
    return error_response(exc.status_code, str(message), dict(exc.headers or {}))


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """A query, path or header parameter of the wrong type: 400 naming it."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
    return error_response(400, problems)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A fault of the server's own (a bug): still a JSON answer, the traceback in the log."""
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(500, f"internal error ({type(exc).__name__}); the server's log has the details")


def _openapi(app: FastAPI, service: Service) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with the request bodies' models in its components, 400 (not FastAPI's 422) for
    invalid parameters, as the handlers answer, and the served model's name and version in the v2 paths."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in BODY_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            served = {"name": service.model, "version": VERSION}
            for path in document["paths"].values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
                    for parameter in operation.get("parameters", []):
                        if parameter["in"] == "path" and parameter["name"] in served:
                            parameter["schema"] = {"type": "string", "enum": [served[parameter["name"]]]}
                        if parameter["name"] == "top_k":
                            parameter["schema"]["maximum"] = service.classes
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


def _include(app: FastAPI, router: APIRouter) -> None:
    """``router``'s routes added to the app itself, as they are: FastAPI's ``include_router`` adds a router as
    one opaque entry, and ``app.routes`` should list every path the app serves."""
    for route in router.routes:
        assert isinstance(route, APIRoute)
        app.add_api_route(route.path, route.endpoint, methods=sorted(route.methods), name=route.name,
                          dependencies=route.dependencies, responses=route.responses, summary=route.summary,
                          openapi_extra=route.openapi_extra, response_class=route.response_class, tags=route.tags,
                          include_in_schema=route.include_in_schema)


def create_app(config: ServiceConfig, service: Service | None = None,
               on_load_error: Callable[[str], None] | None = None, grpc_socket: socket.socket | None = None) -> FastAPI:
    """The service's FastAPI app for ``config`` (a prepared ``service`` may be passed in). ``on_load_error`` is
    called with the message if the model cannot be loaded (the command line stops the server then). With
    ``grpc_socket`` (``listen.reserve``) its lifespan also serves KServe v2 over gRPC on that address."""
    service = service or Service(config)
    app = FastAPI(title="sk-deploy", version=sk_deploy.__version__,
                  lifespan=_lifespan(service, on_load_error, grpc_socket),
                  docs_url=None, redoc_url=None,  # routes_docs serves both, with their assets, offline
                  summary=f"Image classification with {service.model}: dynamic batching, KServe v2, metrics")
    app.state.service = service
    app.add_middleware(Guard, service=service)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
    for router in (routes_v1.router, routes_v2.router, routes_health.router, routes_docs.router):
        _include(app, router)
    app.openapi = _openapi(app, service)  # type: ignore[method-assign]
    return app
