"""Timing a call and summarizing what was timed: one helper for each, shared by the benchmark,
cold start, the load test and the distillation student probe."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def time_callable(
    fn: Callable[[], object],
    *,
    min_time_s: float = 1.0,
    min_iters: int = 5,
    max_iters: int = 10_000,
    warmup_iters: int = 2,
    sync: Callable[[], None] | None = None,
) -> list[float]:
    """Per-call latencies in seconds (after warm-up); ``sync`` waits for asynchronous work."""
    for _ in range(warmup_iters):
        fn()
    if sync:
        sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_iters and (
        len(times) < min_iters or time.perf_counter() - started < min_time_s
    ):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def summarize(
    values: Sequence[float], percentiles: Sequence[int] = (50, 90, 95, 99)
) -> dict[str, float]:
    """Percentiles (``p50``...), ``median``, ``mean``, ``min``, ``max``, ``stdev`` and ``n``.

    Percentiles interpolate linearly between samples (numpy's default).
    """
    if len(values) == 0:
        raise ValueError("nothing to summarize: no samples")
    arr = np.asarray(values, dtype=np.float64)
    out = {
        f"p{q}": float(v) for q, v in zip(percentiles, np.percentile(arr, percentiles), strict=True)
    }
    out.update(
        median=float(np.median(arr)),
        mean=float(arr.mean()),
        min=float(arr.min()),
        max=float(arr.max()),
        stdev=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        n=int(arr.size),
    )
    return out


def quantile_function(values: Sequence[float], points: int = 101) -> list[float]:
    """The empirical quantile function at ``points`` evenly spaced probabilities (0 to 1):
    the whole distribution in a fixed size, for the capacity plan to draw from."""
    if len(values) == 0:
        raise ValueError("nothing to summarize: no samples")
    return [
        float(v)
        for v in np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, points))
    ]
