"""Types shared by the techniques and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from service.data import TaskData
from service.manifest import Manifest
from service.train import TrainConfig


@dataclass
class BuildOptions:
    """Everything ``densenet build`` can be told."""

    task: str = "digits"
    out: Path = Path("models")
    weights: Path | None = None
    data: Path | None = None
    synsets: Path | None = None
    runtimes: tuple[str, ...] = ("torch", "onnxruntime")
    seed: int = 0
    image_size: int = 32
    epochs: int | None = None
    batch_size: int = 64
    calibration_images: int = 256
    prune_ratio: float = 0.35
    temperature: float = 4.0
    alpha: float = 0.7
    student: str | None = None
    trt_batch_opt: int = 32
    trt_batch_max: int = 128
    trt_image_size: int | None = None  # None: the task's input size


@dataclass
class BuildContext:
    """A build in progress: options, task data, and the baseline (teacher) when needed."""

    variant: str
    options: BuildOptions
    task: TaskData
    work_dir: Path
    teacher: nn.Module | None = None
    teacher_manifest: Manifest | None = None
    teacher_dir: Path | None = None

    def require_teacher(self) -> tuple[nn.Module, Manifest]:
        """The fp32 baseline model and manifest (the pipeline loads them for non-baselines)."""
        if self.teacher is None or self.teacher_manifest is None:
            raise RuntimeError(f"{self.variant} needs the baseline; build it first")
        return self.teacher, self.teacher_manifest

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
