"""Benchmarks: the same measurement in-process (``core``) and per-process for the matrix
(``runner`` spawns one ``worker`` per variant x runtime x batch size)."""

from service.bench.core import (
    benchmark_callable,
    benchmark_engine,
    benchmark_module,
    load_engine,
)
from service.timing import time_callable

__all__ = [
    "benchmark_callable",
    "benchmark_engine",
    "benchmark_module",
    "load_engine",
    "time_callable",
]
