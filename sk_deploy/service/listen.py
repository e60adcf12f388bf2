"""The listening sockets, bound before anything else of ``serve`` happens (a light module: no web framework, no
model), so that an address in use fails the command at once: HTTP's, and the port held for gRPC."""

from __future__ import annotations

import socket

from sk_deploy.errors import SkDeployError


class BindError(SkDeployError, OSError):
    """The address to listen on is taken or not this machine's."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, for uvicorn to listen on: taken before anything loads, so a busy port
    fails the command at once instead of after the model's load and warm-up."""
    return _bound(host, port, "", listen=True)


def reserve(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` but not listening, holding the port for the gRPC server (which binds by
    address, not on a socket of ours) until it starts: a busy port fails the command at once, and port 0
    becomes the real one gRPC then takes."""
    return _bound(host, port, " for gRPC", listen=False)


def _bound(host: str, port: int, what: str, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and grpc do: TIME_WAIT is no clash
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(2048)  # held from now on (uvicorn's backlog); asyncio's listen() on it again is harmless
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen{what} on {host}:{port}: {exc.strerror or exc}") from None
    return sock
