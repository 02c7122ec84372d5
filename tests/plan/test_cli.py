"""`densenet plan` from the command line: its files, and its errors."""

from __future__ import annotations

import json

import pytest
import yaml

from service.cli import main
from tests.plan.pods import bench_csv, cpu_bound, sweep_summary
from tests.support import ROOT


def served_variant() -> str:
    """The variant the CPU revision's manifest serves: the plan simulates its settings."""
    manifest = yaml.safe_load((ROOT / "k8s" / "densenet-cpu.yaml").read_text())
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == "MODEL_VARIANT"))


def write_measurements(where, variant: str) -> list[str]:
    (where / "summary.json").write_text(json.dumps(sweep_summary(cpu_bound(), variant)))
    bench_csv(where / "bench.csv", variant=variant)
    return [
        "--loadtest",
        str(where / "summary.json"),
        "--benchmark",
        str(where / "bench.csv"),
    ]


@pytest.fixture
def measured(tmp_path):
    return write_measurements(tmp_path, served_variant())


def test_a_plan_for_an_example_trace_writes_its_report_patch_and_plot(tmp_path, measured, capsys):
    out = tmp_path / "plan"
    trace = ROOT / "loadtest" / "traces" / "bursty.csv"
    args = ["plan", "--trace", str(trace), "--p95-ms", "100", "--p99-ms", "2500", *measured]
    assert main([*args, "--seeds", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"**Recommended: {served_variant()}/onnxruntime" in text
    assert "Simulator against the measurement" in text
    document = json.loads((out / "plan.json").read_text())
    rec = document["recommended"]
    assert rec["meets_slo"] and rec["p95_ms"] <= 100 and rec["p99_ms"] <= 2500
    assert rec["container_concurrency"] <= 4  # the manifest's MAX_QUEUE_SIZE
    assert document["current"]["configuration"].startswith("current manifest")
    assert len(document["alternatives"]) >= 8
    patch = yaml.safe_load((out / "plan-patch.yaml").read_text())
    assert any(op["op"] == "test" for op in patch)
    assert (out / "plan.md").read_text() in text
    assert (out / "plan.png").stat().st_size > 10_000


def test_a_manifest_serving_a_variant_nobody_measured_is_said_not_simulated(tmp_path, capsys):
    measured = write_measurements(tmp_path, "not-" + served_variant())
    args = ["plan", "--rps", "50", "--seconds", "60", "--p95-ms", "100", *measured]
    assert main([*args, "--seeds", "1", "--out", str(tmp_path / "p"), "--no-validate"]) == 0
    text = capsys.readouterr().out
    assert (
        f"The checked-in manifest serves {served_variant()}/onnxruntime, which no eligible "
        "--loadtest measured: its autoscaling is not simulated" in text
    )
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["current"] is None


def test_an_slo_no_variant_can_meet_exits_3_and_shows_the_closest(tmp_path, measured, capsys):
    args = ["plan", "--rps", "50", "--seconds", "60", "--p95-ms", "2", *measured]
    assert main([*args, "--seeds", "1", "--out", str(tmp_path / "p"), "--no-validate"]) == 3
    captured = capsys.readouterr()
    assert "**Closest:" in captured.out
    assert "no measured variant can meet p95 <= 2 ms" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loadtest", "missing.json"], "missing.json: not found; `make loadtest` writes it"),
        (["--benchmark", "missing.csv"], "missing.csv: not found; `make benchmark` writes it"),
        (
            ["--coldstart", "missing.json"],
            f"missing.json: not found; `densenet coldstart --variant {served_variant()} "
            "--runtime onnxruntime` writes it",
        ),
    ],
)
def test_missing_measurements_exit_2_naming_the_command(tmp_path, measured, capsys, args, message):
    base = ["plan", "--rps", "10", "--seconds", "30", *measured, *args]
    assert main([*base, "--out", str(tmp_path / "p")]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_trace_exits_2_naming_the_line(tmp_path, measured, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp_s\n0.5\n0.2\n")
    assert main(["plan", "--trace", str(bad), *measured, "--out", str(tmp_path / "p")]) == 2
    assert f"{bad}:3: timestamps not sorted (0.2 after 0.5)" in capsys.readouterr().err


def test_a_manifest_that_is_not_a_knative_service_exits_2(tmp_path, measured, capsys):
    bad = tmp_path / "svc.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\ndata: {}\n")
    args = ["plan", "--rps", "10", "--seconds", "30", *measured, "--manifest", str(bad)]
    assert main([*args, "--out", str(tmp_path / "p")]) == 2
    assert "not a Knative Service with one container" in capsys.readouterr().err
