"""``densenet plan``: from measured numbers and a traffic trace to Knative settings.

For every measured variant/runtime within one point of the baseline's accuracy, and for each
containerConcurrency the load test measured, target utilization (Knative's default 70 %, or
100 %) and min-scale (0: scale to zero, or 1), the revision is simulated under the trace. A
configuration meets the SLO when its p95 and p99 (cold starts and waits included) are within
the limits and no request outlives ``timeoutSeconds``; the plan recommends the one that does at
the fewest pod-seconds per million requests (within 10 %, the lowest p99), and checks it once
more with a max-scale set from its own peak.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from service.plan.knative import Autoscaling
from service.plan.measured import Accuracy, PlanInputError, ServiceTimes, Sweep
from service.plan.simulate import Pod, Result, Simulation, steady_state
from service.plan.traces import Trace

UTILIZATIONS = (70.0, 100.0)
#: min-scale: scale to zero, keep one pod, or keep the pods the trace's peak needs (``None``).
MIN_SCALES = (0, 1, None)
#: Costs this close to the cheapest count as equal; the lower p99 decides between them.
COST_TIE = 0.10
#: max-scale: the recommended configuration's simulated peak times this, rounded up.
MAX_SCALE_HEADROOM = 1.5


@dataclasses.dataclass(frozen=True)
class Slo:
    p95_ms: float | None = None
    p99_ms: float | None = None

    def __post_init__(self) -> None:
        for name, v in (("--p95-ms", self.p95_ms), ("--p99-ms", self.p99_ms)):
            if v is not None and not v > 0:
                raise PlanInputError(f"{name} must be positive")

    def excess(self, r: Result) -> float:
        """How far ``r`` is from the SLO: the largest measured/limit ratio (<= 1 meets it)."""
        ratios = [1.0]
        if self.p95_ms:
            ratios.append(r.latency_ms["p95"] / self.p95_ms)
        if self.p99_ms:
            ratios.append(r.latency_ms["p99"] / self.p99_ms)
        return max(ratios)

    def describe(self) -> str:
        parts = [f"p95 <= {self.p95_ms:g} ms" if self.p95_ms else "", ""]
        parts[1] = f"p99 <= {self.p99_ms:g} ms" if self.p99_ms else ""
        return ", ".join(p for p in parts if p) or "none (cheapest configuration)"


@dataclasses.dataclass
class Outcome:
    """One configuration simulated under the trace, once per seed.

    Knative's panic mode makes a run's pod count sensitive to chance (one unlucky second can
    tip a saturated pod into a panic), so a configuration is judged by its worst run and costed
    by the mean of its runs.
    """

    sweep: Sweep
    spec: Autoscaling
    runs: list[Result]
    slo: Slo
    label: str = ""

    @property
    def result(self) -> Result:
        """The run furthest from the SLO (then the costliest)."""
        return max(self.runs, key=lambda r: (self.slo.excess(r), r.over_timeout, r.pod_seconds))

    @property
    def cost(self) -> float:
        """Pod-seconds per million requests, mean over the runs."""
        return float(np.mean([r.pod_seconds_per_million for r in self.runs]))

    @property
    def meets(self) -> bool:
        return self.slo.excess(self.result) <= 1.0 and self.result.over_timeout == 0

    def row(self) -> dict[str, Any]:
        r = self.result
        return {
            "configuration": self.label,
            "variant": self.sweep.service.variant,
            "runtime": self.sweep.service.runtime,
            "container_concurrency": self.spec.container_concurrency,
            "target": self.spec.target_value_annotation,
            "target_utilization": self.spec.target_utilization,
            "min_scale": self.spec.min_scale,
            "max_scale": self.spec.max_scale,
            "meets_slo": self.meets,
            "p50_ms": r.latency_ms["p50"],
            "p95_ms": r.latency_ms["p95"],
            "p99_ms": r.latency_ms["p99"],
            "cold_start_share": r.cold_share,
            "over_timeout": r.over_timeout,
            "peak_pods": max(run.peak_pods for run in self.runs),
            "pod_seconds_per_million": self.cost,
            "pod_seconds_per_million_runs": [run.pod_seconds_per_million for run in self.runs],
            "runs": len(self.runs),
            "requests": r.requests,
            "mode": r.mode,
            "wall_s": sum(run.wall_s for run in self.runs),
        }


@dataclasses.dataclass
class Plan:
    trace: Trace
    slo: Slo
    outcomes: list[Outcome]
    recommended: Outcome | None
    closest: Outcome
    excluded: list[str]
    never: str | None  # why no variant can meet the SLO, when that is known before simulating
    current: Outcome | None = None
    max_concurrency: int | None = None
    current_unmeasured: str | None = None  # the manifest's variant/runtime, when not measured

    @property
    def chosen(self) -> Outcome:
        return self.recommended or self.closest


def eligible(
    sweeps: Iterable[Sweep], accuracy: dict[str, Accuracy]
) -> tuple[list[Sweep], list[str]]:
    """Sweeps whose variant/runtime is within one point of the baseline (per the benchmark)."""
    keep, excluded = [], []
    for sweep in sweeps:
        row = accuracy.get(sweep.service.label)
        if row is None:
            excluded.append(
                f"{sweep.service.label}: not in the benchmark's batch-1 CPU rows (run "
                f"`make benchmark` with it built)"
            )
        elif not row.eligible:
            delta = (
                "not measured"
                if row.delta_vs_baseline is None
                else (f"{row.delta_vs_baseline * 100:+.1f} points")
            )
            excluded.append(f"{sweep.service.label}: top-1 vs baseline {delta} (limit -1.0)")
        else:
            keep.append(sweep)
    if not keep:
        raise PlanInputError(
            "no measured variant is within one point of the baseline's accuracy: "
            + "; ".join(excluded)
        )
    return keep, excluded


def grid(
    sweep: Sweep, base: Autoscaling, peak_rps: float, max_concurrency: int | None = None
) -> list[Autoscaling]:
    """The configurations considered for one measured pod: containerConcurrency at each level
    the load test measured, up to ``max_concurrency`` (what the pod admits)."""
    out = []
    levels = [c for c in sweep.service.levels if max_concurrency is None or c <= max_concurrency]
    if not levels:
        raise PlanInputError(
            f"{sweep.service.label}: no measured concurrency level is <= {max_concurrency} "
            "(the manifest's MAX_QUEUE_SIZE)"
        )
    for cc in levels:
        for util in UTILIZATIONS:
            spec = dataclasses.replace(
                base,
                container_concurrency=cc,
                target=float(cc),
                target_utilization=util,
                max_scale=0,
            )
            at_peak = steady_state(sweep.service, spec, peak_rps)[0]
            for min_scale in sorted({at_peak if m is None else m for m in MIN_SCALES}):
                out.append(
                    dataclasses.replace(spec, min_scale=min_scale, initial_scale=max(1, min_scale))
                )
    return out


def never_meets(sweeps: list[Sweep], slo: Slo) -> str | None:
    """When even one request at a time on the fastest measured pod misses the SLO."""
    for q, limit in ((95, slo.p95_ms), (99, slo.p99_ms)):
        if not limit:
            continue
        best = min(sweeps, key=lambda s: s.service.sample(1, q / 100))
        floor_ms = best.service.sample(1, q / 100) * 1e3
        if floor_ms > limit:
            return (
                f"no measured variant can meet p{q} <= {limit:g} ms: the fastest, "
                f"{best.service.label}, measured p{q} {floor_ms:.1f} ms with one request at a "
                "time (make loadtest); the closest configuration is shown"
            )
    return None


def make_plan(
    sweeps: list[Sweep],
    accuracy: dict[str, Accuracy],
    trace: Trace,
    slo: Slo,
    *,
    base: Autoscaling | None = None,
    start_delay_s: float = 0.0,
    timeout_s: float = 300.0,
    current: tuple[str, Autoscaling] | None = None,
    max_concurrency: int | None = None,
    seed: int = 0,
    seeds: int = 3,
    mode: str = "auto",
) -> Plan:
    """Simulate every configuration, recommend the cheapest that meets the SLO."""
    if seeds < 1:
        raise PlanInputError("--seeds must be at least 1")
    keep, excluded = eligible(sweeps, accuracy)
    base = base or Autoscaling()
    pods = {
        s.service.label: Pod(s.service, s.cold, start_delay_s=start_delay_s, timeout_s=timeout_s)
        for s in keep
    }

    def simulate(sweep: Sweep, spec: Autoscaling, label: str) -> Outcome:
        pod = pods[sweep.service.label]
        runs = [Simulation(pod, spec, trace, seed=seed + i, mode=mode).run() for i in range(seeds)]
        return Outcome(sweep, spec, runs, slo, label)

    outcomes = [
        simulate(
            sweep,
            spec,
            f"{sweep.service.label} cc={spec.container_concurrency} "
            f"util={spec.target_utilization:g}% min={spec.min_scale}",
        )
        for sweep in keep
        for spec in grid(sweep, base, trace.peak_rps, max_concurrency)
    ]
    current_outcome = None
    current_unmeasured = None
    if current is not None:
        label, spec = current
        match = next((s for s in keep if s.service.label == label), None)
        if match is not None:
            current_outcome = simulate(match, spec, f"current manifest ({label})")
        else:
            current_unmeasured = label
    # The checked-in settings compete too: keeping them is a recommendation when they win.
    candidates = outcomes + ([current_outcome] if current_outcome is not None else [])
    feasible = [o for o in candidates if o.meets]
    closest = min(outcomes, key=lambda o: (slo.excess(o.result), o.result.over_timeout))
    recommended = None
    if feasible:
        # Costs within COST_TIE of the cheapest are a tie (runs of one configuration differ by
        # about that much): among them, the lowest p99.
        cheapest = min(o.cost for o in feasible)
        ties = [o for o in feasible if o.cost <= cheapest * (1 + COST_TIE)]
        best = min(ties, key=lambda o: (o.result.latency_ms["p99"], o.cost))
        recommended = _with_max_scale(best, simulate)
    return Plan(
        trace=trace,
        slo=slo,
        outcomes=outcomes,
        recommended=recommended,
        closest=closest,
        excluded=excluded,
        never=never_meets(keep, slo),
        current=current_outcome,
        max_concurrency=max_concurrency,
        current_unmeasured=current_unmeasured,
    )


def _with_max_scale(best: Outcome, simulate: Any) -> Outcome:
    """The best configuration with a max-scale from its own peak, if that still meets the SLO
    (a cap bounds the cost of a runaway); otherwise unbounded, as simulated."""
    peak = max(r.peak_pods for r in best.runs)
    cap = max(best.spec.min_scale, math.ceil(peak * MAX_SCALE_HEADROOM), 1)
    capped = simulate(best.sweep, dataclasses.replace(best.spec, max_scale=cap), best.label)
    return capped if capped.meets else best


# -- outputs -------------------------------------------------------------------------------


def json_patch(outcome: Outcome, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """An RFC 6902 patch (kustomize ``patches:``) that gives ``manifest`` the outcome's settings.

    Env entries are addressed by index, each guarded by a ``test`` of its name, so the patch
    fails loudly rather than edits the wrong entry if the manifest's env list has changed.
    """
    template = manifest["spec"]["template"]
    ops: list[dict[str, Any]] = []
    annotations = template.get("metadata", {}).get("annotations")
    if annotations is None:
        ops.append({"op": "add", "path": "/spec/template/metadata/annotations", "value": {}})
    for key, value in outcome.spec.annotations().items():
        ops.append(
            {
                "op": "add",
                "path": "/spec/template/metadata/annotations/" + key.replace("/", "~1"),
                "value": value,
            }
        )
    ops.append(
        {
            "op": "add",
            "path": "/spec/template/spec/containerConcurrency",
            "value": outcome.spec.container_concurrency,
        }
    )
    container = template["spec"]["containers"][0]
    service = outcome.sweep.service
    if service.pod_cpus:
        # The pod the load test measured: its CPUs, and the threads and workers it ran with.
        cpu = str(service.pod_cpus)
        if "resources" not in container:
            ops.append({"op": "add", "path": f"{CONTAINER}/resources", "value": {}})
        for kind in ("requests", "limits"):
            if kind not in container.get("resources", {}):
                ops.append({"op": "add", "path": f"{CONTAINER}/resources/{kind}", "value": {}})
            ops.append({"op": "add", "path": f"{CONTAINER}/resources/{kind}/cpu", "value": cpu})
    env = container.get("env", [])
    wanted = {"MODEL_VARIANT": service.variant, "MODEL_RUNTIME": service.runtime}
    wanted |= service.pod_env
    for name, value in wanted.items():
        index = next((i for i, e in enumerate(env) if e.get("name") == name), None)
        if index is None:
            ops.append(
                {"op": "add", "path": f"{CONTAINER}/env/-", "value": {"name": name, "value": value}}
            )
            continue
        path = f"{CONTAINER}/env/{index}"
        ops.append({"op": "test", "path": f"{path}/name", "value": name})
        ops.append({"op": "replace", "path": f"{path}/value", "value": value})
    return ops


CONTAINER = "/spec/template/spec/containers/0"


def current_settings(manifest: dict[str, Any]) -> tuple[str, Autoscaling, float, int | None]:
    """The variant/runtime, autoscaling, timeoutSeconds and MAX_QUEUE_SIZE (the requests the
    app admits at once, which its memory limit is sized for) a Knative Service manifest sets."""
    template = manifest["spec"]["template"]
    spec = template["spec"]
    annotations = template.get("metadata", {}).get("annotations", {})
    env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}

    def seconds(key: str, default: float) -> float:
        value = annotations.get(f"autoscaling.knative.dev/{key}")
        return float(str(value).rstrip("s")) if value is not None else default

    def number(key: str, default: float) -> float:
        value = annotations.get(f"autoscaling.knative.dev/{key}")
        return float(value) if value is not None else default

    d = Autoscaling()
    target = annotations.get("autoscaling.knative.dev/target")
    settings = Autoscaling(
        container_concurrency=int(spec.get("containerConcurrency", 0)),
        target=float(target) if target is not None else None,
        target_utilization=number("target-utilization-percentage", d.target_utilization),
        stable_window_s=seconds("window", d.stable_window_s),
        panic_window_percentage=number("panic-window-percentage", d.panic_window_percentage),
        panic_threshold_percentage=number(
            "panic-threshold-percentage", d.panic_threshold_percentage
        ),
        scale_to_zero_retention_s=seconds(
            "scale-to-zero-pod-retention-period", d.scale_to_zero_retention_s
        ),
        scale_down_delay_s=seconds("scale-down-delay", d.scale_down_delay_s),
        initial_scale=int(number("initial-scale", d.initial_scale)),
        min_scale=int(number("min-scale", d.min_scale)),
        max_scale=int(number("max-scale", d.max_scale)),
    )
    label = f"{env.get('MODEL_VARIANT', 'baseline')}/{env.get('MODEL_RUNTIME', 'torch')}"
    admitted = env.get("MAX_QUEUE_SIZE")
    return (
        label,
        settings,
        float(spec.get("timeoutSeconds", 300)),
        int(admitted) if admitted is not None else None,
    )


def summary(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data."""
    chosen = plan.chosen
    r = chosen.result
    return {
        "trace": plan.trace.name,
        "trace_seconds": plan.trace.duration,
        "trace_peak_rps": plan.trace.peak_rps,
        "slo": dataclasses.asdict(plan.slo),
        "meets_slo": plan.recommended is not None,
        "never": plan.never,
        "recommended": chosen.row()
        | {
            "annotations": chosen.spec.annotations(),
            "mean_ms": r.latency_ms["mean"],
            "pod_cpus": chosen.sweep.service.pod_cpus,
        },
        "current": plan.current.row() if plan.current else None,
        "alternatives": [o.row() for o in plan.outcomes],
        "excluded": plan.excluded,
    }


def _f(x: float | None, spec: str = ".1f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, spec)


def markdown(plan: Plan, validation: list[dict[str, Any]] | None = None) -> str:
    """The plan as Markdown: the recommendation, its figures and the alternatives."""
    from service.bench.markdown import table

    chosen = plan.chosen
    r = chosen.result
    service = chosen.sweep.service
    lines = [f"# Capacity plan: {plan.trace.name}", ""]
    lines += [
        f"Trace: {plan.trace.duration:,.0f} s, {plan.trace.expected_requests:,.0f} requests "
        f"expected, peak {plan.trace.peak_rps:,.0f} req/s. SLO: {plan.slo.describe()}.",
        f"Pod measured by `make loadtest`: {service.machine} ({service.source}).",
        "",
    ]
    if plan.max_concurrency is not None:
        lines += [
            f"containerConcurrency considered up to {plan.max_concurrency}: the manifest's "
            "MAX_QUEUE_SIZE, the requests its memory limit is sized for.",
            "",
        ]
    if plan.never:
        lines += [f"**{plan.never}.**", ""]
    if plan.recommended is None:
        lines += [
            "**No configuration considered meets the SLO.** The closest is shown; relax the SLO, "
            "or measure a faster variant or a larger pod.",
            "",
        ]
    head = "Recommended" if plan.recommended else "Closest"
    lines += [
        f"**{head}: {service.label}, containerConcurrency {chosen.spec.container_concurrency}, "
        f"target {chosen.spec.target_value_annotation:g} at "
        f"{chosen.spec.target_utilization:g} % utilization, min-scale {chosen.spec.min_scale}, "
        f"max-scale {chosen.spec.max_scale or 'unbounded'}.**",
        "",
        f"- pods at peak: {max(run.peak_pods for run in chosen.runs)} (of "
        f"{service.pod_cpus or '?'} CPU each, as measured)",
        f"- latency, cold starts and waits included (worst of {len(chosen.runs)} runs): "
        f"p50 {_f(r.latency_ms['p50'])} ms, p95 {_f(r.latency_ms['p95'])} ms, "
        f"p99 {_f(r.latency_ms['p99'])} ms",
        f"- requests that met a cold start: {r.cold_share:.3%} ({r.cold_requests:,} of "
        f"{r.requests:,}); over timeoutSeconds: {r.over_timeout:,}",
        f"- cost: {chosen.cost:,.0f} pod-seconds per million requests (runs: "
        + ", ".join(f"{run.pod_seconds_per_million:,.0f}" for run in chosen.runs)
        + ")",
        f"- simulated {r.mode}, {sum(run.wall_s for run in chosen.runs):.1f} s for "
        f"{len(chosen.runs)} runs",
        "",
    ]
    if plan.current is not None:
        c = plan.current.result
        lines += [
            f"The checked-in manifest's autoscaling on the same measured pod and trace: p95 "
            f"{_f(c.latency_ms['p95'])} ms, p99 {_f(c.latency_ms['p99'])} ms, "
            f"{plan.current.cost:,.0f} pod-seconds per million, peak "
            f"{max(run.peak_pods for run in plan.current.runs)} pods, "
            f"{'meets' if plan.current.meets else 'misses'} the SLO.",
            "",
        ]
    elif plan.current_unmeasured is not None:
        lines += [
            f"The checked-in manifest serves {plan.current_unmeasured}, which no eligible "
            "--loadtest measured: its autoscaling is not simulated (run `make loadtest` with "
            "that variant and runtime, and pass its summary).",
            "",
        ]
    rows = sorted(
        plan.outcomes + ([plan.current] if plan.current else []),
        key=lambda o: (not o.meets, o.cost),
    )
    header = [
        "configuration",
        "meets",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "cold-start share",
        "peak pods",
        "pod-s / 1M req",
    ]
    body = [
        [
            o.label,
            "yes" if o.meets else "no",
            _f(o.result.latency_ms["p50"]),
            _f(o.result.latency_ms["p95"]),
            _f(o.result.latency_ms["p99"]),
            f"{o.result.cold_share:.2%}",
            str(max(r.peak_pods for r in o.runs)),
            f"{o.cost:,.0f}",
        ]
        for o in rows
    ]
    lines += ["Alternatives considered:", "", table(header, body), ""]
    if plan.excluded:
        lines += ["Not considered: " + "; ".join(plan.excluded) + ".", ""]
    if validation:
        lines += [validation_markdown(validation), ""]
    return "\n".join(lines)


def validate(
    service: ServiceTimes,
    measured: dict[str, dict[int, float]],
    seconds: float = 60.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One pod at each fixed concurrency the sweep measured, simulated as the load test ran it
    (that many users, each sending again as soon as answered): the simulator's p50/p95 against
    the measured ones, with the measured distribution at that level (``direct``) and with that
    level left out, predicted from the others (``predicted``)."""
    out = []
    for level in service.levels:
        row: dict[str, Any] = {
            "users": level,
            "measured_p50_ms": measured["p50_ms"][level],
            "measured_p95_ms": measured["p95_ms"][level],
        }
        for name, times in (("direct", service), ("predicted", _left_out(service, level))):
            if times is None:
                row[f"{name}_p50_ms"] = row[f"{name}_p95_ms"] = None
                continue
            spec = Autoscaling(
                container_concurrency=level, min_scale=1, max_scale=1, initial_scale=1
            )
            result = Simulation(
                Pod(times, cold=None),
                spec,
                closed_loop_users=level,
                closed_loop_seconds=seconds,
                seed=seed,
            ).run()
            row[f"{name}_p50_ms"] = result.latency_ms["p50"]
            row[f"{name}_p95_ms"] = result.latency_ms["p95"]
        out.append(row)
    return out


def _left_out(service: ServiceTimes, level: int) -> ServiceTimes | None:
    if len(service.levels) < 2 or level == service.levels[0]:
        return None  # nothing below the lowest level to predict it from
    return service.without(level)


def validation_markdown(rows: list[dict[str, Any]]) -> str:
    from service.bench.markdown import table

    def err(sim: float | None, measured: float) -> str:
        return "—" if sim is None else f"{(sim / measured - 1) * 100:+.0f} %"

    header = [
        "users",
        "measured p50 / p95 ms",
        "simulated p50 / p95 ms",
        "error",
        "predicted without this level",
        "error",
    ]
    body = []
    for r in rows:
        body.append(
            [
                str(r["users"]),
                f"{r['measured_p50_ms']:.1f} / {r['measured_p95_ms']:.1f}",
                f"{r['direct_p50_ms']:.1f} / {r['direct_p95_ms']:.1f}",
                f"{err(r['direct_p50_ms'], r['measured_p50_ms'])} / "
                f"{err(r['direct_p95_ms'], r['measured_p95_ms'])}",
                "—"
                if r["predicted_p50_ms"] is None
                else f"{r['predicted_p50_ms']:.1f} / {r['predicted_p95_ms']:.1f}",
                f"{err(r['predicted_p50_ms'], r['measured_p50_ms'])} / "
                f"{err(r['predicted_p95_ms'], r['measured_p95_ms'])}",
            ]
        )
    return (
        "Simulator against the measurement (one pod, fixed concurrency, as the load test ran):"
        f"\n\n{table(header, body)}"
    )


def plot(plan: Plan, path: Path) -> None:
    """Pods and latency over the trace for the chosen configuration (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = plan.chosen.result
    t = r.timeline["t"] / 60
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.step(t, r.timeline["pods"], where="post", label="pods (incl. starting)")
    top.step(t, r.timeline["ready"], where="post", label="ready pods")
    top.set_ylabel("pods")
    top.set_ylim(bottom=0)
    rate = top.twinx()
    rate.plot(t, _smooth(r.timeline["arrivals"], 10), color="grey", alpha=0.5, lw=0.8)
    rate.set_ylabel("requests/s (10 s mean)", color="grey")
    rate.set_ylim(bottom=0)
    top.legend(loc="upper left")
    windows = (np.arange(len(r.window_p95_ms)) + 0.5) * r.window_s / 60
    bottom.plot(windows, r.window_p95_ms, label=f"p95 per {r.window_s:g} s window")
    for name, limit in (("p95 SLO", plan.slo.p95_ms), ("p99 SLO", plan.slo.p99_ms)):
        if limit:
            bottom.axhline(
                limit, ls="--", lw=0.8, color="red" if "95" in name else "purple", label=name
            )
    bottom.set_yscale("log")
    bottom.set_ylabel("latency ms")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left")
    fig.suptitle(f"{plan.trace.name}: {plan.chosen.label}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) < n:
        return x
    return np.convolve(x, np.ones(n) / n, mode="same")
