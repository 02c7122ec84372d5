"""One benchmark configuration in a fresh process (so its memory figures are its own).

``python -m service.bench.worker --variant V --runtime R --batch-size B ...`` prints one JSON
row on its last line, or ``{"skipped": why}`` when the artifact cannot take that batch or
image size (a TensorRT engine built for other shapes). With ``--profile-dir`` a torch run also
writes a Chrome trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run one configuration; print its row as JSON."""
    p = argparse.ArgumentParser(prog="python -m service.bench.worker")
    p.add_argument("--variant", required=True)
    p.add_argument("--runtime", required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    # No defaults: the runner passes every value from its BenchConfig.
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--threads", type=int)
    p.add_argument("--min-time", type=float, required=True)
    p.add_argument("--min-iters", type=int, required=True)
    p.add_argument("--profile-dir", type=Path)
    args = p.parse_args(argv)

    from service.bench.core import benchmark_engine, load_engine

    free_before = cuda_free_bytes() if args.device == "cuda" else None
    from service.engines.base import CudaOptions

    # On CUDA the torch cells are the eager fp32 reference every ratio is taken against; the
    # serving default (fp16 + CUDA graphs) is measured by `python -m service.bench.gpu_check`.
    engine = load_engine(
        args.variant,
        args.runtime,
        args.model_dir,
        threads=args.threads,
        device=args.device,
        cuda=CudaOptions(precision="fp32", graphs=False),
        image_size=args.image_size,
    )
    reason = engine.refusal(args.batch_size, args.image_size)
    if reason is not None:  # a fixed-shape engine: the runner reports the cell as skipped
        print(json.dumps({"skipped": reason}))
        return 0
    row = benchmark_engine(
        engine,
        batch_size=args.batch_size,
        image_size=args.image_size,
        min_time_s=args.min_time,
        min_iters=args.min_iters,
    )
    if free_before is not None:
        # torch's allocator misses what TensorRT allocates itself (engine, workspace,
        # activations); the device's own free memory sees both.
        device_mb = (free_before - cuda_free_bytes()) / 2**20
        row["peak_cuda_mb"] = max(row.get("peak_cuda_mb", 0.0), device_mb)
    row["threads"] = args.threads or row["threads"]
    row["pid"] = os.getpid()
    if args.profile_dir and args.runtime == "torch":
        row["profile_trace"] = str(profile(engine, args))
    print(json.dumps(row))
    return 0


def cuda_free_bytes() -> int:
    """Free memory on the current CUDA device (after creating the context, which is not
    counted against the cell)."""
    import torch

    torch.cuda.init()
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def profile(engine: object, args: argparse.Namespace) -> Path:
    """A few profiled calls, exported as Chrome-trace JSON (Perfetto / chrome://tracing)."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    batch = np.zeros((args.batch_size, 3, args.image_size, args.image_size), dtype=np.float32)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            engine.predict(batch)  # type: ignore[attr-defined]
    args.profile_dir.mkdir(parents=True, exist_ok=True)
    path = args.profile_dir / f"{args.variant}-{args.runtime}-b{args.batch_size}.trace.json"
    prof.export_chrome_trace(str(path))
    return path


if __name__ == "__main__":
    sys.exit(main())
