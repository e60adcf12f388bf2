"""What is served, liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

import sk_deploy
from sk_deploy.service.errors import ApiError, error_response, error_responses
from sk_deploy.service.metrics import CONTENT_TYPE
from sk_deploy.service.served import Service, current_service

router = APIRouter(tags=["health"])
ServiceDep = Annotated[Service, Depends(current_service)]


@router.get("/", summary="What this server serves")
async def index(service: ServiceDep) -> dict[str, Any]:
    """The model, backend (and why), input form, batching settings and endpoints."""
    predictor, config = service.predictor, service.config
    return {"service": "sk-deploy", "version": sk_deploy.__version__, "model": service.model,
            "bundle": str(config.bundle), "ready": service.ready,
            "backend": predictor.description if predictor else None,
            "backend_reason": predictor.reason if predictor else None,
            "precision": predictor.precision_choice.to_dict() if predictor else None,
            "input": {"name": service.input_spec.name, "form": service.input_spec.describe()},
            "batching": {"max_batch": config.max_batch, "max_delay_ms": config.max_delay_ms,
                         "max_queue": config.max_queue, "timeout_ms": config.timeout_ms,
                         "instances": config.instances},
            "endpoints": ["/v1/classify", "/v1/classify/batch", f"/v2/models/{service.model}/infer",
                          "/healthz", "/readyz", "/metrics", "/docs"]}


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """``{"status": "live"}`` while the process serves."""
    return {"status": "live"}


@router.get("/readyz", summary="Readiness: 200 once the model is loaded and warm", responses=error_responses(503))
async def readyz(service: ServiceDep) -> JSONResponse:
    """200 once the model is loaded and warm; otherwise 503 saying why."""
    if service.ready:
        return JSONResponse({"status": "ready", "model": service.model})
    try:
        service.require_ready()
    except ApiError as exc:
        return error_response(503, exc.message)
    return error_response(503, "not ready")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "The Prometheus text format", "content": {CONTENT_TYPE: {}}}})
async def metrics(service: ServiceDep) -> Response:
    """Every metric, in the Prometheus text format."""
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)
