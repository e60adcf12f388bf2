"""The grpc.aio server beside uvicorn, in the same event loop and on the same ``Service``: started in the app's
lifespan before the model loads (it answers UNAVAILABLE until the model is warm), stopped there with a grace
period when uvicorn shuts down (the RPCs in flight finish; new ones are refused)."""

from __future__ import annotations

import socket

import grpc

from sk_deploy.service.grpc_v2.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from sk_deploy.service.grpc_v2.servicer import InferenceServicer
from sk_deploy.service.listen import BindError
from sk_deploy.service.served import Service, log


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC (and a person) writes it, IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(service: Service, reserved: socket.socket) -> grpc.aio.Server:
    """A started gRPC server for ``service`` on the address ``reserved`` holds (``listen.reserve``), which it
    releases to grpc: messages over the body limit are refused (RESOURCE_EXHAUSTED), and another process on the
    port fails the bind instead of sharing it (no SO_REUSEPORT)."""
    host, port = reserved.getsockname()[:2]
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", service.config.max_body_bytes),
                                      ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service), server)
    reserved.close()  # grpc binds by address only; the port was ours until this instant
    try:
        bound = server.add_insecure_port(address(host, port))
    except RuntimeError as exc:
        raise BindError(f"cannot listen for gRPC on {address(host, port)}: {exc}") from None
    await server.start()
    log.info("gRPC listening on %s", address(host, bound))
    return server
