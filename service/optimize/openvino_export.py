"""The OpenVINO artifacts: the variant's own ONNX file read by OpenVINO, or NNCF's int8 graph.

An fp32 variant is served on OpenVINO from the file ONNX Runtime serves (one file, one sha256):
the manifest's ``openvino`` entry names that file. An IR (``ov.save_model``: ``model.xml`` plus
``model.bin``) was measured against it on the project's machine: it reads in 16-19 ms instead
of 58-105 ms for the 29 MB baseline (read and compile 220-230 ms against 330-477 ms) and is
no smaller, so a second copy of the weights would buy 0.1-0.25 s of cold start; not kept.

The static int8 variants get an OpenVINO file of their own (``nncf_int8_artifact``): NNCF's
post-training quantization (``nncf.quantize``, the CPU target's preset, fast bias correction)
of the source's fp32 graph, calibrated on the same training images as ONNX Runtime's QDQ
file. ONNX Runtime's QDQ graph places its quantize nodes for ONNX Runtime's kernels (every
Concat, pool and output in 7-bit weights without VNNI) and OpenVINO runs it no faster than
fp32; NNCF places them where OpenVINO's CPU plugin fuses them. NNCF's ONNX backend writes an
ONNX file (``model-openvino.onnx``) that OpenVINO reads as the IR of ``nncf.quantize`` on an
OpenVINO model would be run (equal speed measured at batch 1 and 8), and keeps one file per
artifact, one sha256.

The check runs the served engine in f32 on the held-out images: an fp32 graph must match torch
within ``FP32_MAX_ABS_DIFF``, an int8 one agree on ``INT8_MIN_AGREEMENT`` of top-1s, or the
build fails. Where the building CPU runs bf16, the images are run in bf16 too and what that
precision does to the logits and the accuracy is recorded (``OPENVINO_PRECISION=bf16``).
"""

from __future__ import annotations

import logging
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.engines.openvino_engine import PRECISIONS, OpenVinoEngine, cpu_precisions
from service.manifest import Manifest, RuntimeArtifact, describe_file
from service.optimize.common import BuildContext, Built
from service.optimize.onnx_export import (
    ExportCheckFailed,
    calibration_batches,
    check_against_torch,
    source_fp32_onnx,
)

log = logging.getLogger(__name__)

NNCF_FILE = "model-openvino.onnx"


def openvino_predictor(manifest: Manifest, path: Path, precision: str) -> Any:
    """A torch-tensor-in, torch-tensor-out callable over the engine the service would load."""
    engine = OpenVinoEngine(manifest, path, threads=torch.get_num_threads(), precision=precision)
    engine.load()

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(engine.predict(images.numpy()))

    return predict


def check_on_openvino(
    ctx: BuildContext,
    path: Path,
    torch_logits: torch.Tensor | None,
    *,
    manifest: Manifest,
    int8: bool,
    reference_model: nn.Module,
) -> dict[str, Any]:
    """``path`` served by OpenVINO in f32, checked against torch (a failure fails the build);
    at each lower precision the building CPU runs, measured and recorded but not required."""
    metrics = check_against_torch(
        ctx,
        path,
        torch_logits,
        int8=int8,
        reference_model=reference_model,
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
                reference_model=reference_model,
                predict=openvino_predictor(manifest, path, precision),
                what=f"OpenVINO {precision}",
                label=f"openvino-{precision}",
            )
        except ExportCheckFailed as exc:
            log.warning("%s: OpenVINO %s: %s", ctx.variant, precision, exc)
            metrics[precision] = {"check_failed": str(exc)}
    return metrics


def openvino_artifact(
    ctx: BuildContext,
    built: Built,
    work: Path,
    torch_logits: torch.Tensor | None,
    *,
    manifest: Manifest,
) -> RuntimeArtifact:
    """The default ``openvino`` entry: the ``onnxruntime`` artifact of ``manifest`` (just
    written in ``work``), checked on OpenVINO."""
    onnx = manifest.artifact("onnxruntime")
    path = work / onnx.file
    metrics = check_on_openvino(
        ctx,
        path,
        torch_logits,
        manifest=manifest,
        int8=onnx.format != "onnx-fp32",
        reference_model=built.model,
    )
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


def nncf_int8_artifact(
    ctx: BuildContext, built: Built, work: Path, torch_logits: torch.Tensor | None
) -> RuntimeArtifact:
    """``model-openvino.onnx``: NNCF int8 of the source's fp32 graph, calibrated on the
    training images ONNX Runtime's quantizer uses; checked against torch fp32 on OpenVINO."""
    import nncf
    import onnx

    _, source_manifest = ctx.require_source()
    scratch = work / "scratch-openvino"
    scratch.mkdir()
    fp32 = source_fp32_onnx(ctx, scratch)
    batches = calibration_batches(ctx)
    images = sum(len(b) for b in batches)
    quantized = nncf.quantize(
        onnx.load(str(fp32)),
        nncf.Dataset([{"input": b} for b in batches]),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU,
        subset_size=images,
    )
    path = work / NNCF_FILE
    onnx.save(quantized, str(path))
    shutil.rmtree(scratch)
    metrics = check_on_openvino(
        ctx,
        path,
        None,
        manifest=source_manifest,  # same preprocessing and labels; the engine reads only those
        int8=True,
        reference_model=built.fp32_model,
    )
    artifact = describe_file(
        path,
        "onnx-int8-nncf",
        {
            "quantizer": f"nncf {version('nncf')} (ONNX backend)",
            "api": "nncf.quantize",
            "preset": "performance (symmetric activations and weights)",
            "target_device": "CPU",
            "bias_correction": "fast",
            "calibration_images": images,
            "serve_compilation": "CPU plugin, latency hint, static side, dynamic batch",
        },
    )
    artifact.metrics = metrics
    return artifact
