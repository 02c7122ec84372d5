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
