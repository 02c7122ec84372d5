"""PyTorch eager on CPU or CUDA."""

from __future__ import annotations

import contextlib

import numpy as np

from service.engines.base import Engine, cuda_unavailable
from service.errors import RuntimeUnavailable


class TorchEngine(Engine):
    """Eager torch; int8 variants run on the CPU quantized kernels (x86/fbgemm)."""

    runtime = "torch"

    def load(self) -> None:
        import torch

        from service.modeling import load_torch_model

        torch.set_num_threads(self.threads)
        with contextlib.suppress(RuntimeError):  # already set once in this process
            torch.set_num_interop_threads(1)
        fmt = self.manifest.artifact("torch").format
        want_cuda = self.requested_device == "cuda" or (
            self.requested_device == "auto" and torch.cuda.is_available()
        )
        if want_cuda and (reason := cuda_unavailable(torch)) is not None:
            raise RuntimeUnavailable(f"DEVICE=cuda but {reason}")
        if want_cuda and fmt != "state_dict":
            if self.requested_device == "cuda":
                raise RuntimeUnavailable(f"{fmt} artifacts run on the CPU only; set DEVICE=cpu")
            want_cuda = False  # auto: int8 kernels are CPU kernels
        self.device = "cuda" if want_cuda else "cpu"
        self.model = load_torch_model(self.manifest, self.path).to(self.device)
        self._torch = torch
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            inputs = torch.from_numpy(batch)
            if self.device == "cuda":
                # Reused pinned host buffer per shape: the copy to the GPU is asynchronous and
                # nothing is allocated per request. ``.cpu()`` below synchronises before reuse.
                host = self._pinned.get(batch.shape)
                if host is None:
                    host = self._pinned[batch.shape] = torch.empty(batch.shape, pin_memory=True)
                host.copy_(inputs)
                inputs = host.to(self.device, non_blocking=True)
            logits = self.model(inputs)
            return logits.float().cpu().numpy()
