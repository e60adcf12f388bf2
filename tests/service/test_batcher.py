"""The batcher on its own: concurrent requests gathered into batches of at most max_batch, each answered with
its own rows; a full queue refused at once; requests past their deadline or cancelled never reach the backend."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from sk_deploy.service.batcher import Batcher, DeadlineExceeded, QueueFull
from sk_deploy.service.metrics import ServiceMetrics


class Recorder:
    """A backend that doubles its input and remembers every batch it was given."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[np.ndarray] = []
        self.seconds = seconds

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        time.sleep(self.seconds)
        return batch * 2


def make(backend: Recorder, **options: float) -> Batcher:
    settings = {"max_batch": 4, "max_delay": 0.05, "max_queue": 64, **options}
    return Batcher(backend, metrics=ServiceMetrics("test"), **settings)  # type: ignore[arg-type]


def test_requests_are_gathered_and_scattered() -> None:
    backend = Recorder()
    batcher = make(backend)

    async def main() -> list:
        deadline = time.monotonic() + 5
        sizes = [1, 2, 1, 1, 3, 1]
        arrays = [np.full((n, 2), i, np.float32) for i, n in enumerate(sizes)]
        return await asyncio.gather(*(batcher.submit(a, deadline) for a in arrays)), arrays

    results, arrays = asyncio.run(main())
    batcher.close()
    for result, array in zip(results, arrays, strict=True):
        np.testing.assert_array_equal(result.logits, array * 2)  # each request gets exactly its own rows
    assert all(len(b) <= 4 for b in backend.batches)
    assert sum(len(b) for b in backend.batches) == 9 and len(backend.batches) < 6  # batches formed
    assert max(r.batch_size for r in results) > 1


def test_full_queue_is_refused_with_retry_after() -> None:
    batcher = make(Recorder(), max_queue=3, max_delay=0.2)

    async def main() -> list:
        deadline = time.monotonic() + 5
        return await asyncio.gather(*(batcher.submit(np.zeros((1, 2)), deadline) for _ in range(5)),
                                    return_exceptions=True)

    outcomes = asyncio.run(main())
    batcher.close()
    refused = [o for o in outcomes if isinstance(o, QueueFull)]
    assert len(refused) == 2 and all(o.retry_after >= 1 for o in refused)
    assert "queue is full" in str(refused[0])


def test_expired_and_cancelled_requests_cost_no_inference() -> None:
    backend = Recorder()
    metrics = ServiceMetrics("test")
    batcher = Batcher(backend, max_batch=8, max_delay=0.3, max_queue=64, metrics=metrics)

    async def main() -> None:
        now = time.monotonic()
        expired = batcher.submit(np.full((1, 2), 1.0), now + 0.05)
        gone = asyncio.ensure_future(batcher.submit(np.full((1, 2), 2.0), now + 5))
        kept = asyncio.ensure_future(batcher.submit(np.full((1, 2), 3.0), now + 5))
        with pytest.raises(DeadlineExceeded):
            await expired
        gone.cancel()
        result = await kept
        np.testing.assert_array_equal(result.logits, [[6.0, 6.0]])

    asyncio.run(main())
    batcher.close()
    assert [b[:, 0].tolist() for b in backend.batches] == [[3.0]]  # only the request still wanted ran
    text = metrics.exposition().decode()
    assert 'sk_rejected_requests_total{model="test",reason="deadline"} 1.0' in text
    assert 'sk_rejected_requests_total{model="test",reason="cancelled"} 1.0' in text


def test_close_finishes_what_is_queued() -> None:
    backend = Recorder(seconds=0.05)
    batcher = make(backend, max_delay=1.0)

    async def main() -> np.ndarray:
        task = asyncio.ensure_future(batcher.submit(np.ones((1, 2)), time.monotonic() + 5))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(batcher.close)  # the 1 s delay is cut short: queued work runs at once
        return (await task).logits

    np.testing.assert_array_equal(asyncio.run(main()), [[2.0, 2.0]])


def test_instances_run_batches_in_parallel_from_the_one_queue() -> None:
    # each batch waits at a barrier for another batch to be running: it passes only if two run at once
    barrier = threading.Barrier(2, timeout=10)

    def run(batch: np.ndarray) -> np.ndarray:
        barrier.wait()
        return batch * 2

    batcher = Batcher(run, max_batch=1, max_delay=0.0, max_queue=8, metrics=ServiceMetrics("test"), workers=2)

    async def main() -> list:
        deadline = time.monotonic() + 20
        return await asyncio.gather(*(batcher.submit(np.full((1, 2), i, np.float32), deadline) for i in range(4)))

    results = asyncio.run(main())
    batcher.close()
    assert [float(r.logits[0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    assert not barrier.broken
