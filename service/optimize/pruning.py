"""pruned, distilled-pruned: structured channel pruning with torch-pruning, then distillation
fine-tuning (by the source, or by the table's ``teacher``: the baseline for the student).

torch-pruning's dependency graph keeps DenseNet's concatenations consistent: removing an output
channel of one layer removes the matching input channel of every later layer that reads it.
The classifier's outputs are kept. The saved artifact is an ordinary (smaller) state dict; the
server rebuilds the narrower modules from its shapes, without torch-pruning.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch

from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.options import BuildOptions
from service.optimize.train import fit

EXPORTERS: Mapping[str, Exporter] = {}  # the pipeline's fp32 ONNX export of the pruned model


# The pruned model is fine-tuned on training images.
NEEDS_DATA: str | None = "fine-tuning"


def preflight(options: BuildOptions) -> None:
    """Refuse a ratio torch-pruning cannot apply before any data or source is loaded."""
    if not 0.0 < options.prune_ratio < 1.0:
        raise ValueError(f"--prune-ratio must be between 0 and 1, not {options.prune_ratio}")


def prune(model: torch.nn.Module, ratio: float, image_size: int) -> torch.nn.Module:
    """Remove ``ratio`` of the channels of every prunable group (L2 magnitude importance)."""
    import torch_pruning as tp

    classifier = getattr(model, "classifier", None)
    pruner = tp.pruner.MetaPruner(
        model,
        torch.zeros(1, 3, image_size, image_size),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[classifier] if classifier is not None else [],
    )
    pruner.step()
    return model


def build(ctx: BuildContext) -> Built:
    """Prune a copy of the source, then fine-tune it with the teacher (the source, unless the
    table names another) as teacher."""
    source, manifest = ctx.require_source()
    teacher = ctx.require_teacher()
    assert ctx.task.train is not None and ctx.task.val is not None
    opts = ctx.options
    model = prune(copy.deepcopy(source), opts.prune_ratio, ctx.task.preprocess.crop_size)
    config = ctx.train_config(
        f"{ctx.variant}: fine-tune (KD)", "finetune", epochs=15, lr=1e-3, patience=4
    )
    result = fit(model, ctx.task.train, ctx.task.val, config, teacher=teacher)
    architecture = {**manifest.architecture, "channel_pruning_ratio": opts.prune_ratio}
    return Built(
        model,
        "state_dict",
        architecture,
        model,
        ctx.derived_from(),
        details={"pruning": "torch-pruning MetaPruner, GroupMagnitudeImportance(p=2)"},
        build_settings={
            "pruning_ratio": opts.prune_ratio,
            "ignored_layers": ["classifier"],
            "fine_tune": config.as_dict(distilling=True),
            **result.summary(),
        },
    )
