"""The capacity plan's simulation of Knative's autoscaler, against Knative's own arithmetic."""

from __future__ import annotations

import json

import pytest

from service.plan import planner, traces
from service.plan.knative import TICK_S, Autoscaling, Kpa
from service.plan.measured import (
    PlanInputError,
    Sweep,
    load_benchmark,
    load_coldstarts,
    load_sweep,
)
from service.plan.simulate import erlang_c
from tests.plan.pods import COLD, bench_csv, cpu_bound, sweep_summary
from tests.support import ROOT


def test_knative_defaults_are_knatives_documented_ones():
    a = Autoscaling()
    assert (a.target_utilization, a.stable_window_s, a.panic_window_s) == (70, 60, 6)
    assert (a.panic_threshold_percentage, a.max_scale_up_rate, a.max_scale_down_rate) == (
        200,
        1000,
        2,
    )
    assert (a.scale_to_zero_grace_s, a.scale_to_zero_retention_s, a.scale_down_delay_s) == (
        30,
        0,
        0,
    )
    assert (a.initial_scale, a.min_scale, a.max_scale, a.container_concurrency) == (1, 0, 0, 0)
    assert a.target_value == pytest.approx(70)  # container-concurrency-target-default 100 x 0.7
    assert Autoscaling(container_concurrency=4).target_value == pytest.approx(2.8)
    assert TICK_S == 2


def test_kpa_halves_at_most_per_tick_and_does_not_scale_down_while_panicking():
    kpa = Kpa(Autoscaling(target=1.0, target_utilization=100))
    assert kpa.decide(2, stable=1, panic=1, ready=16, current=16) == 8  # max-scale-down-rate 2
    kpa = Kpa(Autoscaling(target=1.0, target_utilization=100))
    assert kpa.decide(2, stable=2, panic=10, ready=2, current=2) == 10 and kpa.panicking
    assert kpa.decide(4, stable=2, panic=3, ready=10, current=10) == 10  # no scale-down
    assert kpa.decide(70, stable=2, panic=2, ready=10, current=10) == 5  # un-panicked after 60 s


def test_one_pod_at_fixed_concurrency_reproduces_the_measured_distribution():
    service = cpu_bound()
    measured = {
        "p50_ms": {c: service.sample(c, 0.5) * 1e3 for c in service.levels},
        "p95_ms": {c: service.sample(c, 0.95) * 1e3 for c in service.levels},
    }
    for row in planner.validate(service, measured, seconds=30):
        assert row["direct_p50_ms"] == pytest.approx(row["measured_p50_ms"], rel=0.05)
        assert row["direct_p95_ms"] == pytest.approx(row["measured_p95_ms"], rel=0.05)
        if row["users"] > 1:
            assert row["predicted_p50_ms"] is not None


def test_erlang_c():
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = utilization
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 4.0) == 1.0


# -- traces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp_s\n1\n-2\n", ":3: negative timestamp -2"),
        ("timestamp_s\n1\n3\n2\n", ":4: timestamps not sorted (2 after 3)"),
        ("start_s,end_s,rps\n0,10,5\n5,20,5\n", ":3: intervals not sorted or overlapping"),
        ("start_s,end_s,rps\n10,0,5\n", ":2: end_s 0 is not after start_s 10"),
        ("start_s,end_s,rps\n0,10,-1\n", ":2: negative rate -1"),
        ("start_s,end_s,rps\n0,10,abc\n", ":2: not a number"),
        ("start_s,end_s,rps\n0,10,nan\n", ":2: not a finite number"),
        ("time,rate\n0,1\n", "header must be `start_s,end_s,rps` or `timestamp_s`"),
        ("start_s,end_s,rps\n0,10,0\n", "no traffic"),
    ],
)
def test_a_bad_trace_is_an_error_naming_its_line(text, message):
    with pytest.raises(PlanInputError, match=None) as info:
        traces.parse(text, "t", "t.csv")
    assert message in str(info.value)


@pytest.mark.parametrize("name", sorted(traces.EXAMPLES))
def test_shipped_example_traces_are_the_documented_ones(name):
    path = ROOT / "loadtest" / "traces" / f"{name}.csv"
    assert path.read_text() == traces.example_csv(name)
    trace = traces.read(path)
    assert trace.expected_requests > 0


def test_the_bursty_example_idles_longer_than_window_plus_grace():
    trace = traces.read(ROOT / "loadtest" / "traces" / "bursty.csv")
    gaps = [end - start for start, end, rps in trace.segments if rps == 0]
    d = Autoscaling()
    assert min(gaps) > d.stable_window_s + d.scale_to_zero_grace_s


# -- measurement files ----------------------------------------------------------------------


def test_missing_measurements_name_the_command_that_makes_them(tmp_path):
    with pytest.raises(PlanInputError, match="`make loadtest` writes it"):
        load_sweep(tmp_path / "summary.json")
    with pytest.raises(PlanInputError, match="`make benchmark` writes it"):
        load_benchmark(tmp_path / "benchmark_results.csv")
    with pytest.raises(PlanInputError, match="`densenet coldstart --variant d --runtime r`"):
        load_coldstarts(tmp_path / "coldstart.json", "d", "r")
    old = {"variant": "d", "runtime": "r", "locust": {"steps": [{"users": 1}]}}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    with pytest.raises(PlanInputError, match="older load test; rerun `make loadtest`"):
        load_sweep(tmp_path / "summary.json")


def test_a_variant_more_than_a_point_below_the_baseline_is_never_recommended(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(sweep_summary(cpu_bound())))
    bench_csv(tmp_path / "b.csv", delta="-0.02")
    sweep = load_sweep(tmp_path / "s.json")
    with pytest.raises(PlanInputError, match=r"distilled/onnxruntime: top-1 vs baseline -2.0"):
        planner.make_plan(
            [sweep], load_benchmark(tmp_path / "b.csv"), traces.constant(50, 60), planner.Slo()
        )


def test_an_slo_no_variant_can_meet_says_so_and_shows_the_closest(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(sweep_summary(cpu_bound())))
    bench_csv(tmp_path / "b.csv")
    sweep = load_sweep(tmp_path / "s.json")
    plan = planner.make_plan(
        [sweep],
        load_benchmark(tmp_path / "b.csv"),
        traces.constant(100, 60),
        planner.Slo(p95_ms=5.0),
        mode="fluid",
        seeds=1,
    )
    assert plan.recommended is None
    assert plan.never is not None and "fastest, distilled/onnxruntime, measured p95 14.0" in (
        plan.never
    )
    text = planner.markdown(plan)
    assert "No configuration considered meets the SLO" in text and "**Closest:" in text


def test_json_patch_addresses_env_by_index_guarded_by_a_test_of_its_name():
    import yaml

    manifest = yaml.safe_load((ROOT / "k8s" / "densenet-cpu.yaml").read_text())
    sweep = Sweep(cpu_bound(), COLD, {})
    spec = Autoscaling(container_concurrency=2, target=2.0)
    outcome = planner.Outcome(sweep, spec, None, None)  # type: ignore[arg-type]
    ops = planner.json_patch(outcome, manifest)
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    tests = [op for op in ops if op["op"] == "test"]
    assert {op["value"] for op in tests} == {"MODEL_VARIANT", "MODEL_RUNTIME"}
    for op in tests:
        index = int(op["path"].split("/")[-2])
        assert env[index]["name"] == op["value"]
    keys = {op["path"] for op in ops}
    assert "/spec/template/metadata/annotations/autoscaling.knative.dev~1target" in keys
    assert {"op": "add", "path": "/spec/template/spec/containerConcurrency", "value": 2} in ops
