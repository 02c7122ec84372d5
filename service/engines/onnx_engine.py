"""ONNX Runtime on CPU: the torch-free runtime with the fast cold start."""

from __future__ import annotations

import numpy as np

from service.engines.base import Engine
from service.errors import RuntimeUnavailable


class OnnxEngine(Engine):
    """Runs ``model.onnx`` with the CPU execution provider."""

    runtime = "onnxruntime"

    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeUnavailable(
                "MODEL_RUNTIME=onnxruntime needs onnxruntime: pip install '.[onnx]'"
            ) from exc
        ort.disable_telemetry_events()  # nothing to persist on a read-only root filesystem
        options = ort.SessionOptions()
        # Intra-op threads follow the CPUs the container is given; one inter-op thread
        # since a CNN graph is a chain and parallel branches only oversubscribe the cores.
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Every optimization, including the CPU-specific layout passes (NCHWc), done here
        # on the CPU that serves: the stored graph is portable, the optimized one is not.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: batch})
        return np.asarray(logits, dtype=np.float32)
