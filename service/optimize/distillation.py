"""distilled: a compact student trained from the DenseNet-121 teacher (Hinton KD).

The student is picked by measurement unless ``--student`` names one: every candidate within
the compute budget (at most 1/3 of the teacher's MACs at 224x224) is timed at batch 1 and
probed with a short distillation run; the fastest whose probe accuracy is within
``PROBE_TOLERANCE`` of the best probe wins. The table of measurements is kept in the manifest.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from service.modeling import build_architecture
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.evaluate import count_macs, model_logits, topk_accuracy
from service.optimize.options import BuildOptions
from service.optimize.train import fit
from service.timing import time_callable

EXPORTERS: Mapping[str, Exporter] = {}  # the pipeline's fp32 ONNX export of the student
MACS_BUDGET = 1 / 3
PROBE_EPOCHS = 3
PROBE_TOLERANCE = 0.01

# torchvision architectures: narrower and shallower DenseNets, and one mobile network.
CANDIDATES: dict[str, dict[str, Any]] = {
    "densenet-narrow": {
        "name": "densenet",
        "growth_rate": 16,
        "block_config": [6, 12, 24, 16],
        "num_init_features": 32,
    },
    "densenet-shallow": {
        "name": "densenet",
        "growth_rate": 24,
        "block_config": [2, 4, 8, 6],
        "num_init_features": 48,
    },
    "densenet-tiny": {
        "name": "densenet",
        "growth_rate": 12,
        "block_config": [3, 6, 12, 8],
        "num_init_features": 24,
    },
    "mobilenet_v3_small": {"name": "mobilenet_v3_small"},
}


def _latency_ms(model: torch.nn.Module, size: int) -> float:
    """Median batch-1 latency of eager torch (a proxy that needs no export per candidate)."""
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        times = time_callable(lambda: model.eval()(x), min_time_s=0.0, min_iters=10)
    return 1e3 * statistics.median(times)


# The student learns from the teacher on training images.
NEEDS_DATA: str | None = "distillation"


def preflight(options: BuildOptions) -> None:
    """An unknown ``--student`` fails before any data or source is loaded."""
    if options.student is not None and options.student not in CANDIDATES:
        raise ValueError(f"unknown student {options.student!r}; known: {', '.join(CANDIDATES)}")


def choose_student(table: list[dict[str, Any]]) -> str:
    """The fastest candidate within the budget whose probe is within tolerance of the best.

    Raises:
        ValueError: no candidate fits the MACs budget (the table says how far each is).
    """
    eligible = [r for r in table if r["within_budget"]]
    if not eligible:
        sizes = ", ".join(f"{r['student']} {r['macs_224'] / 1e9:.2f}" for r in table)
        raise ValueError(
            f"no distillation student fits the budget of {MACS_BUDGET:.2f}x the teacher's MACs "
            f"(GMACs at 224: {sizes}); name one with --student"
        )
    best = max(r["probe_val_accuracy"] for r in eligible)
    good = [r for r in eligible if r["probe_val_accuracy"] >= best - PROBE_TOLERANCE]
    name: str = min(good, key=lambda r: r["latency_ms_batch1_224_torch"])["student"]
    return name


def select_student(
    ctx: BuildContext, teacher: torch.nn.Module, budget_fraction: float = MACS_BUDGET
) -> tuple[str, list[dict[str, Any]]]:
    """Measure every candidate; return the chosen name and the table of measurements.

    Candidates over ``budget_fraction`` of the teacher's MACs are timed but not probed.
    """
    assert ctx.task.train is not None and ctx.task.val is not None
    num_classes = len(ctx.task.labels)
    budget = count_macs(teacher, 224) * budget_fraction
    models = {
        name: build_architecture({**spec, "num_classes": num_classes})
        for name, spec in CANDIDATES.items()
    }
    table: list[dict[str, Any]] = []
    for name, model in models.items():
        macs = count_macs(model, 224)
        table.append({"student": name, "macs_224": macs, "within_budget": macs <= budget})
    if not any(r["within_budget"] for r in table):
        choose_student(table)  # raises, naming each candidate's MACs
    probe_images: Dataset[Any] = ctx.task.train
    limit = ctx.task.schedule.get("probe", {}).get("images")
    if limit is not None and limit < len(probe_images):  # type: ignore[arg-type]
        probe_images = Subset(probe_images, range(limit))  # the split is already shuffled
    for row in table:
        model = models[row["student"]]
        row["latency_ms_batch1_224_torch"] = round(_latency_ms(model, 224), 2)
        if row["within_budget"]:
            probe = ctx.train_config(
                f"probe {row['student']}", "probe", epochs=PROBE_EPOCHS, patience=PROBE_EPOCHS
            )
            fit(model, probe_images, ctx.task.val, probe, teacher=teacher)
            logits, labels = model_logits(model, ctx.task.val)
            row["probe_val_accuracy"] = round(topk_accuracy(logits, labels, 1), 4)
            row["probe_epochs"] = probe.epochs
            row["probe_images"] = len(probe_images)  # type: ignore[arg-type]
    return choose_student(table), table


def build(ctx: BuildContext) -> Built:
    """Pick (or take) a student, then distill the source (the teacher) into it."""
    teacher, _ = ctx.require_source()
    assert ctx.task.train is not None and ctx.task.val is not None
    opts = ctx.options
    table: list[dict[str, Any]] = []
    if opts.student:
        name, reason = opts.student, "chosen with --student"
    else:
        name, table = select_student(ctx, teacher)
        reason = (
            f"fastest measured batch-1 latency among students within {MACS_BUDGET:.2f}x the "
            f"teacher's MACs whose short probe's validation accuracy is within "
            f"{PROBE_TOLERANCE:.0%} of the best probe"
        )
    architecture = {**CANDIDATES[name], "num_classes": len(ctx.task.labels), "student": name}
    model = build_architecture(architecture)
    config = ctx.train_config(f"distilled: {name}", "distilled", epochs=40, lr=3e-3, patience=8)
    result = fit(model, ctx.task.train, ctx.task.val, config, teacher=teacher)
    return Built(
        model,
        "state_dict",
        architecture,
        model,
        ctx.derived_from(),
        details={"student": name},
        build_settings={
            "student": name,
            "student_choice": reason,
            "candidates": table,
            "distillation": config.as_dict(distilling=True),
            "loss": "alpha*T^2*KL(teacher||student) + (1-alpha)*CE",
            **result.summary(),
        },
    )
