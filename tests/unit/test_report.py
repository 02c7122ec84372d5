"""Benchmark report tables: labels say what the figures are."""

from __future__ import annotations

from service.bench.markdown import table
from service.bench.report import headline


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
