"""Artifact resolution: what is served, and clear refusals for what cannot be."""

from __future__ import annotations

import json
import os

import pytest

from service.errors import ArtifactNotFound, ArtifactTampered, IncompatibleArtifact, InvalidArtifact
from service.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    atomic_directory,
    available,
    read_manifest,
    resolve,
    sha256_file,
    write_manifest,
)
from tests.support import fake_manifest


@pytest.fixture
def model_dir(tmp_path):
    variant_dir = tmp_path / "baseline"
    variant_dir.mkdir()
    write_manifest(variant_dir, fake_manifest())
    (variant_dir / "model.fake").write_bytes(b"weights")
    described(tmp_path)
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


def write(model_dir, manifest) -> None:
    write_manifest(model_dir / "baseline", manifest)


@pytest.mark.parametrize(
    "file",
    [
        "/etc/passwd",
        "../../../../etc/passwd",
        "/proc/self/environ",
        "../distilled/model.onnx",
        "..",
    ],
)
def test_file_entries_outside_the_variant_directory_are_refused(model_dir, file):
    manifest = fake_manifest()
    manifest.artifacts["fake"].file = file
    write(model_dir, manifest)
    with pytest.raises(InvalidArtifact, match="must be a file name inside the variant directory"):
        resolve(model_dir, "baseline", "fake")


def test_a_symbolic_link_out_of_the_variant_directory_is_refused(model_dir, tmp_path):
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"weights")
    (model_dir / "baseline" / "model.fake").unlink()
    (model_dir / "baseline" / "model.fake").symlink_to(outside)
    with pytest.raises(InvalidArtifact, match="resolves outside"):
        resolve(model_dir, "baseline", "fake")


def described(model_dir) -> None:
    """Record the real file's size and digest, as a build does."""
    manifest = read_manifest(model_dir / "baseline")
    path = model_dir / "baseline" / "model.fake"
    manifest.artifacts["fake"].sha256 = sha256_file(path)
    manifest.artifacts["fake"].size_bytes = path.stat().st_size
    write(model_dir, manifest)


def test_the_file_must_be_the_one_the_manifest_describes(model_dir):
    resolve(model_dir, "baseline", "fake")  # as built: served
    path = model_dir / "baseline" / "model.fake"
    path.write_bytes(b"weightz")  # one flipped byte, same size
    with pytest.raises(ArtifactTampered, match=r"has sha256 .* the manifest says"):
        resolve(model_dir, "baseline", "fake")
    path.write_bytes(b"other weights")  # a different file in its place
    with pytest.raises(ArtifactTampered, match="13 bytes, the manifest says 7"):
        resolve(model_dir, "baseline", "fake")


def test_model_sha256_pins_the_manifest_too(model_dir):
    digest = read_manifest(model_dir / "baseline").artifacts["fake"].sha256
    resolve(model_dir, "baseline", "fake", pinned_sha256=digest.upper())
    with pytest.raises(ArtifactTampered, match="not MODEL_SHA256="):
        resolve(model_dir, "baseline", "fake", pinned_sha256="0" * 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not JSON"),
        (None, "not a valid manifest: manifest: 2 labels for a 10-class model"),
        ('{"schema_version": 1}', "is not a valid manifest: variant: Field required"),
    ],
    ids=["invalid-json", "labels", "missing-fields"],
)
def test_a_bad_manifest_is_one_clear_line(model_dir, text, message):
    path = model_dir / "baseline" / MANIFEST_NAME
    if text is None:
        data = json.loads(path.read_text())
        data["labels"] = ["a", "b"]
        text = json.dumps(data)
    path.write_text(text)
    with pytest.raises(InvalidArtifact) as refused:
        read_manifest(model_dir / "baseline")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_killed_builds_directory_is_removed_by_the_next_build(tmp_path):
    final = tmp_path / "baseline"
    dead = tmp_path / ".baseline.building-999999999-abc"
    legacy = tmp_path / ".baseline.building-k2j3"  # written before the pid was in the name
    alive = tmp_path / f".baseline.building-{os.getpid()}-xyz"
    for d in (dead, legacy, alive):
        d.mkdir()
    with atomic_directory(final) as work:
        (work / "file").write_text("x")
    assert final.is_dir() and not dead.exists() and not legacy.exists() and alive.exists()


def test_a_manifest_linked_out_of_the_variant_directory_is_refused(model_dir, tmp_path):
    path = model_dir / "baseline" / MANIFEST_NAME
    outside = tmp_path / "elsewhere.json"
    outside.write_text(path.read_text())
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(InvalidArtifact, match=r"manifest\.json resolves outside"):
        resolve(model_dir, "baseline", "fake")


def test_a_linked_variant_directory_is_served(model_dir, tmp_path):
    """The rule is about files leaving their directory; the directory may be a link (a
    deployment's ``current -> v2``)."""
    (tmp_path / "current").symlink_to(model_dir / "baseline")
    manifest, _ = resolve(tmp_path, "current", "fake")
    assert manifest.variant == "baseline"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"std": [0, 0, 0]}, "std [0.0, 0.0, 0.0] must be finite and greater than 0"),
        ({"std": [0.2, float("nan"), 0.2]}, "must be finite and greater than 0"),
        ({"mean": [0.5, float("inf"), 0.5]}, "must be finite numbers"),
        ({"crop_size": 100_000, "resize_size": 100_000}, "less than or equal to 2048"),
        ({"crop_size": 0}, "greater than or equal to 1"),
        ({"interpolation": "lanczos9"}, "interpolation 'lanczos9' is not one of"),
    ],
)
def test_preprocessing_the_server_cannot_do_is_refused_at_load(model_dir, fields, message):
    path = model_dir / "baseline" / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["preprocess"].update(fields)
    path.write_text(json.dumps(data))  # json writes nan and inf as Python reads them back
    with pytest.raises(InvalidArtifact) as refused:
        read_manifest(model_dir / "baseline")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_manifest_admits_every_interpolation_the_decoder_has():
    from service.imaging import _INTERPOLATION
    from service.manifest import INTERPOLATIONS

    assert set(INTERPOLATIONS) == set(_INTERPOLATION)
