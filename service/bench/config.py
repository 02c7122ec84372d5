"""What ``densenet bench`` can be told; the CLI's defaults are these fields' defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BenchConfig:
    """What ``densenet bench`` was asked to do."""

    model_dir: Path = Path("models")
    out: Path = Path("results")
    variants: list[str] | None = None
    runtimes: list[str] | None = None
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    image_size: int = 224
    device: str = "cpu"
    threads: int | None = None
    repeats: int = 3  # the headline's range is the worst and best of these
    min_time: float = 1.0
    min_iters: int = 5
    profile: bool = True
    readme: Path | None = None
