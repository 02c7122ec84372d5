"""Traffic for the capacity plan: a constant rate, or a trace file, and the shipped examples.

A trace is a CSV file with a header naming its kind:

- ``start_s,end_s,rps``: rates. Each row is an interval with a constant arrival rate
  (Poisson arrivals at ``rps``); intervals are sorted and do not overlap, and a gap between
  them has no traffic.
- ``timestamp_s``: one row per request, its arrival time in seconds from the start.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path

import numpy as np

from service.plan.measured import PlanInputError

RATES = ("start_s", "end_s", "rps")
TIMESTAMPS = ("timestamp_s",)


@dataclasses.dataclass(frozen=True)
class Trace:
    """Arrivals as rate intervals (``segments``) or as request timestamps (``timestamps``)."""

    name: str
    segments: tuple[tuple[float, float, float], ...] = ()
    timestamps: np.ndarray | None = None

    @property
    def duration(self) -> float:
        if self.timestamps is not None:
            return float(self.timestamps[-1]) + 1.0 if len(self.timestamps) else 0.0
        return self.segments[-1][1] if self.segments else 0.0

    @property
    def expected_requests(self) -> float:
        if self.timestamps is not None:
            return float(len(self.timestamps))
        return sum((end - start) * rps for start, end, rps in self.segments)

    @property
    def peak_rps(self) -> float:
        """The highest rate (for timestamps: the busiest second's count)."""
        if self.timestamps is not None:
            return float(self.per_second_counts().max(initial=0))
        return max((rps for _, _, rps in self.segments), default=0.0)

    def rate_at(self, t: float) -> float:
        """The arrival rate (requests/s) in force at time ``t``."""
        for start, end, rps in self.segments:
            if start <= t < end:
                return rps
        return 0.0

    def per_second_counts(self) -> np.ndarray:
        """Requests arriving in each whole second (timestamp traces)."""
        assert self.timestamps is not None
        seconds = math.ceil(self.duration)
        return np.bincount(self.timestamps.astype(np.int64), minlength=seconds)[:seconds]

    def seconds(self) -> np.ndarray:
        """The mean arrival rate in each whole second of the trace (rate traces)."""
        n = math.ceil(self.duration)
        out = np.zeros(n)
        for start, end, rps in self.segments:
            for s in range(int(start), math.ceil(end)):
                overlap = min(end, s + 1) - max(start, s)
                out[s] += rps * max(overlap, 0.0)
        return out


def constant(rps: float, seconds: float) -> Trace:
    """``--rps R``: a constant rate for ``seconds``."""
    if not rps > 0 or not seconds > 0:
        raise PlanInputError("--rps and --seconds must be positive")
    return Trace(f"constant {rps:g} req/s", segments=((0.0, float(seconds), float(rps)),))


def read(path: Path) -> Trace:
    """Read a trace file; a bad row is an error naming its line."""
    if not path.is_file():
        raise PlanInputError(f"{path}: trace file not found")
    return parse(path.read_text(), path.stem, str(path))


def parse(text: str, name: str, where: str = "trace") -> Trace:
    """Parse a trace's CSV text (see the module docstring for the two forms)."""
    reader = csv.reader(io.StringIO(text))
    header = tuple(h.strip() for h in next(reader, []))
    rows: list[tuple[int, list[float]]] = []
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise PlanInputError(f"{where}:{line}: {len(row)} fields, the header has {len(header)}")
        try:
            values = [float(c) for c in row]
        except ValueError:
            raise PlanInputError(f"{where}:{line}: not a number: {row}") from None
        if not all(math.isfinite(v) for v in values):
            raise PlanInputError(f"{where}:{line}: not a finite number: {row}")
        rows.append((line, values))
    if header == TIMESTAMPS:
        return _timestamps(rows, name, where)
    if header == RATES:
        return _rates(rows, name, where)
    raise PlanInputError(
        f"{where}: header must be `{','.join(RATES)}` or `{','.join(TIMESTAMPS)}`, "
        f"not `{','.join(header)}`"
    )


def _timestamps(rows: list[tuple[int, list[float]]], name: str, where: str) -> Trace:
    previous = 0.0
    for line, (t,) in rows:
        if t < 0:
            raise PlanInputError(f"{where}:{line}: negative timestamp {t:g}")
        if t < previous:
            raise PlanInputError(
                f"{where}:{line}: timestamps not sorted ({t:g} after {previous:g})"
            )
        previous = t
    if not rows:
        raise PlanInputError(f"{where}: no requests")
    return Trace(name, timestamps=np.asarray([v[0] for _, v in rows], dtype=np.float64))


def _rates(rows: list[tuple[int, list[float]]], name: str, where: str) -> Trace:
    segments = []
    previous_end = 0.0
    for line, (start, end, rps) in rows:
        if start < 0:
            raise PlanInputError(f"{where}:{line}: negative start_s {start:g}")
        if end <= start:
            raise PlanInputError(f"{where}:{line}: end_s {end:g} is not after start_s {start:g}")
        if start < previous_end:
            raise PlanInputError(
                f"{where}:{line}: intervals not sorted or overlapping "
                f"(starts at {start:g}, the previous one ends at {previous_end:g})"
            )
        if rps < 0:
            raise PlanInputError(f"{where}:{line}: negative rate {rps:g}")
        segments.append((start, end, rps))
        previous_end = end
    if not segments or not any(rps > 0 for _, _, rps in segments):
        raise PlanInputError(f"{where}: no traffic")
    return Trace(name, segments=tuple(segments))


# The shipped examples, in loadtest/traces/ (a test checks the files equal these). Their rates
# are sized for the CPU revision's measured pod (a few hundred requests/s each on this
# project's distilled student), so that each needs several pods at its peak.
def _steady() -> list[tuple[float, float, float]]:
    """20 minutes at 400 requests/s."""
    return [(60.0 * m, 60.0 * (m + 1), 400.0) for m in range(20)]


def _diurnal() -> list[tuple[float, float, float]]:
    """24 hours in 10-minute steps: 40 requests/s at 04:00 rising to 800 at 16:00."""
    out = []
    for step in range(144):
        hour = step / 6
        rps = 40 + 760 * (1 - math.cos(2 * math.pi * (hour - 4) / 24)) / 2
        out.append((600.0 * step, 600.0 * (step + 1), round(rps, 1)))
    return out


def _bursty() -> list[tuple[float, float, float]]:
    """One hour: 60-second bursts of 600 requests/s, each followed by 240 s of silence --
    longer than the stable window (60 s) plus the scale-to-zero grace period (30 s), so a
    revision that may scale to zero does so between bursts."""
    out = []
    for b in range(12):
        out += [(300.0 * b, 300.0 * b + 60.0, 600.0), (300.0 * b + 60.0, 300.0 * (b + 1), 0.0)]
    return out


EXAMPLES = {"steady": _steady, "diurnal": _diurnal, "bursty": _bursty}


def example_csv(name: str) -> str:
    """The CSV text of a shipped example trace."""
    lines = [",".join(RATES)]
    lines += [f"{s:g},{e:g},{r:g}" for s, e, r in EXAMPLES[name]()]
    return "\n".join(lines) + "\n"
