"""The v2 protocol's rules about the served model, in one place for both transports (HTTP in ``routes_v2``, gRPC in
``grpc_v2``): which model and version it is, the server's and the model's metadata, the input the model takes,
the outputs a request may ask for, and an infer request's course through the batcher, counted in Triton's
metrics. A transport only reads its request into an ``InferRequest`` and writes the answer in its own form."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

import sk_deploy
from sk_deploy.service.errors import ApiError
from sk_deploy.service.kserve import InferRequest, ProtocolError, RequestedOutput, classification, v2_datatype
from sk_deploy.service.served import VERSION, Service

EXTENSIONS = ("binary_tensor_data", "classification")
Outputs = list[tuple[RequestedOutput, np.ndarray]]


def check_model(service: Service, name: str, version: str | None = None) -> None:
    """A 404 unless ``name`` (and ``version``, if given) is what this server serves."""
    if name != service.model:
        raise ApiError(404, f"unknown model {name!r}; this server serves {service.model!r}")
    if version not in (None, "", VERSION):
        raise ApiError(404, f"unknown version {version!r} of {name!r}; it has version {VERSION}")


def shapes(service: Service) -> tuple[str, list[int], list[int]]:
    """The input's v2 datatype, the input's shape and the output's, a variable batch as -1."""
    spec = service.input_spec
    return v2_datatype(spec.dtype), [-1, *spec.item_shape], [-1, service.classes]


def server_metadata() -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": "sk-deploy", "version": sk_deploy.__version__, "extensions": list(EXTENSIONS)}


def model_metadata(service: Service) -> dict[str, Any]:
    """The model's versions, platform, inputs and outputs."""
    datatype, input_shape, output_shape = shapes(service)
    backend = service.predictor.backend if service.predictor else service.config.backend
    return {"name": service.model, "versions": [VERSION], "platform": f"sk-deploy_{backend}",
            "inputs": [{"name": service.input_spec.name, "datatype": datatype, "shape": input_shape}],
            "outputs": [{"name": service.output_name, "datatype": "FP32", "shape": output_shape}]}


def model_input(service: Service, inputs: dict[str, tuple[str, np.ndarray]]) -> np.ndarray:
    """The model's input array from a request's inputs, or a 400 naming what the model takes."""
    spec = service.input_spec
    datatype, input_shape, _ = shapes(service)
    expected = f"{spec.name!r} {datatype} {input_shape}"
    if list(inputs) != [spec.name]:
        raise ApiError(400, f"the model takes one input, {expected}; got {', '.join(map(repr, inputs))}")
    got_type, array = inputs[spec.name]
    if got_type != datatype or tuple(array.shape[1:]) != spec.item_shape or array.ndim != len(input_shape) \
            or array.shape[0] < 1:
        raise ApiError(400, f"input {spec.name!r}: expected {datatype} {input_shape}, "
                            f"got {got_type} {list(array.shape)}")
    return np.ascontiguousarray(array)


def wanted_outputs(service: Service, request: InferRequest) -> list[RequestedOutput]:
    """The outputs to answer (the model's one when none is named), or a 400 for an output it does not have."""
    wanted = request.outputs or [RequestedOutput(service.output_name, request.binary_output_default)]
    for out in wanted:
        if out.name != service.output_name:
            raise ApiError(400, f"unknown output {out.name!r}; the model's output is {service.output_name!r}")
    return wanted


async def infer(service: Service, parse: Callable[[], Awaitable[InferRequest]], deadline: float, start: float,
                guard: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None) -> tuple[InferRequest, Outputs]:
    """Read a request (``parse``), run its input through the batcher by ``deadline`` and return it with the
    outputs it asked for (the logits, or the classification extension's top-k). ``guard`` wraps the wait (HTTP:
    cancelled when the client disconnects). A failure counts in ``nv_inference_request_failure`` and is an
    ApiError (a malformed request: 400)."""
    metrics = service.metrics
    try:
        service.require_ready()
        request = await parse()
        array = model_input(service, request.inputs)
        wanted = wanted_outputs(service, request)
        work = service.infer(array, deadline)
        logits, _ = await (guard(work) if guard else work)
    except ProtocolError as exc:
        metrics.failure.inc()
        raise ApiError(400, str(exc)) from None
    except (ApiError, asyncio.CancelledError):
        metrics.failure.inc()
        raise
    metrics.succeeded(time.monotonic() - start)
    return request, [(out, classification(logits, out.classification, service.labels) if out.classification
                           else logits) for out in wanted]
