"""The batcher with a fake engine: batches form, each caller gets its own row, failures stay
in their batch, admission is bounded."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batching import Batcher
from service.errors import Overloaded
from service.metrics import Metrics


def row_sums(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)


def test_batches_form_and_every_caller_gets_its_own_row():
    images = [np.full((3, 2, 2), i, dtype=np.float32) for i in range(24)]
    metrics = Metrics()
    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return row_sums(batch)

    async def scenario() -> list:
        batcher = Batcher(
            predict, max_batch_size=8, timeout_s=0.05, max_in_flight=64, metrics=metrics
        )
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x) for x in images))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert [float(r.logits[0]) for r in results] == [12.0 * i for i in range(24)]
    assert max(calls) > 1 and sum(calls) == 24 and max(calls) <= 8
    assert [r.batch_size for r in results if r.batch_size > 1]
    batches = {s.name: s.value for s in metrics.batch_size.collect()[0].samples}
    assert batches["inference_batch_size_sum"] == 24
    assert batches["inference_batch_size_count"] == len(calls)


def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs():
    failures = iter([True, False])

    def predict(batch: np.ndarray) -> np.ndarray:
        if next(failures):
            raise RuntimeError("engine fell over")
        return row_sums(batch)

    async def scenario() -> tuple[BaseException | None, float]:
        batcher = Batcher(
            predict, max_batch_size=1, timeout_s=0, max_in_flight=4, metrics=Metrics()
        )
        await batcher.start()
        try:
            first = await asyncio.gather(batcher.submit(np.ones((1,))), return_exceptions=True)
            second = await batcher.submit(np.ones((2,)))
        finally:
            await batcher.stop()
        return first[0], float(second.logits[0])

    error, value = asyncio.run(scenario())
    assert isinstance(error, RuntimeError) and value == 2.0


def test_admission_is_bounded():
    async def scenario() -> None:
        batcher = Batcher(
            lambda b: b, max_batch_size=1, timeout_s=0, max_in_flight=2, metrics=Metrics()
        )
        async with batcher.admit(), batcher.admit():
            with pytest.raises(Overloaded, match="limit of 2 requests"):
                async with batcher.admit():
                    pass
        async with batcher.admit():  # places are given back
            assert batcher.in_flight == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("max_batch_size", [1, 4])
def test_concurrent_engine_workers_give_every_caller_its_own_answer(max_batch_size):
    """ENGINE_WORKERS=2: engine calls overlap (two threads inside predict at once), and 16
    concurrent callers each get the row a serial run gives them."""
    import threading
    import time

    images = [np.full((3, 2, 2), i, dtype=np.float32) for i in range(16)]
    inside = 0
    most_inside = 0
    lock = threading.Lock()

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        time.sleep(0.01)  # long enough for the other worker to enter
        with lock:
            inside -= 1
        return row_sums(batch)

    async def scenario(workers: int) -> list:
        batcher = Batcher(
            predict,
            max_batch_size=max_batch_size,
            timeout_s=0.001,
            max_in_flight=64,
            metrics=Metrics(),
            workers=workers,
        )
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x) for x in images))
        finally:
            await batcher.stop()

    serial = [float(r.logits[0]) for r in asyncio.run(scenario(1))]
    assert most_inside == 1
    concurrent = [float(r.logits[0]) for r in asyncio.run(scenario(2))]
    assert most_inside == 2
    assert concurrent == serial == [12.0 * i for i in range(16)]


def direct_batcher(predict, workers: int = 1, metrics: Metrics | None = None) -> Batcher:
    return Batcher(
        predict,
        max_batch_size=1,
        timeout_s=0,
        max_in_flight=64,
        metrics=metrics or Metrics(),
        workers=workers,
        direct=True,
    )


def test_direct_mode_decodes_and_runs_on_the_engine_thread_and_answers_every_caller():
    """MAX_BATCH_SIZE 1, one intra-op thread: each request's decode and model call share one
    engine thread (one hand-off); 16 concurrent callers on 2 workers get the serial answers."""
    import threading

    images = [np.full((3, 2, 2), i, dtype=np.float32) for i in range(16)]
    threads: set[str] = set()

    def predict(batch: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return row_sums(batch)

    async def scenario(workers: int) -> list:
        batcher = direct_batcher(predict, workers)
        assert batcher.direct
        await batcher.start()

        def prepare(x: np.ndarray):
            def run():
                threads.add(threading.current_thread().name)  # the decode's thread
                return float(x[0, 0, 0]), x[None]

            return run

        try:
            return await asyncio.gather(*(batcher.run_direct(prepare(x)) for x in images))
        finally:
            await batcher.stop()

    def answers(results: list) -> list[tuple[float, float]]:
        return [(extra, float(r.logits[0])) for extra, (r,) in results]

    serial = answers(asyncio.run(scenario(1)))
    assert {t.rsplit("_", 1)[0] for t in threads} == {"engine"}
    concurrent = answers(asyncio.run(scenario(2)))
    assert concurrent == serial == [(float(i), 12.0 * i) for i in range(16)]


def test_a_direct_job_whose_caller_left_never_runs_and_the_queue_depth_recovers():
    import threading

    release = threading.Event()
    ran: list[float] = []
    metrics = Metrics()

    def predict(batch: np.ndarray) -> np.ndarray:
        ran.append(float(batch.sum()))
        release.wait(5)
        return row_sums(batch)

    async def scenario() -> None:
        batcher = direct_batcher(predict, metrics=metrics)
        await batcher.start()
        one = np.ones((1, 3, 2, 2), dtype=np.float32)
        first = asyncio.ensure_future(batcher.run_direct(lambda: (None, one)))
        second = asyncio.ensure_future(batcher.run_direct(lambda: (None, 2 * one)))
        await asyncio.sleep(0.1)  # the first holds the only engine thread; the second waits
        assert metrics.queue_depth._value.get() == 1
        second.cancel()  # its caller goes away
        await asyncio.sleep(0.05)
        release.set()
        await first
        await asyncio.sleep(0.05)
        assert metrics.queue_depth._value.get() == 0
        await batcher.stop()

    asyncio.run(scenario())
    assert ran == [12.0]  # the second image never reached the model


def test_direct_mode_needs_no_batching():
    batcher = Batcher(
        row_sums, max_batch_size=4, timeout_s=0, max_in_flight=4, metrics=Metrics(), direct=True
    )
    assert not batcher.direct
