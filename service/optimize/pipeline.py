"""``densenet build``: run a technique, then save, measure, export and describe the result.

Order: the technique's preflight, the task data, the source variant and a separate teacher
(each built first if missing), the technique's ``build``, measurements, one export per runtime
of the variant's table row, the manifest. The variant directory is written to a temp dir and
renamed into place only when every step (including each export's self-check) has passed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.manifest import (
    MANIFEST_NAME,
    Manifest,
    RuntimeArtifact,
    atomic_directory,
    describe_file,
    now_iso,
    read_manifest,
    sha256_file,
    write_manifest,
)
from service.modeling import load_torch_model
from service.optimize.baseline import imagenet_labels_and_preprocess
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.data import TaskData, digits_task, fashion_task, imagenet_task
from service.optimize.evaluate import count_macs, count_params, quality
from service.optimize.onnx_export import export_fp32_artifact
from service.optimize.openvino_export import openvino_artifact
from service.optimize.options import BuildOptions
from service.optimize.technique import get_technique
from service.optimize.train import seed_everything
from service.stats import accuracy_interval
from service.variants import Variant, get_variant

log = logging.getLogger(__name__)
SPEED_IMAGE_SIZE = 224
EVALUATION_FILE = "evaluation.npz"


def make_task(options: BuildOptions) -> TaskData:
    """The task's labels, preprocessing and data splits."""
    if options.task == "fashion":
        return fashion_task(
            options.data,
            options.image_size,
            options.seed,
            train_images=options.train_images,
            test_images=options.test_images,
        )
    if options.task == "digits":
        return digits_task(options.image_size, options.seed)
    if options.task == "imagenet":
        labels, spec = imagenet_labels_and_preprocess()
        return imagenet_task(labels, spec, options.data, options.synsets, options.seed)
    raise ValueError(f"unknown task {options.task!r}; known: fashion, digits, imagenet")


def load_built(ctx: BuildContext, name: str) -> tuple[torch.nn.Module, Manifest]:
    """The fp32 torch model and manifest of variant ``name`` in the build's output directory,
    building it first (with its own table runtimes) if it is not there.

    Its own runtimes, whatever runtimes this build asked for: ``densenet build tensorrt
    --runtime tensorrt`` still needs the baseline's torch artifact.
    """
    built_dir = ctx.options.out / name
    if not (built_dir / MANIFEST_NAME).is_file():
        log.info(
            "%s is made from %s, which is not in %s: building it first "
            "(`densenet build %s --out %s`)",
            ctx.variant,
            name,
            ctx.options.out,
            name,
            ctx.options.out,
        )
        build_variant(name, dataclasses.replace(ctx.options, runtimes=None))
    manifest = read_manifest(built_dir)
    if manifest.task != ctx.options.task:
        raise ValueError(
            f"{built_dir} was built for task {manifest.task!r}, not {ctx.options.task!r}"
        )
    return load_torch_model(manifest, built_dir / manifest.artifact("torch").file), manifest


def attach_source(ctx: BuildContext, row: Variant) -> None:
    """Load the row's source (and its separate teacher, if any) into ``ctx``."""
    if row.source is not None:
        ctx.source, ctx.source_manifest = load_built(ctx, row.source)
    if row.teacher is not None and row.teacher != row.source:
        ctx.teacher, ctx.teacher_manifest = load_built(ctx, row.teacher)


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
    logits, labels = ctx.test_logits(built.model)
    ctx.record_predictions("torch", logits, labels)
    reference = logits
    if ctx.source is not None and ctx.source_manifest is not None:
        reference, _ = ctx.test_logits(ctx.source)
        metrics["agreement_reference"] = ctx.source_manifest.variant  # the "vs" of agreement
    metrics.update(quality(logits, labels, reference))
    metrics["test_images"] = len(labels)
    correct = int((logits.argmax(1) == labels).sum())
    metrics["accuracy_top1_ci95"] = [round(x, 6) for x in accuracy_interval(correct, len(labels))]
    return metrics, logits


def runtimes_to_build(row: Variant, options: BuildOptions) -> list[str]:
    """The variant's table runtimes, narrowed to ``options.runtimes`` when given."""
    if options.runtimes is None:
        return list(row.runtimes)
    asked = set(options.runtimes)
    if "openvino" in asked:  # OpenVINO serves the ONNX artifact, so that is built too
        asked.add("onnxruntime")
    runtimes = [r for r in row.runtimes if r in asked]
    if not runtimes:
        raise ValueError(
            f"{row.name} builds for {', '.join(row.runtimes)}; "
            f"asked for {', '.join(options.runtimes)}"
        )
    return runtimes


def save_torch(built: Built, work: Path, metrics: dict[str, Any]) -> RuntimeArtifact:
    """The torch artifact: the state dict, rebuilt at load from the manifest's architecture."""
    path = work / "model.pt"
    torch.save(built.model.state_dict(), path)
    artifact = describe_file(path, built.fmt, built.details)
    artifact.metrics = {
        k: metrics.get(k) for k in ("accuracy_top1", "accuracy_top5", "agreement_top1_vs_baseline")
    }
    return artifact


def save_predictions(ctx: BuildContext, work: Path) -> dict[str, Any]:
    """``evaluation.npz``: the test labels and each artifact's top-1 class per test image, so
    the benchmark can put intervals on accuracies and pair any two variants image by image."""
    assert ctx.test_labels is not None
    path = work / EVALUATION_FILE
    arrays: dict[str, Any] = {label: p.numpy() for label, p in ctx.predictions.items()}
    with path.open("wb") as f:
        np.savez_compressed(f, labels=ctx.test_labels.numpy().astype(np.int16), **arrays)
    return {
        "file": EVALUATION_FILE,
        "sha256": sha256_file(path),
        "images": len(ctx.test_labels),
        "labels": sorted(arrays),
    }


def build_variant(variant: str, options: BuildOptions) -> Path:
    """Build ``variant`` into ``options.out/variant`` and return that directory."""
    row = get_variant(variant)
    technique = get_technique(variant)
    runtimes = runtimes_to_build(row, options)
    technique.preflight(options)  # fail before any data loading or source building
    started = time.perf_counter()
    seed_everything(options.seed)  # weight initialisation included: same seed, same artifact
    task = make_task(options)
    with atomic_directory(options.out / variant) as work:
        ctx = BuildContext(variant, options, task)
        if technique.NEEDS_DATA is not None:  # before building a source it could not use
            ctx.require_data(technique.NEEDS_DATA)
        attach_source(ctx, row)
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
        for runtime in runtimes:
            if runtime == "torch":
                manifest.artifacts[runtime] = save_torch(built, work, metrics)
                continue
            exporter: Exporter | None = technique.EXPORTERS.get(runtime)
            if runtime == "openvino" and exporter is None:  # reads the ONNX artifact just made
                manifest.artifacts[runtime] = openvino_artifact(
                    ctx, built, work, torch_logits, manifest=manifest
                )
                continue
            if exporter is None:  # get_technique checked that only onnxruntime gets here
                exporter = export_fp32_artifact
            manifest.artifacts[runtime] = exporter(ctx, built, work, torch_logits)
        if ctx.predictions and ctx.test_labels is not None:
            manifest.metrics["evaluation"] = save_predictions(ctx, work)
        manifest.build_seconds = round(time.perf_counter() - started, 1)
        write_manifest(work, manifest)
    log.info(
        "built %s in %.0fs -> %s", variant, time.perf_counter() - started, options.out / variant
    )
    return options.out / variant
