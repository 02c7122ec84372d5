"""Baseline: DenseNet-121 fp32 — ImageNet weights via torchvision, or trained on digits."""

from __future__ import annotations

import logging
import socket
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from service.errors import ConfigurationError
from service.manifest import Preprocess, sha256_file
from service.modeling import build_architecture, remap_legacy_densenet_keys
from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.options import BuildOptions
from service.optimize.train import fit

log = logging.getLogger(__name__)
EXPORTERS: Mapping[str, Exporter] = {}  # the pipeline's torch and fp32 ONNX exports
DOWNLOAD_TIMEOUT_S = 60


class WeightsUnavailable(ConfigurationError):
    """ImageNet weights are neither given, cached, nor downloadable."""


def _weights_enum() -> Any:
    from torchvision.models import DenseNet121_Weights

    return DenseNet121_Weights.IMAGENET1K_V1


def imagenet_labels_and_preprocess() -> tuple[list[str], Preprocess]:
    """Class names and eval transform torchvision ships with the ImageNet weights' metadata."""
    weights = _weights_enum()
    transform = weights.transforms()
    return list(weights.meta["categories"]), Preprocess(
        resize_size=int(transform.resize_size[0]),
        crop_size=int(transform.crop_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )


def locate_imagenet_weights(weights: Path | None) -> Path:
    """``--weights PATH``, else the torch hub cache, else a download into that cache.

    Raises:
        WeightsUnavailable: offline with nothing cached, with what to do about it.
    """
    enum = _weights_enum()
    filename = enum.url.rsplit("/", 1)[-1]
    if weights is not None:
        if not weights.is_file():
            raise WeightsUnavailable(f"--weights {weights}: no such file")
        return weights
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.load_state_dict_from_url(enum.url, progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsUnavailable(
            f"cannot download the ImageNet DenseNet-121 weights ({enum.url}): {exc}. "
            f"Offline, copy {filename} to {cached} or pass --weights PATH"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return cached


def describe_weights(path: Path) -> dict[str, Any]:
    """The manifest's ``source_weights`` for an ImageNet weights file, checked, not assumed.

    torchvision names its checkpoints after the first hex digits of their sha256 (what
    ``torch.hub``'s ``check_hash`` verifies); a file whose digest does not start with the
    expected ones is recorded as unverified, whatever it is called.
    """
    enum = _weights_enum()
    match = torch.hub.HASH_REGEX.search(enum.url.rsplit("/", 1)[-1])
    prefix = match.group(1) if match else ""
    digest = sha256_file(path)
    verified = bool(prefix) and digest.startswith(prefix)
    name = f"torchvision DenseNet121_Weights.{enum.name}"
    if not verified:
        log.warning("%s is not %s: its sha256 does not start with %s", path, name, prefix)
    return {
        "kind": "pretrained",
        "weights": name if verified else f"unverified file (not {name}: sha256 is not {prefix}…)",
        "verified": verified,
        "url": enum.url,
        "path": str(path),
        "sha256": digest,
    }


def load_imagenet_densenet(weights: Path | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """DenseNet-121 with ImageNet weights; legacy ``norm.1``-style key files load too."""
    path = locate_imagenet_weights(weights)
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model = build_architecture({"name": "densenet121", "num_classes": 1000})
    model.load_state_dict(remap_legacy_densenet_keys(state_dict))
    return model.eval(), describe_weights(path)


# Training from scratch needs images, ImageNet weights do not: build() decides.
NEEDS_DATA: str | None = None


def preflight(options: BuildOptions) -> None:
    """A ``--weights`` path that does not exist fails before anything is loaded."""
    if options.weights is not None and not options.weights.is_file():
        raise WeightsUnavailable(f"--weights {options.weights}: no such file")


def build(ctx: BuildContext) -> Built:
    """Train on digits, or load the ImageNet weights."""
    arch = {"name": "densenet121", "num_classes": len(ctx.task.labels)}
    if ctx.options.task == "imagenet":
        model, source = load_imagenet_densenet(ctx.options.weights)
        return Built(model, "state_dict", arch, model, source)
    ctx.require_data("training")
    assert ctx.task.train is not None and ctx.task.val is not None
    model = build_architecture(arch)
    config = ctx.train_config("baseline", "baseline", epochs=30)
    result = fit(model, ctx.task.train, ctx.task.val, config)
    source = {
        "kind": "trained",
        "dataset": ctx.task.dataset,
        "init": "random",
        "seed": ctx.options.seed,
    }
    return Built(
        model,
        "state_dict",
        arch,
        model,
        source,
        build_settings={
            "train": config.as_dict(distilling=False),
            **result.summary(),
        },
    )
