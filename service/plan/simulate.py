"""A discrete-event simulation (SimPy) of one Knative revision under a traffic trace.

What it models, each as Knative documents and implements it (``service.plan.knative``):

- the KPA deciding every 2 s from the in-flight requests averaged over the stable and panic
  windows, panicking above the threshold, with max scale-up/down rates, ``scale-down-delay``,
  ``min-scale``/``max-scale``, and scale to zero only after the stable window of silence plus
  max(grace period, pod retention);
- ``containerConcurrency`` as a hard per-pod limit: requests beyond it wait (in the
  queue-proxy or the activator) in arrival order, for the least-loaded pod with a free slot;
- the activator buffering requests while no pod is ready; the buffered requests count as
  in-flight concurrency, which is what scales a revision up from zero;
- a pod's start: a configurable scheduling + image-pull delay, then a cold start drawn from the
  measured ones (exec to the first answered request);
- each request's latency drawn from the pod's measured distribution at its concurrency (the
  requests in flight on that pod once it is admitted), plus its wait.

Two ways to run it, chosen by the number of requests:

- ``exact``: every request is an event (a SimPy timeout), so queueing, routing and concurrency
  are those of the individual requests;
- ``fluid``: above ``EXACT_MAX_REQUESTS``, arrivals are aggregated per second. Each second the
  ready pods serve what their measured capacity allows, first-come first-served from a backlog
  that keeps each second's arrival time; the concurrency a request meets is drawn as 1 + a
  Poisson number of others (what an arrival sees in an M/G/inf system) whose mean solves
  Little's law against the measured latency curve, capped at ``containerConcurrency``; a
  request's latency is its wait plus the measured distribution at that concurrency, added to a
  log-spaced histogram weighted by the count. The autoscaler, pods and cold starts are the same
  processes in both modes; a test checks the two agree on a trace both can run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from service.plan.knative import TICK_S, Autoscaling, Kpa
from service.plan.measured import ColdStarts, ServiceTimes
from service.plan.traces import Trace

#: Above this many requests a run aggregates per second (``fluid``).
EXACT_MAX_REQUESTS = 200_000
#: After the trace ends, the simulation runs on until queued requests are answered, or this long.
DRAIN_LIMIT_S = 600.0
#: Fluid mode: demand above this share of a second's capacity counts as saturation.
SATURATED = 0.95
#: Latency histogram: 0.1 ms to 10,000 s, 100 bins per decade (2.3 % wide).
EDGES = np.logspace(-4, 4, 801)


@dataclasses.dataclass(frozen=True)
class Pod:
    """What one pod is, as measured: its service times and cold starts."""

    service: ServiceTimes
    #: None: no pod may start (a run with min-scale = max-scale pods, ready from the start).
    cold: ColdStarts | None
    #: Scheduling, image pull and container start before the process runs (the measured cold
    #: start begins at exec). 0 means an image already on the node and a pod placed at once.
    start_delay_s: float = 0.0
    #: ``timeoutSeconds``: a request answered later than this counts as failed.
    timeout_s: float = 300.0


@dataclasses.dataclass
class Result:
    """One simulated run: latency including waits and cold starts, pods, cost."""

    mode: str
    requests: int
    cold_requests: int
    over_timeout: int
    latency_ms: dict[str, float]
    pod_seconds: float
    peak_pods: int
    timeline: dict[str, np.ndarray]
    window_s: float
    window_p95_ms: np.ndarray
    wall_s: float

    @property
    def cold_share(self) -> float:
        """Share of requests that arrived while no pod was ready (and waited for one)."""
        return self.cold_requests / self.requests if self.requests else 0.0

    @property
    def pod_seconds_per_million(self) -> float:
        return self.pod_seconds / self.requests * 1e6 if self.requests else math.inf


class _Meter:
    """In-flight requests integrated over 1-s buckets: the metric the KPA averages."""

    def __init__(self, seconds: int) -> None:
        self.buckets = np.zeros(seconds + 1)
        self.level = 0.0
        self.last = 0.0
        #: The concurrency before t = 0, when the run starts warm.
        self.history: float | None = None

    def _grow(self, b: int) -> None:
        if b >= len(self.buckets):
            self.buckets = np.concatenate([self.buckets, np.zeros(max(b, len(self.buckets)))])

    def advance(self, now: float) -> None:
        while self.last < now:
            b = int(self.last)
            end = min(now, b + 1.0)
            self._grow(b)
            self.buckets[b] += self.level * (end - self.last)
            self.last = end

    def change(self, now: float, delta: float) -> None:
        self.advance(now)
        self.level += delta

    def set_second(self, second: int, value: float) -> None:
        self._grow(second)
        self.buckets[second] = value
        self.last = second + 1.0

    def average(self, now: float, window_s: float) -> float:
        """Mean over the whole seconds of the last ``window_s`` (fewer at the start)."""
        self.advance(now)
        end = int(now)
        width = round(window_s)
        start = end - width
        if self.history is not None and start < 0:
            return float(self.buckets[:end].sum() + self.history * -start) / width
        start = max(0, start)
        return float(self.buckets[start:end].mean()) if end > start else 0.0


class _PodState:
    __slots__ = ("created", "due", "ended", "gone", "in_flight", "ready_at")

    def __init__(self, created: float) -> None:
        self.created = created
        self.due = created  # when it will be ready
        self.ready_at: float | None = None
        self.in_flight = 0
        self.gone = False
        self.ended: float | None = None


class _Revision:
    """The revision's pods: started (boot, then ready) and removed as the KPA asks."""

    def __init__(
        self, env: simpy.Environment, pod: Pod, rng: np.random.Generator, on_ready: Callable
    ) -> None:
        self.env, self.pod, self.rng, self.on_ready = env, pod, rng, on_ready
        self.pods: list[_PodState] = []  # live ones
        self.desired = 0
        self.ended_pod_seconds = 0.0

    def live(self) -> list[_PodState]:
        return [p for p in self.pods if not p.gone]

    def ready(self) -> list[_PodState]:
        return [p for p in self.live() if p.ready_at is not None]

    def start(self, already_ready: bool = False) -> None:
        state = _PodState(self.env.now)
        self.pods.append(state)
        if already_ready:
            self._ready(state)
        else:
            if self.pod.cold is None:
                raise ValueError("a pod must start, but no cold starts were measured")
            boot = self.pod.start_delay_s + self.pod.cold.draw(self.rng.random())
            state.due = self.env.now + boot
            self.env.process(self._boot(state, boot))

    def _boot(self, state: _PodState, boot: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(boot)
        if not state.gone:
            self._ready(state)

    def _ready(self, state: _PodState) -> None:
        state.ready_at = self.env.now
        self.on_ready()

    def scale_to(self, n: int) -> None:
        self.desired = n
        live = self.live()
        for _ in range(n - len(live)):
            self.start()
        if len(live) > n:
            # Pods still starting go first, then the least loaded.
            order = sorted(live, key=lambda p: (p.ready_at is not None, p.in_flight))
            for p in order[: len(live) - n]:
                p.gone, p.ended = True, self.env.now
                self.ended_pod_seconds += self.env.now - p.created
            self.pods = [p for p in self.pods if not p.gone]

    def pod_seconds(self, end: float) -> float:
        return self.ended_pod_seconds + sum(end - p.created for p in self.pods)


class _Recorder:
    """Latencies (exact: each one; fluid: weighted values, added to histograms as they come)
    and the per-second timeline."""

    def __init__(self, window_s: float, horizon: float) -> None:
        self.window_s = window_s
        self.times: list[float] = []
        self.values: list[float] = []
        windows = math.ceil((horizon + DRAIN_LIMIT_S) / window_s) + 1
        self.per_window = np.zeros((windows, len(EDGES) - 1))
        self.rows: list[tuple[float, float, int, int, int]] = []
        self.bins: dict[int, np.ndarray] = {}
        self.keep: list[np.ndarray] = []

    def add(
        self, arrived: float, values: np.ndarray, weights: np.ndarray, wait: float = 0.0
    ) -> None:
        """Add ``values + wait`` with ``weights``; the bins of a value array seen before with no
        wait are reused (most seconds of a long trace add the same few arrays)."""
        bins = len(EDGES) - 1
        key = id(values)
        idx = self.bins.get(key) if wait == 0.0 else None
        if idx is None:
            idx = np.searchsorted(EDGES, values + wait) - 1
            np.clip(idx, 0, bins - 1, out=idx)
            if wait == 0.0:
                self.bins[key] = idx
                self.keep.append(values)  # keeps id(values) from being reused
        row = min(int(arrived // self.window_s), len(self.per_window) - 1)
        self.per_window[row] += np.bincount(idx, weights=weights, minlength=bins)

    def histograms(self, end: float) -> tuple[np.ndarray, np.ndarray]:
        if self.values:
            t = np.asarray(self.times)
            bins = len(EDGES) - 1
            idx = np.clip(np.searchsorted(EDGES, np.asarray(self.values)) - 1, 0, bins - 1)
            w = np.minimum((t // self.window_s).astype(np.int64), len(self.per_window) - 1)
            np.add.at(self.per_window, (w, idx), 1.0)
            self.times, self.values = [], []
        used = max(1, math.ceil(end / self.window_s))
        per_window = self.per_window[:used]
        return self.per_window.sum(axis=0), per_window


def percentile(hist: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (seconds) of a histogram over ``EDGES``, log-interpolated."""
    total = hist.sum()
    if total <= 0:
        return math.nan
    cum = np.cumsum(hist)
    i = int(np.searchsorted(cum, q / 100 * total))
    i = min(i, len(hist) - 1)
    below = cum[i] - hist[i]
    f = (q / 100 * total - below) / hist[i] if hist[i] > 0 else 0.5
    lo, hi = math.log(EDGES[i]), math.log(EDGES[i + 1])
    return math.exp(lo + (hi - lo) * min(max(f, 0.0), 1.0))


class _Mixture:
    """Fluid mode: the latency distribution of a request arriving at ``pods`` pods that serve
    ``rate`` requests/s each.

    The concurrency it meets on its pod is 1 + K, K Poisson with the pod's mean in flight (what
    an arrival sees in an M/G/inf system), capped at the pod's limit; that mean solves
    Little's law against the measured latency curve. Its wait for a free slot, when all
    ``pods`` x limit slots are busy, follows Erlang C for that many slots at the pod's
    saturated rate, scaled for the measured service-time variability (Allen-Cunneen).
    """

    WAIT_POINTS = 8

    def __init__(self, service: ServiceTimes, cap: int) -> None:
        self.service, self.cap = service, cap
        self.levels = np.arange(1, cap + 1)
        self.means = np.array([service.mean(float(c)) for c in self.levels])
        self.quantiles = np.stack([service.at(float(c)) for c in self.levels])
        self.slot_rate = service.throughput(cap) / cap
        q = service.at(cap)
        mean = float((q[:-1] + q[1:]).mean() / 2)
        self.scv = float(np.var(q) / mean**2)  # squared coefficient of variation
        self.cache: dict[tuple[int, int], tuple[float, np.ndarray, np.ndarray]] = {}

    def _weights(self, others: float) -> np.ndarray:
        k = np.arange(self.cap)
        pmf = np.exp(k * math.log(max(others, 1e-12)) - others - _LGAMMA[: self.cap])
        pmf[-1] += max(0.0, 1.0 - pmf.sum())  # the rest meet a full pod: at the cap
        return pmf / pmf.sum()

    def at(self, rate: float, pods: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
        """(mean in flight per pod, latency values, weights summing to 1)."""
        slots = max(1, round(pods * self.cap))
        key = (round(math.log(max(rate, 1e-6)) * 100), slots)  # 1 % steps of rate
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        n = rate * self.means[0]
        for _ in range(50):
            weights = self._weights(n)
            new = rate * float(weights @ self.means)
            if abs(new - n) < 1e-4 * max(n, 1e-3):
                n = new
                break
            n = 0.5 * (n + new)
        weights = self._weights(n)
        keep = weights > 1e-5
        q = self.quantiles[keep]
        values = q.ravel()
        w = np.repeat(weights[keep] / weights[keep].sum() / q.shape[1], q.shape[1])
        values, w, queued = self._with_wait(values, w, rate * pods, slots)
        # Requests waiting for a slot count as in flight too (the KPA sees them).
        out = (min(n, float(self.cap)) + queued / max(pods, 1e-9), values, w)
        self.cache[key] = out
        return out

    def _with_wait(
        self, values: np.ndarray, weights: np.ndarray, total_rate: float, slots: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        load = total_rate / self.slot_rate
        if load >= slots:
            return values, weights, 0.0
        waits = erlang_c(slots, load)
        if waits < 1e-4:
            return values, weights, 0.0
        # P(wait > t) = C exp(-(s mu - lambda) t / ((1 + scv) / 2))
        decay = (slots * self.slot_rate - total_rate) / ((1 + self.scv) / 2)
        u = (np.arange(self.WAIT_POINTS) + 0.5) / self.WAIT_POINTS
        delays = -np.log1p(-u) / decay
        out_v = [values] + [values + d for d in delays]
        out_w = [weights * (1 - waits)] + [weights * waits / self.WAIT_POINTS] * len(delays)
        queued = total_rate * waits / decay  # Little's law on the mean wait
        return np.concatenate(out_v), np.concatenate(out_w), queued


def erlang_c(servers: int, load: float) -> float:
    """Probability an arrival waits in an M/M/``servers`` queue offered ``load`` Erlangs."""
    if load <= 0:
        return 0.0
    if load >= servers:
        return 1.0
    if (servers - load) / math.sqrt(load) > 6:
        return 0.0  # Halfin-Whitt: this far below capacity almost no arrival waits
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)  # Erlang B, by recursion
    return servers * b / (servers - load * (1 - b))


_LGAMMA = np.array([math.lgamma(k + 1) for k in range(1024)])


def steady_state(service: ServiceTimes, spec: Autoscaling, rate: float) -> tuple[int, float]:
    """Pods and in-flight requests the KPA settles on under a constant ``rate``: where
    ceil(concurrency / target value) gives back the same pods."""
    if rate <= 0:
        return spec.min_scale, 0.0
    level = spec.container_concurrency or service.levels[-1]
    mixture = _Mixture(service, level)
    capacity = service.throughput(level)
    pods = 1
    for _ in range(100):
        per_pod = rate / pods
        if per_pod >= capacity:
            pods = math.ceil(rate / capacity) + 1
            continue
        concurrency = pods * mixture.at(per_pod, pods)[0]
        nxt = max(1, math.ceil(concurrency / spec.target_value - 1e-9))
        if spec.max_scale:
            nxt = min(nxt, spec.max_scale)
        if nxt == pods:
            break
        pods = nxt
    return pods, pods * mixture.at(rate / pods, pods)[0]


class Simulation:
    """One revision, one autoscaling configuration, one trace."""

    def __init__(
        self,
        pod: Pod,
        spec: Autoscaling,
        trace: Trace | None = None,
        *,
        seed: int = 0,
        mode: str = "auto",
        closed_loop_users: int = 0,
        closed_loop_seconds: float = 0.0,
        warm: bool = True,
    ) -> None:
        if trace is None and not closed_loop_users:
            raise ValueError("a trace or closed-loop users")
        self.pod, self.spec, self.trace = pod, spec, trace
        self.rng = np.random.default_rng(seed)
        self.closed_loop_users = closed_loop_users
        #: Start as the revision would be after a stable window at the trace's first rate
        #: (False: a new revision with initial-scale pods, as right after a deploy).
        self.warm = warm
        horizon = trace.duration if trace is not None else closed_loop_seconds
        self.horizon = float(horizon)
        if mode == "auto":
            many = trace is not None and trace.expected_requests > EXACT_MAX_REQUESTS
            mode = "fluid" if many else "exact"
        if mode not in ("exact", "fluid") or (mode == "fluid" and trace is None):
            raise ValueError(f"mode {mode!r}: exact, fluid (with a trace) or auto")
        self.mode = mode
        self.env = simpy.Environment()
        self.meter = _Meter(math.ceil(self.horizon) + 1)
        self.revision = _Revision(self.env, pod, self.rng, self._dispatch)
        self.cap = spec.container_concurrency
        self.recorder = _Recorder(max(1.0, math.ceil(self.horizon / 240)), self.horizon)
        self.queue: deque[list[float]] = deque()  # [arrival time, count, cold]
        self.kpa = Kpa(spec)
        self.requests = self.cold = self.over_timeout = 0
        self.in_flight = 0

    # -- exact mode -------------------------------------------------------------------------

    def _free_pod(self) -> _PodState | None:
        best = None
        for p in self.revision.pods:
            if p.gone or p.ready_at is None or (self.cap and p.in_flight >= self.cap):
                continue
            if best is None or p.in_flight < best.in_flight:
                best = p
        return best

    def _arrive(self) -> None:
        now = self.env.now
        self.requests += 1
        self.in_flight += 1
        self.meter.change(now, 1)
        cold = not any(p.ready_at is not None and not p.gone for p in self.revision.pods)
        self.cold += cold
        self.queue.append([now, 1, cold])
        self._poke()
        self._dispatch()

    def _dispatch(self) -> None:
        if self.mode != "exact":
            return
        while self.queue:
            pod = self._free_pod()
            if pod is None:
                return
            arrived, _, _ = self.queue.popleft()
            self._serve(pod, arrived)

    def _serve(self, pod: _PodState, arrived: float) -> None:
        pod.in_flight += 1
        duration = self.pod.service.sample(pod.in_flight, self.rng.random())
        done = self.env.timeout(duration)
        done.callbacks.append(lambda _e: self._done(pod, arrived))

    def _done(self, pod: _PodState, arrived: float) -> None:
        now = self.env.now
        pod.in_flight -= 1
        self.in_flight -= 1
        self.meter.change(now, -1)
        latency = now - arrived
        self.over_timeout += latency > self.pod.timeout_s
        self.recorder.times.append(arrived)
        self.recorder.values.append(latency)
        if self.closed_loop_users and now < self.horizon:
            self._arrive()
        self._dispatch()

    def _poisson_arrivals(self) -> Generator[simpy.Event, Any, None]:
        assert self.trace is not None
        if self.trace.timestamps is not None:
            for t in self.trace.timestamps:
                yield self.env.timeout(max(0.0, float(t) - self.env.now))
                self._arrive()
            return
        for start, end, rps in self.trace.segments:
            if start > self.env.now:
                yield self.env.timeout(start - self.env.now)
            if rps <= 0:
                continue
            while True:
                gap = float(self.rng.exponential(1.0 / rps))
                if self.env.now + gap >= end:
                    yield self.env.timeout(end - self.env.now)
                    break
                yield self.env.timeout(gap)
                self._arrive()

    # -- fluid mode -------------------------------------------------------------------------

    def _fluid(self) -> Generator[simpy.Event, Any, None]:
        assert self.trace is not None
        service = self.pod.service
        level = self.cap if self.cap else service.levels[-1]
        per_pod_capacity = service.throughput(level)
        mixture = _Mixture(service, level)
        saturated_values = service.at(level)
        saturated_weights = np.full(len(saturated_values), 1.0 / len(saturated_values))
        if self.trace.timestamps is not None:
            arrivals = self.trace.per_second_counts().astype(np.float64)
        else:
            arrivals = self.rng.poisson(self.trace.seconds()).astype(np.float64)
        second = 0
        while second < len(arrivals) or (self.queue and second < self.horizon + DRAIN_LIMIT_S):
            now = float(second)
            count = float(arrivals[second]) if second < len(arrivals) else 0.0
            if count and self.revision.desired == 0:
                self._poke()
            # Ready pods serve the whole second, starting ones from when they are ready.
            live = self.revision.live()
            ready = sum(1 for p in live if p.ready_at is not None)
            booting = [p.due for p in live if p.ready_at is None and p.due < now + 1.0]
            start = now if ready else min(booting, default=now + 1.0)
            if count:
                self.requests += round(count)
                if ready:
                    self.queue.append([now + 0.5, count, False])
                else:
                    # Arrivals before the first pod is ready wait for it: a cold start.
                    cold = count * (start - now)
                    self.cold += round(cold)
                    self.queue.append([(now + start) / 2, cold, True])
                    if count - cold > 1e-9:
                        self.queue.append([(start + now + 1.0) / 2, count - cold, False])
            # Serve first-come first-served: with the ready pods until the starting ones join
            # (at their mean ready time), then with all of them.
            join = sum(booting) / len(booting) if booting else now + 1.0
            phases = [(now, join, ready), (join, now + 1.0, ready + len(booting))]
            in_pods = queued = 0.0
            for begin, finish, pods in phases:
                length = finish - begin
                if length <= 1e-9:
                    continue
                waiting = sum(c for _, c, _ in self.queue)
                first = max(0.0, waiting - count * (now + 1.0 - begin))  # not all arrived yet
                if pods:
                    capacity = per_pod_capacity * pods * length
                    served = min(waiting, capacity)
                    # Within 5 % of capacity the pods are as good as saturated (Erlang C's
                    # queue diverges there; the backlog carries the wait instead).
                    if waiting > SATURATED * capacity:
                        n_pod, values, weights = float(level), saturated_values, saturated_weights
                    else:
                        n_pod, values, weights = mixture.at(served / pods / length, pods)
                    self._serve_fluid(begin, per_pod_capacity * pods, served, values, weights)
                    in_pods += n_pod * pods * length
                last = max(0.0, sum(c for _, c, _ in self.queue) - count * (now + 1.0 - finish))
                queued += (first + last) / 2 * length
            self.meter.set_second(second, in_pods + queued)
            second += 1
            yield self.env.timeout(1.0)

    def _serve_fluid(
        self, begin: float, rate: float, served: float, values: np.ndarray, weights: np.ndarray
    ) -> None:
        """Take ``served`` requests off the backlog in arrival order, from ``begin`` at
        ``rate`` per second; each waits from its arrival until its turn."""
        done = 0.0
        while self.queue and done < served - 1e-9:
            chunk = self.queue[0]
            take = min(chunk[1], served - done)
            wait = max(0.0, begin + done / rate - chunk[0])
            self._record_fluid(chunk[0], wait, take, values, weights)
            done += take
            chunk[1] -= take
            if chunk[1] <= 1e-9:
                self.queue.popleft()

    def _record_fluid(
        self, arrived: float, wait: float, count: float, values: np.ndarray, weights: np.ndarray
    ) -> None:
        self.recorder.add(arrived, values, weights * count, wait)
        if wait > self.pod.timeout_s:
            self.over_timeout += int(count)
        elif wait + float(values.max()) > self.pod.timeout_s:
            late = values + wait > self.pod.timeout_s
            self.over_timeout += int(count * float(weights[late].sum()))

    # -- shared -----------------------------------------------------------------------------

    def _initial_rate(self) -> float:
        assert self.trace is not None
        if self.trace.timestamps is not None:
            return float(np.sum(self.trace.timestamps < 10.0) / 10.0)
        return self.trace.rate_at(0.0)

    def _steady_state(self, rate: float) -> tuple[int, float]:
        return steady_state(self.pod.service, self.spec, rate)

    def _autoscaler(self) -> Generator[simpy.Event, Any, None]:
        while True:
            yield self.env.timeout(TICK_S)
            self._decide()

    def _decide(self, poke: bool = False) -> None:
        now = self.env.now
        stable = self.meter.average(now, self.spec.stable_window_s)
        panic = self.meter.average(now, self.spec.panic_window_s)
        ready = len(self.revision.ready())
        desired = self.kpa.decide(now, stable, panic, ready, self.revision.desired)
        if poke:
            # Requests at a revision with no pods: the activator's first stat pokes the
            # autoscaler at once (MultiScaler.Poke) rather than at the next tick, and any
            # concurrency over zero pods rounds up to at least one.
            desired = max(desired, 1)
        self.revision.scale_to(desired)

    def _poke(self) -> None:
        if self.revision.desired == 0:
            self._decide(poke=True)

    def _timeline(self) -> Generator[simpy.Event, Any, None]:
        while True:
            ready = len(self.revision.ready())
            live = len(self.revision.live())
            self.recorder.rows.append(
                (self.env.now, self.requests, ready, live, self.revision.desired)
            )
            yield self.env.timeout(1.0)

    def run(self) -> Result:
        """Simulate the trace (then let queued requests finish) and summarize."""
        started = time.perf_counter()
        initial = max(self.spec.initial_scale, self.spec.min_scale)
        if self.warm and self.trace is not None:
            initial, self.meter.history = self._steady_state(self._initial_rate())
            initial = max(initial, self.spec.min_scale)
        if self.spec.max_scale:
            initial = min(initial, self.spec.max_scale)
        for _ in range(initial):
            self.revision.start(already_ready=True)
        self.revision.desired = initial
        self.env.process(self._autoscaler())
        self.env.process(self._timeline())
        if self.mode == "fluid":
            self.env.process(self._fluid())
        elif self.closed_loop_users:
            for _ in range(self.closed_loop_users):
                self._arrive()
        else:
            self.env.process(self._poisson_arrivals())
        self.env.run(until=self.horizon)
        limit = self.horizon + DRAIN_LIMIT_S
        while (self.in_flight or self.queue) and self.env.now < limit:
            self.env.run(until=min(self.env.now + 10.0, limit))
        end = self.env.now
        self.over_timeout += int(sum(c for _, c, _ in self.queue))  # never answered
        return self._result(end, time.perf_counter() - started)

    def _result(self, end: float, wall_s: float) -> Result:
        exact = np.asarray(self.recorder.values) * 1e3
        total, per_window = self.recorder.histograms(end)
        if self.mode == "exact" and len(exact):
            ms = exact
            pct = np.percentile(ms, [50, 95, 99])
            latency = {
                "p50": pct[0],
                "p95": pct[1],
                "p99": pct[2],
                "mean": float(ms.mean()),
                "max": float(ms.max()),
            }
        else:
            latency = {f"p{q}": percentile(total, q) * 1e3 for q in (50, 95, 99)}
            centers = np.sqrt(EDGES[:-1] * EDGES[1:])
            latency["mean"] = float(total @ centers / max(total.sum(), 1e-12) * 1e3)
            latency["max"] = (
                float(EDGES[np.nonzero(total)[0].max() + 1] * 1e3) if total.any() else 0.0
            )
        rows = np.asarray(self.recorder.rows, dtype=np.float64).reshape(-1, 5)
        arrivals = np.diff(rows[:, 1], prepend=0.0)
        timeline = {
            "t": rows[:, 0],
            "arrivals": arrivals,
            "ready": rows[:, 2],
            "pods": rows[:, 3],
            "desired": rows[:, 4],
        }
        window_p95 = np.array([percentile(h, 95) * 1e3 for h in per_window])
        return Result(
            mode=self.mode,
            requests=self.requests,
            cold_requests=self.cold,
            over_timeout=self.over_timeout,
            latency_ms={k: float(v) for k, v in latency.items()},
            pod_seconds=self.revision.pod_seconds(end),
            peak_pods=int(rows[:, 3].max(initial=0)),
            timeline=timeline,
            window_s=self.recorder.window_s,
            window_p95_ms=window_p95,
            wall_s=wall_s,
        )
