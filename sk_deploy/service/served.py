"""The served model: the command's options (``ServiceConfig``) and what is built from them (``Service``): the
bundle, the picture decoder, and once loaded in the app's lifespan the Predictor and the batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request

from sk_deploy.bundle import Bundle
from sk_deploy.labels import imagenet_labels
from sk_deploy.machine import BackendUnavailable, usable_cpus
from sk_deploy.runtime.instances import instance_options, instances_refusal
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.service.batcher import (
    Batcher,
    BatchResult,
    DeadlineExceeded,
    QueueFull,
    ShuttingDown,
    check_buckets,
    default_buckets,
)
from sk_deploy.service.bodies import count_pictures
from sk_deploy.service.errors import ApiError
from sk_deploy.service.gpu_metrics import GpuMetrics
from sk_deploy.service.images import Decoder, PictureForm
from sk_deploy.service.metrics import ServiceMetrics
from sk_deploy.settings.base import defaults
from sk_deploy.settings.serve import ServeSettings

log = logging.getLogger("uvicorn.error")  # uvicorn configures it: our lines appear with the server's own
VERSION = "1"


#: serve's defaults, from its settings model
SERVE = defaults(ServeSettings)


@dataclass(frozen=True)
class ServiceConfig:
    """How ``sk-deploy serve`` serves a bundle: the service's part of ``ServeSettings``, with its defaults."""

    bundle: Path
    backend: str = SERVE["backend"]
    precision: str = SERVE["precision"]
    max_batch: int = SERVE["max_batch"]
    max_delay_ms: float = SERVE["max_delay_ms"]
    max_queue: int = SERVE["max_queue"]
    timeout_ms: float = SERVE["timeout_ms"]
    max_body_mb: float = SERVE["max_body_mb"]
    max_pixels: int = SERVE["max_pixels"]
    max_aspect_ratio: float = SERVE["max_aspect_ratio"]
    """Longest side over shortest side of a picture accepted (checked from its header, before decoding)."""
    decode_threads: int = SERVE["decode_threads"]
    """Threads decoding pictures; 0: one per CPU, at most 4."""
    warmup: bool = True
    header_timeout_ms: float = SERVE["header_timeout_ms"]
    """A request's headers must arrive within this long (else 408 and the connection closed)."""
    body_timeout_ms: float = SERVE["body_timeout_ms"]
    """A request's body must arrive within this long after its headers (else 408 and the connection closed)."""
    max_connections: int = SERVE["max_connections"]
    """Open connections beyond this are answered 503 and closed at once."""
    batch_buckets: tuple[int, ...] | None = None
    """The sizes batches are padded to for a backend that captures CUDA graphs (None: the powers of two up to
    ``max_batch``); a backend that captures none takes any size."""
    instances: int = SERVE["instances"]
    """Inference threads taking batches from the one queue, each with its share of the cores (backends that run
    batches in parallel only: ``runtime.instances``)."""

    @property
    def max_body_bytes(self) -> int:
        """The body limit in bytes."""
        return int(self.max_body_mb * 1024 * 1024)


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
        self.metrics = ServiceMetrics(self.model, VERSION, gpus=GpuMetrics.open())
        threads = config.decode_threads or min(4, usable_cpus())
        form = PictureForm(self.bundle.preprocess, self.input_spec.dtype == "uint8", config.max_pixels,
                           config.max_aspect_ratio)
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
        predictor = Predictor(self.bundle, config.backend, config.precision,
                              options=instance_options(config.precision, config.instances))
        refusal = instances_refusal(predictor.backend) if config.instances > 1 else None
        if refusal:
            predictor.close()
            raise BackendUnavailable(f"{config.instances} instances: {predictor.backend} runs one ({refusal})")
        log.info("model %s on %s (%s), loading took %.1f s", self.model, predictor.description, predictor.reason,
                 time.perf_counter() - started)
        log.info("precision %s", predictor.precision_choice.reason)
        self.metrics.served.labels(model=self.model, backend=predictor.backend, precision=predictor.precision).set(1)
        if config.instances > 1:
            log.info("%d instances: %d inference threads on the one queue", config.instances, config.instances)
        buckets = None
        if predictor.captures_graphs:
            buckets = check_buckets(config.batch_buckets or default_buckets(config.max_batch), config.max_batch)
            log.info("%s captures a CUDA graph per batch size: batches padded to %s", predictor.backend,
                     ",".join(map(str, buckets)))
        if config.warmup:
            sizes = buckets or (1, config.max_batch)  # with buckets: each captured once, and only those
            seconds = sum(predictor.warmup((size,), repeats=2 if size == 1 or buckets else 1) for size in sizes)
            log.info("warm-up at batch %s took %.1f s", ",".join(map(str, sizes)), seconds)
        self.predictor = predictor
        self.batcher = Batcher(predictor.predict, max_batch=config.max_batch, max_delay=config.max_delay_ms / 1e3,
                               max_queue=config.max_queue, metrics=self.metrics, buckets=buckets,
                               workers=config.instances)
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
        count_pictures(len(array), True, self.config.max_queue)  # the v2 path; v1 counted before decoding
        pieces: list[asyncio.Future[BatchResult]] = []
        try:
            batcher.check_room(len(array))
            pieces = [asyncio.ensure_future(batcher.submit(array[i:i + step], deadline))
                      for i in range(0, len(array), step)]
            results = await asyncio.gather(*pieces)
        except QueueFull as exc:
            self.metrics.reject("queue_full")
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        except DeadlineExceeded as exc:
            raise ApiError(504, str(exc)) from None
        except ShuttingDown as exc:
            raise ApiError(503, str(exc)) from None
        except RuntimeError as exc:
            raise ApiError(500, str(exc)) from None
        finally:
            for piece in pieces:  # one piece refused or failed: the others would be computed for nobody
                piece.cancel()
        logits = np.concatenate([r.logits for r in results])
        if not np.isfinite(logits).all():  # never a bare NaN in a response: strict JSON only
            raise ApiError(422, "the model's output for this input is not finite (NaN or infinity); inputs far "
                                "outside the range the model was trained on do that")
        return logits, list(results)


def current_service(request: Request) -> Service:
    """The app's Service (a FastAPI dependency of every route)."""
    return request.app.state.service


def deadline_for(service: Service, timeout_ms: float | None, start: float) -> float:
    """The request's deadline: the server's timeout, or a shorter one the client asked for."""
    limit = service.config.timeout_ms
    if timeout_ms is not None:
        if timeout_ms <= 0:
            raise ApiError(400, "timeout_ms must be positive")
        limit = min(limit, timeout_ms)
    return start + limit / 1e3


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
