"""The latency plot's log axis: labelled 1-2-5 ticks from at or below the fastest point to at or above the
slowest, so no point lies outside the labels."""

from __future__ import annotations

import math

import pytest

from sk_deploy.bench.plots import nice_log_ticks


@pytest.mark.parametrize(("low", "high"), [(3.2, 150.0), (0.8, 1.9), (10.0, 10.0), (0.123, 0.4), (47.0, 2300.0),
                                           (80.1, 583.8)])
def test_every_point_lies_between_two_labelled_ticks(low: float, high: float) -> None:
    ticks = nice_log_ticks(low, high)
    assert len(ticks) >= 2 and ticks[0] <= low and ticks[-1] >= high
    assert ticks == sorted(set(ticks))
    for tick in ticks:
        mantissa = tick / 10 ** math.floor(math.log10(tick) + 1e-9)
        assert round(mantissa, 6) in (1, 2, 5), tick
    assert ticks[1] > low and (ticks[-2] < high or len(ticks) == 2)  # no tick wasted beyond the data
