"""``densenet bench``: the variant x runtime x batch-size matrix, one process per cell.

Cells run interleaved (every cell once, then every cell again, in rotated order), so drift on a
shared machine shows up as spread between repeats instead of as a bias against whichever
variant ran last; each speed-up is reported with its worst and best repeat. Ratios against the
baseline (torch eager fp32) come from this same run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from service import stats
from service.bench import report
from service.bench.config import BenchConfig
from service.bench.core import PRECISION_LABELS
from service.config import available_cpus
from service.manifest import available

log = logging.getLogger(__name__)
BASELINE = ("baseline", "torch")


def machine_description(config: BenchConfig) -> dict[str, Any]:
    """CPU, cores, threads and library versions: the context of every absolute number."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_available": available_cpus(),
        "threads": config.threads or available_cpus(),
        "device": config.device,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "onnxruntime": version("onnxruntime"),
        "openvino": version("openvino"),
        "torch_tensorrt": version("torch-tensorrt") or version("torch_tensorrt"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def precision_labels(runtimes: list[str]) -> list[str]:
    """The lower-precision cells of these runtimes that this CPU runs (openvino-bf16 where
    OpenVINO's CPU plugin has BF16)."""
    if "openvino" not in runtimes:  # the only runtime with such cells, and its import
        return []
    from service.engines.openvino_engine import PRECISIONS, cpu_precisions

    runs = cpu_precisions()
    return [
        label
        for label, (runtime, precision) in PRECISION_LABELS.items()
        if runtime in runtimes and PRECISIONS[precision] in runs
    ]


def cells(config: BenchConfig) -> list[tuple[str, str, int]]:
    """Every (variant, runtime, batch size) to measure, baseline torch first."""
    built = available(config.model_dir)
    if not built:
        raise FileNotFoundError(f"no artifacts in {config.model_dir}; run `make artifacts`")
    out: list[tuple[str, str, int]] = []
    for variant, runtimes in built.items():
        if config.variants and variant not in config.variants:
            continue
        for runtime in [*runtimes, *precision_labels(runtimes)]:
            if config.runtimes and runtime not in config.runtimes:
                continue
            if (runtime == "tensorrt") != (config.device == "cuda"):
                continue  # TensorRT only on CUDA; on CUDA, torch and TensorRT only
            if config.device == "cuda" and runtime == "onnxruntime":
                continue
            out.extend((variant, runtime, b) for b in config.batch_sizes)
    out.sort(key=lambda c: (c[:2] != BASELINE, c))
    if not any(c[:2] == BASELINE for c in out):
        raise ValueError("the baseline (torch) must be in the run: every ratio is relative to it")
    return out


def run_cell(config: BenchConfig, cell: tuple[str, str, int], profile: bool) -> dict[str, Any]:
    """Spawn the worker for one cell and parse its row."""
    variant, runtime, batch = cell
    cmd = [
        sys.executable,
        "-m",
        "service.bench.worker",
        "--variant",
        variant,
        "--runtime",
        runtime,
        "--model-dir",
        str(config.model_dir),
        "--batch-size",
        str(batch),
        "--image-size",
        str(config.image_size),
        "--device",
        config.device,
        "--min-time",
        str(config.min_time),
        "--min-iters",
        str(config.min_iters),
    ]
    if config.threads:
        cmd += ["--threads", str(config.threads)]
    if profile:
        cmd += ["--profile-dir", str(config.out / "traces")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {cell} failed:\n{done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge one cell's repeats: medians of each latency figure, with the p50 range."""
    row = dict(samples[0])
    for key in (
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_ms_p95",
        "latency_ms_p99",
        "latency_ms_mean",
        "throughput_samples_sec",
    ):
        row[key] = statistics.median(s[key] for s in samples)
    row["latency_ms_p50_repeats"] = [s["latency_ms_p50"] for s in samples]  # in repeat order
    row["latency_ms_p50_min"] = min(row["latency_ms_p50_repeats"])
    row["latency_ms_p50_max"] = max(row["latency_ms_p50_repeats"])
    row["peak_rss_mb"] = max(s["peak_rss_mb"] for s in samples)
    if any("peak_cuda_mb" in s for s in samples):
        row["peak_cuda_mb"] = max(s.get("peak_cuda_mb", 0.0) for s in samples)
    row["iterations"] = sum(s["iterations"] for s in samples)
    row["repeats"] = len(samples)
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed-up, size reduction and accuracy delta vs the baseline at the same batch size.

    The speed-up is the ratio of the median p50s; ``_min``/``_max`` are the worst and best
    of the per-repeat ratios."""
    base = {r["batch_size"]: r for r in rows if (r["model_variant"], r["runtime"]) == BASELINE}
    for row in rows:
        ref = base[row["batch_size"]]
        row["speedup_vs_baseline"] = ref["latency_ms_p50"] / row["latency_ms_p50"]
        per_repeat = report.repeat_ratios(ref, row)
        row["speedup_vs_baseline_min"] = min(per_repeat)
        row["speedup_vs_baseline_max"] = max(per_repeat)
        row["size_reduction_vs_baseline"] = ref["model_size_mb"] / row["model_size_mb"]
        acc, ref_acc = row.get("accuracy_top1"), ref.get("accuracy_top1")
        row["accuracy_delta_vs_baseline"] = (
            acc - ref_acc if acc is not None and ref_acc is not None else None
        )


def add_accuracy_statistics(rows: list[dict[str, Any]], model_dir: Path) -> None:
    """Each measured top-1's 95 % interval, and its paired difference to the baseline (torch
    eager fp32) on the same test images: interval, exact McNemar p-value, significance.

    From the builds' per-image predictions (``evaluation.npz``); rows whose build recorded
    none (ImageNet without labelled data, older builds) keep only the point figures.
    """
    loaded: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | None] = {}

    def evaluation(variant: str, label: str) -> tuple[np.ndarray, np.ndarray] | None:
        if (variant, label) not in loaded:
            loaded[variant, label] = stats.load_evaluation(model_dir / variant, label)
        return loaded[variant, label]

    reference = evaluation(*BASELINE)
    for row in rows:
        found = evaluation(row["model_variant"], row["runtime"])
        if row.get("accuracy_top1") is None or found is None:
            continue
        correct, labels = found
        if abs(float(correct.mean()) - row["accuracy_top1"]) > 1e-6:
            raise ValueError(
                f"{row['model_variant']}/{row['runtime']}: evaluation.npz gives top-1 "
                f"{correct.mean():.6f}, its manifest {row['accuracy_top1']:.6f}: rebuild it"
            )
        row["test_images"] = len(correct)
        low, high = stats.accuracy_interval(int(correct.sum()), len(correct))
        row["accuracy_top1_ci_low"], row["accuracy_top1_ci_high"] = low, high
        if reference is None or not np.array_equal(reference[1], labels):
            continue  # not the same test images as the baseline: no pairing
        diff = stats.paired_difference(correct, reference[0])
        row.update(
            accuracy_delta_ci_low=diff.low,
            accuracy_delta_ci_high=diff.high,
            accuracy_delta_p_value=diff.p_value,
            accuracy_delta_significant=diff.significant,
            discordant_right_vs_baseline=diff.a_only,
            discordant_wrong_vs_baseline=diff.b_only,
        )


def run(config: BenchConfig) -> dict[str, Any]:
    """Measure the matrix and write every output; returns the run's JSON document."""
    todo = cells(config)
    config.out.mkdir(parents=True, exist_ok=True)
    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {c: [] for c in todo}
    skipped: dict[tuple[str, str, int], str] = {}
    total = len(todo) * config.repeats
    with tqdm(total=total, desc="benchmark", unit="cell", dynamic_ncols=True) as bar:
        for repeat in range(config.repeats):
            shift = repeat * max(1, len(todo) // config.repeats)
            for cell in todo[shift:] + todo[:shift]:
                if cell not in skipped:
                    bar.set_postfix_str(f"{cell[0]}/{cell[1]}/b{cell[2]}")
                    profile = config.profile and repeat == 0 and cell[2] == 1
                    row = run_cell(config, cell, profile)
                    if "skipped" in row:  # the artifact cannot take this shape: not retried
                        skipped[cell] = row["skipped"]
                        log.warning("skipping %s/%s/b%d: %s", *cell, row["skipped"])
                    else:
                        samples[cell].append(row)
                bar.update()
    if any(cell[:2] == BASELINE for cell in skipped):
        raise ValueError(f"the baseline cannot be measured here: {skipped}")
    rows = [aggregate(samples[c]) for c in todo if c not in skipped]
    add_ratios(rows)
    add_accuracy_statistics(rows, config.model_dir)
    document = {
        "machine": machine_description(config),
        "config": _jsonable(config),
        "rows": rows,
        "skipped": [
            {"model_variant": v, "runtime": r, "batch_size": b, "reason": why}
            for (v, r, b), why in skipped.items()
        ],
    }
    report.write_all(document, config.out, config.model_dir, config.readme)
    return document


def _jsonable(config: BenchConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()}
