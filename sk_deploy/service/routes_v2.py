"""The KServe / Triton v2 protocol's routes: server and model metadata, health, the model's config, and infer
(JSON tensors or the binary tensor extension, ``kserve``; the body is declared by ``bodies.InferBody``)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from sk_deploy.service import v2_model
from sk_deploy.service.bodies import infer_body, read_body
from sk_deploy.service.errors import error_responses
from sk_deploy.service.kserve import BINARY_CONTENT_TYPE, HEADER_LENGTH, InferRequest, encode_response, parse_infer
from sk_deploy.service.served import VERSION, Service, current_service, deadline_for, unless_disconnected
from sk_deploy.service.v2_model import check_model, shapes

router = APIRouter(tags=["v2"])
ServiceDep = Annotated[Service, Depends(current_service)]
MODEL_PATHS = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
_EMPTY = {"description": "No body: the status says it", "content": {}}


@router.get("/v2", summary="KServe v2 server metadata")
async def server_metadata() -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return v2_model.server_metadata()


@router.get("/v2/health/live", summary="KServe v2 liveness", response_class=Response, responses={200: _EMPTY})
async def v2_live() -> Response:
    """200 while the process serves."""
    return Response(status_code=200)


@router.get("/v2/health/ready", summary="KServe v2 readiness", response_class=Response,
            responses={200: _EMPTY, 503: _EMPTY})
async def v2_ready(service: ServiceDep) -> Response:
    """200 once the model is loaded and warm."""
    return Response(status_code=200 if service.ready else 503)


async def model_metadata(service: ServiceDep) -> dict[str, Any]:
    """The model's versions, platform, inputs and outputs."""
    return v2_model.model_metadata(service)


async def model_ready(service: ServiceDep) -> Response:
    """200 once the model is loaded and warm."""
    return Response(status_code=200 if service.ready else 503)


async def model_config(service: ServiceDep) -> dict[str, Any]:
    """The model's configuration as Triton describes one (batching, inputs, outputs)."""
    datatype, _, _ = shapes(service)
    spec = service.input_spec
    return {"name": service.model, "max_batch_size": service.config.max_batch,
            "input": [{"name": spec.name, "data_type": f"TYPE_{datatype}", "dims": list(spec.item_shape)}],
            "output": [{"name": service.output_name, "data_type": "TYPE_FP32", "dims": [service.classes]}],
            "dynamic_batching": {"max_queue_delay_microseconds": int(service.config.max_delay_ms * 1e3)}}


HeaderLength = Annotated[int, Header(alias=HEADER_LENGTH, ge=0, le=2**40, description=(
    "The binary tensor extension: the JSON inference header's length in bytes; the tensors' bytes follow it"))]


async def infer(request: Request, service: ServiceDep, header_length: HeaderLength = None) -> Response:  # type: ignore[assignment]
    """Run the model on the request's input tensor; outputs as JSON, binary, or top-k classifications."""
    start = time.monotonic()

    async def parse() -> InferRequest:
        body = await read_body(request, service.config.max_body_bytes)
        return await asyncio.to_thread(parse_infer, body, header_length)  # validation off the event loop

    parsed, outputs = await v2_model.infer(service, parse, deadline_for(service, None, start), start,
                                           guard=lambda work: unless_disconnected(request, work))
    content, length = encode_response(service.model, VERSION, parsed.id, outputs)
    if length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type=BINARY_CONTENT_TYPE, headers={HEADER_LENGTH: str(length)})


def served_model(service: ServiceDep, name: str) -> None:
    """The route's model check (a dependency): 404 unless ``name`` is served."""
    check_model(service, name)


def served_version(service: ServiceDep, name: str, version: str) -> None:
    """The route's model check (a dependency): 404 unless ``name`` at ``version`` is served."""
    check_model(service, name, version)


_NOT_FOUND = error_responses(404)
for _path, _check in zip(MODEL_PATHS, (served_model, served_version), strict=True):
    _served = [Depends(_check)]
    router.add_api_route(_path, model_metadata, methods=["GET"], dependencies=_served, responses=_NOT_FOUND,
                         summary="KServe v2 model metadata")
    router.add_api_route(_path + "/ready", model_ready, methods=["GET"], dependencies=_served,
                         response_class=Response, responses={200: _EMPTY, 503: _EMPTY, **_NOT_FOUND},
                         summary="KServe v2 model readiness")
    router.add_api_route(_path + "/config", model_config, methods=["GET"], dependencies=_served,
                         responses=_NOT_FOUND, summary="Triton-style model config")
    router.add_api_route(_path + "/infer", infer, methods=["POST"], dependencies=_served, openapi_extra=infer_body(),
                         responses=error_responses(400, 404, 408, 413, 422, 429, 499, 500, 503, 504),
                         summary="KServe v2 inference (JSON or binary)")

