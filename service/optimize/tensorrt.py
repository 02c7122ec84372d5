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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset

from service.engines.base import cuda_unavailable, nvidia_driver_version
from service.engines.tensorrt_engine import import_torch_tensorrt, tensorrt_version
from service.engines.torch_engine import strict_fp32
from service.errors import RuntimeUnavailable
from service.manifest import RuntimeArtifact, describe_file
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.evaluate import agreement, collect_logits, quality
from service.optimize.options import BuildOptions

MIN_AGREEMENT = 0.99
SYNTHETIC_INPUTS = 32
SYNTHETIC_MAX_REL_DIFF = 0.05


def require_cuda() -> Any:
    """torch_tensorrt, or RuntimeUnavailable saying why not."""
    reason = cuda_unavailable(torch)
    if reason is not None:
        raise RuntimeUnavailable(
            f"the tensorrt variant needs an NVIDIA GPU with CUDA, and {reason}; build and serve "
            "it on a GPU node"
        )
    return import_torch_tensorrt()


# The parity check uses held-out images when there are some, random ones if not.
NEEDS_DATA: str | None = None


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
    """Compile, check the engine against fp32 (:func:`parity`), and save.

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

    def at_size(x: torch.Tensor) -> torch.Tensor:
        x = x.cuda()
        if x.shape[-1] != size:
            x = functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def run_trt(x: torch.Tensor) -> torch.Tensor:
        return trt_module(at_size(x).half()).float().cpu()

    def run_fp32(x: torch.Tensor) -> torch.Tensor:
        with strict_fp32():
            return fp32(at_size(x)).float().cpu()

    metrics = parity(run_trt, run_fp32, ctx.task.test, size, min(64, opts.trt_batch_max))
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


def parity(
    run_engine: Callable[[torch.Tensor], torch.Tensor],
    run_fp32: Callable[[torch.Tensor], torch.Tensor],
    test: Dataset[Any] | None,
    size: int,
    batch: int,
) -> dict[str, Any]:
    """The engine against fp32: on the held-out images (top-1 agreement at least
    ``MIN_AGREEMENT``, and accuracy, labelled with the size it was measured at), or, without
    labelled data, on ``SYNTHETIC_INPUTS`` seeded random images (largest logit difference at
    most ``SYNTHETIC_MAX_REL_DIFF`` of the fp32 logits' range; no accuracy). Raises when the
    engine fails the check, so nothing is saved."""
    if test is not None:
        logits, labels = collect_logits(run_engine, test, batch)
        reference, _ = collect_logits(run_fp32, test, batch)
        metrics: dict[str, Any] = quality(logits, labels, reference)
        metrics["checked_on"] = f"{len(labels)} held-out images resized to {size}x{size}"
        metrics["accuracy_image_size"] = size
    else:
        images = torch.randn(
            SYNTHETIC_INPUTS, 3, size, size, generator=torch.Generator().manual_seed(0)
        )
        with torch.inference_mode():
            logits = torch.cat([run_engine(x).float() for x in images.split(batch)])
            reference = torch.cat([run_fp32(x).float() for x in images.split(batch)])
        metrics = {
            "checked_on": f"{SYNTHETIC_INPUTS} random inputs (no labelled data: accuracy not "
            "measured)"
        }
    agreed = agreement(logits, reference)
    diff = float((logits - reference).abs().max())
    metrics["agreement_top1_vs_fp32"] = agreed
    metrics["max_abs_logit_diff_vs_fp32"] = diff
    if test is not None and agreed < MIN_AGREEMENT:
        raise RuntimeError(
            f"TensorRT fp16 agrees with fp32 on {agreed:.4f} of top-1s (< {MIN_AGREEMENT})"
        )
    scale = float(reference.max() - reference.min()) or 1.0
    if test is None and diff > SYNTHETIC_MAX_REL_DIFF * scale:
        raise RuntimeError(
            f"TensorRT fp16 logits differ from fp32 by {diff:.3g} on random inputs, more than "
            f"{SYNTHETIC_MAX_REL_DIFF:.0%} of the logits' range ({scale:.3g})"
        )
    return metrics


EXPORTERS: Mapping[str, Exporter] = {"tensorrt": export_tensorrt}
