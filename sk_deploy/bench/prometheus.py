"""Reading a server's Prometheus text: samples, counter totals, histogram buckets, and the difference of two
scrapes, which is what the load generator reports about the server's own batching."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: name, labels, value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (prometheus_client's parser; a ValueError on bad text)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples]


def _matches(sample: Sample, labels: dict[str, str]) -> bool:
    return all(sample.labels.get(k) == v for k, v in labels.items())


def total(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of counter ``name`` over the samples with ``labels`` (any others summed over); None if absent.
    ``name`` and ``name_total`` both match: the parser adds ``_total`` to counters that lack it (Triton's
    ``nv_inference_count``), and prometheus_client's own counters are exposed with it."""
    names = {name, f"{name}_total"}
    found = [s.value for s in samples if s.name in names and _matches(s, labels)]
    return sum(found) if found else None


def buckets(samples: list[Sample], name: str, **labels: str) -> dict[float, float]:
    """Histogram ``name``'s cumulative bucket counts by upper bound (``le``; +Inf included), summed over
    label sets that match ``labels``."""
    counts: dict[float, float] = {}
    for s in samples:
        if s.name == f"{name}_bucket" and _matches(s, labels):
            bound = float(s.labels["le"])
            counts[bound] = counts.get(bound, 0.0) + s.value
    return counts


def histogram_delta(before: list[Sample], after: list[Sample], name: str, **labels: str) -> dict[str, Any] | None:
    """What histogram ``name`` recorded between two scrapes, for integer observations (batch sizes):
    ``count``, ``sum``, ``mean`` and ``distribution`` (observations per range of values: ``1``, ``2``,
    ``3-4``, ``5-8``, ... ``>256``; empty ranges left out). None when the histogram is not exposed."""
    after_buckets = buckets(after, name, **labels)
    if not after_buckets:
        return None
    before_buckets = buckets(before, name, **labels)
    distribution: dict[str, int] = {}
    previous_bound, previous_cumulative = 0.0, 0.0
    for bound in sorted(after_buckets):
        cumulative = after_buckets[bound] - before_buckets.get(bound, 0.0)
        count = round(cumulative - previous_cumulative)
        if count:
            low = math.floor(previous_bound) + 1
            label = (f">{previous_bound:g}" if math.isinf(bound) else f"{bound:g}" if low >= bound
                     else f"{low}-{bound:g}")
            distribution[label] = count
        previous_bound, previous_cumulative = bound, cumulative
    count = _delta(before, after, f"{name}_count", labels) or 0.0
    total_sum = _delta(before, after, f"{name}_sum", labels) or 0.0
    return {"count": round(count), "sum": total_sum, "mean": total_sum / count if count else None,
            "distribution": distribution}


def _delta(before: list[Sample], after: list[Sample], exact: str, labels: dict[str, str]) -> float | None:
    def value(samples: list[Sample]) -> float | None:
        found = [s.value for s in samples if s.name == exact and _matches(s, labels)]
        return sum(found) if found else None

    a = value(after)
    return None if a is None else a - (value(before) or 0.0)


def counter_delta(before: list[Sample], after: list[Sample], name: str, **labels: str) -> float | None:
    """How much counter ``name`` grew between two scrapes; None when the server does not expose it."""
    a = total(after, name, **labels)
    return None if a is None else a - (total(before, name, **labels) or 0.0)
