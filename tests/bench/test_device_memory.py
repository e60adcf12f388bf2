"""The device-memory sampler keeps the peak of what it reads during a row (on entry, on its thread, on exit),
not the value at the end."""

from __future__ import annotations

import threading

from sk_deploy.bench.device_memory import PeakSampler


def test_the_peak_during_the_block_not_the_value_at_its_end() -> None:
    level = [100]
    seen = threading.Event()

    def read() -> int:
        if level[0] == 900:
            seen.set()
        return level[0]

    with PeakSampler(read, interval=0.0005) as sampler:
        level[0] = 900  # a transient high, e.g. a workspace allocated and freed inside the row
        seen.wait(5)
        level[0] = 200
    assert sampler.peak == 900 and sampler.samples >= 3
