"""quantized-dynamic: ``torch.ao.quantization.quantize_dynamic`` as users know it.

It quantizes ``nn.Linear`` weights to int8 and quantizes activations on the fly. DenseNet-121
has exactly one Linear (the classifier) and 120 convolutions, so this shrinks the file a
little and does not make the network faster; the benchmark shows it. The ONNX Runtime
counterpart is ``quantize_dynamic`` restricted to the same ops (MatMul/Gemm).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from service.manifest import RuntimeArtifact, describe_file
from service.modeling import dynamic_int8
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.onnx_export import check_against_torch, has_vnni, source_fp32_onnx
from service.optimize.options import BuildOptions

# Weights only: no images.
NEEDS_DATA: str | None = None


def preflight(options: BuildOptions) -> None:
    """Nothing to check before the source is loaded."""


def build(ctx: BuildContext) -> Built:
    """Quantize every nn.Linear of the source dynamically (no calibration data needed)."""
    source, manifest = ctx.require_source()
    model = dynamic_int8(copy.deepcopy(source))
    linear = sum(isinstance(m, torch.nn.Linear) for m in source.modules())
    conv = sum(isinstance(m, torch.nn.Conv2d) for m in source.modules())
    return Built(
        model,
        "dynamic-int8",
        manifest.architecture,
        source,
        ctx.derived_from(),
        details={
            "api": "torch.ao.quantization.quantize_dynamic",
            "modules": ["nn.Linear"],
            "dtype": "qint8",
        },
        notes=[
            f"dynamic quantization touched {linear} Linear layer(s); the {conv} convolutions "
            "that dominate compute stay fp32"
        ],
    )


def export_onnx(
    ctx: BuildContext, built: Built, work: Path, torch_logits: torch.Tensor | None
) -> RuntimeArtifact:
    """ORT dynamic int8 on the same ops torch quantizes (MatMul/Gemm)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scratch = work / "scratch"
    scratch.mkdir()
    fp32 = source_fp32_onnx(ctx, scratch)
    path = work / "model.onnx"
    vnni = has_vnni()
    quantize_dynamic(
        str(fp32),
        str(path),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        reduce_range=not vnni,
    )
    shutil.rmtree(scratch)
    metrics = check_against_torch(ctx, path, None, int8=True, reference_model=built.fp32_model)
    artifact = describe_file(
        path,
        "onnx-int8-dynamic",
        {"op_types": ["MatMul", "Gemm"], "weights": "int8", "reduce_range": not vnni},
    )
    artifact.metrics = metrics
    return artifact


EXPORTERS: Mapping[str, Exporter] = {"onnxruntime": export_onnx}
