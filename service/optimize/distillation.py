"""distilled: a compact student trained from the DenseNet-121 teacher (Hinton KD).

The student is picked by measurement unless ``--student`` names one: every candidate within
the compute budget (at most 1/3 of the teacher's MACs at 224x224) is timed at batch 1 and
probed with a short distillation run; the fastest whose probe accuracy is within
``PROBE_TOLERANCE`` of the best probe wins. The table of measurements is kept in the manifest.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from service.bench.core import time_callable
from service.evaluate import count_macs, model_logits, topk_accuracy
from service.modeling import build_architecture
from service.optimize.common import BuildContext, Built
from service.optimize.static_int8 import derived_from
from service.train import fit

RUNTIMES = ("torch", "onnxruntime")
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


def select_student(ctx: BuildContext, teacher: torch.nn.Module) -> tuple[str, list[dict[str, Any]]]:
    """Measure every candidate; return the chosen name and the table of measurements."""
    assert ctx.task.train is not None and ctx.task.val is not None
    num_classes = len(ctx.task.labels)
    budget = count_macs(teacher, 224) * MACS_BUDGET
    table = []
    for name, spec in CANDIDATES.items():
        model = build_architecture({**spec, "num_classes": num_classes})
        row: dict[str, Any] = {
            "student": name,
            "macs_224": count_macs(model, 224),
            "latency_ms_batch1_224_torch": round(_latency_ms(model, 224), 2),
        }
        row["within_budget"] = row["macs_224"] <= budget
        if row["within_budget"]:
            probe = ctx.train_config(f"probe {name}", epochs=PROBE_EPOCHS, patience=PROBE_EPOCHS)
            fit(model, ctx.task.train, ctx.task.val, probe, teacher=teacher)
            logits, labels = model_logits(model, ctx.task.val)
            row["probe_val_accuracy"] = round(topk_accuracy(logits, labels, 1), 4)
        table.append(row)
    eligible = [r for r in table if r["within_budget"]]
    best = max(r["probe_val_accuracy"] for r in eligible)
    good = [r for r in eligible if r["probe_val_accuracy"] >= best - PROBE_TOLERANCE]
    return min(good, key=lambda r: r["latency_ms_batch1_224_torch"])["student"], table


def build(ctx: BuildContext) -> Built:
    """Pick (or take) a student, then distill the baseline into it."""
    teacher, _ = ctx.require_teacher()
    ctx.require_data("distillation")
    assert ctx.task.train is not None and ctx.task.val is not None
    opts = ctx.options
    table: list[dict[str, Any]] = []
    if opts.student:
        if opts.student not in CANDIDATES:
            raise ValueError(f"unknown student {opts.student!r}; known: {', '.join(CANDIDATES)}")
        name, reason = opts.student, "chosen with --student"
    else:
        name, table = select_student(ctx, teacher)
        reason = (
            f"fastest measured batch-1 latency among students within {MACS_BUDGET:.2f}x the "
            f"teacher's MACs whose {PROBE_EPOCHS}-epoch probe accuracy is within "
            f"{PROBE_TOLERANCE:.0%} of the best probe"
        )
    architecture = {**CANDIDATES[name], "num_classes": len(ctx.task.labels), "student": name}
    model = build_architecture(architecture)
    config = ctx.train_config(f"distilled: {name}", epochs=opts.epochs or 40, lr=3e-3, patience=8)
    result = fit(model, ctx.task.train, ctx.task.val, config, teacher=teacher)
    return Built(
        model,
        "state_dict",
        architecture,
        model,
        derived_from(ctx),
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
