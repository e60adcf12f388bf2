"""The HTTP connection itself, before the app sees a request: a cap on open connections and a deadline (and a
size cap) on the request headers, so a handful of stalled sockets cannot hold the server.

uvicorn's own httptools protocol with three checks added, and its answer to a request the HTTP parser
rejects written as JSON. The app never sees these requests, so the answers
are written here: JSON like every other answer, then the connection is closed. The deadline on the *body* is
the app's (``middleware.Guard``), since the body is read there.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost before its request reaches the app."""

    max_connections: int = 1024
    header_timeout: float = 10.0
    """Seconds from the connection (or the first byte of a request) to the end of its headers."""
    max_header_bytes: int = 64 * 1024


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with ``ConnectionLimits`` enforced."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request's headers have arrived, not yet all of them
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse a connection past ``max_connections``; otherwise start the header deadline."""
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning("refused a connection: %d open, the limit is %d", len(self.connections) - 1,
                                self.limits.max_connections)
            self._refuse(503, f"too many open connections (the limit is {self.limits.max_connections}, "
                              f"sk-deploy serve --max-connections); retry shortly")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; headers still incomplete past ``max_header_bytes`` are a 431."""
        super().data_received(data)
        if self._header_timer is not None and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(431, f"the request headers are over {self.limits.max_header_bytes // 1024} KB")

    def on_message_begin(self) -> None:
        """A request starts: its headers must be complete within the deadline."""
        super().on_message_begin()
        self._partial = True
        self._arm()

    def on_headers_complete(self) -> None:
        """The headers are in: the deadline is met, the request goes to the app."""
        self._disarm()
        self._partial = False
        self._header_bytes = 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser rejects (a malformed request line, header or length) is a JSON 400 too."""
        self._refuse(400, f"malformed HTTP request ({msg.rstrip('.')})")

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if not self._partial:  # connected and sent nothing: closed without a word, as nginx does
            self.logger.info("closed an idle connection that sent no request in %g s", self.limits.header_timeout)
            self.transport.close()
            return
        self.logger.info("closed a connection whose request headers took over %g s", self.limits.header_timeout)
        self._refuse(408, f"the request headers did not arrive within {self.limits.header_timeout:g} s "
                          f"(sk-deploy serve --header-timeout-ms); closing the connection")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``{"error": message}`` with ``status`` and close the connection."""
        self._disarm()
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()
