"""Summary statistics of latencies: the percentiles every report prints, computed one way everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds: min, p50, p90, p95, p99, max and mean over ``n`` runs (percentiles interpolate linearly
    between the closest ranks, numpy's default, so p50 of an even count is the mean of the middle two)."""

    n: int
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    mean: float

    def to_dict(self, digits: int = 4) -> dict[str, float | int]:
        """A JSON-ready form, rounded to ``digits`` decimals."""
        return {k: (v if isinstance(v, int) else round(v, digits)) for k, v in asdict(self).items()}


def summarize(ms: Sequence[float] | np.ndarray) -> LatencyStats:
    """The statistics of a non-empty list of milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings to summarize")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(a, PERCENTILES))
    return LatencyStats(int(a.size), float(a.min()), p50, p90, p95, p99, float(a.max()), float(a.mean()))


def per_second(count: float, seconds: float) -> float:
    """``count`` per second over ``seconds`` of wall time (images/s, requests/s); 0 when no time passed."""
    return count / seconds if seconds > 0 else 0.0
