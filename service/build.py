"""``densenet build``: run a technique, then save, measure, export and describe the result.

The variant directory is written to a temp dir and renamed into place only when every step
(including each export's self-check) has passed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from service.data import TaskData, digits_task, imagenet_task
from service.evaluate import count_macs, count_params, model_logits, quality
from service.manifest import (
    Manifest,
    atomic_directory,
    describe_file,
    now_iso,
    read_manifest,
    write_manifest,
)
from service.modeling import load_torch_model
from service.optimize import get_technique
from service.optimize.common import BuildContext, BuildOptions, Built
from service.train import seed_everything

log = logging.getLogger(__name__)
SPEED_IMAGE_SIZE = 224


def make_task(options: BuildOptions) -> TaskData:
    """The task's labels, preprocessing and data splits."""
    if options.task == "digits":
        return digits_task(options.image_size, options.seed)
    if options.task == "imagenet":
        from service.optimize.baseline import imagenet_labels_and_preprocess

        labels, spec = imagenet_labels_and_preprocess()
        return imagenet_task(labels, spec, options.data, options.synsets, options.seed)
    raise ValueError(f"unknown task {options.task!r}; known: digits, imagenet")


def _attach_teacher(ctx: BuildContext) -> None:
    baseline_dir = ctx.options.out / "baseline"
    if not (baseline_dir / "manifest.json").is_file():
        log.info("%s needs the baseline; building it first", ctx.variant)
        build_variant("baseline", ctx.options)
    manifest = read_manifest(baseline_dir)
    if manifest.task != ctx.options.task:
        raise ValueError(
            f"{baseline_dir} was built for task {manifest.task!r}, not {ctx.options.task!r}"
        )
    ctx.teacher = load_torch_model(manifest, baseline_dir / manifest.artifact("torch").file)
    ctx.teacher_manifest = manifest
    ctx.teacher_dir = baseline_dir


def measure(ctx: BuildContext, built: Built) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Params, MACs, and quality on the held-out split; returns the metrics and test logits."""
    native = ctx.task.preprocess.crop_size
    metrics: dict[str, Any] = {
        "params": count_params(built.fp32_model),
        "macs_native": count_macs(built.fp32_model, native),
        "macs_224": count_macs(built.fp32_model, SPEED_IMAGE_SIZE),
        "image_size_native": native,
        "accuracy_dataset": ctx.task.dataset,
    }
    if built.fmt != "state_dict":
        metrics["macs_note"] = "counted on the fp32 graph; executed as int8 where quantized"
    if ctx.task.test is None:
        metrics.update(
            accuracy_top1=None,
            accuracy_top5=None,
            agreement_top1_vs_baseline=None,
            accuracy_not_measured="no held-out labelled images (pass --data DIR with val/)",
        )
        return metrics, None
    logits, labels = model_logits(built.model, ctx.task.test)
    reference = None
    if ctx.teacher is not None:
        reference, _ = model_logits(ctx.teacher, ctx.task.test)
    metrics.update(quality(logits, labels, reference if ctx.variant != "baseline" else logits))
    metrics["test_images"] = len(labels)
    return metrics, logits


def build_variant(variant: str, options: BuildOptions) -> Path:
    """Build ``variant`` into ``options.out/variant`` and return that directory."""
    technique = get_technique(variant)
    runtimes = [r for r in options.runtimes if r in technique.RUNTIMES]
    if not runtimes:
        raise ValueError(
            f"{variant} builds for {', '.join(technique.RUNTIMES)}; "
            f"asked for {', '.join(options.runtimes)}"
        )
    preflight = getattr(technique, "preflight", None)
    if preflight is not None:  # fail before any data loading or teacher building
        preflight()
    started = time.perf_counter()
    seed_everything(options.seed)  # weight initialisation included: same seed, same artifact
    task = make_task(options)
    with atomic_directory(options.out / variant) as work:
        ctx = BuildContext(variant, options, task, work)
        if variant != "baseline":
            _attach_teacher(ctx)
        built = technique.build(ctx)
        manifest = Manifest(
            variant=variant,
            task=task.name,
            architecture=built.architecture,
            num_classes=len(task.labels),
            labels=task.labels,
            preprocess=task.preprocess,
            source_weights=built.source_weights,
            built_at=now_iso(),
            build_settings=built.build_settings,
            notes=[*task.notes, *built.notes],
        )
        metrics, torch_logits = measure(ctx, built)
        manifest.metrics = {**metrics, **built.metrics}
        if "torch" in runtimes:
            path = work / "model.pt"
            torch.save(built.model.state_dict(), path)
            manifest.artifacts["torch"] = describe_file(path, built.fmt, built.details)
            manifest.artifacts["torch"].metrics = {
                k: metrics.get(k)
                for k in ("accuracy_top1", "accuracy_top5", "agreement_top1_vs_baseline")
            }
        if "onnxruntime" in runtimes:
            from service.optimize import onnx_export

            exporter = getattr(technique, "export_onnx", onnx_export.export_fp32_artifact)
            manifest.artifacts["onnxruntime"] = exporter(ctx, built, work, torch_logits)
        if "tensorrt" in runtimes:
            manifest.artifacts["tensorrt"] = technique.export_tensorrt(ctx, built, work)
        manifest.build_seconds = round(time.perf_counter() - started, 1)
        write_manifest(work, manifest)
    log.info(
        "built %s in %.0fs -> %s", variant, time.perf_counter() - started, options.out / variant
    )
    return options.out / variant
