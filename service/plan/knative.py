"""Knative's Pod Autoscaler (KPA), as the simulation runs it: its settings, with Knative's
defaults, and the decision it makes every tick.

The defaults are those of knative/serving's ``pkg/autoscaler/config/config.go``
(``defaultConfig``) and the documented ``config-autoscaler`` ConfigMap
(https://knative.dev/docs/serving/autoscaling/); the decision follows
``pkg/autoscaler/scaling/autoscaler.go`` (``Scale``) and the scale-to-zero rules of
``pkg/reconciler/autoscaling/kpa/scaler.go`` (``handleScaleToZero``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

#: ``multiscaler.go``: ``tickInterval = 2 * time.Second``, how often the KPA decides.
TICK_S = 2.0
#: ``config.go``: ``BucketSize = 1 * time.Second``, the metric's averaging bucket.
BUCKET_S = 1.0


@dataclasses.dataclass(frozen=True)
class Autoscaling:
    """One revision's autoscaling: ``containerConcurrency`` plus the KPA annotations.

    Each default is Knative's own (``config-autoscaler`` / ``defaultConfig``).
    """

    #: ``spec.containerConcurrency``: the hard per-pod limit; 0 means unlimited (Knative's
    #: default), requests beyond it wait in the queue-proxy or the activator.
    container_concurrency: int = 0
    #: ``autoscaling.knative.dev/target``; None: ``container-concurrency-target-default``
    #: (100), or containerConcurrency when that is set and smaller.
    target: float | None = None
    #: ``target-utilization-percentage``: 70.
    target_utilization: float = 70.0
    #: ``stable-window``: 60 s.
    stable_window_s: float = 60.0
    #: ``panic-window-percentage``: 10 % of the stable window.
    panic_window_percentage: float = 10.0
    #: ``panic-threshold-percentage``: 200 %.
    panic_threshold_percentage: float = 200.0
    #: ``max-scale-up-rate``: 1000; ``max-scale-down-rate``: 2.
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    #: ``scale-to-zero-grace-period``: 30 s; ``scale-to-zero-pod-retention-period``: 0 s.
    scale_to_zero_grace_s: float = 30.0
    scale_to_zero_retention_s: float = 0.0
    #: ``scale-down-delay``: 0 s.
    scale_down_delay_s: float = 0.0
    #: ``initial-scale``: 1; ``min-scale``: 0; ``max-scale``: 0 (unbounded).
    initial_scale: int = 1
    min_scale: int = 0
    max_scale: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.container_concurrency >= 0, "containerConcurrency must be >= 0"),
            (self.target is None or self.target > 0, "target must be > 0"),
            (0 < self.target_utilization <= 100, "target-utilization-percentage in (0, 100]"),
            (self.stable_window_s >= 6, "stable window must be at least 6 s"),
            (0 < self.panic_window_percentage <= 100, "panic-window-percentage in (0, 100]"),
            (self.panic_threshold_percentage > 100, "panic-threshold-percentage must be > 100"),
            (self.max_scale_up_rate > 1 and self.max_scale_down_rate > 1, "scale rates > 1"),
            (self.scale_to_zero_grace_s > 0, "scale-to-zero-grace-period must be positive"),
            (self.scale_to_zero_retention_s >= 0, "pod retention must be >= 0"),
            (self.scale_down_delay_s >= 0, "scale-down-delay must be >= 0"),
            (self.min_scale >= 0 and self.max_scale >= 0, "min/max-scale must be >= 0"),
            (
                self.max_scale == 0 or self.min_scale <= self.max_scale,
                "min-scale must not exceed max-scale",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"autoscaling: {message}")

    @property
    def target_value(self) -> float:
        """What one pod is sized for: target x utilization (``DeciderSpec.TargetValue``)."""
        target = self.target if self.target is not None else 100.0
        if self.container_concurrency and self.target is None:
            target = min(target, float(self.container_concurrency))
        return max(target * self.target_utilization / 100.0, 0.01)

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_percentage / 100.0

    @property
    def scale_to_zero(self) -> bool:
        return self.min_scale == 0

    def annotations(self) -> dict[str, str]:
        """The ``autoscaling.knative.dev/*`` annotations that give these settings: the ones the
        plan chooses always, the rest only where they differ from Knative's defaults."""
        d = Autoscaling()
        out = {
            "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/metric": "concurrency",
            "autoscaling.knative.dev/target": _number(self.target_value_annotation),
            "autoscaling.knative.dev/target-utilization-percentage": _number(
                self.target_utilization
            ),
            "autoscaling.knative.dev/min-scale": str(self.min_scale),
            "autoscaling.knative.dev/max-scale": str(self.max_scale),
            "autoscaling.knative.dev/initial-scale": str(self.initial_scale),
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period": (
                f"{_number(self.scale_to_zero_retention_s)}s"
            ),
            # The activator always in the path: requests go to a pod with a free slot and wait
            # in one queue when none has, which is how the simulation routes them. Out of the
            # path, the ingress spreads requests without knowing which pods are busy.
            "autoscaling.knative.dev/target-burst-capacity": "-1",
        }
        optional = {
            "window": (self.stable_window_s, d.stable_window_s, "s"),
            "panic-window-percentage": (
                self.panic_window_percentage,
                d.panic_window_percentage,
                "",
            ),
            "panic-threshold-percentage": (
                self.panic_threshold_percentage,
                d.panic_threshold_percentage,
                "",
            ),
            "scale-down-delay": (self.scale_down_delay_s, d.scale_down_delay_s, "s"),
        }
        for key, (value, default, unit) in optional.items():
            if value != default:
                out[f"autoscaling.knative.dev/{key}"] = f"{_number(value)}{unit}"
        return out

    @property
    def target_value_annotation(self) -> float:
        if self.target is not None:
            return self.target
        return float(self.container_concurrency or 100)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class Kpa:
    """The KPA's decision, tick by tick (``autoscaler.Scale`` plus the reconciler's bounds).

    ``decide`` takes the averaged concurrency of the stable and panic windows and the number of
    ready pods, and returns the pods the revision should have.
    """

    def __init__(self, spec: Autoscaling) -> None:
        self.spec = spec
        self.panic_since: float | None = None
        self.max_panic_pods = 0
        self.delay: deque[tuple[float, int]] = deque()
        self.inactive_since: float | None = None

    @property
    def panicking(self) -> bool:
        return self.panic_since is not None

    def decide(self, now: float, stable: float, panic: float, ready: int, current: int) -> int:
        """Desired pods at ``now`` (``current`` is the pods asked for at the last tick)."""
        s = self.spec
        ready_count = max(1.0, float(ready))  # "Use 1 if there are zero current pods."
        max_up = math.ceil(s.max_scale_up_rate * ready_count)
        max_down = math.floor(ready_count / s.max_scale_down_rate)
        dspc = math.ceil(stable / s.target_value - 1e-9)
        dppc = math.ceil(panic / s.target_value - 1e-9)
        desired_stable = int(min(max(dspc, max_down), max_up))
        desired_panic = int(min(max(dppc, max_down), max_up))

        over = dppc / ready_count >= s.panic_threshold_percentage / 100.0
        if over:
            self.panic_since = now  # begin, or extend, panicking
        elif self.panic_since is not None and self.panic_since + s.stable_window_s < now:
            # "Stop panicking after the surge has made its way into the stable metric."
            self.panic_since = None
            self.max_panic_pods = 0

        desired = desired_stable
        if self.panic_since is not None:
            # No scale-down while panicking; the larger of stable and panic.
            self.max_panic_pods = max(self.max_panic_pods, desired_stable, desired_panic)
            desired = self.max_panic_pods

        if s.scale_down_delay_s > 0:
            # The delay window keeps the largest decision of the last scale-down-delay.
            self.delay.append((now, desired))
            while self.delay and self.delay[0][0] <= now - s.scale_down_delay_s:
                self.delay.popleft()
            desired = max(d for _, d in self.delay)
        return self._bounds(now, desired, stable, current)

    def _bounds(self, now: float, desired: int, stable: float, current: int) -> int:
        """min/max-scale, and scale to zero only after the stable window of no traffic plus
        max(grace period, pod retention) (``handleScaleToZero``)."""
        s = self.spec
        if s.max_scale:
            desired = min(desired, s.max_scale)
        desired = max(desired, s.min_scale)
        if desired > 0 or not s.scale_to_zero:
            self.inactive_since = None
            return desired
        # Desired 0: the PA turns inactive (the stable window averaged no requests), the
        # activator takes over the route, and the last pod goes once the revision has been
        # inactive for max(grace, retention).
        if self.inactive_since is None:
            self.inactive_since = now
        if now - self.inactive_since >= max(s.scale_to_zero_grace_s, s.scale_to_zero_retention_s):
            return 0
        return 1 if current > 0 else 0
