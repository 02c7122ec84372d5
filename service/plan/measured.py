"""What the capacity plan knows about a pod: the files this project's own commands write.

- ``make loadtest`` (``loadtest/run.py``) writes ``results/loadtest/summary.json``: for one
  variant/runtime on one pod, the latency distribution at each fixed concurrency of its sweep
  (101 quantiles per step) and the local cold starts (exec to first answered request).
- ``densenet coldstart`` writes ``results/coldstart.json``: cold starts of more variants.
- ``make benchmark`` writes ``results/benchmark_results.csv``: each variant's accuracy and
  batch-1 engine latency, which decides which variants may be recommended at all.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: A variant may be recommended only within this much top-1 of the baseline (as the README's
#: headline and the benchmark's report judge it).
MAX_ACCURACY_LOSS = 0.01


class PlanInputError(ValueError):
    """A measurement file or trace the plan cannot use; the message says what to run."""


def _read_json(path: Path, made_by: str) -> Any:
    if not path.is_file():
        raise PlanInputError(f"{path}: not found; `{made_by}` writes it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PlanInputError(f"{path}: not JSON ({exc}); rerun `{made_by}`") from None


def interpolate(ordered: Sequence[float] | np.ndarray, u: float) -> float:
    """The value at probability ``u`` (0..1) of ascending ``ordered``, linear between
    neighbours (numpy's default quantile, without its per-call cost in the simulation)."""
    if len(ordered) == 1:
        return float(ordered[0])
    x = u * (len(ordered) - 1)
    i = min(int(x), len(ordered) - 2)
    return float(ordered[i] + (ordered[i + 1] - ordered[i]) * (x - i))


@dataclasses.dataclass(frozen=True)
class ServiceTimes:
    """One pod's measured latency distribution at each fixed concurrency.

    ``quantiles[i]`` is the latency (seconds) at 101 evenly spaced probabilities, measured with
    ``levels[i]`` requests in flight. Between measured levels the quantiles interpolate
    linearly; above the highest, the pod is taken as saturated (throughput flat), so latency
    grows in proportion to concurrency.
    """

    variant: str
    runtime: str
    levels: tuple[int, ...]
    quantiles: np.ndarray
    source: str = ""
    pod_cpus: int | None = None
    machine: str = ""
    #: The server's settings in the sweep (NUM_THREADS, ENGINE_WORKERS): the pod measured.
    pod_env: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        q = self.quantiles
        if q.ndim != 2 or q.shape[0] != len(self.levels) or q.shape[1] < 2:
            raise PlanInputError(f"{self.source}: quantiles do not match the levels")
        if list(self.levels) != sorted(set(self.levels)) or self.levels[0] < 1:
            raise PlanInputError(f"{self.source}: concurrency levels must rise from 1")
        if not np.all(np.isfinite(q)) or np.any(q <= 0) or np.any(np.diff(q, axis=1) < 0):
            raise PlanInputError(f"{self.source}: latency quantiles must be positive and rising")

    @property
    def label(self) -> str:
        return f"{self.variant}/{self.runtime}"

    def at(self, n: float) -> np.ndarray:
        """Latency quantiles (s) with ``n`` requests in flight on the pod."""
        levels = self.levels
        if n <= levels[0]:
            return self.quantiles[0]
        if n >= levels[-1]:
            return self.quantiles[-1] * (n / levels[-1])
        hi = int(np.searchsorted(levels, n))
        lo = hi - 1
        f = (n - levels[lo]) / (levels[hi] - levels[lo])
        return self.quantiles[lo] * (1 - f) + self.quantiles[hi] * f

    def mean(self, n: float) -> float:
        """Mean latency (s) at concurrency ``n`` (trapezoid over the quantile function)."""
        q = self.at(n)
        return float((q[:-1] + q[1:]).mean() / 2)

    def throughput(self, n: float) -> float:
        """Requests/s one pod completes with ``n`` in flight (Little's law)."""
        return n / self.mean(n)

    def sample(self, n: float, u: float) -> float:
        """The latency at probability ``u`` (0..1) with ``n`` in flight."""
        return interpolate(self.at(n), u)

    def without(self, level: int) -> ServiceTimes:
        """The same pod with one measured level left out (to predict it from the others)."""
        keep = [i for i, c in enumerate(self.levels) if c != level]
        return dataclasses.replace(
            self,
            levels=tuple(self.levels[i] for i in keep),
            quantiles=self.quantiles[keep],
        )


@dataclasses.dataclass(frozen=True)
class ColdStarts:
    """Measured cold starts (s): process exec to the first answered request."""

    samples: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        if not self.samples or any(not (s > 0) for s in self.samples):
            raise PlanInputError(f"{self.source}: no positive cold-start samples")

    def draw(self, u: float) -> float:
        """The cold start at probability ``u`` (0..1), interpolating between samples."""
        return interpolate(sorted(self.samples), u)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """``make loadtest``'s summary: the pod's service times and its cold starts."""

    service: ServiceTimes
    cold: ColdStarts
    measured: dict[str, dict[int, float]]


LOADTEST = "make loadtest"


def load_sweep(path: Path) -> Sweep:
    """Read ``loadtest/run.py``'s ``summary.json`` (``make loadtest``)."""
    doc = _read_json(path, LOADTEST)
    try:
        locust, variant, runtime = doc["locust"], doc["variant"], doc["runtime"]
    except (KeyError, TypeError):
        raise PlanInputError(f"{path}: not a load-test summary; `{LOADTEST}` writes one") from None
    service, measured = from_locust(
        locust,
        variant,
        runtime,
        str(path),
        pod_cpus=len(doc.get("server_cpus") or []) or None,
        machine=doc.get("machine", ""),
        pod_env=doc.get("server_env") or {},
    )
    samples = [s["first_predict_s"] for s in (doc.get("coldstart") or {}).get("samples", ()) if s]
    if not samples:
        raise PlanInputError(f"{path}: no cold-start samples; rerun `{LOADTEST}`")
    return Sweep(service, ColdStarts(tuple(samples), f"{path} (coldstart)"), measured)


def from_locust(
    locust: dict[str, Any],
    variant: str,
    runtime: str,
    source: str,
    *,
    pod_cpus: int | None = None,
    machine: str = "",
    pod_env: dict[str, str] | None = None,
) -> tuple[ServiceTimes, dict[str, dict[int, float]]]:
    """Service times and the measured p50/p95/req/s per level, from the Locust suite's own
    summary (``LOADTEST_SUMMARY``, run in sweep mode)."""
    steps = [s for s in locust.get("steps", ()) if s.get("latency_ms_quantiles")]
    if not steps:
        raise PlanInputError(
            f"{source}: no step has a latency distribution (latency_ms_quantiles): it was "
            f"written by an older load test; rerun `{LOADTEST}`"
        )
    steps.sort(key=lambda s: s["users"])
    service = ServiceTimes(
        variant=variant,
        runtime=runtime,
        levels=tuple(int(s["users"]) for s in steps),
        quantiles=np.asarray([s["latency_ms_quantiles"] for s in steps], dtype=np.float64) / 1e3,
        source=source,
        pod_cpus=pod_cpus,
        machine=machine,
        pod_env=pod_env or {},
    )
    measured = {
        "p50_ms": {int(s["users"]): s["latency_ms_p50"] for s in steps},
        "p95_ms": {int(s["users"]): s["latency_ms_p95"] for s in steps},
        "rps": {int(s["users"]): s["rps"] for s in steps},
    }
    return service, measured


def load_coldstarts(path: Path, variant: str, runtime: str) -> ColdStarts:
    """Cold starts of ``variant`` on ``runtime`` from ``densenet coldstart``'s JSON."""
    made_by = f"densenet coldstart --variant {variant} --runtime {runtime}"
    doc = _read_json(path, made_by)
    for entry in doc if isinstance(doc, list) else []:
        if entry.get("variant") == variant and entry.get("runtime") == runtime:
            samples = [s["first_predict_s"] for s in entry.get("samples", ())]
            return ColdStarts(tuple(samples), str(path))
    raise PlanInputError(f"{path}: no cold starts for {variant}/{runtime}; run `{made_by}`")


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """One variant/runtime's batch-1 row of the benchmark."""

    variant: str
    runtime: str
    latency_ms_p50: float
    accuracy_top1: float | None
    delta_vs_baseline: float | None

    @property
    def eligible(self) -> bool:
        """Within one point of the baseline's top-1 (unmeasured accuracy is not eligible)."""
        return self.delta_vs_baseline is not None and self.delta_vs_baseline >= -MAX_ACCURACY_LOSS


def load_benchmark(path: Path) -> dict[str, Accuracy]:
    """Batch-1 CPU rows of ``make benchmark``'s CSV, keyed ``variant/runtime``."""
    if not path.is_file():
        raise PlanInputError(f"{path}: not found; `make benchmark` writes it")

    def number(text: str | None) -> float | None:
        return float(text) if text not in (None, "") else None

    out: dict[str, Accuracy] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("device") != "cpu" or row.get("batch_size") != "1":
                continue
            key = f"{row['model_variant']}/{row['runtime']}"
            out[key] = Accuracy(
                row["model_variant"],
                row["runtime"],
                float(row["latency_ms_p50"]),
                number(row.get("accuracy_top1")),
                number(row.get("accuracy_delta_vs_baseline")),
            )
    if not out:
        raise PlanInputError(f"{path}: no CPU batch-1 rows; rerun `make benchmark`")
    return out
