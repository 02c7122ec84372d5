"""Benchmark report tables: labels say what the figures are."""

from __future__ import annotations

import statistics

from service.bench.markdown import table
from service.bench.report import aims, headline
from service.bench.runner import add_ratios


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
