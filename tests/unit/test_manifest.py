"""Artifact resolution: what is served, and clear refusals for what cannot be."""

from __future__ import annotations

import json

import pytest

from service.errors import ArtifactNotFound, IncompatibleArtifact
from service.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    available,
    read_manifest,
    resolve,
    write_manifest,
)
from tests.support import fake_manifest


@pytest.fixture
def model_dir(tmp_path):
    variant_dir = tmp_path / "baseline"
    variant_dir.mkdir()
    write_manifest(variant_dir, fake_manifest())
    (variant_dir / "model.fake").write_bytes(b"weights")
    return tmp_path


def test_resolve_finds_the_manifest_and_file(model_dir):
    manifest, path = resolve(model_dir, "baseline", "fake")
    assert manifest.variant == "baseline" and path == model_dir / "baseline" / "model.fake"
    assert available(model_dir) == {"baseline": ["fake"]}


def test_nothing_built(tmp_path):
    with pytest.raises(ArtifactNotFound, match=r"nothing is built in .*densenet build baseline"):
        resolve(tmp_path / "none", "pruned", "torch")


def test_missing_variant_names_what_exists(model_dir):
    with pytest.raises(ArtifactNotFound, match=r"MODEL_VARIANT='pruned'.*baseline \[fake\]"):
        resolve(model_dir, "pruned", "fake")


def test_missing_runtime_says_how_to_build_it(model_dir):
    with pytest.raises(
        ArtifactNotFound, match=r"no 'torch' artifact \(it has: fake\).*--runtime torch"
    ):
        resolve(model_dir, "baseline", "torch")


def test_listed_file_missing(model_dir):
    (model_dir / "baseline" / "model.fake").unlink()
    with pytest.raises(ArtifactNotFound, match="listed in the manifest but missing"):
        resolve(model_dir, "baseline", "fake")


def test_a_future_schema_version_is_refused_by_name(model_dir):
    path = model_dir / "baseline" / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    data["renamed_field"] = data.pop("labels")  # a future format need not validate as ours
    path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleArtifact, match=f"schema_version {SCHEMA_VERSION + 1}.*rebuild"):
        read_manifest(model_dir / "baseline")
    assert available(model_dir) == {}


def test_a_manifest_without_a_version_is_refused(model_dir):
    path = model_dir / "baseline" / MANIFEST_NAME
    data = json.loads(path.read_text())
    del data["schema_version"]
    path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleArtifact, match="schema_version None"):
        read_manifest(model_dir / "baseline")
