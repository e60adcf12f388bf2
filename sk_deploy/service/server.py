"""Running the app under uvicorn: one process, one inference thread per device, graceful shutdown; the
connections guarded (``protocol.GuardedProtocol``: a cap on open connections, a deadline on headers).

On SIGTERM or Ctrl-C the server first drains: ``/readyz`` turns 503 and new inference requests are answered
503 (gRPC: UNAVAILABLE) while load balancers notice, for ``drain_seconds``; then uvicorn stops accepting
connections, waits for the requests in flight, the gRPC server lets its calls in flight finish, and the app
finishes what is queued before the backend is released. A second signal skips the drain.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from types import FrameType

import uvicorn

from sk_deploy.service.app import Service, ServiceConfig, create_app
from sk_deploy.service.memory import map_large_blocks
from sk_deploy.service.protocol import ConnectionLimits, GuardedProtocol


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period before its own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, service: Service, drain_seconds: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain_seconds = drain_seconds
        self.load_error: str | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain, then stop; a later one: stop now (uvicorn forces on a second Ctrl-C)."""
        if self.service.draining or self.drain_seconds <= 0:
            self.service.draining = True
            super().handle_exit(sig, frame)
            return
        self.service.draining = True
        timer = threading.Timer(self.drain_seconds, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup; on sockets bound beforehand (``listen.bind``), the line uvicorn prints only for the
        addresses it binds itself, with the real port (``--port 0``): what a person and the tests wait for."""
        await super().startup(sockets)
        if sockets and not self.should_exit:
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                                                    shown, port)

    def stop_for(self, message: str) -> None:
        """Stop the server because the model could not be loaded."""
        self.load_error = message
        self.should_exit = True


def serve(config: ServiceConfig, host: str = "127.0.0.1", port: int = 8000, drain_seconds: float = 1.0,
          log_level: str = "info", access_log: bool = True, sock: socket.socket | None = None,
          grpc_socket: socket.socket | None = None) -> str | None:
    """Serve ``config`` until stopped, on ``sock`` (from ``bind``) or a socket uvicorn binds to ``host:port``,
    and with ``grpc_socket`` (from ``reserve``) KServe v2 over gRPC on its address, in the same event loop; the
    model's load error, if it could not be served, else None."""
    map_large_blocks()  # large buffers (bodies, pictures, batches) go back to the system when freed
    service = Service(config)
    holder: dict[str, DrainingServer] = {}
    app = create_app(config, service, on_load_error=lambda message: holder["server"].stop_for(message),
                     grpc_socket=grpc_socket)
    limits = ConnectionLimits(max_connections=config.max_connections, header_timeout=config.header_timeout_ms / 1e3)
    uv_config = uvicorn.Config(app, host=host, port=port, workers=1, log_level=log_level, access_log=access_log,
                               timeout_graceful_shutdown=int(config.timeout_ms / 1e3) + 5, timeout_keep_alive=30,
                               http=functools.partial(GuardedProtocol, limits=limits))  # type: ignore[arg-type]
    server = holder["server"] = DrainingServer(uv_config, service, drain_seconds)
    server.run(sockets=[sock] if sock is not None else None)
    return server.load_error
