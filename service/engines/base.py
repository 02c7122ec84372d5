"""The interface every runtime implements: load once, then map a batch to logits."""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from service.manifest import Manifest


@dataclass(frozen=True)
class CudaOptions:
    """How the torch runtime runs on a GPU (ignored on the CPU and by the other runtimes).

    ``precision``: weights and activations in fp16 or bf16 (inputs arrive as fp32 and are cast
    on the GPU), or fp32. ``graphs``: one CUDA graph captured per batch-size bucket (powers of
    two up to the largest batch), each batch padded up to the nearest bucket, so a call is one
    graph launch instead of hundreds of kernel launches. ``compile``: ``torch.compile`` the
    module first (its own CUDA graphs off: ``graphs`` decides), paid at start-up.
    """

    precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    graphs: bool = True
    compile: Literal["off", "default", "max-autotune"] = "off"

    def describe(self) -> str:
        """E.g. "fp16, channels-last, CUDA graphs"."""
        parts = [self.precision, "channels-last"]
        if self.compile != "off":
            parts.append(f"torch.compile {self.compile}")
        parts.append("CUDA graphs" if self.graphs else "eager launches")
        return ", ".join(parts)


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
        self,
        manifest: Manifest,
        path: Path,
        *,
        threads: int,
        device: str = "auto",
        cuda: CudaOptions | None = None,
        workers: int = 1,
        precision: str = "f32",
        image_size: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.path = path
        self.threads = threads
        self.requested_device = device
        self.cuda = cuda or CudaOptions()
        self.device = "cpu"
        # What a runtime that plans ahead reads (OpenVINO): the calls made at once, the CPU
        # precision, and the input side to plan for (default: the manifest's crop).
        self.workers = workers
        self.precision = precision
        self.image_size = image_size or manifest.preprocess.crop_size

    def describe(self) -> str:
        """How this engine runs, for logs and reports (e.g. "cuda (fp16, ..., CUDA graphs)")."""
        return self.device

    @abc.abstractmethod
    def load(self) -> None:
        """Load the artifact; may be slow. Raises ConfigurationError subclasses when it can't."""

    @abc.abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Float32 NCHW batch -> float32 logits of shape (N, num_classes)."""

    def input_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """The NCHW shape this artifact is served at (``image_size``: the manifest's crop
        unless the engine was made for another side)."""
        return (batch_size, 3, self.image_size, self.image_size)

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


def nvidia_driver_version(proc: Path = Path("/proc/driver/nvidia/version")) -> str:
    """The kernel driver's version from ``/proc/driver/nvidia/version`` ("unknown" without)."""
    try:
        text = proc.read_text()
    except OSError:
        return "unknown"
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return "unknown"
