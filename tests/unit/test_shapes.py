"""Fixed-shape engines: what they refuse is known before a call, the benchmark skips those
cells and says so, and warm-up covers the largest batch the service forms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.bench import runner
from service.bench.report import write_report
from service.engines.tensorrt_engine import TensorRTEngine
from service.manifest import RuntimeArtifact
from tests.support import FakeEngine, fake_manifest
from tests.unit.test_report import measured


def tensorrt_manifest(**details: object):
    manifest = fake_manifest(crop_size=32)
    manifest.artifacts["tensorrt"] = RuntimeArtifact(
        file="model.ep", format="tensorrt", sha256="e" * 64, size_bytes=1, details=details
    )
    return manifest


def test_a_tensorrt_engine_names_the_shapes_it_cannot_take_without_cuda():
    engine = TensorRTEngine(
        tensorrt_manifest(image_size=32, batch_max=128), Path("model.ep"), threads=1
    )
    assert engine.refusal(128, 32) is None
    assert "takes 32x32 inputs, not 224x224; build one with --trt-image-size 224" in str(
        engine.refusal(1, 224)
    )
    assert "batch 256 exceeds the engine's maximum (128)" in str(engine.refusal(256, 32))
    # an engine recorded without its build sizes is taken at the task's size, any batch
    legacy = TensorRTEngine(tensorrt_manifest(), Path("model.ep"), threads=1)
    assert legacy.refusal(4096, 32) is None and legacy.refusal(1, 224) is not None


def test_warmup_runs_the_largest_batch_then_returns_a_single_images_logits():
    seen: list[int] = []

    class Recording(FakeEngine):
        def predict(self, batch: np.ndarray) -> np.ndarray:
            seen.append(batch.shape[0])
            return super().predict(batch)

    engine = Recording()
    engine.load()
    assert engine.warmup(batch_size=8).shape == (1, 10)
    assert seen == [8, 8, 1, 1]


def test_the_benchmark_skips_cells_an_engine_refuses_and_reports_them(monkeypatch, tmp_path):
    todo = [
        ("baseline", "torch", 1),
        ("baseline", "torch", 8),
        ("tensorrt", "tensorrt", 1),
        ("tensorrt", "tensorrt", 8),
    ]
    calls: list[tuple[str, str, int]] = []

    def fake_cell(config, cell, profile):
        calls.append(cell)
        if cell == ("tensorrt", "tensorrt", 1):
            return {"skipped": "this TensorRT engine takes 32x32 inputs, not 224x224"}
        row = measured(cell[0], cell[1], [10.0 if cell[0] == "baseline" else 1.0])
        return {
            **row,
            "batch_size": cell[2],
            "image_size": 224,
            "latency_ms_p90": 1,
            "latency_ms_p95": 1,
            "latency_ms_p99": 1,
            "latency_ms_mean": 1,
            "peak_rss_mb": 1,
            "iterations": 5,
        }

    written = {}
    monkeypatch.setattr(runner, "cells", lambda config: todo)
    monkeypatch.setattr(runner, "run_cell", fake_cell)
    monkeypatch.setattr(runner.report, "write_all", lambda doc, *a: written.update(doc=doc))
    monkeypatch.setattr(runner, "machine_description", lambda config: {})
    # A MODEL_DIR of its own: the rows are made up, so no build's evaluation.npz may pair them.
    config = runner.BenchConfig(
        out=tmp_path, model_dir=tmp_path / "models", repeats=2, batch_sizes=[1, 8]
    )
    document = runner.run(config)
    assert calls.count(("tensorrt", "tensorrt", 1)) == 1  # not retried in the second repeat
    assert calls.count(("tensorrt", "tensorrt", 8)) == 2
    assert [(r["model_variant"], r["batch_size"]) for r in document["rows"]] == [
        ("baseline", 1),
        ("baseline", 8),
        ("tensorrt", 8),
    ]
    assert document["skipped"] == [
        {
            "model_variant": "tensorrt",
            "runtime": "tensorrt",
            "batch_size": 1,
            "reason": "this TensorRT engine takes 32x32 inputs, not 224x224",
        }
    ]
    document["machine"] = {
        "cpu": "cpu",
        "cpus_available": 2,
        "threads": 2,
        "device": "cuda",
        "python": "3",
        "torch": "t",
        "onnxruntime": "o",
        "date": "d",
    }
    report = write_report(document, [], tmp_path).read_text()
    assert (
        "- tensorrt/tensorrt at batch 1: skipped, this TensorRT engine takes 32x32 inputs, "
        "not 224x224" in report
    )
