"""Self-describing model artifacts: ``MODEL_DIR/<variant>/manifest.json`` plus weights files.

One variant directory may hold one file per runtime (``model.pt`` for torch, ``model.onnx``
for ONNX Runtime, ``model.ep`` for TensorRT). The manifest says how to preprocess, what the
labels are, where the weights came from and what the build measured. This module is
deliberately torch-free: the ONNX Runtime server reads it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from service.errors import (
    ArtifactNotFound,
    ArtifactTampered,
    IncompatibleArtifact,
    InvalidArtifact,
)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


# The largest resize or crop side a manifest may ask for. Classifiers take 224-600 px inputs;
# a 2048 x 2048 crop is already 48 MiB of float32 per image, and a manifest asking for more is
# refused at load with one line instead of failing at warm-up (a 100,000 crop: MemoryError).
MAX_IMAGE_SIDE = 2048
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # what service.imaging resamples with


class Preprocess(BaseModel):
    """torchvision-style eval transform: resize shorter side, center crop, normalize."""

    resize_size: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    crop_size: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @field_validator("mean")
    @classmethod
    def _finite_mean(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"mean {list(value)} must be finite numbers")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        # Normalizing divides by std: 0 makes every input infinite, a negative one flips it.
        if not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"std {list(value)} must be finite and greater than 0")
        return value

    @field_validator("interpolation")
    @classmethod
    def _known_interpolation(cls, value: str) -> str:
        if value not in INTERPOLATIONS:
            raise ValueError(f"interpolation {value!r} is not one of {', '.join(INTERPOLATIONS)}")
        return value


class RuntimeArtifact(BaseModel):
    """One runtime's file inside a variant directory, with what its build checked."""

    file: str
    format: str
    sha256: str
    size_bytes: int
    details: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("file")
    @classmethod
    def _inside_the_variant_directory(cls, value: str) -> str:
        # A plain file name: no absolute path, no directory part, no "..". A manifest must
        # not be able to point the server at /etc/passwd or at another variant's weights.
        if not value or value in {".", ".."} or "/" in value or "\\" in value or "\0" in value:
            raise ValueError(f"file {value!r} must be a file name inside the variant directory")
        return value


class Manifest(BaseModel):
    """Everything needed to serve a variant, and everything its build measured."""

    schema_version: int = SCHEMA_VERSION
    variant: str
    task: str
    architecture: dict[str, Any]
    num_classes: int
    labels: list[str]
    preprocess: Preprocess
    source_weights: dict[str, Any]
    built_at: str
    build_seconds: float | None = None
    artifacts: dict[str, RuntimeArtifact] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    build_settings: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for a {self.num_classes}-class model")
        p = self.preprocess
        if not 0 < p.crop_size <= p.resize_size:
            raise ValueError(
                f"preprocess crops {p.crop_size} from a {p.resize_size} resize; need "
                "0 < crop_size <= resize_size"
            )
        return self

    def artifact(self, runtime: str) -> RuntimeArtifact:
        """The file for ``runtime``, or ArtifactNotFound naming the runtimes present."""
        try:
            return self.artifacts[runtime]
        except KeyError:
            have = ", ".join(self.artifacts) or "none"
            raise ArtifactNotFound(
                f"variant {self.variant!r} has no {runtime!r} artifact (it has: {have}); "
                f"rebuild with: densenet build {self.variant} --runtime {runtime}"
            ) from None


def now_iso() -> str:
    """UTC timestamp for manifests."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(path: Path, fmt: str, details: dict[str, Any] | None = None) -> RuntimeArtifact:
    """A RuntimeArtifact for a file already written inside a variant directory."""
    return RuntimeArtifact(
        file=path.name,
        format=fmt,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        details=details or {},
    )


def read_manifest(variant_dir: Path) -> Manifest:
    """Load and validate ``variant_dir/manifest.json``.

    Raises:
        ArtifactNotFound: there is no manifest.
        IncompatibleArtifact: it was written by a newer format than this version reads.
    """
    path = variant_dir / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactNotFound(f"no {MANIFEST_NAME} in {variant_dir}")
    require_inside(path, variant_dir)
    text = path.read_text()
    # The version is checked before the rest, so a future format is refused by name rather
    # than by whichever of its fields happens to fail validation first.
    version = _schema_version(text, path)
    if version != SCHEMA_VERSION:
        raise IncompatibleArtifact(
            f"{path} has schema_version {version!r}; this version of the service reads "
            f"schema_version {SCHEMA_VERSION} only: rebuild the artifact with this version"
        )
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidArtifact(f"{path} is not a valid manifest: {where}: {message}") from None


def _schema_version(text: str, path: Path) -> object:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArtifact(f"{path} is not JSON: {exc}") from None
    return data.get("schema_version") if isinstance(data, dict) else None


def require_inside(path: Path, variant_dir: Path) -> None:
    """Refuse a file that resolves outside its variant directory (through a symbolic link):
    the one rule for every file the server reads, so a link cannot swap in another
    variant's manifest or weights. The variant directory itself may be a link."""
    if not path.resolve().is_relative_to(variant_dir.resolve()):
        raise InvalidArtifact(f"{path} resolves outside {variant_dir}; refusing to serve it")


def write_manifest(variant_dir: Path, manifest: Manifest) -> Path:
    """Write the manifest as stable, human-readable JSON."""
    path = variant_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return path


def available(model_dir: Path) -> dict[str, list[str]]:
    """Built variants under ``model_dir`` and the runtimes each one has."""
    found: dict[str, list[str]] = {}
    if not model_dir.is_dir():
        return found
    for child in sorted(model_dir.iterdir()):
        if (child / MANIFEST_NAME).is_file():
            try:
                found[child.name] = list(read_manifest(child).artifacts)
            except (ValueError, IncompatibleArtifact, InvalidArtifact):
                continue
    return found


def describe_available(model_dir: Path) -> str:
    """One line naming what exists under ``model_dir``."""
    have = available(model_dir)
    if not have:
        return f"nothing is built in {model_dir} (run: densenet build baseline --out {model_dir})"
    listed = "; ".join(f"{name} [{', '.join(rts)}]" for name, rts in have.items())
    return f"built in {model_dir}: {listed}"


def verify_file(path: Path, entry: RuntimeArtifact, pinned: str | None = None) -> None:
    """Refuse a weights file that is not the one the manifest (and ``pinned``) names.

    Raises:
        ArtifactTampered: its size or sha256 differs, or the manifest's digest is not
            ``pinned`` (a deployment's MODEL_SHA256), so a swapped pair is refused too.
    """
    if pinned is not None and entry.sha256 != pinned.lower():
        raise ArtifactTampered(
            f"{path}: the manifest names sha256 {entry.sha256}, not MODEL_SHA256={pinned}"
        )
    size = path.stat().st_size
    if size != entry.size_bytes:
        raise ArtifactTampered(
            f"{path} is {size} bytes, the manifest says {entry.size_bytes}: it changed after "
            "the build; refusing to serve it"
        )
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ArtifactTampered(
            f"{path} has sha256 {digest}, the manifest says {entry.sha256}: it changed after "
            "the build; refusing to serve it"
        )


def resolve(
    model_dir: Path, variant: str, runtime: str, pinned_sha256: str | None = None
) -> tuple[Manifest, Path]:
    """Find, and verify, the manifest and weights file serving ``variant`` on ``runtime``.

    Raises:
        ArtifactNotFound: with one line that says what does exist.
        InvalidArtifact: the manifest does not parse, contradicts itself, or its file entry
            leaves the variant directory (also through a symbolic link).
        ArtifactTampered: the file is not the one the manifest (or ``pinned_sha256``) names.
    """
    variant_dir = model_dir / variant
    if not (variant_dir / MANIFEST_NAME).is_file():
        raise ArtifactNotFound(
            f"no artifact for MODEL_VARIANT={variant!r}; {describe_available(model_dir)}"
        )
    manifest = read_manifest(variant_dir)
    try:
        entry = manifest.artifact(runtime)
    except ArtifactNotFound as exc:
        raise ArtifactNotFound(f"{exc}; {describe_available(model_dir)}") from None
    path = variant_dir / entry.file
    if not path.is_file():
        raise ArtifactNotFound(f"{path} is listed in the manifest but missing")
    require_inside(path, variant_dir)
    verify_file(path, entry, pinned_sha256)
    return manifest, path


def remove_abandoned_builds(final: Path) -> list[Path]:
    """Delete temp dirs of builds of ``final`` whose process is gone (killed, so its own
    clean-up never ran); a build still running keeps its dir. Returns what was removed."""
    removed = []
    for tmp in final.parent.glob(f".{final.name}.building-*"):
        owner = tmp.name.removeprefix(f".{final.name}.building-").split("-", 1)[0]
        if owner.isdigit() and psutil.pid_exists(int(owner)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp dir beside ``final``; on success it replaces ``final`` in one rename.

    A failed build leaves the previous artifact (or nothing) in place, never a half-written one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_builds(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-{os.getpid()}-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; a non-root server must be able to read it
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
