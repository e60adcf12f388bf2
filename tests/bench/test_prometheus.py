"""Reading the service's /metrics: prometheus_client's own exposition and Triton-named counters written by
hand (bare names, no _total), the difference of two scrapes, and what is absent."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sk_deploy.bench.prometheus import counter_delta, histogram_delta, parse_metrics, total

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Exposition:
    """A real prometheus_client registry with the contract's batch histogram and request counter, and Triton's
    counters under their bare names as the service writes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch = Histogram("sk_batch_size", "batch sizes", ["model"], buckets=BATCH_BUCKETS,
                               registry=self.registry).labels(model="skresnet18")
        self.requests = Counter("sk_requests", "requests", ["endpoint", "status"], registry=self.registry)
        self.images = 0.0
        self.batches = 0.0

    def observe(self, *sizes: int) -> None:
        for size in sizes:
            self.batch.observe(size)
            self.images += size
            self.batches += 1
            self.requests.labels(endpoint="/v1/classify", status="200").inc(size)
        self.requests.labels(endpoint="/v1/classify", status="429").inc()

    def text(self) -> str:
        triton = "".join(
            f"# HELP {name} x\n# TYPE {name} counter\n{name}{{model=\"skresnet18\",version=\"1\"}} {value!r}\n"
            for name, value in (("nv_inference_count", self.images), ("nv_inference_exec_count", self.batches)))
        return generate_latest(self.registry).decode() + triton


def test_batch_size_distribution_between_two_scrapes() -> None:
    server = Exposition()
    server.observe(1, 1, 5)  # before the step
    before = parse_metrics(server.text())
    server.observe(1, 1, 2, 3, 4, 8, 9, 16, 300)
    after = parse_metrics(server.text())
    delta = histogram_delta(before, after, "sk_batch_size")
    assert delta is not None
    assert delta["distribution"] == {"1": 2, "2": 1, "3-4": 2, "5-8": 1, "9-16": 2, ">256": 1}
    assert delta["count"] == 9 and delta["sum"] == 344.0
    assert delta["mean"] == pytest.approx(344 / 9)
    assert histogram_delta(before, after, "sk_batch_size", model="other") is None


def test_counters_with_and_without_total() -> None:
    server = Exposition()
    server.observe(4)
    before = parse_metrics(server.text())
    server.observe(8, 8)
    after = parse_metrics(server.text())
    # Triton's bare names: the parser reports them as <name>_total; both spellings are found
    assert total(after, "nv_inference_count") == 20.0
    assert counter_delta(before, after, "nv_inference_count") == 16.0
    assert counter_delta(before, after, "nv_inference_exec_count") == 2.0
    # prometheus_client's own counter (sk_requests_total), summed over labels unless they are given
    assert counter_delta(before, after, "sk_requests", status="200") == 16.0
    assert counter_delta(before, after, "sk_requests") == 17.0
    assert total(after, "sk_requests", status="503") is None


def test_absent_metrics_and_bad_text() -> None:
    samples = parse_metrics("# TYPE up gauge\nup 1\n")
    assert counter_delta(samples, samples, "nv_inference_count") is None
    assert histogram_delta(samples, samples, "sk_batch_size") is None
    with pytest.raises(ValueError):
        parse_metrics("<html>not metrics</html>")
