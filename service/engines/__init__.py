"""Runtimes behind one small interface, looked up by name.

Each runtime lives in its own module and imports its heavy library only when loaded, so the
ONNX Runtime server never imports torch.
"""

from __future__ import annotations

import importlib

from service.engines.base import Engine
from service.errors import UnknownName

_ENGINES = {
    "torch": "service.engines.torch_engine:TorchEngine",
    "onnxruntime": "service.engines.onnx_engine:OnnxEngine",
    "openvino": "service.engines.openvino_engine:OpenVinoEngine",
    "tensorrt": "service.engines.tensorrt_engine:TensorRTEngine",
}


def list_runtimes() -> list[str]:
    """Names of the registered runtimes."""
    return list(_ENGINES)


def get_engine_class(runtime: str) -> type[Engine]:
    """The Engine class registered under ``runtime``."""
    try:
        module_name, _, class_name = _ENGINES[runtime].partition(":")
    except KeyError:
        raise UnknownName(f"unknown runtime {runtime!r}; known: {', '.join(_ENGINES)}") from None
    engine: type[Engine] = getattr(importlib.import_module(module_name), class_name)
    return engine


__all__ = ["Engine", "get_engine_class", "list_runtimes"]
