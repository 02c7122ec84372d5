"""The benchmark suite's output in quick mode: columns, types, ratios, plots, report.

These tests check that the benchmark produces well-formed, self-consistent output; they do not
judge how fast anything is.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from service.bench.runner import precision_labels
from tests.support import run_cli

pytestmark = pytest.mark.slow
REQUIRED = [
    "model_variant",
    "runtime",
    "device",
    "batch_size",
    "image_size",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p95",
    "latency_ms_p99",
    "latency_ms_mean",
    "throughput_samples_sec",
    "speedup_vs_baseline",
    "peak_rss_mb",
    "model_size_mb",
    "params",
    "macs",
    "accuracy_top1",
    "accuracy_top5",
    "accuracy_dataset",
    "agreement_top1_vs_baseline",
]
FLOATS = [
    c for c in REQUIRED if c.startswith(("latency", "throughput", "speedup", "peak", "model_size"))
]


def run_bench(model_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "bench", "--quick", "--model-dir", str(model_dir), "--out", str(out), *extra, timeout=900
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_quick_benchmark_writes_consistent_results(build, model_dir, tmp_path):
    for variant in ("baseline", "quantized", "distilled"):
        build(variant)
    out = tmp_path / "results"
    result = run_bench(model_dir, out, "--variants", "baseline", "quantized", "distilled")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(out / "benchmark_results.csv")
    assert set(REQUIRED) <= set(rows[0])
    cells = {(r["model_variant"], r["runtime"], int(r["batch_size"])) for r in rows}
    # OpenVINO in f32, and in bf16 too where this CPU runs it.
    runtimes = ["torch", "onnxruntime", "openvino", *precision_labels(["openvino"])]
    assert cells == {
        (v, rt, b)
        for v in ("baseline", "quantized", "distilled")
        for rt in runtimes
        for b in (1, 2)
    }
    base = {
        int(r["batch_size"]): r
        for r in rows
        if (r["model_variant"], r["runtime"]) == ("baseline", "torch")
    }
    for row in rows:
        for column in FLOATS:
            assert float(row[column]) > 0, column
        assert int(row["params"]) > 0 and int(row["macs"]) > 0
        assert row["image_size"] == "224" and row["device"] == "cpu"
        p = [float(row[f"latency_ms_p{q}"]) for q in (50, 90, 95, 99)]
        assert p == sorted(p)
        ref = base[int(row["batch_size"])]
        expected = float(ref["latency_ms_p50"]) / float(row["latency_ms_p50"])
        assert float(row["speedup_vs_baseline"]) == pytest.approx(expected, rel=1e-6)
        tput = int(row["batch_size"]) * 1000 / float(row["latency_ms_mean"])
        assert float(row["throughput_samples_sec"]) == pytest.approx(tput, rel=1e-6)
        assert 0.9 <= float(row["accuracy_top1"]) <= 1.0
        assert "load_digits" in row["accuracy_dataset"]
        delta = float(row["accuracy_top1"]) - float(ref["accuracy_top1"])
        assert float(row["accuracy_delta_vs_baseline"]) == pytest.approx(delta, abs=1e-9)
        # Intervals from the builds' per-image predictions, paired with the baseline's.
        assert row["test_images"] == "360"
        low, high = float(row["accuracy_top1_ci_low"]), float(row["accuracy_top1_ci_high"])
        assert low < float(row["accuracy_top1"]) <= high <= 1.0
        d_low, d_high = float(row["accuracy_delta_ci_low"]), float(row["accuracy_delta_ci_high"])
        assert d_low <= delta + 1e-9 and delta - 1e-9 <= d_high
        right, wrong = (int(row[f"discordant_{k}_vs_baseline"]) for k in ("right", "wrong"))
        # accuracies are stored to 6 decimals; one image is 1/360 = 0.0028
        assert (right - wrong) / 360 == pytest.approx(delta, abs=1e-5)
        assert 0.0 < float(row["accuracy_delta_p_value"]) <= 1.0
        assert row["accuracy_delta_significant"] in ("True", "False")
    assert all(float(r["speedup_vs_baseline"]) == 1.0 for r in base.values())
    for ref in base.values():  # the reference against itself: no discordant image
        assert (
            ref["accuracy_delta_p_value"] == "1.0" and ref["accuracy_delta_significant"] == "False"
        )
    document = json.loads((out / "benchmark_results.json").read_text())
    assert document["machine"]["cpu"] and document["machine"]["torch"] == "2.14.1"
    assert len(document["rows"]) == len(rows)
    for plot in ("latency_vs_batch.png", "accuracy_vs_throughput.png", "model_size.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "REPORT.md").read_text()
    assert (
        "## Headline (batch 1)" in report and "![latency_vs_batch](latency_vs_batch.png)" in report
    )
    assert document["machine"]["cpu"] in report
    assert "## What the builds chose" in report and "student `densenet-tiny`" in report
    traces = sorted(p.name for p in (out / "traces").iterdir())
    assert traces == [f"{v}-torch-b1.trace.json" for v in ("baseline", "distilled", "quantized")]
    assert json.loads((out / "traces" / traces[0]).read_text())["traceEvents"]
    assert len(list((out / "tensorboard").rglob("events.out.tfevents.*"))) == 3 * len(runtimes)


def test_rows_without_measured_accuracy_have_none(legacy_imagenet_weights, tmp_path):
    from service.optimize.options import BuildOptions
    from service.optimize.pipeline import build_variant

    models = tmp_path / "models"
    build_variant(
        "baseline",
        BuildOptions(
            task="imagenet", weights=legacy_imagenet_weights, out=models, runtimes=("torch",)
        ),
    )
    out = tmp_path / "results"
    result = run_bench(models, out, "--no-profile")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv(out / "benchmark_results.csv")
    assert len(rows) == 2
    for row in rows:
        assert row["accuracy_top1"] == row["accuracy_top5"] == row["accuracy_dataset"] == ""
        assert row["agreement_top1_vs_baseline"] == "" and row["accuracy_delta_vs_baseline"] == ""
        assert "no held-out labelled images" in row["accuracy_not_measured"]
    assert "## Not measured" in (out / "REPORT.md").read_text()


def test_in_process_api_benchmarks_any_module():
    from torchvision.models import mobilenet_v3_small

    from service.bench import benchmark_module

    row = benchmark_module(
        "mobilenet", mobilenet_v3_small(), batch_size=2, min_time_s=0.05, min_iters=3
    )
    assert row["model_variant"] == "mobilenet" and row["batch_size"] == 2
    assert row["iterations"] >= 3 and row["latency_ms_p50"] > 0 and row["macs"] > 0
    assert row["accuracy_top1"] is None and row["accuracy_not_measured"]
