"""TensorRT (through torch-tensorrt) on CUDA: the GPU revision's runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.engines.base import Engine, cuda_unavailable
from service.errors import RuntimeUnavailable
from service.manifest import Manifest


def import_torch_tensorrt() -> Any:
    """``import torch_tensorrt``, or RuntimeUnavailable: a missing or broken TensorRT makes the
    import raise a bare ``Exception`` (or OSError), not only ImportError."""
    try:
        import torch_tensorrt
    except Exception as exc:
        raise RuntimeUnavailable(
            f"TensorRT unavailable: import torch_tensorrt failed with {type(exc).__name__}: "
            f"{exc}. pip install '.[gpu]' with NVIDIA's package index for tensorrt-cu13-libs"
        ) from None
    return torch_tensorrt


def tensorrt_version() -> str:
    """The TensorRT library's version as torch-tensorrt loads it ("unknown" if it cannot say)."""
    try:
        import tensorrt
    except Exception:
        return "unknown"
    return str(getattr(tensorrt, "__version__", "unknown"))


def check_tensorrt_version(details: dict[str, object], here: str) -> None:
    """Refuse an engine built with another TensorRT version: a serialized plan only runs on the
    TensorRT version that built it.

    Raises:
        RuntimeUnavailable: naming both versions and the fix.
    """
    built_with = details.get("tensorrt")
    if built_with in (None, "unknown") or here == "unknown" or str(built_with) == here:
        return
    raise RuntimeUnavailable(
        f"this TensorRT engine was built with TensorRT {built_with}; this machine has {here}. "
        f"A plan runs only on the TensorRT that built it: install tensorrt-cu13=={built_with} "
        "or rebuild the engine here with densenet build tensorrt"
    )


def check_compute_capability(details: dict[str, object], here: str, device_name: str) -> None:
    """Refuse an engine built for another GPU architecture (TensorRT engines are specific to
    the compute capability they were built on; loading one elsewhere fails deep inside
    TensorRT, or worse).

    Raises:
        RuntimeUnavailable: with one line naming both GPUs.
    """
    built_for = details.get("compute_capability")
    if built_for is None or str(built_for) == here:
        return
    raise RuntimeUnavailable(
        f"this TensorRT engine was built on {details.get('gpu', 'another GPU')} (compute "
        f"capability {built_for}); this GPU, {device_name}, is {here}: rebuild it here with "
        "densenet build tensorrt, or schedule the pod on the GPU product it was built for"
    )


class TensorRTEngine(Engine):
    """Loads the saved fp16 ExportedProgram; host buffers are pinned for async copies.

    The engine's batch dimension is dynamic (1..``batch_max``); its image size is fixed when
    it is built, so a batch of any other size is refused with a clear error.
    """

    runtime = "tensorrt"

    def __init__(self, manifest: Manifest, path: Path, **kwargs: Any) -> None:
        super().__init__(manifest, path, **kwargs)
        details = manifest.artifact("tensorrt").details if "tensorrt" in manifest.artifacts else {}
        # Fixed when the engine was built: base input_shape reads it.
        self.image_size = int(details.get("image_size", manifest.preprocess.crop_size))
        self.batch_max = int(details.get("batch_max", 0)) or None

    def load(self) -> None:
        import torch

        reason = cuda_unavailable(torch)
        if reason is not None:
            raise RuntimeUnavailable(
                f"MODEL_RUNTIME=tensorrt needs an NVIDIA GPU with CUDA; {reason}"
            )
        import_torch_tensorrt()  # registers TensorRT's ops, which torch.export.load needs
        details = self.manifest.artifact("tensorrt").details
        major, minor = torch.cuda.get_device_capability()
        check_compute_capability(details, f"{major}.{minor}", torch.cuda.get_device_name())
        check_tensorrt_version(details, tensorrt_version())
        self.device = "cuda"
        # torch.export.load, with torch_tensorrt imported so its ops are registered:
        # torch_tensorrt.load falls back to jit.load and hides the real error behind a generic
        # one; this one is wrapped with what the manifest says the engine is.
        try:
            self.module = torch.export.load(str(self.path)).module()
        except Exception as exc:
            raise RuntimeUnavailable(
                f"could not load the TensorRT engine {self.path.name} (built on "
                f"{details.get('gpu', '?')}, compute capability "
                f"{details.get('compute_capability', '?')}, TensorRT "
                f"{details.get('tensorrt', '?')}, CUDA {details.get('cuda', '?')}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        self._torch = torch
        # One pinned host buffer of the largest batch, sliced per call: no per-shape buffers.
        self._host = torch.empty(self.input_shape(self.batch_max or 1), pin_memory=True)

    def refusal(self, batch_size: int, image_size: int) -> str | None:
        """The engine's image size is fixed when it is built; its batch is 1..batch_max."""
        if image_size != self.image_size:
            return (
                f"this TensorRT engine takes {self.image_size}x{self.image_size} inputs, not "
                f"{image_size}x{image_size}; build one with --trt-image-size {image_size}"
            )
        return super().refusal(batch_size, image_size)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Square NCHW batches (every batch the service and the benchmark form)."""
        reason = self.refusal(batch.shape[0], batch.shape[-1])
        if reason is not None:
            raise ValueError(reason)
        torch = self._torch
        if batch.shape[0] > self._host.shape[0]:  # no batch_max recorded: grow once
            self._host = torch.empty(batch.shape, pin_memory=True)
        host = self._host[: batch.shape[0]]
        host.numpy()[...] = batch
        with torch.inference_mode():
            inputs = host.to("cuda", non_blocking=True).half()
            logits = self.module(inputs)
            return logits.float().cpu().numpy()
