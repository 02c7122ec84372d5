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
from service.optimize.evaluate import collect_logits
from service.optimize.options import BuildOptions
from service.optimize.train import TrainConfig


@dataclass
class BuildContext:
    """A build in progress: options, task data, and the models it is made from.

    ``source`` is the fp32 model of the variant's table ``source``: what int8 quantizes, what
    pruning cuts, what TensorRT compiles. ``teacher`` is the table's ``teacher`` when it differs
    from the source (``distilled-pruned`` cuts the student and is fine-tuned by the baseline);
    otherwise the source teaches.
    """

    variant: str
    options: BuildOptions
    task: TaskData
    source: nn.Module | None = None
    source_manifest: Manifest | None = None
    teacher: nn.Module | None = None
    teacher_manifest: Manifest | None = None
    # Top-1 class of every test image per artifact label (torch, onnxruntime, openvino-bf16...)
    predictions: dict[str, torch.Tensor] = field(default_factory=dict)
    test_labels: torch.Tensor | None = None
    _test_logits: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def test_logits(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """A torch model's logits and the labels on the test split, computed once per model
        per build (a build compares several artifacts with the same source)."""
        if self.task.test is None:
            raise RuntimeError(f"task {self.task.name!r} has no test split")
        key = id(model)
        if key not in self._test_logits:
            self._test_logits[key], self.test_labels = collect_logits(model.eval(), self.task.test)
        assert self.test_labels is not None
        return self._test_logits[key], self.test_labels

    def record_predictions(self, label: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep an artifact's top-1 classes on the test split, for the paired statistics.

        Chosen by ``topk`` as the accuracy is, so a tie (int8 logits can tie exactly) is
        broken the same way in both."""
        self.predictions[label] = logits.topk(1, dim=1).indices[:, 0].to(torch.int16)
        self.test_labels = labels

    def require_source(self) -> tuple[nn.Module, Manifest]:
        """The source's fp32 model and manifest (the pipeline loads them before ``build``)."""
        if self.source is None or self.source_manifest is None:
            raise RuntimeError(f"{self.variant} is made from another variant; none was loaded")
        return self.source, self.source_manifest

    def require_teacher(self) -> nn.Module:
        """The model that teaches fine-tuning or distillation: the teacher, else the source."""
        return self.teacher if self.teacher is not None else self.require_source()[0]

    def derived_from(self) -> dict[str, Any]:
        """The manifest's ``source_weights`` entry: which artifact this variant was made from.

        ``chain`` lists every source back to the one made from scratch, nearest first, each
        as (variant, sha256 of its torch artifact); ``teacher`` names a separate teacher.
        """
        _, manifest = self.require_source()
        sha = manifest.artifact("torch").sha256
        out: dict[str, Any] = {
            "kind": "derived",
            "from": manifest.variant,
            "sha256": sha,
            "chain": [{"variant": manifest.variant, "sha256": sha}, *source_chain(manifest)],
        }
        if self.teacher_manifest is not None:
            out["teacher"] = {
                "variant": self.teacher_manifest.variant,
                "sha256": self.teacher_manifest.artifact("torch").sha256,
            }
        return out

    def train_config(self, desc: str, role: str, **settings: Any) -> TrainConfig:
        """A training run with the options' seed and distillation temperature and alpha.

        ``settings`` (epochs, lr, patience...) are the technique's defaults; the task's
        schedule for ``role`` overrides them, and ``--epochs``/``--batch-size`` override both.
        """
        opts = self.options
        chosen: dict[str, Any] = {
            "batch_size": self.task.batch_size,
            "seed": opts.seed,
            "temperature": opts.temperature,
            "alpha": opts.alpha,
        }
        scheduled = {k: v for k, v in self.task.schedule.get(role, {}).items() if k != "images"}
        merged = {**chosen, **settings, **scheduled}
        if opts.epochs is not None:
            merged["epochs"] = opts.epochs
        if opts.batch_size is not None:
            merged["batch_size"] = opts.batch_size
        return TrainConfig(desc=desc, **merged)

    def require_data(self, what: str) -> None:
        """Fail clearly when a technique needs training images and the task has none."""
        if self.task.train is None or self.task.val is None:
            raise ValueError(
                f"{self.variant} needs labelled training images for {what}: for --task "
                f"{self.options.task} pass --data DIR (train/ and val/ with one folder per class)"
            )


def source_chain(manifest: Manifest) -> list[dict[str, str]]:
    """The sources ``manifest``'s variant was made from, nearest first (empty for a variant
    made from scratch); manifests written before chains were recorded give their one source."""
    weights = manifest.source_weights
    if weights.get("kind") != "derived":
        return []
    if "chain" in weights:
        return list(weights["chain"])
    return [{"variant": weights["from"], "sha256": weights["sha256"]}]


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
