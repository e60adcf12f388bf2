"""The v1 protocol: ``POST /v1/classify`` (one picture) and ``POST /v1/classify/batch`` (several), each taking
a raw picture body, multipart files or base64 JSON (``bodies``), answering the top-k with timings."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from sk_deploy.images import ImageError
from sk_deploy.runtime.classify import top_k as ranked_top_k
from sk_deploy.service.batcher import BatchResult
from sk_deploy.service.bodies import BatchForm, BatchJson, ClassifyForm, ClassifyJson, picture_body, read_pictures
from sk_deploy.service.errors import ApiError, error_responses
from sk_deploy.service.served import Service, current_service, deadline_for, unless_disconnected

router = APIRouter(tags=["v1"])

TopK = Annotated[int, Query(ge=1, description="How many classes to answer, best first (at most the model's "
                                             "classes)")]
MIN_TIMEOUT_MS = 50
TimeoutMs = Annotated[float, Query(ge=MIN_TIMEOUT_MS, allow_inf_nan=False, description=(
    "A deadline shorter than the server's --timeout-ms, in milliseconds; shorter than 50 ms is refused: decoding "
    "and batching alone may take that"))]
ServiceDep = Annotated[Service, Depends(current_service)]
_ERRORS = error_responses(400, 408, 413, 415, 422, 429, 499, 500, 503, 504)


async def decode_all(service: Service, pictures: list[bytes]) -> tuple[np.ndarray, float]:
    """The decoded batch and the seconds decoding took; a picture that is not one is a 400 naming it."""
    start = time.perf_counter()
    results = await asyncio.gather(*(service.decoder.decode(p) for p in pictures), return_exceptions=True)
    for i, result in enumerate(results):
        if isinstance(result, ImageError):
            where = "" if len(pictures) == 1 else f"picture {i}: "
            raise ApiError(400, where + str(result).removeprefix("<bytes>: "))
        if isinstance(result, BaseException):
            raise result
    return np.stack(results), time.perf_counter() - start  # type: ignore[arg-type]


def _ranked(service: Service, logits: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
    return [[{"index": p.index, "label": p.label, "probability": p.probability} for p in row]
            for row in ranked_top_k(logits, k, service.labels)]


def _timings(start: float, decode: float, result: BatchResult) -> dict[str, float]:
    return {"queue": round(result.queue_seconds * 1e3, 3), "preprocess": round(decode * 1e3, 3),
            "inference": round(result.compute_seconds * 1e3, 3),
            "total": round((time.monotonic() - start) * 1e3, 3), "batch_size": result.batch_size}


async def _answer(service: Service, request: Request, many: bool, k: int, timeout_ms: float | None) -> dict[str, Any]:
    start = time.monotonic()
    if not 1 <= k <= service.classes:
        raise ApiError(400, f"top_k must be between 1 and {service.classes}")
    deadline = deadline_for(service, timeout_ms, start)
    service.require_ready()
    pictures = await read_pictures(request, service.config.max_body_bytes, many, service.config.max_queue)
    batch, decode = await decode_all(service, pictures)
    logits, results = await unless_disconnected(request, service.infer(batch, deadline))
    service.metrics.succeeded(time.monotonic() - start)
    per_picture = [r for r in results for _ in range(len(r.logits))]
    answers = [{"predictions": preds, "timings_ms": _timings(start, decode, r)}
               for preds, r in zip(_ranked(service, logits, k), per_picture, strict=True)]
    predictor = service.predictor
    head = {"model": service.model, "backend": predictor.backend if predictor else None,
            "precision": predictor.precision if predictor else None,
            "file": (predictor.file or "(PyTorch network)") if predictor else None}  # what answered, by name
    return {**head, "results": answers} if many else {**head, **answers[0]}


async def classify_request(service: Service, request: Request, many: bool, k: int,
                           timeout_ms: float | None) -> JSONResponse:
    """One classify request answered, its failure counted (the v2 failures share the counter)."""
    try:
        return JSONResponse(await _answer(service, request, many, k, timeout_ms))
    except ApiError:
        service.metrics.failure.inc()
        raise


@router.post("/v1/classify", summary="Classify one picture (raw image body, multipart 'file', or JSON base64)",
             responses=_ERRORS, openapi_extra=picture_body(ClassifyJson, ClassifyForm, raw=True))
async def classify(request: Request, service: ServiceDep, top_k: TopK = 5,
                   timeout_ms: TimeoutMs = None) -> JSONResponse:  # type: ignore[assignment]
    """Classify one picture."""
    return await classify_request(service, request, False, top_k, timeout_ms)


@router.post("/v1/classify/batch", summary="Classify several pictures (multipart 'files' or JSON base64 list)",
             responses=_ERRORS, openapi_extra=picture_body(BatchJson, BatchForm, raw=False))
async def classify_batch(request: Request, service: ServiceDep, top_k: TopK = 5,
                         timeout_ms: TimeoutMs = None) -> JSONResponse:  # type: ignore[assignment]
    """Classify several pictures, answered in the order sent."""
    return await classify_request(service, request, True, top_k, timeout_ms)
