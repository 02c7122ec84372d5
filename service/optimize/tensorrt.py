"""tensorrt: the baseline compiled by torch-tensorrt 2.14 (dynamo IR) to an fp16 engine.

TensorRT 11 builds strongly typed networks by default (``use_explicit_typing``;
``enabled_precisions`` is deprecated), so fp16 is asked for by casting the module and its
inputs to half.

The engine has a dynamic batch dimension (min 1, opt/max from the options) and a fixed image
size, by default the task's own input size, which is what the service feeds it. A spatial
range from 32 to 224 cannot be captured as one graph: ``torch.export`` specialises on whether
DenseNet's last feature map is 1x1 (it is for inputs under 64). To benchmark at 224, build a
second engine with ``--trt-image-size 224``; its fp16/fp32 parity is then checked on the
held-out images resized to 224.

The graph is captured by :func:`export_program` (plain ``torch.export``, so the capture is
tested on machines without a GPU), compiled by ``torch_tensorrt.dynamo.compile``, saved with
``torch_tensorrt.save`` as an ExportedProgram, and loaded by the ``tensorrt`` runtime with
``torch_tensorrt.load``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from service.engines.base import cuda_unavailable
from service.engines.tensorrt_engine import import_torch_tensorrt, tensorrt_version
from service.errors import RuntimeUnavailable
from service.manifest import RuntimeArtifact, describe_file
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.evaluate import agreement, collect_logits, quality
from service.optimize.options import BuildOptions

MIN_AGREEMENT = 0.99


def require_cuda() -> Any:
    """torch_tensorrt, or RuntimeUnavailable saying why not."""
    reason = cuda_unavailable(torch)
    if reason is not None:
        raise RuntimeUnavailable(
            f"the tensorrt variant needs an NVIDIA GPU with CUDA, and {reason}; build and serve "
            "it on a GPU node"
        )
    return import_torch_tensorrt()


def preflight(options: BuildOptions) -> None:
    """Refuse at once on a machine without CUDA (before the pipeline loads anything)."""
    engine_shapes(options.trt_image_size or 1, options.trt_batch_opt, options.trt_batch_max)
    require_cuda()


def build(ctx: BuildContext) -> Built:
    """The source itself; the engine is compiled in ``export_tensorrt``."""
    source, manifest = ctx.require_source()
    return Built(source, "state_dict", manifest.architecture, source, ctx.derived_from())


def engine_shapes(size: int, opt_batch: int, max_batch: int) -> dict[str, tuple[int, ...]]:
    """The engine's optimisation profile: batch 1..max (tuned for opt) at ``size`` x ``size``."""
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(
            f"need 1 <= --trt-batch-opt ({opt_batch}) <= --trt-batch-max ({max_batch})"
        )
    return {
        "min_shape": (1, 3, size, size),
        "opt_shape": (opt_batch, 3, size, size),
        "max_shape": (max_batch, 3, size, size),
    }


def export_program(
    model: nn.Module, size: int, opt_batch: int, max_batch: int
) -> torch.export.ExportedProgram:
    """The graph TensorRT compiles: ``torch.export`` with only the batch dimension dynamic.

    Runs on the model's own device and dtype, so it needs no GPU (the tests run it on CPU).
    """
    engine_shapes(size, opt_batch, max_batch)  # the flags' own check
    param = next(model.parameters())
    if max_batch == 1:  # one batch size: nothing is dynamic (a Dim needs min < max)
        example = torch.zeros((1, 3, size, size), dtype=param.dtype, device=param.device)
        return torch.export.export(model.eval(), (example,), strict=False)
    # torch.export specializes a dimension whose example size is 1, which would contradict
    # the dynamic batch: trace with at least 2, whatever --trt-batch-opt is.
    example_batch = max(2, opt_batch)
    example = torch.zeros((example_batch, 3, size, size), dtype=param.dtype, device=param.device)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},), strict=False)


def compile_engine(
    model: nn.Module, size: int, opt_batch: int, max_batch: int
) -> tuple[torch.fx.GraphModule, Any]:
    """(fp16 TensorRT module, its ``torch_tensorrt.Input``); ``model`` itself is left as is."""
    torch_tensorrt = require_cuda()
    half = copy.deepcopy(model).eval().half().cuda()
    program = export_program(half, size, opt_batch, max_batch)
    spec = torch_tensorrt.Input(**engine_shapes(size, opt_batch, max_batch), dtype=torch.half)
    module = torch_tensorrt.dynamo.compile(program, arg_inputs=[spec], min_block_size=1)
    return module, spec


def export_tensorrt(
    ctx: BuildContext, built: Built, work: Path, torch_logits: torch.Tensor | None
) -> RuntimeArtifact:
    """Compile, check top-1 agreement with fp32 on the held-out images, and save.

    ``torch_logits`` (the served-size fp32 logits) is not used: the engine is checked against
    fp32 at its own image size, which may differ.
    """
    torch_tensorrt = require_cuda()
    opts = ctx.options
    native = ctx.task.preprocess.crop_size
    size = opts.trt_image_size or native
    trt_module, spec = compile_engine(
        built.fp32_model, size, opts.trt_batch_opt, opts.trt_batch_max
    )
    fp32 = built.fp32_model.float().cuda().eval()
    metrics: dict[str, Any] = {}
    if ctx.task.test is not None:

        def at_size(x: torch.Tensor) -> torch.Tensor:
            x = x.cuda()
            if x.shape[-1] != size:
                x = functional.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False
                )
            return x

        def run_trt(x: torch.Tensor) -> torch.Tensor:
            return trt_module(at_size(x).half()).float().cpu()

        def run_fp32(x: torch.Tensor) -> torch.Tensor:
            return fp32(at_size(x)).float().cpu()

        batch = min(64, opts.trt_batch_max)
        trt_logits, labels = collect_logits(run_trt, ctx.task.test, batch)
        ref_logits, _ = collect_logits(run_fp32, ctx.task.test, batch)
        agreed = agreement(trt_logits, ref_logits)
        metrics = quality(trt_logits, labels, ref_logits)
        metrics["agreement_top1_vs_fp32"] = agreed
        metrics["max_abs_logit_diff_vs_fp32"] = float((trt_logits - ref_logits).abs().max())
        metrics["accuracy_image_size"] = size  # the images were resized to the engine's size
        if agreed < MIN_AGREEMENT:
            raise RuntimeError(
                f"TensorRT fp16 agrees with fp32 on {agreed:.4f} of top-1s (< {MIN_AGREEMENT})"
            )
    path = work / "model.ep"
    torch_tensorrt.save(trt_module, str(path), arg_inputs=[spec])
    artifact = describe_file(
        path,
        "torch-tensorrt-exported-program",
        {
            "precision": "fp16",
            "ir": "dynamo",
            "batch_min": 1,
            "batch_opt": opts.trt_batch_opt,
            "batch_max": opts.trt_batch_max,
            "image_size": size,
            "torch_tensorrt": getattr(torch_tensorrt, "__version__", "unknown"),
            # A plan runs only on the TensorRT and GPU architecture that built it; the engine
            # checks both at load.
            "tensorrt": tensorrt_version(),
            "cuda": torch.version.cuda,
            "driver": nvidia_driver_version(),
            "gpu": torch.cuda.get_device_name(),
            "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability()),
        },
    )
    artifact.metrics = metrics
    return artifact


def nvidia_driver_version(proc: Path = Path("/proc/driver/nvidia/version")) -> str:
    """The kernel driver's version from ``/proc/driver/nvidia/version`` ("unknown" without)."""
    try:
        text = proc.read_text()
    except OSError:
        return "unknown"
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return "unknown"


EXPORTERS: Mapping[str, Exporter] = {"tensorrt": export_tensorrt}
