"""Dynamic batching: pictures from many clients gathered into one batch, run on one inference thread.

Requests are submitted from the event loop and wait there; an inference thread (one, or ``workers`` where the
backend runs batches in parallel: model instances sharing the one queue) takes the oldest request,
gathers more until ``max_batch`` pictures are waiting or ``max_delay`` has passed since the oldest arrived,
runs them as one batch on the backend and scatters the rows back. The event loop never runs inference.

Back-pressure and deadlines: a request that would take the queue past ``max_queue`` pictures is refused at
once (``QueueFull``, answered 429 with a Retry-After); a request whose deadline passes while it waits is
dropped from the queue before it reaches the backend (``DeadlineExceeded``, 504); a request whose client went
away is cancelled and skipped the same way, so it costs no inference.

Buckets: for a backend that captures a CUDA graph per batch shape, a batch is padded (zero rows) up to the
smallest of a few sizes (``buckets``) that holds it, so that few graphs are captured and each is replayed; the
padding rows' logits are dropped before the rows are scattered back. Without buckets any size runs as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sk_deploy.service.metrics import ServiceMetrics


def default_buckets(max_batch: int) -> tuple[int, ...]:
    """The powers of two below ``max_batch``, and ``max_batch`` itself: 1, 2, 4, 8, 16, 32 for 32."""
    return (*(1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch), max_batch)


def check_buckets(buckets: tuple[int, ...], max_batch: int) -> tuple[int, ...]:
    """``buckets`` sorted, or a ValueError in one line: sizes of at least 1, the largest at least ``max_batch``."""
    ordered = tuple(sorted(set(buckets)))
    if not ordered or ordered[0] < 1:
        raise ValueError(f"batch buckets must be sizes of at least 1, got {','.join(map(str, buckets)) or 'none'}")
    if ordered[-1] < max_batch:
        raise ValueError(f"the largest batch bucket ({ordered[-1]}) is below the largest batch ({max_batch}): "
                         f"add {max_batch} to the buckets or lower the largest batch")
    return ordered


def bucket_for(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest of the (sorted) ``buckets`` that holds ``rows``; ``rows`` itself if none does."""
    return next((size for size in buckets if size >= rows), rows)


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with zero rows appended up to ``size`` rows (itself when it has that many)."""
    if len(array) >= size:
        return array
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), dtype=array.dtype)])


class QueueFull(RuntimeError):
    """The queue cannot take the request; ``retry_after`` is a guess, in whole seconds, of when it could."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before its result was ready."""


class ShuttingDown(RuntimeError):
    """The batcher is stopping and takes no new requests."""


@dataclass(frozen=True)
class BatchResult:
    """One request's rows of the batch's logits, and where its time went."""

    logits: np.ndarray
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    padded_to: int = 0
    """The bucket the batch was padded to and run at (its real size when not padded)."""


@dataclass(eq=False)
class _Job:
    array: np.ndarray
    deadline: float
    enqueued: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[BatchResult]
    cancelled: str | None = None
    """Why the request no longer wants its result (deadline, cancelled), or None."""
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.array)

    def resolve(self, result: BatchResult | BaseException) -> None:
        """Hand the outcome to the event loop that waits for it (thread-safe)."""
        def settle() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(settle)


class Batcher:
    """Gathers submitted arrays (each with a leading batch axis) into batches for ``run(batch) -> logits``."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int,
        max_delay: float,
        max_queue: int,
        metrics: ServiceMetrics,
        buckets: tuple[int, ...] | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay < 0 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1 and max_delay >= 0")
        self._run = run
        #: the sizes batches are padded to (None: any size runs as it is)
        self.buckets = check_buckets(buckets, max_batch) if buckets else None
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_queue = max_queue
        self._metrics = metrics
        self._jobs: deque[_Job] = deque()
        self._waiting_rows = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._last_batch_seconds = 0.0
        self._threads = [threading.Thread(target=self._work, name=f"inference-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    async def submit(self, array: np.ndarray, deadline: float) -> BatchResult:
        """The logits of ``array`` (N, ...) once its batch has run. ``deadline`` is a ``time.monotonic()``
        instant; past it the request is dropped and DeadlineExceeded raised. Cancelling the awaiting task
        (a client that went away) removes the request from the queue before it costs any inference."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        job = _Job(array, deadline, now, loop, loop.create_future())
        with self._cond:
            self._check_room(job.rows)
            self._jobs.append(job)
            self._waiting_rows += job.rows
            self._publish_depth()
            self._cond.notify()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=max(0.0, deadline - now))
        except TimeoutError:
            job.cancelled = "deadline"
            raise DeadlineExceeded(f"no result within the request's deadline "
                                   f"({(deadline - now) * 1e3:.0f} ms)") from None
        except asyncio.CancelledError:
            job.cancelled = "cancelled"
            raise

    def check_room(self, rows: int) -> None:
        """QueueFull (or ShuttingDown) unless ``rows`` more pictures may wait now: a request split into several
        submits is refused whole, before any of its pieces is queued."""
        with self._cond:
            self._check_room(rows)

    def _check_room(self, rows: int) -> None:
        if self._stopping:
            raise ShuttingDown("the server is shutting down")
        if self._waiting_rows + rows > self.max_queue:
            raise QueueFull(f"the queue is full ({self._waiting_rows} pictures waiting, the limit is "
                            f"{self.max_queue}); retry later", self._retry_after())

    def _retry_after(self) -> int:
        batches_ahead = math.ceil(self._waiting_rows / self.max_batch)
        return max(1, math.ceil(batches_ahead * self._last_batch_seconds))

    def _publish_depth(self) -> None:
        self._metrics.set_depth(self._waiting_rows, len(self._jobs))

    def _take_batch(self) -> list[_Job] | None:
        """Wait for work, then the jobs of the next batch (None once stopped and drained)."""
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if not self._jobs:
                return None
            flush_at = self._jobs[0].enqueued + self.max_delay
            while self._waiting_rows < self.max_batch and not self._stopping:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Job] = []
            rows = 0
            now = time.monotonic()
            while self._jobs and (not batch or rows + self._jobs[0].rows <= self.max_batch):
                job = self._jobs.popleft()
                self._waiting_rows -= job.rows
                if job.cancelled or job.future.done():
                    self._metrics.reject(job.cancelled or "cancelled")
                    continue
                if now >= job.deadline:
                    self._metrics.reject("deadline")
                    job.resolve(DeadlineExceeded("the request's deadline passed while it waited for a batch"))
                    continue
                batch.append(job)
                rows += job.rows
            self._publish_depth()
            return batch

    def _work(self) -> None:
        while (batch := self._take_batch()) is not None:
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[_Job]) -> None:
        start = time.monotonic()
        try:
            arrays = [job.array for job in batch]
            joined = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            rows = len(joined)
            padded = bucket_for(rows, self.buckets) if self.buckets else rows
            logits = self._run(pad_to(joined, padded))[:rows]  # padding rows never leave the batcher
        except Exception as exc:  # a backend failure answers this batch's requests; the thread keeps serving
            for job in batch:
                job.resolve(RuntimeError(f"inference failed: {type(exc).__name__}: {exc}"))
            return
        seconds = time.monotonic() - start
        self._last_batch_seconds = seconds
        size = sum(job.rows for job in batch)
        waits = [start - job.enqueued for job in batch]
        self._metrics.observe_batch(size, seconds, waits)
        offset = 0
        for job, waited in zip(batch, waits, strict=True):
            job.resolve(BatchResult(logits[offset:offset + job.rows], waited, seconds, size, padded))
            offset += job.rows

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the queued ones, stop the threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
