"""quantized, distilled-quantized: static int8 post-training quantization of the source's
convolutions (the baseline, or the distilled student).

torch: FX graph mode (``prepare_fx``/``convert_fx``, ``x86`` engine). Chosen over PT2E because
PT2E now lives in torchao and reaches int8 speed on CPU only through torch.compile/inductor
(compile time on every cold start), while FX conversion yields eager modules calling the x86
int8 kernels directly (about 2x over fp32 at batch 1 here) whose state dict loads safely into
a graph rebuilt from the manifest. The FX API is deprecated upstream; the manifest says so.

ONNX Runtime: QDQ static quantization of the source's fp32 graph, per-channel int8 weights,
uint8 activations, calibrated on training images. Without VNNI (AVX2-only CPUs such as this
one) u8s8 products can saturate, so weights use 7 bits (``reduce_range``) there.

OpenVINO: NNCF's post-training quantization of the same fp32 graph on the same calibration
images (``service.optimize.openvino_export.nncf_int8_artifact``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from service.manifest import RuntimeArtifact, describe_file
from service.modeling import convert_int8, fx_int8
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.onnx_export import (
    calibration_batches,
    check_against_torch,
    has_vnni,
    source_fp32_onnx,
)
from service.optimize.openvino_export import nncf_int8_artifact
from service.optimize.options import BuildOptions

BACKEND = "x86"


# Observers are calibrated on training images.
NEEDS_DATA: str | None = "calibration"


def preflight(options: BuildOptions) -> None:
    """Nothing to check before the source is loaded."""


def build(ctx: BuildContext) -> Built:
    """Calibrate observers on training images, then convert to int8."""
    source, manifest = ctx.require_source()
    images = ctx.task.calibration(ctx.options.calibration_images, ctx.options.seed)
    prepared = fx_int8(source, BACKEND, images[:1])
    with torch.inference_mode():
        for batch in images.split(32):
            prepared(batch)
    model = convert_int8(prepared)
    return Built(
        model,
        "fx-int8",
        manifest.architecture,
        source,
        ctx.derived_from(),
        details={
            "backend": BACKEND,
            "api": "torch.ao.quantization.quantize_fx",
            "qconfig_mapping": f"get_default_qconfig_mapping({BACKEND!r})",
        },
        build_settings={"calibration_images": len(images), "calibration_split": "train"},
        notes=[
            "torch FX graph-mode quantization is deprecated upstream in favour of torchao "
            "PT2E; kept here because it runs int8 eagerly without a compile step"
        ],
    )


class _Reader:
    """onnxruntime CalibrationDataReader over numpy batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._items = iter([{name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def export_onnx(
    ctx: BuildContext, built: Built, work: Path, torch_logits: torch.Tensor | None
) -> RuntimeArtifact:
    """ORT static QDQ int8 from the source's fp32 graph; checked against torch fp32."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    scratch = work / "scratch"
    scratch.mkdir()
    fp32 = source_fp32_onnx(ctx, scratch)
    prepared = scratch / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared))
    vnni = has_vnni()
    path = work / "model.onnx"
    batches = calibration_batches(ctx)
    quantize_static(
        str(prepared),
        str(path),
        _Reader("input", batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=not vnni,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    shutil.rmtree(scratch)
    metrics = check_against_torch(ctx, path, None, int8=True, reference_model=built.fp32_model)
    artifact = describe_file(
        path,
        "onnx-int8-qdq",
        {
            "quant_format": "QDQ",
            "per_channel": True,
            "activations": "uint8",
            "weights": "int8",
            "reduce_range": not vnni,
            "built_on_vnni_cpu": vnni,
            "calibration": "MinMax",
            "calibration_images": sum(len(b) for b in batches),
        },
    )
    artifact.metrics = metrics
    return artifact


EXPORTERS: Mapping[str, Exporter] = {"onnxruntime": export_onnx, "openvino": nncf_int8_artifact}
