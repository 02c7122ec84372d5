"""The OpenVINO artifact: the variant's own ONNX file, read by OpenVINO, checked against torch.

OpenVINO reads ``model.onnx`` directly, so every CPU variant is served on OpenVINO from the
file ONNX Runtime serves (one file, one sha256), fp32 and ORT's int8 (QDQ) graphs alike: the
manifest's ``openvino`` entry names that file. An IR (``ov.save_model``: ``model.xml`` plus
``model.bin``) was measured against it on the project's machine: it reads in 16-19 ms instead
of 58-105 ms for the 29 MB baseline (read and compile 220-230 ms against 330-477 ms) and is
no smaller, so a second copy of the weights would buy 0.1-0.25 s of cold start; not kept.

The check runs the served engine in f32 on the held-out images: an fp32 graph must match torch
within ``FP32_MAX_ABS_DIFF``, an int8 one agree on ``INT8_MIN_AGREEMENT`` of top-1s, or the
build fails. Where the building CPU runs bf16, the images are run in bf16 too and what that
precision does to the logits and the accuracy is recorded (``OPENVINO_PRECISION=bf16``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from service.engines.openvino_engine import PRECISIONS, OpenVinoEngine, cpu_precisions
from service.manifest import Manifest, RuntimeArtifact
from service.optimize.common import BuildContext, Built
from service.optimize.onnx_export import ExportCheckFailed, check_against_torch

log = logging.getLogger(__name__)


def openvino_predictor(manifest: Manifest, path: Path, precision: str) -> Any:
    """A torch-tensor-in, torch-tensor-out callable over the engine the service would load."""
    engine = OpenVinoEngine(manifest, path, threads=torch.get_num_threads(), precision=precision)
    engine.load()

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(engine.predict(images.numpy()))

    return predict


def openvino_artifact(
    ctx: BuildContext,
    built: Built,
    work: Path,
    torch_logits: torch.Tensor | None,
    *,
    manifest: Manifest,
) -> RuntimeArtifact:
    """The ``openvino`` entry: the ``onnxruntime`` artifact of ``manifest`` (just written in
    ``work``), checked on OpenVINO."""
    onnx = manifest.artifact("onnxruntime")
    path = work / onnx.file
    int8 = onnx.format != "onnx-fp32"
    metrics = check_against_torch(
        ctx,
        path,
        torch_logits,
        int8=int8,
        reference_model=built.model,
        predict=openvino_predictor(manifest, path, "f32"),
        what="OpenVINO",
        label="openvino",
    )
    for precision in sorted(set(PRECISIONS) - {"f32"}):
        if PRECISIONS[precision] not in cpu_precisions():
            metrics[precision] = f"not measured: the building CPU does not run {precision}"
            continue
        try:  # recorded, not required: f32 is what is served unless a deployment opts in
            metrics[precision] = check_against_torch(
                ctx,
                path,
                torch_logits,
                int8=True,  # a precision change: judged on top-1 agreement, as int8 is
                reference_model=built.model,
                predict=openvino_predictor(manifest, path, precision),
                what=f"OpenVINO {precision}",
                label=f"openvino-{precision}",
            )
        except ExportCheckFailed as exc:
            log.warning("%s: OpenVINO %s: %s", ctx.variant, precision, exc)
            metrics[precision] = {"check_failed": str(exc)}
    return onnx.model_copy(
        update={
            "details": {
                **onnx.details,
                "reads": f"the onnxruntime artifact's {onnx.file}",
                "serve_compilation": "CPU plugin, latency hint, static side, dynamic batch",
            },
            "metrics": metrics,
        },
        deep=True,
    )
