"""The service's Prometheus metrics, in a registry of its own (no global state).

Names follow Triton's where Triton has one (``nv_inference_*``: success and failure counts, images inferred,
batches executed, cumulative microseconds), so dashboards built for Triton read this service too; the mean
batch size is ``nv_inference_count / nv_inference_exec_count`` there as here. Histograms (``sk_*``) give the
latency and batch-size distributions Triton's counters cannot.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from sk_deploy.service.gpu_metrics import GpuMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """Every metric the service exports, labelled with the served model (and version, as Triton does)."""

    def __init__(self, model: str, version: str = "1", gpus: GpuMetrics | None = None) -> None:
        self.gpus = gpus
        """The GPUs' figures (Triton's ``nv_gpu_*``), or None where there is no GPU: then absent, not zero."""
        self.registry = CollectorRegistry(auto_describe=True)
        r, m = self.registry, {"model": model}

        self.requests = Counter("sk_requests", "Requests answered, by endpoint (an HTTP route or a gRPC method) "
                                "and status code (gRPC: the HTTP status its answer stands for)",
                                ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("sk_request_duration_seconds", "End-to-end time of a request",
                                         ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("sk_queue_duration_seconds", "Time a picture waited for its batch",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r).labels(**m)
        self.compute_seconds = Histogram("sk_compute_duration_seconds", "Time of one batch on the backend",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r).labels(**m)
        self.batch_size = Histogram("sk_batch_size", "Pictures in each executed batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r).labels(**m)
        self.queue_depth = Gauge("sk_queue_depth", "Pictures waiting for a batch", ["model"], registry=r).labels(**m)
        self.rejected = Counter("sk_rejected_requests", "Requests refused before inference, by reason "
                                "(queue_full, deadline, cancelled, draining)", ["model", "reason"], registry=r)
        self.served = Gauge("sk_model_info", "What is served (1): the backend and the precision, as chosen or pinned",
                            ["model", "backend", "precision"], registry=r)
        self.triton = TritonCounters(model, version)
        self.success = self.triton.counter("nv_inference_request_success", "Number of successful inference requests")
        self.failure = self.triton.counter("nv_inference_request_failure", "Number of failed inference requests")
        self.inferences = self.triton.counter("nv_inference_count", "Number of inferences performed (a batch of "
                                              "n pictures counts n)")
        self.executions = self.triton.counter("nv_inference_exec_count", "Number of model executions (batches)")
        self.request_us = self.triton.counter("nv_inference_request_duration_us", "Cumulative inference request "
                                              "duration in microseconds")
        self.queue_us = self.triton.counter("nv_inference_queue_duration_us", "Cumulative inference queuing "
                                            "duration in microseconds")
        self.compute_us = self.triton.counter("nv_inference_compute_infer_duration_us", "Cumulative compute "
                                              "inference duration in microseconds")
        self.pending = self.triton.counter("nv_inference_pending_request_count", "Instantaneous number of pending "
                                           "requests awaiting execution", kind="gauge")
        self._model = model

    def reject(self, reason: str) -> None:
        """Count one request refused before inference."""
        self.rejected.labels(model=self._model, reason=reason).inc()

    def succeeded(self, seconds: float) -> None:
        """Count one successful inference request and its duration."""
        self.success.inc()
        self.request_us.inc(seconds * 1e6)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request and its end-to-end time."""
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.request_seconds.labels(model=self._model, endpoint=endpoint).observe(seconds)

    def observe_batch(self, size: int, compute_seconds: float, queue_seconds: list[float]) -> None:
        """Record one executed batch: its size, its compute time, and how long each of its pictures waited."""
        self.batch_size.observe(size)
        self.executions.inc()
        self.inferences.inc(size)
        self.compute_seconds.observe(compute_seconds)
        self.compute_us.inc(compute_seconds * 1e6)
        for waited in queue_seconds:
            self.queue_seconds.observe(waited)
            self.queue_us.inc(waited * 1e6)

    def set_depth(self, pictures: int, requests: int) -> None:
        """The queue's current depth, in pictures and in requests."""
        self.queue_depth.set(pictures)
        self.pending.set(requests)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        gpus = self.gpus.render() if self.gpus is not None else b""
        return generate_latest(self.registry) + self.triton.render() + gpus


class TritonValue:
    """One Triton-named counter or gauge (thread-safe: the inference thread and the event loop both write)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.value = 0.0
        self._lock = lock

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        with self._lock:
            self.value += amount

    def set(self, value: float) -> None:
        """Set the value (gauges)."""
        with self._lock:
            self.value = value


class TritonCounters:
    """Metrics under Triton's exact names. prometheus_client would expose a counter as ``<name>_total``;
    Triton's dashboards and alerts expect the bare names, so these few are written out by hand."""

    def __init__(self, model: str, version: str) -> None:
        self._labels = f'model="{model}",version="{version}"'
        self._lock = threading.Lock()
        self._metrics: list[tuple[str, str, str, TritonValue]] = []

    def counter(self, name: str, help_text: str, kind: str = "counter") -> TritonValue:
        """A new metric ``name`` of type ``kind`` (counter or gauge)."""
        value = TritonValue(self._lock)
        self._metrics.append((name, help_text, kind, value))
        return value

    def render(self) -> bytes:
        """The metrics in the Prometheus text format, exactly as Triton names them."""
        return b"".join(text_family(name, help_text, kind, [(self._labels, value.value)])
                        for name, help_text, kind, value in self._metrics)


def text_family(name: str, help_text: str, kind: str, samples: list[tuple[str, float]]) -> bytes:
    """One metric family in the Prometheus text format under exactly ``name`` (prometheus_client would add
    ``_total`` to a counter): its HELP and TYPE lines, then a line per (labels, value) sample."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{labels}}} {float(value)!r}" for labels, value in samples]
    return ("\n".join(lines) + "\n").encode()
