"""TensorRT (through torch-tensorrt) on CUDA: the GPU revision's runtime."""

from __future__ import annotations

import numpy as np

from service.engines.base import Engine
from service.errors import RuntimeUnavailable


class TensorRTEngine(Engine):
    """Loads the saved fp16 ExportedProgram; host buffers are pinned for async copies."""

    runtime = "tensorrt"

    def load(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeUnavailable(
                "MODEL_RUNTIME=tensorrt needs an NVIDIA GPU with CUDA; none is visible here"
            )
        try:
            import torch_tensorrt
        except ImportError as exc:
            raise RuntimeUnavailable(f"torch-tensorrt is not installed: {exc}") from None
        self.device = "cuda"
        self.module = torch_tensorrt.load(str(self.path)).module()
        self._torch = torch
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        host = self._pinned.get(batch.shape)
        if host is None:
            host = self._pinned[batch.shape] = torch.empty(batch.shape, pin_memory=True)
        host.numpy()[...] = batch
        with torch.inference_mode():
            inputs = host.to("cuda", non_blocking=True).half()
            logits = self.module(inputs)
            return logits.float().cpu().numpy()
