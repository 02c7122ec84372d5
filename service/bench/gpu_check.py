"""The GPU check: what a bare CUDA machine shows about the GPU half, without TensorRT.

    python -m service.bench.gpu_check OUTDIR --model-dir gpu-bundle/models \\
        --digits gpu-bundle/heldout_digits.npz

(``scripts/gpu_check.sh`` runs it after installing the bundle's wheels and the GPU tests.)

It measures the torch runtime on the GPU in each mode of ``MODES`` (eager fp32, the reference;
eager fp16; CUDA-graph fp16 and bf16; CUDA graphs over ``torch.compile``), each in its own
process with a time limit, at 224x224 and the batch sizes asked for. Every mode's logits on
the held-out digits (resized to 224) and on seeded random inputs are compared with fp32 run
with TF32 off. Then a real server (``MODEL_RUNTIME=torch``, ``DEVICE=cuda``, dynamic batching
on) takes 64 concurrent requests, to show that batches above 1 form. It writes
``gpu_check.json`` and ``gpu_check.md`` into OUTDIR.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from service.engines.base import CudaOptions

MODES: dict[str, CudaOptions] = {
    "eager-fp32": CudaOptions(precision="fp32", graphs=False),
    "eager-fp16": CudaOptions(precision="fp16", graphs=False),
    "graphs-fp16": CudaOptions(precision="fp16", graphs=True),
    "graphs-bf16": CudaOptions(precision="bf16", graphs=True),
    "compile-graphs-fp16": CudaOptions(precision="fp16", graphs=True, compile="default"),
}
REFERENCE = "eager-fp32"
SERVING_DEFAULT = "graphs-fp16"
BATCH_SIZES = (1, 8, 64, 128, 256)
# The goals the GPU revision is held to (ratios within this one run).
GOAL_BATCH1_MS = 1.0
GOAL_SPEEDUP = 5.0
GOAL_IMAGES_PER_S = 10_000.0
GOAL_AGREEMENT = 0.99
SERVE_REQUESTS = 64
RANDOM_INPUTS = 32


def heldout_digits(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits as uint8 (N, 8, 8) and labels: from the bundle's file, else sklearn."""
    if path is not None:
        with np.load(path) as data:
            return data["images"], data["labels"]
    from service.optimize.data import digits_split

    _, _, images, labels = digits_split()
    return np.stack([np.asarray(img.convert("L")) for img in images]), np.asarray(labels)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


# --- one mode, in its own process ---------------------------------------------------------------


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    """Load, prepare, time and check one mode; returns its row (logits go to a file)."""
    import torch
    from PIL import Image

    from service.bench.core import summarize_latencies
    from service.config import available_cpus
    from service.engines.torch_engine import TorchEngine, strict_fp32
    from service.imaging import preprocess
    from service.manifest import resolve
    from service.timing import time_callable

    options = MODES[args.worker]
    manifest, path = resolve(args.model_dir, args.variant, "torch")
    size = args.image_size
    spec = manifest.preprocess.model_copy(update={"resize_size": size, "crop_size": size})
    manifest = manifest.model_copy(update={"preprocess": spec})
    engine = TorchEngine(manifest, path, threads=available_cpus(), device=args.device, cuda=options)
    on_gpu = args.device == "cuda"
    free_before = torch.cuda.mem_get_info()[0] if on_gpu else 0
    started = time.perf_counter()
    engine.load()
    engine.prepare(sorted(set(args.batch_sizes)))
    engine.warmup(batch_size=1)
    startup_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    cells = []
    for batch_size in args.batch_sizes:
        batch = rng.standard_normal((batch_size, 3, size, size), dtype=np.float32)
        times = time_callable(
            functools.partial(engine.predict, batch), min_time_s=args.min_time, min_iters=10
        )
        cell = {"batch_size": batch_size, **summarize_latencies(times, batch_size)}
        if on_gpu:  # the GPU's side alone: no copies to and from the host
            on_device = summarize_latencies(
                time_callable(
                    engine.on_device(batch),
                    min_time_s=args.min_time / 2,
                    min_iters=10,
                    sync=torch.cuda.synchronize,
                ),
                batch_size,
            )
            cell["device_ms_p50"] = on_device["latency_ms_p50"]
            cell["device_images_per_s"] = on_device["throughput_samples_sec"]
        cells.append(cell)
    free_after = torch.cuda.mem_get_info()[0] if on_gpu else 0
    images, labels = heldout_digits(args.digits)
    digits = np.stack([preprocess(Image.fromarray(p).convert("RGB"), spec) for p in images])
    noise = (
        np.random.default_rng(1).standard_normal((RANDOM_INPUTS, 3, size, size)).astype(np.float32)
    )
    with strict_fp32() if args.worker == REFERENCE else contextlib.nullcontext():
        on_digits = np.concatenate([engine.predict(c) for c in np.array_split(digits, 8)])
        on_random = np.concatenate([engine.predict(c) for c in np.array_split(noise, 2)])
    np.savez(args.logits, labels=labels, digits=on_digits, random=on_random)
    return {
        "mode": args.worker,
        "options": options.describe(),
        "startup_s": startup_s,
        "cells": cells,
        "cuda_mb": (free_before - free_after) / 2**20,
        "torch_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else 0.0,
    }


def mode_batch_sizes(mode: str, batch_sizes: list[int]) -> list[int]:
    """The batch sizes a mode is timed at: all of them, except under ``torch.compile``, which
    compiles once per size (the smallest and the largest only)."""
    if MODES[mode].compile == "off":
        return list(batch_sizes)
    return sorted({min(batch_sizes), max(batch_sizes)})


def spawn_mode(mode: str, args: argparse.Namespace, out: Path, timeout: float) -> dict[str, Any]:
    """Run one mode in a fresh process; a failure or a timeout becomes the row's ``error``."""
    logits = out / f"logits-{mode}.npz"
    cmd = [
        sys.executable,
        "-m",
        "service.bench.gpu_check",
        str(out),
        "--worker",
        mode,
        "--logits",
        str(logits),
        "--model-dir",
        str(args.model_dir),
        "--variant",
        args.variant,
        "--image-size",
        str(args.image_size),
        "--min-time",
        str(args.min_time),
        "--device",
        args.device,
        "--batch-sizes",
        *map(str, mode_batch_sizes(mode, args.batch_sizes)),
    ]
    if args.digits:
        cmd += ["--digits", str(args.digits)]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"did not finish within {timeout:.0f} s"}
    wall = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"mode": mode, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    row: dict[str, Any] = json.loads(lines[-1])
    row["wall_s"] = wall
    row["logits_file"] = str(logits)
    return row


# --- comparisons ---------------------------------------------------------------------------------


def parity(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Top-1 agreement and largest logit difference against the fp32 (TF32 off) reference, and
    top-1 accuracy on the held-out digits."""
    with np.load(row["logits_file"]) as mine, np.load(reference["logits_file"]) as ref:
        out: dict[str, Any] = {
            "accuracy_top1_digits": float((mine["digits"].argmax(1) == mine["labels"]).mean())
        }
        for name in ("digits", "random"):
            a, b = mine[name], ref[name]
            out[f"agreement_top1_{name}"] = float((a.argmax(1) == b.argmax(1)).mean())
            out[f"max_abs_logit_diff_{name}"] = float(np.abs(a - b).max())
    return out


def goals(modes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The GPU revision's goals, judged on this run's rows."""
    ref = _cell(modes.get(REFERENCE), 1)
    measured = {m: r for m, r in modes.items() if "cells" in r and m != REFERENCE}
    if ref is None or not measured:
        return {"judged": False, "why": "the reference or every other mode failed"}
    best = min(measured, key=lambda m: _cell(measured[m], 1)["latency_ms_p50"])  # type: ignore[index]
    best_b1 = _cell(measured[best], 1)["latency_ms_p50"]  # type: ignore[index]
    peak_mode, peak_cell = max(
        ((m, c) for m, r in measured.items() for c in r["cells"]),
        key=lambda mc: mc[1]["throughput_samples_sec"],
    )
    agreement = min(
        measured[best]["parity"]["agreement_top1_digits"],
        measured[best]["parity"]["agreement_top1_random"],
    )
    speedup = ref["latency_ms_p50"] / best_b1
    on_device = [
        (m, c) for m, r in measured.items() for c in r["cells"] if "device_images_per_s" in c
    ]
    device_peak = max(on_device, key=lambda mc: mc[1]["device_images_per_s"]) if on_device else None
    return {
        "judged": True,
        "best_mode_batch1": best,
        "batch1_p50_ms": best_b1,
        "batch1_met": best_b1 <= GOAL_BATCH1_MS,
        "speedup_vs_eager_fp32_batch1": speedup,
        "speedup_met": speedup >= GOAL_SPEEDUP,
        "peak_images_per_s": peak_cell["throughput_samples_sec"],
        "peak_at": f"{peak_mode}, batch {peak_cell['batch_size']}",
        "throughput_met": peak_cell["throughput_samples_sec"] >= GOAL_IMAGES_PER_S,
        "agreement_top1_best": agreement,
        "agreement_met": agreement >= GOAL_AGREEMENT,
        "peak_device_images_per_s": device_peak[1]["device_images_per_s"] if device_peak else None,
        "peak_device_at": (
            f"{device_peak[0]}, batch {device_peak[1]['batch_size']}" if device_peak else None
        ),
    }


def _cell(row: dict[str, Any] | None, batch_size: int) -> dict[str, Any] | None:
    for cell in (row or {}).get("cells", []):
        if cell["batch_size"] == batch_size:
            return dict(cell)
    return None


# --- serving -----------------------------------------------------------------------------------


def serve_check(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """A real server on the GPU with dynamic batching; 64 requests at once."""
    from service.bench.server import spawn_server

    images, labels = heldout_digits(args.digits)
    bodies = [_png(p) for p in images[:SERVE_REQUESTS]]
    env = {
        "MODEL_DIR": str(args.model_dir),
        "MODEL_VARIANT": args.variant,
        "MODEL_RUNTIME": "torch",
        "DEVICE": args.device,
        "MAX_BATCH_SIZE": "32",
        "BATCH_TIMEOUT_MS": "5",
        "MAX_QUEUE_SIZE": str(2 * SERVE_REQUESTS),
        "NUM_THREADS": "4",
        "DRAIN_SECONDS": "0",
    }
    log = out / "server.log"
    try:
        with spawn_server(env, log, timeout=args.serve_timeout) as server:
            with urllib.request.urlopen(f"{server.url}/model", timeout=10) as resp:
                model = json.load(resp)

            def post(body: bytes) -> dict[str, Any]:
                request = urllib.request.Request(
                    f"{server.url}/predict",
                    data=body,
                    headers={"Content-Type": "image/png"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as resp:
                        return {"status": resp.status, **json.load(resp)}
                except urllib.error.HTTPError as exc:
                    return {"status": exc.code}

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(SERVE_REQUESTS) as pool:
                answers = list(pool.map(post, bodies))
            wall = time.perf_counter() - started
    except Exception as exc:
        tail = log.read_text().strip().splitlines()[-5:] if log.is_file() else []
        return {"error": f"{type(exc).__name__}: {exc}", "server_log_tail": tail}
    ok = [a for a in answers if a["status"] == 200]
    batches = [int(a["timing"]["batch_size"]) for a in ok]
    correct = sum(
        a["predictions"][0]["label"] == str(int(y))
        for a, y in zip(answers, labels[:SERVE_REQUESTS], strict=True)
        if a["status"] == 200
    )
    return {
        "device": args.device,
        "execution": model.get("execution"),
        "requests": len(answers),
        "ok": len(ok),
        "statuses": sorted({a["status"] for a in answers}),
        "correct": correct,
        "batch_sizes_seen": sorted(set(batches)),
        "max_batch": max(batches, default=0),
        "wall_s": wall,
    }


# --- the report --------------------------------------------------------------------------------


def environment(device: str = "cuda") -> dict[str, Any]:
    """GPU, driver, CUDA, cuDNN, torch and Python versions."""
    import torch

    from service.config import available_cpus
    from service.engines.base import nvidia_driver_version

    on_gpu = device == "cuda"
    props = torch.cuda.get_device_properties(0) if on_gpu else None
    return {
        "gpu": torch.cuda.get_device_name(0) if on_gpu else f"no GPU ({platform.processor()})",
        "compute_capability": f"{props.major}.{props.minor}" if props else "-",
        "gpu_memory_gib": props.total_memory / 2**30 if props else 0.0,
        "driver": nvidia_driver_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": available_cpus(),
    }


def markdown(report: dict[str, Any]) -> str:
    """The summary as Markdown: environment, a latency/throughput table, parity, goals."""
    env = report["environment"]
    lines = [
        f"# GPU check: {env['gpu']}",
        "",
        f"{env['gpu']} (compute capability {env['compute_capability']}, "
        f"{env['gpu_memory_gib']:.0f} GiB), driver {env['driver']}, CUDA {env['cuda']}, "
        f"cuDNN {env['cudnn']}, torch {env['torch']}, Python {env['python']}; "
        f"{report['variant']} at {report['image_size']}x{report['image_size']}; "
        f"{report['date']}. Each mode ran in its own process; a call is the engine's whole "
        "`predict` (fp32 batch in from the host, logits back).",
        "",
    ]
    sizes = report["batch_sizes"]
    head = " | ".join(f"b{b} p50 ms / img/s" for b in sizes)
    lines += [f"| mode | how | start-up s | {head} |", "|" + " --- |" * (3 + len(sizes))]
    for mode, row in report["modes"].items():
        if "error" in row:
            lines.append(f"| {mode} | {MODES[mode].describe()} | failed: {row['error']} |")
            continue
        cells = []
        for b in sizes:
            c = _cell(row, b)
            cells.append(
                f"{c['latency_ms_p50']:.3f} / {c['throughput_samples_sec']:,.0f}" if c else "-"
            )
        lines.append(
            f"| {mode} | {row['options']} | {row['startup_s']:.1f} | {' | '.join(cells)} |"
        )
    device_rows = [
        (mode, row)
        for mode, row in report["modes"].items()
        if any("device_ms_p50" in c for c in row.get("cells", []))
    ]
    if device_rows:
        lines += [
            "",
            "The GPU's side alone (the batch already on the GPU, logits left there; CUDA-graph "
            "modes replay their graph): p50 ms / images/s.",
            "",
            f"| mode | {' | '.join(f'b{b}' for b in sizes)} |",
            "|" + " --- |" * (1 + len(sizes)),
        ]
        for mode, row in device_rows:
            cells = []
            for b in sizes:
                c = _cell(row, b)
                cells.append(
                    f"{c['device_ms_p50']:.3f} / {c['device_images_per_s']:,.0f}"
                    if c and "device_ms_p50" in c
                    else "-"
                )
            lines.append(f"| {mode} | {' | '.join(cells)} |")
    lines += [
        "",
        "Parity with fp32 (TF32 off): top-1 agreement and largest logit difference on "
        f"{report['digits_count']} held-out digits at {report['image_size']}x"
        f"{report['image_size']}, and on {RANDOM_INPUTS} seeded random inputs.",
        "",
        "| mode | agreement digits | max diff digits | agreement random | max diff random "
        "| digits top-1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for mode, row in report["modes"].items():
        if "parity" in row:
            p = row["parity"]
            lines.append(
                f"| {mode} | {p['agreement_top1_digits']:.4f} | "
                f"{p['max_abs_logit_diff_digits']:.4f} | {p['agreement_top1_random']:.4f} | "
                f"{p['max_abs_logit_diff_random']:.4f} | {p['accuracy_top1_digits']:.4f} |"
            )
    g = report["goals"]
    lines += ["", "## Goals", ""]
    if not g.get("judged"):
        lines.append(f"Not judged: {g.get('why')}.")
    else:
        lines += [
            f"- batch-1 p50 of the best mode ({g['best_mode_batch1']}): "
            f"{g['batch1_p50_ms']:.3f} ms (goal <= {GOAL_BATCH1_MS} ms): "
            f"{_met(g['batch1_met'])}",
            f"- speed-up over eager fp32 at batch 1: {g['speedup_vs_eager_fp32_batch1']:.1f}x "
            f"(goal >= {GOAL_SPEEDUP}x): {_met(g['speedup_met'])}",
            f"- peak throughput: {g['peak_images_per_s']:,.0f} images/s at {g['peak_at']} "
            f"(goal >= {GOAL_IMAGES_PER_S:,.0f}): {_met(g['throughput_met'])}",
            f"- top-1 agreement of the best mode with fp32: {g['agreement_top1_best']:.4f} "
            f"(goal >= {GOAL_AGREEMENT}): {_met(g['agreement_met'])}",
        ]
        if g.get("peak_device_images_per_s"):
            lines.append(
                f"- for reference, the GPU's side alone peaks at "
                f"{g['peak_device_images_per_s']:,.0f} images/s ({g['peak_device_at']}); the "
                "goals above are judged on whole calls, host copies included"
            )
    s = report["serve"]
    lines += ["", "## Serving", ""]
    if "error" in s:
        lines.append(f"The server check failed: {s['error']}")
    else:
        lines.append(
            f"`MODEL_RUNTIME=torch DEVICE={s['device']} MAX_BATCH_SIZE=32` ({s['execution']}): "
            f"{s['requests']} concurrent requests, {s['ok']} answered 200 "
            f"({s['correct']} labels right) in {s['wall_s']:.2f} s; batch sizes formed: "
            f"{s['batch_sizes_seen']} (largest {s['max_batch']})."
        )
    if report.get("tests_rc") is not None:
        lines += ["", f"`pytest -m gpu` exit status: {report['tests_rc']}."]
    return "\n".join(lines) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    """Run the check (or, with ``--worker``, one mode inside it)."""
    p = argparse.ArgumentParser(prog="python -m service.bench.gpu_check")
    p.add_argument("out", type=Path)
    p.add_argument("--model-dir", type=Path, default=Path("gpu-bundle/models"))
    p.add_argument("--variant", default="baseline")
    p.add_argument("--digits", type=Path, help="held-out digits (.npz); default: scikit-learn")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    p.add_argument("--min-time", type=float, default=0.5, help="seconds timed per cell")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--mode-timeout", type=float, default=120.0)
    p.add_argument("--compile-timeout", type=float, default=150.0)
    p.add_argument("--serve-timeout", type=float, default=120.0)
    p.add_argument("--tests-rc", type=int, help="the GPU tests' exit status, for the report")
    p.add_argument(
        "--device", choices=["cuda", "cpu"], default="cuda", help="cpu: rehearse the check"
    )
    p.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    p.add_argument("--logits", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_mode(args)))
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        from service.engines.base import cuda_unavailable

        print(f"gpu_check: {cuda_unavailable(torch)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report: dict[str, Any] = {
        "environment": environment(args.device),
        "variant": args.variant,
        "image_size": args.image_size,
        "batch_sizes": args.batch_sizes,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "digits_count": len(heldout_digits(args.digits)[1]),
        "tests_rc": args.tests_rc,
        "modes": {},
    }
    print(json.dumps(report["environment"]), flush=True)
    for mode in args.modes:
        limit = args.compile_timeout if MODES[mode].compile != "off" else args.mode_timeout
        row = spawn_mode(mode, args, work, limit)
        report["modes"][mode] = row
        print(json.dumps({k: v for k, v in row.items() if k != "logits_file"}), flush=True)
        # What is measured so far survives a run cut short by its caller's time limit.
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    reference = report["modes"].get(REFERENCE, {})
    for row in report["modes"].values():
        if "logits_file" in row and "logits_file" in reference:
            row["parity"] = parity(row, reference)
    report["goals"] = goals(report["modes"])
    report["serve"] = serve_check(args, args.out)
    for row in report["modes"].values():
        row.pop("logits_file", None)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    failed = [m for m, r in report["modes"].items() if "error" in r and MODES[m].compile == "off"]
    return 1 if failed or "error" in report["serve"] else 0


if __name__ == "__main__":
    sys.exit(main())
