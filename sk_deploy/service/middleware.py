"""ASGI middleware around every request: 503 for new inference while draining, the body's read deadline, a
client gone mid-body (one log line, counted as status 499), memory given back after large bodies, and every
request counted and timed by endpoint and status."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sk_deploy.service.errors import ApiError, error_response
from sk_deploy.service.memory import Trimmer
from sk_deploy.service.served import Service

log = logging.getLogger("uvicorn.error")

GONE = 499
"""The status counted for a client that went away before its answer (nginx's "client closed request")."""
TRIM_AFTER_BYTES = 64 * 1024
"""Bodies at least this large are followed by a ``malloc_trim`` (throttled): their pictures and arrays were
large too."""

_KNOWN_PATHS = {"/", "/v1/classify", "/v1/classify/batch", "/healthz", "/readyz", "/metrics", "/v2",
                "/v2/health/live", "/v2/health/ready"}
_INFERENCE_PREFIXES = ("/v1/", "/v2/models/")


def endpoint_label(path: str) -> str:
    """A bounded label for metrics: the route, not the raw path."""
    if path.startswith("/v2/models/"):
        return "/v2/infer" if path.endswith("/infer") else "/v2/models"
    return path if path in _KNOWN_PATHS else "other"


class BodyReader:
    """The request's ``receive``, with a deadline on the whole body and a count of its bytes."""

    def __init__(self, receive: Receive, timeout: float) -> None:
        self._receive, self.timeout = receive, timeout
        self.deadline = time.monotonic() + timeout
        self.received = 0
        self.complete = False

    async def receive(self) -> Message:
        """The next message; a 408 (and the connection closed) once the body is later than the deadline."""
        if self.complete:  # after the body: waiting for a disconnect has no deadline
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            log.info("closing a connection whose request body took over %g s (%d bytes arrived)", self.timeout,
                     self.received)
            raise ApiError(408, f"the request body did not arrive within {self.timeout:g} s (sk-deploy serve "
                                f"--body-timeout-ms); closing the connection", {"Connection": "close"}) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        return message


class Guard:
    """The service's ASGI middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service
        self.trimmer = Trimmer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request through the app, with the checks above."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, start, status = scope["path"], time.perf_counter(), 500
        metrics = self.service.metrics
        if self.service.draining and path.startswith(_INFERENCE_PREFIXES) and scope["method"] == "POST":
            metrics.reject("draining")
            response = error_response(503, "the server is shutting down", {"Retry-After": "1",
                                                                            "Connection": "close"})
            await response(scope, receive, send)
            metrics.observe_request(endpoint_label(path), 503, time.perf_counter() - start)
            return
        body = BodyReader(receive, self.service.config.body_timeout_ms / 1e3)

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, body.receive, counting_send)
        except ClientDisconnect:
            status = GONE
            log.info("client %s went away after %d bytes of the body of %s %s", _peer(scope), body.received,
                     scope["method"], path)
        finally:
            metrics.observe_request(endpoint_label(path), status, time.perf_counter() - start)
            if body.received >= TRIM_AFTER_BYTES:
                self.trimmer.soon()


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
