"""The simulated KPA against Knative's documented arithmetic, and the plan's search."""

from __future__ import annotations

import json
import math

import pytest

from service.plan import planner, traces
from service.plan.knative import TICK_S, Autoscaling
from service.plan.measured import load_benchmark, load_sweep
from service.plan.simulate import Pod, Simulation
from tests.plan.pods import COLD, bench_csv, cpu_bound, flat, sweep_summary


@pytest.mark.parametrize(
    ("target", "utilization"), [(1.0, 70.0), (2.0, 100.0), (4.0, 70.0), (10.0, 50.0)]
)
def test_steady_load_settles_on_ceil_concurrency_over_target_times_utilization(target, utilization):
    spec = Autoscaling(target=target, target_utilization=utilization)
    # In flight (Little's law: rate x latency) halfway between two pod counts, so that the
    # window average's noise (~0.1 request) cannot round it either way.
    latency = 0.05
    rate = spec.target_value * 2.5 / latency
    trace = traces.constant(rate, 180)
    sim = Simulation(Pod(flat(latency), COLD), spec, trace, mode="exact", warm=False)
    result = sim.run()
    expected = math.ceil(rate * latency / (target * utilization / 100))
    after_stable_window = result.timeline["t"] >= 60 + 60  # panic over, stable window full
    pods = result.timeline["pods"][after_stable_window & (result.timeline["t"] < 180)]
    assert set(pods) == {expected}, (expected, sorted(set(pods)))


def test_a_burst_above_the_panic_threshold_scales_up_within_the_panic_window():
    latency, spec = 0.05, Autoscaling(target=1.0)
    trace = traces.parse("start_s,end_s,rps\n0,200,20\n200,260,200\n", "burst")
    result = Simulation(Pod(flat(latency), COLD), spec, trace, mode="exact").run()
    t, desired = result.timeline["t"], result.timeline["desired"]
    before = desired[(t > 150) & (t < 200)]
    assert set(before) == {math.ceil(20 * latency / 0.7)}  # 2 pods at 1 in flight
    burst_pods = math.ceil(200 * latency / 0.7)  # 15 at 10 in flight
    panic = Autoscaling().panic_window_s
    within = desired[(t >= 200) & (t <= 200 + panic + TICK_S)]
    assert within.max() >= burst_pods
    # The stable window alone would still ask for far fewer: panic mode did it.
    stable_avg = (panic * 10 + (60 - panic) * 1) / 60
    assert math.ceil(stable_avg / 0.7) < burst_pods


def test_an_idle_gap_longer_than_window_plus_grace_scales_to_zero_and_then_pays_a_cold_start():
    spec = Autoscaling(target=1.0)
    stamps = [i * 0.02 for i in range(500)] + [400.0]  # 10 s of traffic, 390 s idle, then one
    trace = traces.parse("timestamp_s\n" + "\n".join(f"{s:.2f}" for s in stamps), "gap")
    sim = Simulation(Pod(flat(0.01), COLD), spec, trace, mode="exact")
    result = sim.run()
    t, pods = result.timeline["t"], result.timeline["pods"]
    zero_at = t[(t > 10) & (pods == 0)].min()
    # No request for the stable window, then the grace period: Knative's documented path.
    assert 10 + 60 + 30 - TICK_S <= zero_at <= 10 + 60 + 30 + 2 * TICK_S
    assert result.cold_requests == 1
    # Every other request took 10 ms; the last one waited for a pod to start (0.7 s or more).
    assert result.latency_ms["max"] >= min(COLD.samples) * 1e3
    assert result.timeline["pods"][t > 400].max() == 1


def test_pod_retention_and_min_scale_keep_pods():
    stamps = [i * 0.02 for i in range(500)]
    trace = traces.parse("timestamp_s\n" + "\n".join(f"{s:.2f}" for s in stamps) + "\n299", "r")
    kept = Autoscaling(target=1.0, scale_to_zero_retention_s=150)
    t_zero = _first_zero(Simulation(Pod(flat(0.01), COLD), kept, trace, mode="exact").run())
    assert t_zero >= 10 + 60 + 150 - TICK_S  # inactive after the window, then held 150 s
    floor = Autoscaling(target=1.0, min_scale=2)
    result = Simulation(Pod(flat(0.01), COLD), floor, trace, mode="exact").run()
    assert result.timeline["pods"].min() >= 2
    capped = Autoscaling(target=0.1, max_scale=3)
    result = Simulation(Pod(flat(0.05), COLD), capped, traces.constant(100, 60)).run()
    assert result.peak_pods == 3


def _first_zero(result) -> float:
    t, pods = result.timeline["t"], result.timeline["pods"]
    return float(t[(t > 10) & (pods == 0)].min())


def test_scale_down_delay_holds_the_highest_decision_for_its_length():
    trace = traces.parse("start_s,end_s,rps\n0,120,200\n120,400,20\n", "drop")
    plain, delayed = Autoscaling(target=1.0), Autoscaling(target=1.0, scale_down_delay_s=120)
    runs = [
        Simulation(Pod(flat(0.05), COLD), s, trace, mode="exact").run() for s in (plain, delayed)
    ]
    at = [r.timeline["pods"][(r.timeline["t"] >= 230) & (r.timeline["t"] < 240)] for r in runs]
    assert at[1].min() > at[0].max()


def test_the_plan_recommends_the_cheapest_configuration_that_meets_the_slo(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(sweep_summary(cpu_bound())))
    bench_csv(tmp_path / "b.csv")
    sweep = load_sweep(tmp_path / "s.json")
    slo = planner.Slo(p95_ms=40, p99_ms=80)
    plan = planner.make_plan(
        [sweep], load_benchmark(tmp_path / "b.csv"), traces.constant(300, 120), slo, mode="fluid"
    )
    assert plan.recommended is not None and plan.recommended.meets
    cheapest = min(
        (o for o in plan.outcomes if o.meets), key=lambda o: o.result.pod_seconds_per_million
    )
    rec = plan.recommended.result
    assert rec.pod_seconds_per_million <= cheapest.result.pod_seconds_per_million * 1.2
    assert rec.latency_ms["p95"] <= 40 and rec.latency_ms["p99"] <= 80
    assert plan.recommended.spec.max_scale >= rec.peak_pods
    assert len(plan.outcomes) >= len(sweep.service.levels) * 2 * 2
