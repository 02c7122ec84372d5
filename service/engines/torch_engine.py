"""PyTorch on CPU (eager) or CUDA (fp16/bf16, channels-last, cuDNN autotuning, CUDA graphs)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from service.engines.base import Engine, cuda_unavailable
from service.errors import RuntimeUnavailable


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off (matmuls and cuDNN convolutions) for an fp32 reference: on Ampere and newer
    it would otherwise round the reference itself to a 10-bit mantissa."""
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def graph_sizes(max_batch: int) -> list[int]:
    """The batch sizes captured up front: powers of two below ``max_batch``, and it."""
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def bucket(batch: int, captured: list[int]) -> int:
    """The captured size a ``batch`` runs at: the smallest at least ``batch``; beyond every
    captured size, the next power of two (captured on first use)."""
    for size in sorted(captured):
        if size >= batch:
            return size
    return 1 << (batch - 1).bit_length()


class CudaGraphs:
    """One CUDA graph per batch-size bucket, sharing one memory pool.

    ``run`` copies the batch into the bucket's static input (the padding rows keep whatever
    they held: every layer in eval mode works per image, so they cannot change the real rows),
    replays the graph and reads the real rows back. Replays take a lock: graphs that share a
    pool must not run at once, and the static buffers are shared by every caller.
    """

    def __init__(
        self,
        forward: Callable[[Any], Any],
        input_shape: Callable[[int], tuple[int, ...]],
        torch: Any,
        *,
        device: str = "cuda",
    ) -> None:
        self._forward = forward
        self._input_shape = input_shape
        self._torch = torch
        self._device = device
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        self._pool: Any = None
        self._lock = threading.Lock()

    @property
    def captured(self) -> list[int]:
        """Batch sizes with a graph."""
        return sorted(self._graphs)

    def capture(self, size: int) -> None:
        """Capture the graph for ``size`` (warming up on a side stream first, as capture needs:
        cuDNN picks its algorithms there, outside the graph)."""
        with self._lock:
            self._capture(size)

    def _capture(self, size: int) -> None:
        torch = self._torch
        if size in self._graphs:
            return
        static_in = torch.zeros(self._input_shape(size), device=self._device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
            static_out = self._forward(static_in)
        self._pool = graph.pool()
        self._graphs[size] = (graph, static_in, static_out)

    def _graph_for(self, n: int) -> tuple[Any, Any, Any]:
        """The (graph, static input, static output) a batch of ``n`` runs in, captured now if
        no bucket holds it (call with the lock held)."""
        size = bucket(n, self.captured)
        self._capture(size)
        return self._graphs[size]

    def replay_on(self, batch: Any) -> Callable[[], None]:
        """A call that replays the graph for ``batch``'s size on ``batch`` (a device tensor,
        copied in once): the GPU's side of a call alone, for benchmarks."""
        n = batch.shape[0]
        with self._lock:
            graph, static_in, _ = self._graph_for(n)
            static_in[:n].copy_(batch)

        def replay() -> None:
            with self._lock:
                graph.replay()

        return replay

    def run(self, host: Any) -> np.ndarray:
        """Logits for the (pinned, fp32) host batch ``host``."""
        n = host.shape[0]
        with self._lock:
            graph, static_in, static_out = self._graph_for(n)
            static_in[:n].copy_(host, non_blocking=True)
            graph.replay()
            return np.asarray(static_out[:n].float().cpu().numpy())


class TorchEngine(Engine):
    """Eager torch on the CPU (int8 variants on the x86/fbgemm quantized kernels); on CUDA as
    ``self.cuda`` says (``CudaOptions``: fp16 + CUDA graphs by default)."""

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
        self._torch = torch
        model = load_torch_model(self.manifest, self.path)
        if self.device == "cpu":
            self.model = model
            return
        self.model = self._cuda_module(model)
        self._forward: Callable[[Any], Any] = self.model
        if self.cuda.compile != "off":
            # Inductor's own CUDA graphs off: self.cuda.graphs decides, with bucketed sizes.
            mode = None if self.cuda.compile == "default" else "max-autotune-no-cudagraphs"
            self._forward = torch.compile(self.model, mode=mode, dynamic=False)
        # One pinned fp32 host buffer, grown to the largest batch seen and sliced per call:
        # the copy to the GPU is asynchronous and nothing is allocated per request.
        self._host = self._host_buffer(self.input_shape(1))
        self._host_lock = threading.Lock()  # the buffer is shared by ENGINE_WORKERS threads
        self._graphs = (
            CudaGraphs(self._cast_forward, self.input_shape, torch) if self.cuda.graphs else None
        )

    def _host_buffer(self, shape: tuple[int, ...]) -> Any:
        """Pinned host memory (asynchronous copies); pageable where pinning is refused
        (some sandboxes and containers limit locked memory)."""
        torch = self._torch
        try:
            return torch.empty(shape, pin_memory=True)
        except RuntimeError:
            return torch.empty(shape)

    def _cuda_module(self, model: Any) -> Any:
        torch = self._torch
        torch.backends.cudnn.benchmark = True  # fixed shapes per bucket: autotune once each
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
        self._dtype = dtype[self.cuda.precision]
        return model.to("cuda", dtype=self._dtype, memory_format=torch.channels_last).eval()

    def _cast_forward(self, inputs: Any) -> Any:
        """fp32 NCHW on the GPU -> logits, cast and laid out as the module runs."""
        x = inputs.to(self._dtype).contiguous(memory_format=self._torch.channels_last)
        return self._forward(x)

    def describe(self) -> str:
        """The device, and on CUDA how torch runs there."""
        return self.device if self.device == "cpu" else f"cuda ({self.cuda.describe()})"

    def prepare(self, sizes: list[int]) -> None:
        """On CUDA, capture (and compile, with ``torch.compile``) these batch sizes now rather
        than on first use; nothing on the CPU."""
        if self.device == "cpu":
            return
        for size in sizes:
            if self._graphs is not None:
                self._graphs.capture(size)
            else:
                self.predict(np.zeros(self.input_shape(size), dtype=np.float32))

    def warmup(self, iterations: int = 2, batch_size: int = 1) -> np.ndarray:
        """On CUDA, every bucket up to ``batch_size`` first, so no request pays for a capture
        or a compilation; then the usual warm-up."""
        self.prepare(graph_sizes(batch_size))
        return super().warmup(iterations, batch_size)

    def on_device(self, batch: np.ndarray) -> Callable[[], None]:
        """A call that runs the model on ``batch`` already on the GPU and leaves the logits
        there (CUDA only): ``predict`` minus the copies to and from the host, for benchmarks.
        Asynchronous: time it with a ``torch.cuda.synchronize()``."""
        torch = self._torch
        if self.device != "cuda":
            raise ValueError("on_device needs the engine on CUDA")
        inputs = torch.from_numpy(batch).to("cuda")
        if self._graphs is not None:
            return self._graphs.replay_on(inputs)

        def forward() -> None:
            with torch.inference_mode():
                self._cast_forward(inputs)

        return forward

    def predict(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self.device == "cpu":
            with torch.inference_mode():
                return np.asarray(self.model(torch.from_numpy(batch)).float().numpy())
        with self._host_lock:
            if batch.shape[0] > self._host.shape[0] or batch.shape[1:] != self._host.shape[1:]:
                self._host = self._host_buffer(batch.shape)
            host = self._host[: batch.shape[0]]
            host.numpy()[...] = batch
            if self._graphs is not None:
                return self._graphs.run(host)
            with torch.inference_mode():
                logits = self._cast_forward(host.to("cuda", non_blocking=True))
                return np.asarray(logits.float().cpu().numpy())
