"""What the pipeline hands a technique and what a technique hands back.

``BuildContext`` is one build in progress (with its ``BuildOptions``); ``Built`` is a
technique's result; ``Exporter`` writes one runtime's artifact of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from service.manifest import Manifest, RuntimeArtifact
from service.optimize.data import TaskData
from service.optimize.options import BuildOptions
from service.optimize.train import TrainConfig


@dataclass
class BuildContext:
    """A build in progress: options, task data, and the source model it is made from.

    ``source`` is the fp32 model of the variant's table ``source`` (the baseline for every
    variant but the baseline itself): what int8 quantizes, what pruning cuts, what TensorRT
    compiles, and the teacher that pruning's fine-tuning and distillation learn from.
    """

    variant: str
    options: BuildOptions
    task: TaskData
    source: nn.Module | None = None
    source_manifest: Manifest | None = None

    def require_source(self) -> tuple[nn.Module, Manifest]:
        """The source's fp32 model and manifest (the pipeline loads them before ``build``)."""
        if self.source is None or self.source_manifest is None:
            raise RuntimeError(f"{self.variant} is made from another variant; none was loaded")
        return self.source, self.source_manifest

    def derived_from(self) -> dict[str, Any]:
        """The manifest's ``source_weights`` entry: which artifact this variant was made from."""
        _, manifest = self.require_source()
        return {
            "kind": "derived",
            "from": manifest.variant,
            "sha256": manifest.artifact("torch").sha256,
        }

    def train_config(self, desc: str, **settings: Any) -> TrainConfig:
        """A training run with the options' batch size, seed and distillation temperature and
        alpha; ``settings`` (epochs, lr, patience...) set or override the rest."""
        opts = self.options
        chosen: dict[str, Any] = {
            "batch_size": opts.batch_size,
            "seed": opts.seed,
            "temperature": opts.temperature,
            "alpha": opts.alpha,
        }
        return TrainConfig(desc=desc, **{**chosen, **settings})

    def require_data(self, what: str) -> None:
        """Fail clearly when a technique needs training images and the task has none."""
        if self.task.train is None or self.task.val is None:
            raise ValueError(
                f"{self.variant} needs labelled training images for {what}: for --task "
                f"{self.options.task} pass --data DIR (train/ and val/ with one folder per class)"
            )


@dataclass
class Built:
    """What a technique produced; the pipeline saves, measures and describes it."""

    model: nn.Module
    fmt: str
    architecture: dict[str, Any]
    fp32_model: nn.Module
    source_weights: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    build_settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class Exporter(Protocol):
    """Writes one runtime's artifact for a built variant into ``work`` and describes it.

    ``torch_logits`` are the torch model's logits on the held-out images (None without them),
    for parity checks that compare against the torch artifact.
    """

    def __call__(
        self, ctx: BuildContext, built: Built, work: Path, torch_logits: torch.Tensor | None
    ) -> RuntimeArtifact: ...
