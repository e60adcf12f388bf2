"""The FastAPI application: classification endpoints, the KServe v2 protocol, health and metrics.

``create_app(ServiceConfig(bundle=...))`` returns the app. Its lifespan loads the bundle's model on the chosen
backend and warms it up in a worker thread, so the server answers ``/healthz`` at once and ``/readyz`` (and
inference) only once the model is warm. Pictures are decoded on a thread pool, batched by the ``Batcher`` on
one inference thread, and every error is a JSON body ``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Receive, Scope, Send

import sk_deploy
from sk_deploy.bundle import Bundle
from sk_deploy.images import ImageError
from sk_deploy.labels import imagenet_labels
from sk_deploy.runtime.classify import top_k
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.service.batcher import Batcher, BatchResult, DeadlineExceeded, QueueFull, ShuttingDown
from sk_deploy.service.images import Decoder, PictureForm
from sk_deploy.service.kserve import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    ProtocolError,
    RequestedOutput,
    classification,
    encode_response,
    parse_infer,
    v2_datatype,
)
from sk_deploy.service.metrics import CONTENT_TYPE, ServiceMetrics

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines appear with the server's own
VERSION = "1"


@dataclass(frozen=True)
class ServiceConfig:
    """How ``sk-deploy serve`` serves a bundle (the command's options, with the same defaults)."""

    bundle: Path
    backend: str = "auto"
    precision: str = "fp32"
    max_batch: int = 32
    max_delay_ms: float = 2.0
    max_queue: int = 256
    timeout_ms: float = 5000.0
    max_body_mb: float = 16.0
    max_pixels: int = 40_000_000
    decode_threads: int = 0
    """Threads decoding pictures; 0: one per CPU, at most 4."""
    warmup: bool = True

    @property
    def max_body_bytes(self) -> int:
        """The body limit in bytes."""
        return int(self.max_body_mb * 1024 * 1024)


class ApiError(Exception):
    """An answer other than 200: its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Service:
    """The served model and everything around it; built before the server starts, loaded in its lifespan."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.bundle = Bundle.open(config.bundle)
        self.model = self.bundle.model_name
        self.input_spec = self.bundle.input_spec
        self.output_name = self.bundle.output_name
        self.classes = self.bundle.classes
        self.labels = imagenet_labels()
        self.metrics = ServiceMetrics(self.model, VERSION)
        threads = config.decode_threads or min(4, os.cpu_count() or 1)
        form = PictureForm(self.bundle.preprocess, self.input_spec.dtype == "uint8",
                           config.max_pixels)
        self.decoder = Decoder(form, threads)
        self.predictor: Predictor | None = None
        self.batcher: Batcher | None = None
        self.error: str | None = None
        self.draining = False

    @property
    def ready(self) -> bool:
        """Warm and taking requests."""
        return self.batcher is not None and not self.draining

    def load(self) -> None:
        """Open the Predictor, warm it up at batch 1 and at the largest batch, start the batcher (blocking)."""
        started = time.perf_counter()
        config = self.config
        predictor = Predictor(self.bundle, config.backend, config.precision)
        log.info("model %s on %s (%s), loading took %.1f s", self.model, predictor.description, predictor.reason,
                 time.perf_counter() - started)
        if config.warmup:
            seconds = predictor.warmup((1,), repeats=2) + predictor.warmup((config.max_batch,), repeats=1)
            log.info("warm-up at batch 1 and %d took %.1f s", config.max_batch, seconds)
        self.predictor = predictor
        self.batcher = Batcher(predictor.predict, max_batch=config.max_batch, max_delay=config.max_delay_ms / 1e3,
                               max_queue=config.max_queue, metrics=self.metrics)
        log.info("ready: %s", self.model)

    def close(self) -> None:
        """Finish queued requests, then release the decoder threads and the backend."""
        if self.batcher is not None:
            self.batcher.close()
        self.decoder.close()
        if self.predictor is not None:
            self.predictor.close()

    def require_ready(self) -> Batcher:
        """The batcher, or a 503 saying why the server cannot take inference now."""
        if self.draining:
            raise ApiError(503, "the server is shutting down", {"Retry-After": "1"})
        if self.error:
            raise ApiError(503, f"the model failed to load: {self.error}")
        if self.batcher is None:
            raise ApiError(503, "the model is still loading and warming up; retry shortly", {"Retry-After": "1"})
        return self.batcher

    async def infer(self, array: np.ndarray, deadline: float) -> tuple[np.ndarray, list[BatchResult]]:
        """Logits of ``array`` (N, ...) through the batcher, in pieces of at most ``max_batch`` rows."""
        batcher = self.require_ready()
        step = self.config.max_batch
        if len(array) > self.config.max_queue:
            raise ApiError(413, f"{len(array)} pictures in one request, more than the queue holds "
                                f"({self.config.max_queue}, sk-deploy serve --max-queue); send fewer at a time")
        try:
            results = await asyncio.gather(*(batcher.submit(array[i:i + step], deadline)
                                             for i in range(0, len(array), step)))
        except QueueFull as exc:
            self.metrics.reject("queue_full")
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        except DeadlineExceeded as exc:
            raise ApiError(504, str(exc)) from None
        except ShuttingDown as exc:
            raise ApiError(503, str(exc)) from None
        except RuntimeError as exc:
            raise ApiError(500, str(exc)) from None
        return np.concatenate([r.logits for r in results]), list(results)


# --- reading requests ---------------------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 once it passes ``limit`` bytes (before reading it, when declared)."""
    too_large = ApiError(413, f"request body is larger than the {limit / 1024 / 1024:g} MB limit; raise it with "
                              f"sk-deploy serve --max-body-mb N")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be a base64 string")
    try:
        return base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where} is not valid base64") from None


async def read_pictures(request: Request, limit: int, many: bool) -> list[bytes]:
    """The picture(s) of a classify request: a raw ``image/*`` (or octet-stream) body, multipart files, or
    JSON ``{"image": base64}`` / ``{"images": [base64, ...]}``. Wrong content types are 415."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if many:
            raise ApiError(415, "the batch endpoint takes multipart/form-data (several 'files') or JSON "
                                '{"images": [base64, ...]}')
        pictures = [body]
    elif content_type == "multipart/form-data":
        pictures = await _multipart_files(request, body)
    elif content_type == "application/json":
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc})") from None
        key = "images" if many else "image"
        if not isinstance(document, dict) or key not in document:
            raise ApiError(400, f'the JSON body needs "{key}": ' + ("[base64, ...]" if many else "base64"))
        values = document[key] if many else [document[key]]
        if not isinstance(values, list):
            raise ApiError(400, '"images" must be a list of base64 strings')
        pictures = [_b64(v, f"{key}[{i}]" if many else key) for i, v in enumerate(values)]
    else:
        shown = content_type or "none"
        raise ApiError(415, f"unsupported Content-Type {shown!r}: send the picture as a raw image/jpeg, image/png "
                            f'or image/webp body, as multipart/form-data (field "file"), or as JSON '
                            f'{{"image": base64}}')
    if not pictures:
        raise ApiError(400, "no picture in the request")
    if not many and len(pictures) > 1:
        raise ApiError(400, f"{len(pictures)} pictures sent to /v1/classify; use /v1/classify/batch for several")
    for i, data in enumerate(pictures):
        if not data:
            raise ApiError(400, "empty body: no picture to classify" if len(pictures) == 1
                           else f"picture {i} is empty")
    return pictures


async def _multipart_files(request: Request, body: bytes) -> list[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream()).parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed multipart body ({exc.message})") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise ApiError(400, 'the multipart body has no file part (send the picture as field "file")')
    return [await f.read() for f in files]


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


async def until_disconnected(request: Request) -> None:
    """Return once the client has gone away (the body must have been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it (the batcher then skips its pictures)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ApiError(499, "client closed the request")
    return task.result()


def deadline_for(service: Service, timeout_ms: float | None, start: float) -> float:
    """The request's deadline: the server's timeout, or a shorter one the client asked for."""
    limit = service.config.timeout_ms
    if timeout_ms is not None:
        if timeout_ms <= 0:
            raise ApiError(400, "timeout_ms must be positive")
        limit = min(limit, timeout_ms)
    return start + limit / 1e3


# --- the application ----------------------------------------------------------------------------------------

def endpoint_label(path: str) -> str:
    """A bounded label for metrics: the route, not the raw path."""
    if path.startswith("/v2/models/"):
        return "/v2/infer" if path.endswith("/infer") else "/v2/models"
    return path if path in _KNOWN_PATHS else "other"


_KNOWN_PATHS = {"/", "/v1/classify", "/v1/classify/batch", "/healthz", "/readyz", "/metrics", "/v2",
                "/v2/health/live", "/v2/health/ready"}
_INFERENCE_PREFIXES = ("/v1/", "/v2/models/")


class Accounting:
    """ASGI middleware: new inference requests answer 503 while draining; every request is counted and timed."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, start, status = scope["path"], time.perf_counter(), 500
        if self.service.draining and path.startswith(_INFERENCE_PREFIXES) and scope["method"] == "POST":
            self.service.metrics.reject("draining")
            response = error_response(503, "the server is shutting down", {"Retry-After": "1",
                                                                            "Connection": "close"})
            await response(scope, receive, send)
            self.service.metrics.observe_request(endpoint_label(path), 503, time.perf_counter() - start)
            return

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.service.metrics.observe_request(endpoint_label(path), status, time.perf_counter() - start)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(config: ServiceConfig, service: Service | None = None,
               on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """The service's FastAPI app for ``config`` (a prepared ``service`` may be passed in). ``on_load_error`` is
    called with the message if the model cannot be loaded (the command line stops the server then)."""
    service = service or Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def loaded(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                service.error = str(task.exception())
                log.error("cannot serve %s: %s", config.bundle, service.error)
                if on_load_error:
                    on_load_error(service.error)

        loading = asyncio.ensure_future(asyncio.to_thread(service.load))
        loading.add_done_callback(loaded)
        yield
        service.draining = True
        await asyncio.wait({loading})
        await asyncio.to_thread(service.close)
        log.info("stopped: %s", service.model)

    app = FastAPI(title="sk-deploy", version=sk_deploy.__version__, lifespan=lifespan,
                  summary=f"Image classification with {service.model}: dynamic batching, KServe v2, metrics")
    app.state.service = service
    app.add_middleware(Accounting, service=service)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
        return error_response(exc.status_code, str(message))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(400, problems)

    _routes_v1(app, service)
    _routes_v2(app, service)
    _routes_health(app, service)
    return app


def _routes_v1(app: FastAPI, service: Service) -> None:
    def ranked(logits: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        return [[{"index": p.index, "label": p.label, "probability": p.probability} for p in row]
                for row in top_k(logits, k, service.labels)]

    def timings(start: float, decode: float, result: BatchResult) -> dict[str, float]:
        return {"queue": round(result.queue_seconds * 1e3, 3), "preprocess": round(decode * 1e3, 3),
                "inference": round(result.compute_seconds * 1e3, 3),
                "total": round((time.monotonic() - start) * 1e3, 3), "batch_size": result.batch_size}

    async def classify_request(request: Request, many: bool, k: int, timeout_ms: float | None) -> JSONResponse:
        try:
            return JSONResponse(await answer(request, many, k, timeout_ms))
        except ApiError:
            service.metrics.failure.inc()
            raise

    async def answer(request: Request, many: bool, k: int, timeout_ms: float | None) -> dict[str, Any]:
        start = time.monotonic()
        if not 1 <= k <= service.classes:
            raise ApiError(400, f"top_k must be between 1 and {service.classes}")
        deadline = deadline_for(service, timeout_ms, start)
        service.require_ready()
        pictures = await read_pictures(request, service.config.max_body_bytes, many)
        batch, decode = await decode_all(service, pictures)
        logits, results = await unless_disconnected(request, service.infer(batch, deadline))
        service.metrics.succeeded(time.monotonic() - start)
        per_picture = [r for r in results for _ in range(len(r.logits))]
        answers = [{"predictions": preds, "timings_ms": timings(start, decode, r)}
                   for preds, r in zip(ranked(logits, k), per_picture, strict=True)]
        head = {"model": service.model, "backend": service.predictor.backend if service.predictor else None,
                "precision": service.config.precision}
        return {**head, "results": answers} if many else {**head, **answers[0]}

    @app.post("/v1/classify", summary="Classify one picture (raw image body, multipart 'file', or JSON base64)")
    async def classify(request: Request, top_k: int = 5, timeout_ms: float | None = None) -> JSONResponse:
        return await classify_request(request, False, top_k, timeout_ms)

    @app.post("/v1/classify/batch", summary="Classify several pictures (multipart 'files' or JSON base64 list)")
    async def classify_batch(request: Request, top_k: int = 5, timeout_ms: float | None = None) -> JSONResponse:
        return await classify_request(request, True, top_k, timeout_ms)


def _routes_v2(app: FastAPI, service: Service) -> None:
    spec = service.input_spec
    input_datatype = v2_datatype(spec.dtype)
    input_shape = [-1, *spec.item_shape]
    output_shape = [-1, service.classes]

    def check_model(name: str, version: str | None = None) -> None:
        if name != service.model:
            raise ApiError(404, f"unknown model {name!r}; this server serves {service.model!r}")
        if version not in (None, "", VERSION):
            raise ApiError(404, f"unknown version {version!r} of {name!r}; it has version {VERSION}")

    @app.get("/v2", summary="KServe v2 server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "sk-deploy", "version": sk_deploy.__version__,
                "extensions": ["binary_tensor_data", "classification"]}

    @app.get("/v2/health/live")
    async def v2_live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        check_model(name, version)
        backend = service.predictor.backend if service.predictor else service.config.backend
        return {"name": service.model, "versions": [VERSION], "platform": f"sk-deploy_{backend}",
                "inputs": [{"name": spec.name, "datatype": input_datatype, "shape": input_shape}],
                "outputs": [{"name": service.output_name, "datatype": "FP32", "shape": output_shape}]}

    async def model_ready(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        return Response(status_code=200 if service.ready else 503)

    async def model_config(name: str, version: str | None = None) -> dict[str, Any]:
        check_model(name, version)
        return {"name": service.model, "max_batch_size": service.config.max_batch,
                "input": [{"name": spec.name, "data_type": f"TYPE_{input_datatype}", "dims": list(spec.item_shape)}],
                "output": [{"name": service.output_name, "data_type": "TYPE_FP32", "dims": [service.classes]}],
                "dynamic_batching": {"max_queue_delay_microseconds": int(service.config.max_delay_ms * 1e3)}}

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        start = time.monotonic()
        check_model(name, version)
        try:
            service.require_ready()
            body = await read_body(request, service.config.max_body_bytes)
            header = request.headers.get(HEADER_LENGTH)
            if header is not None and not header.isdigit():
                raise ApiError(400, f"{HEADER_LENGTH} must be a whole number of bytes")
            parsed = parse_infer(body, int(header) if header is not None else None)
            array = _model_input(parsed.inputs)
            wanted = parsed.outputs or [RequestedOutput(service.output_name, parsed.binary_output_default)]
            for out in wanted:
                if out.name != service.output_name:
                    raise ApiError(400, f"unknown output {out.name!r}; the model's output is {service.output_name!r}")
            logits, _ = await unless_disconnected(request, service.infer(array, deadline_for(service, None, start)))
        except ProtocolError as exc:
            service.metrics.failure.inc()
            raise ApiError(400, str(exc)) from None
        except ApiError:
            service.metrics.failure.inc()
            raise
        service.metrics.succeeded(time.monotonic() - start)
        outputs = [(out, classification(logits, out.classification, service.labels) if out.classification
                    else logits) for out in wanted]
        content, header_length = encode_response(service.model, VERSION, parsed.id, outputs)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type=BINARY_CONTENT_TYPE, headers={HEADER_LENGTH: str(header_length)})

    def _model_input(inputs: dict[str, tuple[str, np.ndarray]]) -> np.ndarray:
        expected = f"{spec.name!r} {input_datatype} {input_shape}"
        if list(inputs) != [spec.name]:
            raise ApiError(400, f"the model takes one input, {expected}; got {', '.join(map(repr, inputs))}")
        datatype, array = inputs[spec.name]
        if datatype != input_datatype or tuple(array.shape[1:]) != spec.item_shape or array.ndim != len(input_shape) \
                or array.shape[0] < 1:
            raise ApiError(400, f"input {spec.name!r}: expected {input_datatype} {input_shape}, "
                                f"got {datatype} {list(array.shape)}")
        return np.ascontiguousarray(array)

    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_metadata, methods=["GET"], summary="KServe v2 model metadata")
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"], summary="KServe v2 model readiness")
        app.add_api_route(prefix + "/config", model_config, methods=["GET"], summary="Triton-style model config")
        app.add_api_route(prefix + "/infer", infer, methods=["POST"], summary="KServe v2 inference (JSON or binary)")


def _routes_health(app: FastAPI, service: Service) -> None:
    @app.get("/", summary="What this server serves")
    async def index() -> dict[str, Any]:
        predictor = service.predictor
        return {"service": "sk-deploy", "version": sk_deploy.__version__, "model": service.model,
                "bundle": str(service.config.bundle), "ready": service.ready,
                "backend": predictor.description if predictor else None,
                "backend_reason": predictor.reason if predictor else None,
                "input": {"name": service.input_spec.name, "form": service.input_spec.describe()},
                "batching": {"max_batch": service.config.max_batch, "max_delay_ms": service.config.max_delay_ms,
                             "max_queue": service.config.max_queue, "timeout_ms": service.config.timeout_ms},
                "endpoints": ["/v1/classify", "/v1/classify/batch", f"/v2/models/{service.model}/infer",
                              "/healthz", "/readyz", "/metrics", "/docs"]}

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded and warm")
    async def readyz() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ready", "model": service.model})
        try:
            service.require_ready()
        except ApiError as exc:
            return error_response(503, exc.message)
        return error_response(503, "not ready")

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)
