"""In-process benchmarking API: load a variant or wrap any ``nn.Module``, get a row back.

    from service.bench import load_engine, benchmark_engine, benchmark_module
    row = benchmark_engine(load_engine("pruned", "onnxruntime", "models"), batch_size=8)
    rows = [benchmark_module("my-variant", model, batch_size=b) for b in (1, 8, 32)]

Timing follows ``torch.utils.benchmark``'s blocked autorange idea: warm up, then keep
measuring until both a minimum time and a minimum number of calls are reached, timing each
call on its own so percentiles are real. CUDA work is synchronised before each clock read.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.config import available_cpus
from service.engines import Engine, get_engine_class
from service.engines.base import CudaOptions
from service.manifest import read_manifest, resolve
from service.timing import summarize, time_callable

BENCH_IMAGE_SIZE = 224
# Cells that run a runtime at a precision other than its own default carry it in their label.
PRECISION_LABELS = {"openvino-bf16": ("openvino", "bf16")}


def split_label(label: str) -> tuple[str, str]:
    """A benchmark runtime label -> (engine runtime, precision): ``openvino-bf16`` ->
    (openvino, bf16); a registry name is itself at f32."""
    return PRECISION_LABELS.get(label, (label, "f32"))


def runtime_label(engine: Engine) -> str:
    """The label of what ``engine`` runs: its runtime, and its precision when not f32."""
    return engine.runtime if engine.precision == "f32" else f"{engine.runtime}-{engine.precision}"


def summarize_latencies(times_s: list[float], batch_size: int) -> dict[str, float]:
    """Latency percentiles (ms per batch) and throughput (images/s)."""
    ms = summarize([t * 1e3 for t in times_s])
    return {
        "latency_ms_p50": ms["p50"],
        "latency_ms_p90": ms["p90"],
        "latency_ms_p95": ms["p95"],
        "latency_ms_p99": ms["p99"],
        "latency_ms_mean": ms["mean"],
        "latency_ms_min": ms["min"],
        "latency_ms_max": ms["max"],
        "latency_ms_stdev": ms["stdev"],
        "iterations": len(times_s),
        "throughput_samples_sec": batch_size * 1e3 / ms["mean"],
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_engine(
    variant: str,
    runtime: str,
    model_dir: str | Path = "models",
    *,
    threads: int | None = None,
    device: str = "cpu",
    cuda: CudaOptions | None = None,
    image_size: int | None = None,
) -> Engine:
    """Load one built variant on one runtime (verified as the server verifies it); ``cuda``:
    how torch runs on a GPU (default: as the service does, fp16 + CUDA graphs). ``runtime``
    may be a :data:`PRECISION_LABELS` label; ``image_size``: the input side a runtime that
    compiles for one side (OpenVINO) plans for (default: the variant's own)."""
    runtime, precision = split_label(runtime)
    manifest, path = resolve(Path(model_dir), variant, runtime)
    engine = get_engine_class(runtime)(
        manifest,
        path,
        threads=threads or available_cpus(),
        device=device,
        cuda=cuda,
        precision=precision,
        image_size=image_size,
    )
    engine.load()
    return engine


def _cuda_sync(device: str) -> Callable[[], None] | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.synchronize


def benchmark_callable(
    name: str,
    predict: Callable[[np.ndarray], object],
    *,
    runtime: str,
    batch_size: int,
    image_size: int = BENCH_IMAGE_SIZE,
    device: str = "cpu",
    min_time_s: float = 1.0,
    min_iters: int = 5,
) -> dict[str, Any]:
    """Time ``predict`` on a random NCHW float32 batch; returns one result row."""
    batch = np.random.default_rng(0).standard_normal(
        (batch_size, 3, image_size, image_size), dtype=np.float32
    )
    times = time_callable(
        lambda: predict(batch),
        min_time_s=min_time_s,
        min_iters=min_iters,
        sync=_cuda_sync(device),
    )
    row: dict[str, Any] = {
        "model_variant": name,
        "runtime": runtime,
        "device": device,
        "batch_size": batch_size,
        "image_size": image_size,
        "threads": available_cpus(),
        **summarize_latencies(times, batch_size),
        "peak_rss_mb": peak_rss_mb(),
    }
    if device == "cuda":
        import torch

        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def benchmark_engine(
    engine: Engine, *, batch_size: int, image_size: int = BENCH_IMAGE_SIZE, **kwargs: Any
) -> dict[str, Any]:
    """Benchmark a loaded engine; adds the artifact's size, compute and measured quality."""
    manifest = engine.manifest
    row = benchmark_callable(
        manifest.variant,
        engine.predict,
        runtime=runtime_label(engine),
        batch_size=batch_size,
        image_size=image_size,
        device=engine.device,
        **kwargs,
    )
    row.update(artifact_columns(engine.path.parent, runtime_label(engine), image_size))
    return row


def artifact_columns(variant_dir: Path, label: str, image_size: int) -> dict[str, Any]:
    """Size, params, MACs and quality columns, all read from what the build measured (for a
    precision label, what the build measured at that precision)."""
    runtime, precision = split_label(label)
    manifest = read_manifest(variant_dir)
    artifact = manifest.artifact(runtime)
    m = manifest.metrics
    macs = {BENCH_IMAGE_SIZE: m.get("macs_224"), m.get("image_size_native"): m.get("macs_native")}
    measured = artifact.metrics if precision == "f32" else artifact.metrics.get(precision)
    measured = measured if isinstance(measured, dict) else {}
    quality = {**m, **{k: v for k, v in measured.items() if v is not None}}
    top1 = quality.get("accuracy_top1")
    return {
        "model_size_mb": artifact.size_bytes / 1e6,
        "params": m.get("params"),
        "macs": macs.get(image_size),
        "accuracy_top1": top1,
        "accuracy_top5": quality.get("accuracy_top5") if top1 is not None else None,
        "accuracy_dataset": m.get("accuracy_dataset") if top1 is not None else None,
        "accuracy_image_size": (
            quality.get("accuracy_image_size", m.get("image_size_native"))
            if top1 is not None
            else None
        ),
        "agreement_top1_vs_baseline": quality.get("agreement_top1_vs_baseline"),
        "accuracy_not_measured": None if top1 is not None else m.get("accuracy_not_measured"),
        "task": manifest.task,
        "model_sha256": artifact.sha256,
    }


def benchmark_module(
    name: str,
    model: Any,
    *,
    batch_size: int,
    image_size: int = BENCH_IMAGE_SIZE,
    device: str = "cpu",
    **kwargs: Any,
) -> dict[str, Any]:
    """Benchmark any ``torch.nn.Module`` (eager, inference mode) under ``name``.

    Quality columns stay empty: a bare module comes with no held-out measurement.
    """
    import torch

    from service.optimize.evaluate import count_macs, count_params

    model = model.eval().to(device)

    def predict(batch: np.ndarray) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(device))

    row = benchmark_callable(
        name,
        predict,
        runtime="torch",
        batch_size=batch_size,
        image_size=image_size,
        device=device,
        **kwargs,
    )
    row.update(
        params=count_params(model),
        macs=count_macs(model.cpu(), image_size),
        accuracy_top1=None,
        accuracy_not_measured="in-process module: no held-out measurement",
    )
    model.to(device)
    return row
