"""Everything ``densenet build`` can be told, torch-free so the CLI can read its defaults
without importing torch (the ONNX Runtime image has none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class BuildOptions:
    """Everything ``densenet build`` can be told."""

    task: str = "digits"
    out: Path = Path("models")
    weights: Path | None = None
    data: Path | None = None
    synsets: Path | None = None
    runtimes: tuple[str, ...] | None = None  # None: every runtime the variant builds
    seed: int = 0
    image_size: int = 32
    epochs: int | None = None
    batch_size: int | None = None  # None: the task's (64 for digits, 128 for fashion)
    train_images: int | None = None  # fashion: a seeded subset of the training images
    test_images: int | None = None  # fashion: a seeded subset of the test images
    calibration_images: int = 256
    prune_ratio: float = 0.35
    temperature: float = 4.0
    alpha: float = 0.7
    student: str | None = None
    trt_batch_opt: int = 32
    trt_batch_max: int = 128
    trt_image_size: int | None = None  # None: the task's input size
