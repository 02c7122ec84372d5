"""The GPU half's parts that need no GPU: CUDA-graph buckets, the settings that choose how torch
runs on CUDA, the GPU check's judgement and report, and the offline bundle's contents."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.bench import gpu_bundle, gpu_check
from service.config import Settings
from service.engines.base import CudaOptions
from service.engines.torch_engine import bucket, graph_sizes


@pytest.mark.parametrize(
    ("max_batch", "sizes"),
    [(1, [1]), (2, [1, 2]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12]), (32, [1, 2, 4, 8, 16, 32])],
)
def test_graph_sizes_are_powers_of_two_and_the_largest_batch(max_batch, sizes):
    assert graph_sizes(max_batch) == sizes


def test_a_batch_runs_at_the_smallest_captured_size_that_holds_it():
    captured = graph_sizes(12)
    assert [bucket(n, captured) for n in (1, 2, 3, 5, 8, 9, 12)] == [1, 2, 4, 8, 8, 12, 12]
    # Beyond every captured size: the next power of two, captured on first use.
    assert bucket(13, captured) == 16 and bucket(100, captured) == 128 and bucket(1, []) == 1


def test_settings_choose_how_torch_runs_on_cuda(monkeypatch):
    assert Settings().cuda == CudaOptions(precision="fp16", graphs=True, compile="off")
    monkeypatch.setenv("CUDA_PRECISION", "bf16")
    monkeypatch.setenv("CUDA_GRAPHS", "false")
    monkeypatch.setenv("TORCH_COMPILE", "max-autotune")
    options = Settings().cuda
    assert options == CudaOptions(precision="bf16", graphs=False, compile="max-autotune")
    assert options.describe() == "bf16, channels-last, torch.compile max-autotune, eager launches"
    monkeypatch.setenv("CUDA_PRECISION", "int8")
    with pytest.raises(ValidationError, match="cuda_precision"):
        Settings()


def _row(b1_ms: float, b256_ips: float, agreement: float = 1.0) -> dict:
    return {
        "cells": [
            {"batch_size": 1, "latency_ms_p50": b1_ms, "throughput_samples_sec": 1e3 / b1_ms},
            {
                "batch_size": 256,
                "latency_ms_p50": 256e3 / b256_ips,
                "throughput_samples_sec": b256_ips,
            },
        ],
        "parity": {"agreement_top1_digits": agreement, "agreement_top1_random": 1.0},
    }


def test_the_goals_are_judged_on_the_best_mode_against_eager_fp32():
    modes = {
        "eager-fp32": _row(6.0, 2_000),
        "eager-fp16": _row(5.0, 6_000),
        "graphs-fp16": _row(0.8, 12_000, agreement=0.995),
        "compile-graphs-fp16": {"mode": "compile-graphs-fp16", "error": "did not finish"},
    }
    g = gpu_check.goals(modes)
    assert g["best_mode_batch1"] == "graphs-fp16" and g["batch1_met"]
    assert g["speedup_vs_eager_fp32_batch1"] == pytest.approx(7.5) and g["speedup_met"]
    assert g["peak_at"] == "graphs-fp16, batch 256" and g["throughput_met"]
    assert g["agreement_top1_best"] == 0.995 and g["agreement_met"]
    modes["graphs-fp16"] = _row(1.5, 9_000, agreement=0.98)
    g = gpu_check.goals(modes)
    assert not (g["batch1_met"] or g["speedup_met"] or g["throughput_met"] or g["agreement_met"])
    assert gpu_check.goals({"graphs-fp16": _row(1.0, 1.0)}) == {
        "judged": False,
        "why": "the reference or every other mode failed",
    }


def test_torch_compile_is_timed_at_the_smallest_and_largest_batch_only():
    sizes = [1, 8, 64, 128, 256]
    assert gpu_check.mode_batch_sizes("graphs-fp16", sizes) == sizes
    assert gpu_check.mode_batch_sizes("compile-graphs-fp16", sizes) == [1, 256]


def test_the_report_shows_every_mode_and_says_which_goals_failed():
    modes = {"eager-fp32": _row(6.0, 2_000), "graphs-fp16": _row(1.5, 9_000)}
    modes["graphs-fp16"]["cells"][1] |= {"device_ms_p50": 12.8, "device_images_per_s": 20_000}
    for row in modes.values():
        row |= {"options": "x", "startup_s": 1.0}
        row["parity"] |= {
            "max_abs_logit_diff_digits": 0.01,
            "max_abs_logit_diff_random": 0.02,
            "accuracy_top1_digits": 0.99,
        }
    modes["compile-graphs-fp16"] = {
        "mode": "compile-graphs-fp16",
        "error": "did not finish within 150 s",
    }
    report = {
        "environment": {
            "gpu": "NVIDIA H200",
            "compute_capability": "9.0",
            "gpu_memory_gib": 139.8,
            "driver": "580.1",
            "cuda": "13.0",
            "cudnn": 91000,
            "torch": "2.11.0",
            "python": "3.12.3",
        },
        "variant": "baseline",
        "image_size": 224,
        "batch_sizes": [1, 256],
        "date": "today",
        "digits_count": 360,
        "tests_rc": 0,
        "modes": modes,
        "goals": gpu_check.goals(modes),
        "serve": {"error": "RuntimeError: not ready"},
    }
    text = gpu_check.markdown(report)
    assert "| graphs-fp16 | x | 1.0 | 1.500 / 667 | 28.444 / 9,000 |" in text
    assert (
        "| compile-graphs-fp16 | fp16, channels-last, torch.compile default, CUDA graphs | "
        "failed: did not finish within 150 s |" in text
    )
    assert "1.500 ms (goal <= 1.0 ms): NOT met" in text and "4.0x (goal >= 5.0x): NOT met" in text
    assert "The server check failed: RuntimeError: not ready" in text
    assert "| graphs-fp16 | - | 12.800 / 20,000 |" in text  # the GPU's side alone
    assert "peaks at 20,000 images/s (graphs-fp16, batch 256)" in text


def test_the_bundle_asks_for_the_projects_own_dependencies_and_the_test_runner():
    wanted = gpu_bundle.requirements()
    names = [gpu_bundle.requirement_name(r) for r in wanted]
    assert {"fastapi", "uvicorn", "pydantic", "python-multipart", "pillow", "numpy"} <= set(names)
    assert {"pytest", "httpx"} <= set(names) and "torch" not in names
    assert "pytest>=8" in wanted  # pyproject's own bounds
    assert (
        gpu_bundle.wheel_project(
            __import__("pathlib").Path("Pillow-13.0.0-cp312-cp312-manylinux_2_28_x86_64.whl")
        )
        == "pillow"
    )
    assert gpu_bundle.provided_by_torchvision() >= {"numpy", "pillow", "torch"}
