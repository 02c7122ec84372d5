"""Architectures and safe artifact loading: legacy ImageNet key files, pruned shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torchvision.models import densenet121

from service.modeling import (
    build_architecture,
    remap_legacy_densenet_keys,
    resize_to_state_dict,
)
from service.optimize.baseline import load_imagenet_densenet
from tests.support import run_cli


@pytest.fixture(scope="module")
def legacy_weights(legacy_imagenet_weights) -> tuple[Path, dict[str, torch.Tensor]]:
    """The conftest legacy-layout file and the state dict it was made from (same seed)."""
    torch.manual_seed(0)
    reference = densenet121(weights=None).state_dict()
    legacy = torch.load(legacy_imagenet_weights, weights_only=True)
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert "features.denseblock1.denselayer1.conv.2.weight" in legacy
    return legacy_imagenet_weights, reference


def test_legacy_key_names_are_remapped():
    remapped = remap_legacy_densenet_keys(
        {
            "features.denseblock2.denselayer7.norm.1.running_var": torch.ones(1),
            "features.denseblock2.denselayer7.conv.2.weight": torch.ones(1),
            "features.norm5.weight": torch.ones(1),
        }
    )
    assert set(remapped) == {
        "features.denseblock2.denselayer7.norm1.running_var",
        "features.denseblock2.denselayer7.conv2.weight",
        "features.norm5.weight",
    }


def test_legacy_weights_file_loads_with_identical_tensors(legacy_weights):
    path, reference = legacy_weights
    model, source = load_imagenet_densenet(path)
    loaded = model.state_dict()
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key
    assert source["path"] == str(path) and len(source["sha256"]) == 64


@pytest.mark.slow
def test_build_imagenet_baseline_from_legacy_file(legacy_weights, tmp_path):
    from service.manifest import read_manifest
    from service.optimize.options import BuildOptions
    from service.optimize.pipeline import build_variant

    path, _ = legacy_weights
    out = build_variant(
        "baseline", BuildOptions(task="imagenet", weights=path, out=tmp_path, runtimes=("torch",))
    )
    manifest = read_manifest(out)
    assert manifest.num_classes == 1000 and len(manifest.labels) == 1000
    assert manifest.labels[0] == "tench" and manifest.labels[207] == "golden retriever"
    assert manifest.preprocess.resize_size == 256 and manifest.preprocess.crop_size == 224
    assert manifest.source_weights["kind"] == "pretrained"
    # Random weights under torchvision's file name: its sha256 is not a639ec97..., so the
    # manifest does not claim they are torchvision's.
    assert manifest.source_weights["verified"] is False
    assert manifest.source_weights["weights"].startswith("unverified file")
    assert manifest.metrics["accuracy_top1"] is None
    assert "no held-out labelled images" in manifest.metrics["accuracy_not_measured"]


def test_offline_without_cache_gives_a_clear_error(tmp_path):
    env = {
        **os.environ,
        "TORCH_HOME": str(tmp_path / "torch-home"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    result = run_cli(
        "build",
        "baseline",
        "--task",
        "imagenet",
        "--out",
        str(tmp_path / "models"),
        timeout=300,
        **env,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot download the ImageNet DenseNet-121 weights" in last
    assert "--weights PATH" in last and "densenet121-a639ec97.pth" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models" / "baseline").exists()


def test_pruned_shapes_rebuild_without_torch_pruning():
    import torch_pruning as tp

    model = build_architecture({"name": "densenet121", "num_classes": 10}).eval()
    pruner = tp.pruner.MetaPruner(
        model,
        torch.zeros(1, 3, 32, 32),
        pruning_ratio=0.3,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        ignored_layers=[model.classifier],
    )
    pruner.step()
    state = model.state_dict()
    rebuilt = resize_to_state_dict(
        build_architecture({"name": "densenet121", "num_classes": 10}), state
    )
    rebuilt.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt.eval()(x), model(x))


def test_weights_are_recorded_as_torchvisions_only_when_their_digest_matches(tmp_path, monkeypatch):
    import hashlib
    import types

    from service.optimize import baseline

    path = tmp_path / "weights.pth"
    path.write_bytes(b"some weights")
    prefix = hashlib.sha256(b"some weights").hexdigest()[:8]
    for url, verified in (
        (f"https://x/densenet121-{prefix}.pth", True),
        ("https://x/densenet121-00000000.pth", False),
    ):
        enum = types.SimpleNamespace(name="IMAGENET1K_V1", url=url)
        monkeypatch.setattr(baseline, "_weights_enum", lambda enum=enum: enum)
        source = baseline.describe_weights(path)
        assert source["verified"] is verified
        assert source["weights"].startswith("torchvision") is verified
