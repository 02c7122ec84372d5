"""Admission control and (optional) dynamic batching in front of the engine.

Like Triton's dynamic batcher: requests wait up to ``timeout`` for companions, up to
``max_batch_size`` run as one engine call, and each caller gets its own row back. With
``max_batch_size=1`` it is a plain bounded queue. Either way the engine runs on one worker
thread, so the event loop stays free for ``/healthz`` and ``/metrics``.

Admission is bounded: at most ``max_in_flight`` predict requests are inside the service
(decoding, queued or running); the next one is refused with ``Overloaded`` (HTTP 503). A
request's body is received before it asks for a place (under its own ``Gate`` and deadline,
in ``routes``), so slow uploads cannot hold the model's places.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service.errors import Overloaded
from service.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")


class Gate:
    """At most ``limit`` holders at once; one more is refused at once with Overloaded."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.held = 0

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place for the ``with`` block, or raise Overloaded."""
        if self.held >= self.limit:
            raise Overloaded(f"server is at its limit of {self.limit} {self.what}; retry")
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


@dataclass(frozen=True)
class BatchResult:
    """One caller's share of an engine call."""

    logits: np.ndarray
    queue_seconds: float
    inference_seconds: float
    batch_size: int


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future[BatchResult]
    enqueued: float


class Batcher:
    """Collects preprocessed images into batches and runs them on ``workers`` engine threads."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        timeout_s: float,
        max_in_flight: int,
        metrics: Metrics,
        workers: int = 1,
        direct: bool = False,
    ) -> None:
        self._predict = predict
        # No batching and one intra-op thread per call: a request's decode runs on the engine
        # thread that then runs its model call (one hand-off instead of two, no batcher task).
        self.direct = direct and max_batch_size == 1
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self._metrics = metrics
        self._gate = Gate(max_in_flight, "requests in flight")
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        # One thread per engine worker: ``workers`` batches run at once, each in its own call.
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the worker tasks on the running loop."""
        self._tasks = [
            asyncio.create_task(self._run(), name=f"batcher-{i}") for i in range(self.workers)
        ]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the workers once admitted callers are answered (or ``timeout_s`` has passed)."""
        deadline = time.perf_counter() + timeout_s
        while self._gate.held and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=True)

    @property
    def in_flight(self) -> int:
        """Admitted predict requests not yet answered."""
        return self._gate.held

    def admit(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Reserve a place for one request, or raise Overloaded at once."""
        return self._gate.admit()

    async def submit(self, inputs: np.ndarray) -> BatchResult:
        """Queue one preprocessed CHW image; resolves with its logits."""
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, future, time.perf_counter()))
        self._metrics.queue_depth.set(self._queue.qsize())
        return await future

    async def submit_many(self, inputs: np.ndarray) -> list[BatchResult]:
        """Queue N preprocessed images together; they run in as few engine calls as
        MAX_BATCH_SIZE allows (one when N fits)."""
        return list(await asyncio.gather(*(self.submit(row) for row in inputs)))

    async def run_direct(
        self, prepare: Callable[[], tuple[T, np.ndarray]]
    ) -> tuple[T, list[BatchResult]]:
        """``prepare()`` (decode: what it returns, and the N images) then the model, one
        image per call, on one engine thread. A job whose caller has gone before it starts
        never runs."""
        enqueued = time.perf_counter()
        state = ["queued"]  # -> "running" (the job took it) or "abandoned" (the caller left)
        self._count_waiting(+1)

        def job() -> tuple[T, list[BatchResult]]:
            if not self._leave_queue(state, "running"):
                raise asyncio.CancelledError
            started = time.perf_counter()
            queued = started - enqueued
            extra, inputs = prepare()
            results = []
            for row in inputs:
                call_start = time.perf_counter()
                try:
                    logits = self._predict(row[None])
                except Exception:
                    log.exception("inference failed for a batch of 1")
                    raise
                elapsed = time.perf_counter() - call_start
                self._metrics.batch_size.observe(1)
                self._metrics.predict.observe(elapsed)
                self._metrics.queue_seconds.observe(queued)
                results.append(BatchResult(logits[0], queued, elapsed, 1))
            return extra, results

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        finally:
            self._leave_queue(state, "abandoned")

    def _count_waiting(self, delta: int) -> None:
        with self._waiting_lock:
            self._waiting += delta
            self._metrics.queue_depth.set(self._waiting)

    def _leave_queue(self, state: list[str], to: str) -> bool:
        """Move a queued direct job to ``to`` ("running" or "abandoned"), once: whichever of
        the engine thread and the departing caller comes first wins, and the other is told."""
        with self._waiting_lock:
            if state[0] != "queued":
                return False
            state[0] = to
            self._waiting -= 1
            self._metrics.queue_depth.set(self._waiting)
            return True

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.timeout_s
        while len(batch) < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]
            self._metrics.queue_depth.set(self._queue.qsize())
            if not batch:
                continue
            started = time.perf_counter()
            stacked = np.stack([p.inputs for p in batch])
            try:
                logits = await loop.run_in_executor(self._executor, self._predict, stacked)
            except Exception as exc:  # engine failure: every caller of this batch learns it
                log.exception("inference failed for a batch of %d", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self._metrics.batch_size.observe(len(batch))
            self._metrics.predict.observe(elapsed)
            for row, pending in zip(logits, batch, strict=True):
                queued = started - pending.enqueued
                self._metrics.queue_seconds.observe(queued)
                if not pending.future.done():
                    pending.future.set_result(BatchResult(row, queued, elapsed, len(batch)))
