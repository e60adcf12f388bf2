"""The GRPCInferenceService of the served model: the same ``Service`` as the HTTP routes (its batcher, limits,
deadlines, draining and metrics) behind the six calls of ``grpc_predict_v2.proto``. Every call counts in
``sk_requests`` under its method's path, with the HTTP status its answer stands for; an infer counts in Triton's
``nv_inference_*`` as an HTTP one does. A refusal is a gRPC status code (``status``) with the one-line message
the HTTP answer carries."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from sk_deploy.service import v2_model
from sk_deploy.service.errors import ApiError
from sk_deploy.service.grpc_v2 import grpc_predict_v2_pb2 as pb
from sk_deploy.service.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from sk_deploy.service.grpc_v2.messages import infer_response, model_metadata, parse_request
from sk_deploy.service.grpc_v2.status import grpc_code
from sk_deploy.service.kserve import InferRequest
from sk_deploy.service.served import VERSION, Service, log

SERVICE_PATH = "/inference.GRPCInferenceService"
Reply = TypeVar("Reply")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Reply]]


def _rpc(method: Handler[Reply]) -> Handler[Reply]:
    """``method`` counted and timed in ``sk_requests``; an ApiError becomes its gRPC status code and message
    (Retry-After as trailing metadata), a fault of the server's own INTERNAL (the details in the log)."""
    endpoint = f"{SERVICE_PATH}/{method.__name__}"

    @functools.wraps(method)
    async def handler(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Reply:
        start, status = time.perf_counter(), 500
        try:
            reply = await method(self, request, context)
            status = 200
            return reply
        except ApiError as exc:
            status = exc.status
            if "Retry-After" in exc.headers:
                context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
            await context.abort(grpc_code(exc.status), exc.message)
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            status = 499
            raise
        except Exception as exc:
            log.error("gRPC %s failed: %s: %s", endpoint, type(exc).__name__, exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); the server's "
                                                          f"log has the details")
        finally:
            self.service.metrics.observe_request(endpoint, status, time.perf_counter() - start)
        raise AssertionError("unreachable: context.abort raises")

    return handler


def request_deadline(service: Service, context: grpc.aio.ServicerContext, start: float) -> float:
    """The request's deadline (a ``time.monotonic()`` instant): the server's timeout, or the client's gRPC
    deadline when that is sooner."""
    deadline = start + service.config.timeout_ms / 1e3
    remaining = context.time_remaining()
    return deadline if remaining is None else min(deadline, time.monotonic() + remaining)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over gRPC for ``service``."""

    def __init__(self, service: Service) -> None:
        self.service = service

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) \
            -> pb.ServerLiveResponse:
        """Live while the process serves."""
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) \
            -> pb.ServerReadyResponse:
        """Ready once the model is loaded and warm, until the server drains."""
        return pb.ServerReadyResponse(ready=self.service.ready)

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) \
            -> pb.ModelReadyResponse:
        """Whether the named model (and version) is served and ready; not ready for one it does not serve, as
        Triton answers."""
        try:
            v2_model.check_model(self.service, request.name, request.version)
        except ApiError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.service.ready)

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) \
            -> pb.ServerMetadataResponse:
        """The server's name, version and protocol extensions."""
        return pb.ServerMetadataResponse(**v2_model.server_metadata())

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) \
            -> pb.ModelMetadataResponse:
        """The model's versions, platform, inputs and outputs; NOT_FOUND for a model or version not served."""
        v2_model.check_model(self.service, request.name, request.version)
        return model_metadata(v2_model.model_metadata(self.service))

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) \
            -> pb.ModelInferResponse:
        """The model run on the request's input through the batcher: the logits, or the classification
        extension's top-k, as raw_output_contents."""
        service, start = self.service, time.monotonic()
        v2_model.check_model(service, request.model_name, request.model_version)
        if service.draining:  # as the HTTP middleware refuses new inference while draining
            service.metrics.reject("draining")
            raise ApiError(503, "the server is shutting down", {"Retry-After": "1"})

        async def parse() -> InferRequest:
            return await asyncio.to_thread(parse_request, request)  # validation off the event loop

        parsed, outputs = await v2_model.infer(service, parse, request_deadline(service, context, start), start)
        return infer_response(service.model, VERSION, parsed.id, outputs)
