"""Benchmark report tables: labels say what the figures are."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from service.bench.markdown import table
from service.bench.report import aims, delta_cell, headline, top1_cell, within_one_point
from service.bench.runner import add_accuracy_statistics, add_ratios


def row(variant: str, batch: int, p50: float) -> dict:
    return {
        "model_variant": variant,
        "runtime": "onnxruntime",
        "batch_size": batch,
        "latency_ms_p50": p50,
        "speedup_vs_baseline": 10.0 / p50,
        "throughput_samples_sec": 1e3 * batch / p50,
        "model_size_mb": 1.0,
        "size_reduction_vs_baseline": 1.0,
        "accuracy_top1": None,
        "accuracy_delta_vs_baseline": None,
    }


def test_headline_names_the_batch_size_it_shows():
    rows = [row("baseline", 2, 10.0), row("baseline", 4, 16.0), row("pruned", 2, 5.0)]
    text = headline(rows)
    header = text.splitlines()[0]
    assert "p50 ms (b2)" in header and "speed-up vs baseline (b2)" in header
    assert "(b1)" not in text
    assert [line.split("|")[1].strip() for line in text.splitlines()[2:]] == ["pruned", "baseline"]


def test_markdown_table_shape():
    assert table(["a", "b"], [[1, "x"], [2, None]]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | x |",
        "| 2 | None |",
    ]


def measured(variant: str, runtime: str, p50s: list[float], delta: float | None = 0.0) -> dict:
    """A cell as the runner aggregates it: per-repeat p50s, the median, accuracy."""
    return {
        **row(variant, 1, statistics.median(p50s)),
        "runtime": runtime,
        "device": "cpu",
        "repeats": len(p50s),
        "latency_ms_p50_repeats": p50s,
        "model_size_mb": 2.0,
        "accuracy_top1": 0.99 + delta if delta is not None else None,
        "accuracy_delta_vs_baseline": delta,
    }


def test_speedups_come_with_the_worst_and_best_repeat():
    base = measured("baseline", "torch", [80.0, 100.0, 90.0])
    fast = measured("student", "onnxruntime", [5.0, 4.0, 10.0])
    ort = measured("baseline", "onnxruntime", [40.0, 40.0, 40.0])
    rows = [base, fast, ort]
    add_ratios(rows)
    assert fast["speedup_vs_baseline"] == 90.0 / 5.0  # the medians' ratio
    # each repeat pairs cells timed in the same pass: 80/5, 100/4, 90/10
    assert fast["speedup_vs_baseline_min"] == 9.0 and fast["speedup_vs_baseline_max"] == 25.0
    assert "18.00x (9.00-25.00x)" in headline(rows)
    best, against_ort = aims(rows)
    assert "**student/onnxruntime** — 18.00x" in best
    assert "median of 3 repeats; 9.00x in the worst, 25.00x in the best" in best
    assert "8.00x at batch 1 (4.00x-10.00x over the repeats)" in against_ort


def test_a_variant_more_than_a_point_below_the_baseline_is_not_the_headline():
    rows = [
        measured("baseline", "torch", [80.0]),
        measured("lossy", "onnxruntime", [1.0], delta=-0.0111),
        measured("close", "onnxruntime", [8.0], delta=-0.0099),
    ]
    add_ratios(rows)
    assert "**close/onnxruntime** — 10.00x" in aims(rows)[0]
    assert "repeats" not in aims(rows)[0]  # one repeat: no range to state
    assert "(" not in headline(rows).splitlines()[2].split("|")[4]


def test_within_one_point_asks_the_whole_interval_not_the_point_estimate():
    rows = [
        measured("baseline", "torch", [80.0]),
        measured("unsure", "onnxruntime", [1.0], delta=-0.006),  # fast, but could lose 1.2
        measured("sure", "onnxruntime", [8.0], delta=-0.006),
    ]
    add_ratios(rows)
    rows[1].update(accuracy_delta_ci_low=-0.012, accuracy_delta_ci_high=0.0)
    rows[2].update(
        accuracy_delta_ci_low=-0.009,
        accuracy_delta_ci_high=-0.003,
        accuracy_delta_p_value=0.0004,
        accuracy_delta_significant=True,
        discordant_right_vs_baseline=10,
        discordant_wrong_vs_baseline=70,
    )
    assert not within_one_point(rows[1]) and within_one_point(rows[2])
    best = aims(rows)[0]
    assert "**sure/onnxruntime**" in best and "-0.60 [-0.90, -0.30] *" in best
    assert "McNemar p = 0.0004" in best


def test_without_a_measured_accuracy_no_variant_is_named():
    rows = [measured("baseline", "torch", [80.0], None), measured("x", "onnxruntime", [1.0], None)]
    add_ratios(rows)
    assert "No variant measured at batch 1" in aims(rows)[0]


def test_accuracy_cells_carry_their_intervals():
    acc = {"accuracy_top1": 0.9123, "accuracy_top1_ci_low": 0.9066, "accuracy_top1_ci_high": 0.9177}
    assert top1_cell(acc) == "91.23 (90.66-91.77)"
    assert top1_cell({"accuracy_top1": 0.5}) == "50.00" and top1_cell({}) == "—"
    same = {
        "accuracy_delta_vs_baseline": 0.0,
        "accuracy_delta_ci_low": 0.0,
        "accuracy_delta_ci_high": 0.0,
        "discordant_right_vs_baseline": 0,
        "discordant_wrong_vs_baseline": 0,
    }
    assert delta_cell(same) == "±0 (same top-1 on every image)"
    assert delta_cell({"accuracy_delta_vs_baseline": -0.01}) == "-1.00"


def write_evaluation(folder: Path, **predictions: list[int]) -> None:
    folder.mkdir(parents=True)
    np.savez(folder / "evaluation.npz", labels=np.array([0, 1, 2, 3, 4, 5]), **predictions)


def test_the_runner_pairs_each_row_with_the_baseline_image_by_image(tmp_path):
    write_evaluation(tmp_path / "baseline", torch=[0, 1, 2, 3, 4, 0])  # 5 of 6
    write_evaluation(tmp_path / "small", onnxruntime=[0, 1, 2, 0, 0, 5])  # 4 of 6
    rows = [
        {"model_variant": "baseline", "runtime": "torch", "accuracy_top1": 5 / 6},
        {"model_variant": "small", "runtime": "onnxruntime", "accuracy_top1": 4 / 6},
        {"model_variant": "small", "runtime": "openvino", "accuracy_top1": 4 / 6},  # none kept
    ]
    add_accuracy_statistics(rows, tmp_path)
    small = rows[1]
    assert (small["discordant_right_vs_baseline"], small["discordant_wrong_vs_baseline"]) == (1, 2)
    assert small["accuracy_delta_ci_low"] < -1 / 6 < small["accuracy_delta_ci_high"]
    assert small["accuracy_delta_p_value"] == 1.0 and not small["accuracy_delta_significant"]
    assert small["test_images"] == 6 and small["accuracy_top1_ci_low"] < 4 / 6
    assert "accuracy_top1_ci_low" not in rows[2]
    rows[1]["accuracy_top1"] = 0.5  # a manifest that does not match its predictions
    with pytest.raises(ValueError, match=r"evaluation\.npz gives top-1 0\.666667"):
        add_accuracy_statistics(rows, tmp_path)
