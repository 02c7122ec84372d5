"""Optimization techniques, one module each, looked up by variant name.

Each technique module exposes ``build(ctx: BuildContext) -> Built`` and may define
``export_onnx(ctx, built, out_dir) -> RuntimeArtifact`` when its ONNX artifact is not a plain
fp32 export of the torch model.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_TECHNIQUES = {
    "baseline": "service.optimize.baseline",
    "quantized": "service.optimize.static_int8",
    "quantized-dynamic": "service.optimize.dynamic_int8",
    "pruned": "service.optimize.pruning",
    "distilled": "service.optimize.distillation",
    "tensorrt": "service.optimize.tensorrt",
}
CPU_VARIANTS = ("baseline", "quantized", "quantized-dynamic", "pruned", "distilled")


def list_variants() -> list[str]:
    """Every variant name that can be built."""
    return list(_TECHNIQUES)


def get_technique(variant: str) -> ModuleType:
    """The module that builds ``variant``."""
    try:
        return importlib.import_module(_TECHNIQUES[variant])
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(_TECHNIQUES)}") from None
