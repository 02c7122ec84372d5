"""tensorrt: the baseline compiled by torch-tensorrt 2.14 (dynamo IR) to an fp16 engine.

TensorRT 11 builds strongly typed networks by default (``use_explicit_typing``;
``enabled_precisions`` is deprecated), so fp16 is asked for by casting the module and its
inputs to half. The batch dimension is dynamic (min 1, opt/max from the options); height and
width may range from the task's native size to ``trt_image_size`` so one engine serves the
task and runs the 224x224 benchmark. Saved with ``torch_tensorrt.save`` as an
ExportedProgram; the ``tensorrt`` runtime loads it with ``torch_tensorrt.load``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from service.errors import RuntimeUnavailable
from service.evaluate import agreement, collect_logits, quality
from service.manifest import RuntimeArtifact, describe_file
from service.optimize.common import BuildContext, Built
from service.optimize.static_int8 import derived_from

RUNTIMES = ("tensorrt",)
MIN_AGREEMENT = 0.99


def require_cuda() -> Any:
    """torch_tensorrt, or RuntimeUnavailable saying why not."""
    if not torch.cuda.is_available():
        raise RuntimeUnavailable(
            "the tensorrt variant needs an NVIDIA GPU with CUDA, and torch sees none here "
            "(torch.cuda.is_available() is False); build and serve it on a GPU node"
        )
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise RuntimeUnavailable(
            f"torch-tensorrt is not installed ({exc}); pip install '.[gpu]'"
        ) from None
    return torch_tensorrt


def preflight() -> None:
    """Refuse at once on a machine without CUDA (before the pipeline loads anything)."""
    require_cuda()


def build(ctx: BuildContext) -> Built:
    """The baseline itself; the engine is compiled in ``export_tensorrt``."""
    teacher, manifest = ctx.require_teacher()
    return Built(teacher, "state_dict", manifest.architecture, teacher, derived_from(ctx))


def compile_engine(
    model: torch.nn.Module, native: int, size: int, opt_batch: int, max_batch: int
) -> Any:
    """fp16 TensorRT module with dynamic batch (and spatial size from native to ``size``)."""
    torch_tensorrt = require_cuda()
    low, high = min(native, size), max(native, size)
    spec = torch_tensorrt.Input(
        min_shape=(1, 3, low, low),
        opt_shape=(opt_batch, 3, high, high),
        max_shape=(max_batch, 3, high, high),
        dtype=torch.half,
    )
    half = copy.deepcopy(model).eval().half().cuda()  # the fp32 original stays the reference
    return torch_tensorrt.compile(half, ir="dynamo", inputs=[spec], min_block_size=1)


def export_tensorrt(ctx: BuildContext, built: Built, work: Path) -> RuntimeArtifact:
    """Compile, check top-1 agreement with fp32 on the held-out images, and save."""
    torch_tensorrt = require_cuda()
    opts = ctx.options
    native = ctx.task.preprocess.crop_size
    trt_module = compile_engine(
        built.fp32_model, native, opts.trt_image_size, opts.trt_batch_opt, opts.trt_batch_max
    )
    fp32 = built.fp32_model.float().cuda().eval()
    metrics: dict[str, Any] = {}
    if ctx.task.test is not None:

        def run_trt(x: torch.Tensor) -> torch.Tensor:
            return trt_module(x.cuda().half()).float().cpu()

        def run_fp32(x: torch.Tensor) -> torch.Tensor:
            return fp32(x.cuda()).float().cpu()

        trt_logits, labels = collect_logits(run_trt, ctx.task.test)
        ref_logits, _ = collect_logits(run_fp32, ctx.task.test)
        metrics = quality(trt_logits, labels, ref_logits)
        metrics["agreement_top1_vs_fp32"] = agreement(trt_logits, ref_logits)
        metrics["max_abs_logit_diff_vs_fp32"] = float((trt_logits - ref_logits).abs().max())
        agreed = agreement(trt_logits, ref_logits)
        if agreed < MIN_AGREEMENT:
            raise RuntimeError(
                f"TensorRT fp16 agrees with fp32 on {agreed:.4f} of top-1s (< {MIN_AGREEMENT})"
            )
    path = work / "model.ep"
    example = torch.randn(opts.trt_batch_opt, 3, native, native, device="cuda", dtype=torch.half)
    torch_tensorrt.save(trt_module, str(path), arg_inputs=[example])
    artifact = describe_file(
        path,
        "torch-tensorrt-exported-program",
        {
            "precision": "fp16",
            "ir": "dynamo",
            "batch_min": 1,
            "batch_opt": opts.trt_batch_opt,
            "batch_max": opts.trt_batch_max,
            "image_size_min": min(native, opts.trt_image_size),
            "image_size_max": max(native, opts.trt_image_size),
            "torch_tensorrt": getattr(torch_tensorrt, "__version__", "unknown"),
            "gpu": torch.cuda.get_device_name(),
        },
    )
    artifact.metrics = metrics
    return artifact
