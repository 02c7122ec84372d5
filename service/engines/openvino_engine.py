"""OpenVINO on the CPU: the variant's ONNX artifact, compiled by OpenVINO's CPU plugin.

Torch-free, like ONNX Runtime. The model is compiled once, for the side the service's
preprocessing fixes and a dynamic batch, with the latency hint: one stream of ``threads``
threads per engine worker. Each concurrent caller gets an infer request of its own
(OpenVINO's unit of concurrency), so ENGINE_WORKERS callers run on their own streams.

Precision is explicit (OPENVINO_PRECISION): OpenVINO's CPU plugin runs in bf16 by default on
CPUs with AVX-512 BF16 or AMX, which changes the logits (the build measures by how much);
``f32`` is the variant's own arithmetic.
"""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from service.engines.base import Engine
from service.errors import InvalidArtifact, RuntimeUnavailable

PRECISIONS = {"f32": "FP32", "bf16": "BF16"}  # the setting -> the CPU's capability name


def cpu_precisions(core: Any = None) -> list[str]:
    """What OpenVINO's CPU plugin can run here (FP32, BF16, INT8, ...); ``core``: an
    ``openvino.Core`` already made, else one is."""
    if core is None:
        import openvino as ov

        core = ov.Core()
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoEngine(Engine):
    """Runs ``model.onnx`` with OpenVINO's CPU plugin."""

    runtime = "openvino"

    def load(self) -> None:
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeUnavailable(
                "MODEL_RUNTIME=openvino needs openvino: pip install '.[openvino]'"
            ) from exc
        core = ov.Core()
        capabilities = cpu_precisions(core)
        if PRECISIONS[self.precision] not in capabilities:
            raise RuntimeUnavailable(
                f"OPENVINO_PRECISION={self.precision}: this CPU does not run it (its "
                f"OpenVINO capabilities: {', '.join(capabilities)}); use f32"
            )
        try:
            model = core.read_model(str(self.path))
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidArtifact(f"{self.path}: OpenVINO cannot read it: {reason}") from None
        side = self.image_size
        model.reshape({model.input(0): ov.PartialShape([-1, 3, side, side])})
        streams = max(1, self.workers)
        self.compiled = core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": streams,
                "INFERENCE_NUM_THREADS": self.threads * streams,
                "INFERENCE_PRECISION_HINT": self.precision,
            },
        )
        self.version = str(ov.get_version()).split("-")[0]
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def describe(self) -> str:
        return f"cpu (OpenVINO {self.version}, {self.precision}, {max(1, self.workers)} stream)"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:  # more callers at once than requests so far: one more
            request = self.compiled.create_infer_request()
        try:
            request.infer({0: batch})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)
        finally:
            self._requests.put(request)
