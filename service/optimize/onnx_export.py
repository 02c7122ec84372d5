"""ONNX artifacts for ONNX Runtime, each checked against torch before it is accepted.

* fp32 (baseline, pruned, distilled): ``torch.onnx.export(dynamo=True)`` with dynamic batch,
  height and width. The graph is stored unoptimized and the server applies ORT_ENABLE_ALL at
  load: ENABLE_ALL's layout passes are specific to the serving CPU, a graph stored
  pre-optimized at EXTENDED did not start measurably faster, and ORT's fused ops would make
  it unquantizable.
* int8 static (quantized) and int8 dynamic (quantized-dynamic): ORT's own quantizer on the fp32
  baseline graph (see ``static_int8`` / ``dynamic_int8``).

The check runs the ONNX model on the held-out images: fp32 must match torch within
``FP32_MAX_ABS_DIFF``; int8 must agree with torch fp32 on ``INT8_MIN_AGREEMENT`` of top-1s.
A failed check raises, so the build fails and leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.errors import ArtifactTampered
from service.manifest import RuntimeArtifact, describe_file, verify_file
from service.optimize.common import BuildContext, Built
from service.optimize.evaluate import agreement, collect_logits, quality

log = logging.getLogger(__name__)

FP32_MAX_ABS_DIFF = 1e-3
INT8_MIN_AGREEMENT = 0.97
OPSET = 18


class ExportCheckFailed(RuntimeError):
    """An exported model disagrees with the torch model it came from."""


def export_fp32(model: nn.Module, path: Path, image_size: int) -> Path:
    """Export with dynamic batch, height and width (opset 18, dynamo exporter)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height", min=32, max=2048)
    width = torch.export.Dim("width", min=32, max=2048)
    example = torch.randn(2, 3, max(image_size, 64), max(image_size, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(),
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
            verbose=False,
        )
    assert program is not None
    program.save(str(path))
    return path


def ort_predictor(path: Path, threads: int | None = None) -> Any:
    """A torch-tensor-in, torch-tensor-out callable over an ORT session (for checks)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: images.numpy()})[0])

    return predict


def check_against_torch(
    ctx: BuildContext,
    path: Path,
    torch_logits: torch.Tensor | None,
    *,
    int8: bool,
    reference_model: nn.Module,
    predict: Callable[[torch.Tensor], torch.Tensor] | None = None,
    what: str = "ONNX",
    label: str = "onnxruntime",
) -> dict[str, Any]:
    """Compare the exported model with torch on the held-out images (random ones if none):
    run by ONNX Runtime unless ``predict`` runs it otherwise (``what`` names that runtime,
    ``label`` is the benchmark's name for the artifact at this precision)."""
    predict = predict or ort_predictor(path)
    if ctx.task.test is not None:
        onnx_logits, labels = collect_logits(predict, ctx.task.test)
        ctx.record_predictions(label, onnx_logits, labels)
        if torch_logits is None:
            torch_logits, _ = ctx.test_logits(reference_model)
        baseline_logits = None
        if ctx.source is not None:
            baseline_logits, _ = ctx.test_logits(ctx.source)
        checked_on = f"{len(labels)} held-out images"
    else:  # imagenet without --data: parity only (never an accuracy)
        images = torch.randn(
            8,
            3,
            ctx.task.preprocess.crop_size,
            ctx.task.preprocess.crop_size,
            generator=torch.Generator().manual_seed(0),
        )
        onnx_logits = predict(images)
        with torch.inference_mode():
            torch_logits = reference_model.eval()(images)
        labels, baseline_logits = None, None
        checked_on = "8 random inputs (no labelled data: accuracy not measured)"
    metrics: dict[str, Any] = {
        "checked_on": checked_on,
        "agreement_top1_vs_torch": agreement(onnx_logits, torch_logits),
        "max_abs_logit_diff_vs_torch": float((onnx_logits - torch_logits).abs().max()),
    }
    if labels is not None:
        reference = baseline_logits if ctx.variant != "baseline" else onnx_logits
        metrics.update(quality(onnx_logits, labels, reference))
    if int8:
        if metrics["agreement_top1_vs_torch"] < INT8_MIN_AGREEMENT:
            raise ExportCheckFailed(
                f"int8 {what} agrees with torch fp32 on only "
                f"{metrics['agreement_top1_vs_torch']:.3f} of top-1s (< {INT8_MIN_AGREEMENT})"
            )
    elif metrics["max_abs_logit_diff_vs_torch"] > FP32_MAX_ABS_DIFF:
        raise ExportCheckFailed(
            f"fp32 {what} differs from torch by {metrics['max_abs_logit_diff_vs_torch']:.2e} "
            f"(> {FP32_MAX_ABS_DIFF})"
        )
    log.info("%s %s check: %s", ctx.variant, what, metrics)
    return metrics


def export_fp32_artifact(
    ctx: BuildContext, built: Built, work: Path, torch_logits: torch.Tensor | None
) -> RuntimeArtifact:
    """Default ONNX artifact: fp32 export of the technique's torch model, checked."""
    path = export_fp32(built.fp32_model, work / "model.onnx", ctx.task.preprocess.crop_size)
    metrics = check_against_torch(ctx, path, torch_logits, int8=False, reference_model=built.model)
    artifact = describe_file(
        path,
        "onnx-fp32",
        {
            "opset": OPSET,
            "dynamic_axes": ["batch", "height", "width"],
            "serve_optimization": "ORT_ENABLE_ALL",
        },
    )
    artifact.metrics = metrics
    return artifact


def source_fp32_onnx(ctx: BuildContext, work: Path) -> Path:
    """The source model's fp32 ONNX graph in ``work``, for the ORT quantizers.

    A copy of the source's own ``onnx-fp32`` artifact when it has one: the export of the same
    torch weights, checked against them when the source was built, and verified here against
    its manifest (an export of DenseNet-121 takes tens of seconds). Otherwise, or if that file
    no longer matches its manifest, a fresh export of the loaded source.
    """
    source, manifest = ctx.require_source()
    target = work / "source-fp32.onnx"
    entry = manifest.artifacts.get("onnxruntime")
    if entry is not None and entry.format == "onnx-fp32":
        path = ctx.options.out / manifest.variant / entry.file
        try:
            verify_file(path, entry)
        except (OSError, ArtifactTampered) as exc:
            log.warning("%s: exporting %s again: %s", ctx.variant, manifest.variant, exc)
        else:
            log.info("%s: quantizing %s's own fp32 ONNX artifact", ctx.variant, manifest.variant)
            shutil.copyfile(path, target)
            return target
    return export_fp32(source, target, ctx.task.preprocess.crop_size)


def has_vnni() -> bool:
    """Whether this CPU has VNNI int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def calibration_batches(ctx: BuildContext, batch_size: int = 16) -> list[np.ndarray]:
    """Calibration images from the training split, as numpy batches."""
    ctx.require_data("calibration")
    images = ctx.task.calibration(ctx.options.calibration_images, ctx.options.seed).numpy()
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
