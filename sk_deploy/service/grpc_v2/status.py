"""How the service's answers other than 200 travel over gRPC: one table from the HTTP status an ``ApiError`` carries
to the gRPC status code (the message goes unchanged), as Triton and grpc-gateway pair them."""

from __future__ import annotations

import grpc

CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,  # malformed, wrong shape or datatype, not finite, unknown input/output
    404: grpc.StatusCode.NOT_FOUND,  # unknown model or version
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # more pictures than the queue holds (grpc itself: message size)
    422: grpc.StatusCode.INVALID_ARGUMENT,  # the model's output for this input is not finite
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,  # the queue is full
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,  # loading, failed to load, draining
    504: grpc.StatusCode.DEADLINE_EXCEEDED,  # the request's deadline (the client's or --timeout-ms) passed
}


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code that stands for HTTP ``status``."""
    return CODES.get(status, grpc.StatusCode.UNKNOWN)
