"""Benchmark outputs: CSV + JSON, plots, REPORT.md, TensorBoard scalars, README block."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from service.bench.markdown import table
from service.manifest import available, read_manifest

COLUMNS = [
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
    "latency_ms_p50_min",
    "latency_ms_p50_max",
    "throughput_samples_sec",
    "speedup_vs_baseline",
    "speedup_vs_baseline_min",
    "speedup_vs_baseline_max",
    "peak_rss_mb",
    "peak_cuda_mb",
    "model_size_mb",
    "size_reduction_vs_baseline",
    "params",
    "macs",
    "accuracy_top1",
    "accuracy_top1_ci_low",
    "accuracy_top1_ci_high",
    "accuracy_top5",
    "accuracy_delta_vs_baseline",
    "accuracy_delta_ci_low",
    "accuracy_delta_ci_high",
    "accuracy_delta_p_value",
    "accuracy_delta_significant",
    "discordant_right_vs_baseline",
    "discordant_wrong_vs_baseline",
    "test_images",
    "accuracy_dataset",
    "accuracy_image_size",
    "agreement_top1_vs_baseline",
    "accuracy_not_measured",
    "threads",
    "repeats",
    "iterations",
    "task",
]


README_START = "<!-- benchmark:start -->"
README_END = "<!-- benchmark:end -->"
MAX_ACCURACY_LOSS = 0.01


def _label(row: dict[str, Any]) -> str:
    return f"{row['model_variant']}/{row['runtime']}"


def write_tables(document: dict[str, Any], out: Path) -> None:
    """``benchmark_results.csv`` and ``benchmark_results.json``."""
    (out / "benchmark_results.json").write_text(json.dumps(document, indent=2) + "\n")
    with (out / "benchmark_results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in document["rows"]:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})


def write_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Latency vs batch size, accuracy vs throughput, model size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    series: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        series.setdefault(_label(row), []).append(row)

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, items in sorted(series.items()):
        ordered = sorted(items, key=lambda r: r["batch_size"])
        ax.plot(
            [r["batch_size"] for r in ordered],
            [r["latency_ms_p50"] for r in ordered],
            marker="o",
            label=label,
        )
    size = rows[0]["image_size"]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="p50 latency per batch (ms)",
        title=f"Latency vs batch size ({size}x{size})",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "latency_vs_batch.png"))

    fig, ax = plt.subplots(figsize=(9, 5))
    markers = {
        "torch": "o",
        "onnxruntime": "s",
        "openvino": "D",
        "openvino-bf16": "d",
        "tensorrt": "^",
    }
    for label, items in sorted(series.items()):
        best = max(items, key=lambda r: r["throughput_samples_sec"])
        if best.get("accuracy_top1") is None:
            continue
        acc = 100 * best["accuracy_top1"]
        yerr = (
            [
                [acc - 100 * best["accuracy_top1_ci_low"]],
                [100 * best["accuracy_top1_ci_high"] - acc],
            ]
            if best.get("accuracy_top1_ci_low") is not None
            else None
        )
        ax.errorbar(
            best["throughput_samples_sec"],
            acc,
            yerr=yerr,
            fmt=markers.get(best["runtime"], "o"),
            markersize=7,
            capsize=3,
            label=f"{label} (b{best['batch_size']})",
        )
    ax.set(
        xscale="log",
        xlabel="best throughput over batch sizes (images/s)",
        ylabel="top-1 accuracy (%)",
        title="Accuracy (95 % interval) vs throughput, on the artifacts' held-out split",
    )
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    paths.append(_save(fig, out / "accuracy_vs_throughput.png"))

    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = {_label(r): r["model_size_mb"] for r in rows}
    ax.barh(list(sizes), list(sizes.values()))
    ax.set(xlabel="artifact size (MB)", title="Model file size")
    fig.tight_layout()
    paths.append(_save(fig, out / "model_size.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_tensorboard(rows: list[dict[str, Any]], out: Path) -> None:
    """Scalars per variant/runtime, stepped by batch size, under ``out/tensorboard``."""
    from torch.utils.tensorboard import SummaryWriter

    for label in sorted({_label(r) for r in rows}):
        writer = SummaryWriter(log_dir=str(out / "tensorboard" / label.replace("/", "_")))
        for row in sorted((r for r in rows if _label(r) == label), key=lambda r: r["batch_size"]):
            step = row["batch_size"]
            writer.add_scalar("latency_ms_p50", row["latency_ms_p50"], step)
            writer.add_scalar("latency_ms_p99", row["latency_ms_p99"], step)
            writer.add_scalar("throughput_samples_sec", row["throughput_samples_sec"], step)
            writer.add_scalar("speedup_vs_baseline", row["speedup_vs_baseline"], step)
            writer.add_scalar("peak_rss_mb", row["peak_rss_mb"], step)
        writer.close()


def repeat_ratios(ref: dict[str, Any], row: dict[str, Any]) -> list[float]:
    """``ref``'s p50 over ``row``'s in each repeat: both cells were timed in the same pass over
    the matrix, so each ratio is what one run of the benchmark would have reported."""
    pairs = zip(ref["latency_ms_p50_repeats"], row["latency_ms_p50_repeats"], strict=True)
    return [a / b for a, b in pairs]


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def top1_cell(row: dict[str, Any]) -> str:
    """``91.23 (90.66-91.77)``: top-1 % with its 95 % interval when measured per image."""
    acc = row.get("accuracy_top1")
    if acc is None:
        return "—"
    if row.get("accuracy_top1_ci_low") is None:
        return f"{100 * acc:.2f}"
    return (
        f"{100 * acc:.2f} ({100 * row['accuracy_top1_ci_low']:.2f}-"
        f"{100 * row['accuracy_top1_ci_high']:.2f})"
    )


def delta_cell(row: dict[str, Any]) -> str:
    """``-0.42 [-0.71, -0.13] *``: Δ top-1 in points, its paired 95 % interval, and a star
    when the exact McNemar test finds it significant (p < 0.05)."""
    delta = row.get("accuracy_delta_vs_baseline")
    if delta is None:
        return "—"
    if row.get("accuracy_delta_ci_low") is None:
        return f"{100 * delta:+.2f}"
    star = " *" if row.get("accuracy_delta_significant") else ""
    if row.get("discordant_right_vs_baseline", 0) + row.get("discordant_wrong_vs_baseline", 0) == 0:
        return "±0 (same top-1 on every image)"
    return (
        f"{100 * delta:+.2f} [{100 * row['accuracy_delta_ci_low']:+.2f}, "
        f"{100 * row['accuracy_delta_ci_high']:+.2f}]{star}"
    )


def within_one_point(row: dict[str, Any]) -> bool:
    """Whether a variant provably loses less than ``MAX_ACCURACY_LOSS``: the lower end of its
    paired 95 % interval is above -1 point. A difference the test cannot tell from zero counts
    as what its interval allows, not as zero; without per-image figures, the point estimate."""
    delta = row.get("accuracy_delta_vs_baseline")
    if delta is None:
        return False
    low = row.get("accuracy_delta_ci_low")
    return bool((delta if low is None else low) >= -MAX_ACCURACY_LOSS)


def speedup(row: dict[str, Any]) -> str:
    """``16.71x (14.30-18.02x)``: the median ratio, then the worst and best repeat's."""
    median = f"{row['speedup_vs_baseline']:.2f}x"
    if row.get("repeats", 1) < 2 or "speedup_vs_baseline_min" not in row:
        return median
    return f"{median} ({row['speedup_vs_baseline_min']:.2f}-{row['speedup_vs_baseline_max']:.2f}x)"


def headline(rows: list[dict[str, Any]]) -> str:
    """Table at the smallest measured batch size (batch 1 in a full run): the ratios a user
    chooses on. The header names the batch size the figures are for."""
    batch = min(r["batch_size"] for r in rows)
    header = [
        "variant",
        "runtime",
        f"p50 ms (b{batch})",
        f"speed-up vs baseline (b{batch}): median (worst-best repeat)",
        "best images/s",
        "size MB",
        "size reduction",
        "top-1 % (95 % CI)",
        "Δ top-1 pts [95 % CI] (* p<0.05)",
    ]
    cells = []
    for row in sorted(
        (r for r in rows if r["batch_size"] == batch), key=lambda r: -r["speedup_vs_baseline"]
    ):
        best = max(r["throughput_samples_sec"] for r in rows if _label(r) == _label(row))
        cells.append(
            [
                row["model_variant"],
                row["runtime"],
                f"{row['latency_ms_p50']:.2f}",
                speedup(row),
                f"{best:.0f}",
                f"{row['model_size_mb']:.1f}",
                f"{row['size_reduction_vs_baseline']:.2f}x",
                top1_cell(row),
                delta_cell(row),
            ]
        )
    return table(header, cells)


def aims(rows: list[dict[str, Any]]) -> list[str]:
    """The best CPU variant within 1 point of baseline accuracy, vs both reference points."""
    batch1 = [r for r in rows if r["batch_size"] == 1 and r["device"] == "cpu"]
    ort_base = next((r for r in batch1 if _label(r) == "baseline/onnxruntime"), None)
    eligible = [r for r in batch1 if within_one_point(r)]
    if not eligible:
        return [
            f"No variant measured at batch 1 in this run loses less than "
            f"{100 * MAX_ACCURACY_LOSS:.0f} point of top-1 at 95 % confidence."
        ]
    best = max(eligible, key=lambda r: r["speedup_vs_baseline"])
    repeats = best.get("repeats", 1)
    spread = (
        f" (median of {repeats} repeats; {best['speedup_vs_baseline_min']:.2f}x in the worst, "
        f"{best['speedup_vs_baseline_max']:.2f}x in the best)"
        if repeats > 1 and "speedup_vs_baseline_min" in best
        else ""
    )
    out = [
        f"Best CPU variant within {100 * MAX_ACCURACY_LOSS:.0f} point of baseline accuracy "
        "(the lower end of its paired 95 % interval above -1 point): "
        f"**{_label(best)}** — {best['speedup_vs_baseline']:.2f}x the baseline's batch-1 speed "
        f"(torch eager fp32){spread}, Δ top-1 {delta_cell(best)} pts"
        + (
            f" (exact McNemar p = {best['accuracy_delta_p_value']:.2g})."
            if best.get("accuracy_delta_p_value") is not None
            else "."
        )
    ]
    if ort_base is not None:
        ratio = ort_base["latency_ms_p50"] / best["latency_ms_p50"]
        line = f"Against ONNX Runtime running the unmodified model: {ratio:.2f}x at batch 1"
        if spread and "latency_ms_p50_repeats" in best:
            per_repeat = repeat_ratios(ort_base, best)
            line += f" ({min(per_repeat):.2f}x-{max(per_repeat):.2f}x over the repeats)"
        out.append(line + ".")
    return out


# The accuracy costs commonly quoted for each technique, set against what the run measured.
QUOTED_LOSS = {
    "quantized": ("quantization", "minimal"),
    "quantized-dynamic": ("quantization", "minimal"),
    "distilled-quantized": ("distillation, then quantization", "5-10 % + minimal"),
    "pruned": ("pruning", "2-5 %"),
    "distilled-pruned": ("distillation, then pruning", "5-10 % + 2-5 %"),
    "distilled": ("distillation", "5-10 %"),
}


def quoted_vs_measured(rows: list[dict[str, Any]]) -> str:
    """Each technique's commonly quoted accuracy loss beside the Δ top-1 against the baseline
    this run measured on ONNX Runtime at the smallest batch, with its interval (a composed
    variant's Δ includes both of its techniques)."""
    batch = min(r["batch_size"] for r in rows)
    served = {
        r["model_variant"]: r
        for r in rows
        if r["batch_size"] == batch and r["runtime"] == "onnxruntime"
    }
    cells = [
        [technique, quoted, variant, delta_cell(served[variant]), _significance(served[variant])]
        for variant, (technique, quoted) in QUOTED_LOSS.items()
        if variant in served and served[variant].get("accuracy_delta_vs_baseline") is not None
    ]
    if not cells:
        return "No measured accuracy to set against the quoted costs."
    header = ["technique", "quoted loss", "variant", "measured Δ top-1 pts [95 % CI]", "McNemar"]
    return table(header, cells)


def _significance(row: dict[str, Any]) -> str:
    p = row.get("accuracy_delta_p_value")
    if p is None:
        return "—"
    return f"p = {p:.2g}" + (" (significant)" if row.get("accuracy_delta_significant") else "")


def full_table(rows: list[dict[str, Any]]) -> str:
    """Every cell."""
    header = [
        "variant",
        "runtime",
        "batch",
        "p50 ms",
        "p90",
        "p99",
        "p50 range over repeats",
        "images/s",
        "speed-up",
        "peak RSS MB",
        "MACs (G)",
        "params (M)",
    ]
    cells = [
        [
            r["model_variant"],
            r["runtime"],
            r["batch_size"],
            f"{r['latency_ms_p50']:.2f}",
            f"{r['latency_ms_p90']:.2f}",
            f"{r['latency_ms_p99']:.2f}",
            f"{r['latency_ms_p50_min']:.2f}-{r['latency_ms_p50_max']:.2f}",
            f"{r['throughput_samples_sec']:.1f}",
            f"{r['speedup_vs_baseline']:.2f}x",
            f"{r['peak_rss_mb']:.0f}",
            _fmt(r.get("macs") and r["macs"] / 1e9, ".3f"),
            _fmt(r.get("params") and r["params"] / 1e6, ".2f"),
        ]
        for r in rows
    ]
    return table(header, cells)


def machine_line(machine: dict[str, Any]) -> str:
    """One line of context for every absolute figure."""
    return (
        f"{machine['cpu']}, {machine['cpus_available']} CPUs available, "
        f"{machine['threads']} threads, device {machine['device']}; Python {machine['python']}, "
        f"torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, "
        f"openvino {machine.get('openvino')}; {machine['date']}"
    )


def build_notes(model_dir: Path) -> list[str]:
    """What each build chose and noted, from its manifest (student, pruning ratio, caveats)."""
    lines = []
    for variant in available(model_dir):
        manifest = read_manifest(model_dir / variant)
        settings = manifest.build_settings
        if "student" in settings:
            lines.append(
                f"- **{variant}**: student `{settings['student']}` ({settings['student_choice']})."
            )
            for row in settings.get("candidates", []):
                probe = row.get("probe_val_accuracy")
                lines.append(
                    f"  - `{row['student']}`: {row['macs_224'] / 1e9:.3f} GMACs at 224, "
                    f"{row['latency_ms_batch1_224_torch']:.1f} ms batch-1 (torch), "
                    + ("over the MACs budget" if probe is None else f"probe val acc {probe:.3f}")
                )
        if "pruning_ratio" in settings:
            lines.append(
                f"- **{variant}**: channel pruning ratio {settings['pruning_ratio']}, "
                f"{manifest.metrics['macs_224'] / 1e9:.3f} GMACs at 224."
            )
        lines.extend(f"- **{variant}**: {note}" for note in manifest.notes)
    return lines


def write_report(
    document: dict[str, Any], plots: list[Path], out: Path, model_dir: Path | None = None
) -> Path:
    """``REPORT.md`` with the headline, full table, plots and machine description."""
    rows, machine = document["rows"], document["machine"]
    datasets = sorted({r["accuracy_dataset"] for r in rows if r.get("accuracy_dataset")})
    missing = sorted(
        {
            f"{_label(r)}: {r['accuracy_not_measured']}"
            for r in rows
            if r.get("accuracy_top1") is None and r.get("accuracy_not_measured")
        }
    )
    size = rows[0]["image_size"]
    parts = [
        "# Benchmark report",
        f"Machine: {machine_line(machine)}.",
        f"Speed: every variant timed at {size}x{size}, one process per cell, "
        f"{rows[0]['repeats']} interleaved repeats (p50 is the median over repeats). "
        "Ratios are against the baseline (torch eager fp32) measured in this same run.",
        "Accuracy: measured by each build on its task's held-out split"
        + (f" ({'; '.join(datasets)})" if datasets else "")
        + f", at the task's native input size ({rows[0].get('accuracy_image_size')}x"
        f"{rows[0].get('accuracy_image_size')}), for the runtime's own artifact.",
        f"## Headline (batch {min(r['batch_size'] for r in rows)})",
        headline(rows),
        *aims(rows),
        "Intervals: Wilson 95 % for each top-1; for each Δ, the paired (Wald) 95 % interval "
        "against the baseline (torch eager fp32) on the same test images, and a star where the "
        "exact McNemar test on the images only one of the two gets right gives p < 0.05.",
        "## Accuracy cost: quoted against measured",
        quoted_vs_measured(rows),
        "## Every cell",
        full_table(rows),
        *[f"![{p.stem}]({p.name})" for p in plots],
    ]
    notes = build_notes(model_dir) if model_dir is not None else []
    if notes:
        parts += ["## What the builds chose", "\n".join(notes)]
    skipped = [
        f"{s['model_variant']}/{s['runtime']} at batch {s['batch_size']}: skipped, {s['reason']}"
        for s in document.get("skipped", [])
    ]
    if missing or skipped:
        parts += ["## Not measured", *[f"- {m}" for m in [*skipped, *missing]]]
    path = out / "REPORT.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def update_readme(readme: Path, document: dict[str, Any]) -> None:
    """Replace the block between the README's benchmark markers with this run's headline."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    block = "\n\n".join(
        [
            README_START,
            f"Measured by `make benchmark` on: {machine_line(document['machine'])}.",
            headline(document["rows"]),
            *aims(document["rows"]),
            README_END,
        ]
    )
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    readme.write_text(pattern.sub(lambda _: block, text))


def write_all(
    document: dict[str, Any], out: Path, model_dir: Path | None, readme: Path | None
) -> None:
    """Every output of a run: tables, plots, TensorBoard, REPORT.md, and the README block."""
    write_tables(document, out)
    plots = write_plots(document["rows"], out)
    write_tensorboard(document["rows"], out)
    write_report(document, plots, out, model_dir)
    if readme is not None:
        update_readme(readme, document)
