"""The interface every runtime implements: load once, then map a batch to logits."""

from __future__ import annotations

import abc
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from service.manifest import Manifest


class Engine(abc.ABC):
    """Runs one variant's artifact on one runtime.

    Lifecycle: ``__init__`` (cheap) -> ``load()`` -> ``warmup()`` -> ``predict()`` many times.
    ``predict`` is called from ENGINE_WORKERS threads (one by default), each call
    parallelised inside by the runtime: ONNX Runtime sessions and torch modules in inference
    mode take concurrent calls; the settings keep TensorRT at one.
    """

    runtime: ClassVar[str]
    batch_max: int | None = None  # the largest batch the artifact accepts (None: any)

    def __init__(
        self, manifest: Manifest, path: Path, *, threads: int, device: str = "auto"
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.threads = threads
        self.requested_device = device
        self.device = "cpu"

    @abc.abstractmethod
    def load(self) -> None:
        """Load the artifact; may be slow. Raises ConfigurationError subclasses when it can't."""

    @abc.abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 NCHW batch -> float32 logits of shape (N, num_classes)."""

    def input_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """The NCHW shape this artifact is served at."""
        size = self.manifest.preprocess.crop_size
        return (batch_size, 3, size, size)

    def refusal(self, batch_size: int, image_size: int) -> str | None:
        """Why this artifact cannot take a ``batch_size`` batch of ``image_size`` images, or
        None when it can (an engine built for fixed shapes overrides this)."""
        if self.batch_max is not None and batch_size > self.batch_max:
            return (
                f"batch {batch_size} exceeds the engine's maximum ({self.batch_max}); "
                "rebuild with a larger --trt-batch-max or lower MAX_BATCH_SIZE"
            )
        return None

    def warmup(self, iterations: int = 2, batch_size: int = 1) -> np.ndarray:
        """Run dummy batches so first-request latency excludes lazy initialisation, at batch 1
        and at ``batch_size`` (the largest batch the service will form, whose buffers and
        kernels differ); returns a batch-1 output (the service checks its shape against the
        manifest's labels)."""
        if batch_size > 1:
            for _ in range(iterations):
                self.predict(np.zeros(self.input_shape(batch_size), dtype=np.float32))
        dummy = np.zeros(self.input_shape(1), dtype=np.float32)
        out = self.predict(dummy)
        for _ in range(iterations - 1):
            out = self.predict(dummy)
        return out


def cuda_unavailable(torch: Any) -> str | None:
    """None when torch can use CUDA; otherwise why not, in words for an error message.

    A driver older than the one torch's CUDA build needs (R580+ for PyPI's CUDA 13 wheels) makes
    ``torch.cuda.is_available()`` return False with a warning; say that, not "no GPU".
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            return None
    for warning in caught:
        text = str(warning.message)
        if "too old" in text.lower():
            return (
                f"the NVIDIA driver is too old for this torch, built for CUDA "
                f"{torch.version.cuda} ({text.strip()})"
            )
    return "torch sees no CUDA device here"
