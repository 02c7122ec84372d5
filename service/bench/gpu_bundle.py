"""Prepare what the GPU check needs on a machine with CUDA PyTorch and no network.

    python -m service.bench.gpu_bundle gpu-bundle --model-dir models   (`make gpu-bundle`)

writes, into the bundle folder:

- ``wheels/``: the project's own dependencies (``[project] dependencies`` in pyproject.toml,
  plus pytest and httpx for the GPU tests) as binary wheels for the target Python (3.12 by
  default, manylinux x86-64), with their dependencies, less what torchvision requires
  (numpy, pillow), which a machine with CUDA PyTorch and torchvision already has;
- ``requirements.txt``: what ``pip install --no-index --find-links wheels -r`` installs there
  (already satisfied requirements are left alone);
- ``models/VARIANT/``: the variant's manifest and its torch weights (verified, as served);
- ``heldout_digits.npz``: the held-out digits and labels, so the check needs no scikit-learn.

It prints the size that travels (the repository's tracked files plus the bundle) and fails
above ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_12_x86_64",
    "manylinux2010_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
TEST_REQUIREMENTS = ("pytest", "httpx")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The project name a requirement string names."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The base dependencies, and the GPU tests' own (with pyproject's version bounds)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    dev = {requirement_name(r): r for r in project["optional-dependencies"]["dev"]}
    return [*project["dependencies"], *(dev[name] for name in TEST_REQUIREMENTS)]


def provided_by_torchvision() -> set[str]:
    """What torchvision requires (numpy, pillow, torch): a machine with CUDA PyTorch and
    torchvision has these, and they are the bulk of the wheels. torch's own small
    requirements stay in the bundle, in case pydantic & co. need newer ones."""
    return {
        requirement_name(r) for r in metadata.requires("torchvision") or [] if "extra ==" not in r
    }


def wheel_project(path: Path) -> str:
    """The project a wheel file is of (its name up to the first dash)."""
    return canonical(path.name.split("-", 1)[0])


def pip_download(wheels: Path, requirements_file: Path, python_version: str) -> None:
    """Binary wheels for ``python_version`` on manylinux x86-64, dependencies included."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "--dest",
        str(wheels),
        "-r",
        str(requirements_file),
    ]
    subprocess.run(cmd, check=True)


def copy_variant(model_dir: Path, variant: str, out: Path) -> Path:
    """The variant's manifest and verified torch weights, alone, into ``out/models``."""
    from service.manifest import MANIFEST_NAME, resolve

    manifest, path = resolve(model_dir, variant, "torch")
    target = out / "models" / variant
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model_dir / variant / MANIFEST_NAME, target / MANIFEST_NAME)
    shutil.copy2(path, target / manifest.artifact("torch").file)
    resolve(out / "models", variant, "torch")  # what travels is what was verified
    return target


def write_digits(path: Path) -> int:
    """The held-out digits (uint8 8x8) and labels, as the check reads them; returns how many."""
    from service.bench.gpu_check import heldout_digits

    pixels, labels = heldout_digits()
    np.savez_compressed(path, images=pixels, labels=np.asarray(labels, dtype=np.int64))
    return len(labels)


def tree_bytes(paths: Iterable[Path]) -> int:
    """Total size of the files under ``paths``."""
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(f.stat().st_size for f in files)
    return total


def tracked_bytes(root: Path = ROOT) -> int:
    """Size of the repository's tracked files (what travels besides the bundle)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
    ).stdout.split(b"\0")
    return tree_bytes(
        root / name.decode() for name in listed if name and (root / name.decode()).is_file()
    )


def prepare(
    out: Path,
    model_dir: Path,
    variant: str,
    *,
    python_version: str = "3.12",
    download: Callable[[Path, Path, str], None] = pip_download,
) -> dict[str, object]:
    """Write the bundle into ``out`` (replacing it); returns what it holds and its size."""
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    needed = requirements()
    (out / "requirements.txt").write_text("\n".join(needed) + "\n")
    download(wheels, out / "requirements.txt", python_version)
    provided = provided_by_torchvision()
    dropped = sorted(w.name for w in wheels.glob("*.whl") if wheel_project(w) in provided)
    for name in dropped:
        (wheels / name).unlink()
    copy_variant(model_dir, variant, out)
    digits = write_digits(out / "heldout_digits.npz")
    bundle = tree_bytes([out])
    return {
        "requirements": needed,
        "wheels": sorted(w.name for w in wheels.glob("*.whl")),
        "left_to_torch": dropped,
        "digits": digits,
        "bundle_mb": bundle / 1e6,
        "wheels_mb": tree_bytes([wheels]) / 1e6,
        "model_mb": tree_bytes([out / "models"]) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    """Prepare the bundle; print its contents and the size that travels."""
    p = argparse.ArgumentParser(prog="python -m service.bench.gpu_bundle")
    p.add_argument("out", type=Path, nargs="?", default=Path("gpu-bundle"))
    p.add_argument("--model-dir", type=Path, default=Path("models"))
    p.add_argument("--variant", default="baseline")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--limit-mb", type=float, default=60.0)
    args = p.parse_args(argv)
    info = prepare(args.out, args.model_dir, args.variant, python_version=args.python_version)
    code_mb = tracked_bytes() / 1e6
    total = code_mb + float(info["bundle_mb"])  # type: ignore[arg-type]
    print(f"wheels ({info['wheels_mb']:.1f} MB): {' '.join(info['wheels'])}")  # type: ignore[arg-type]
    print(f"left to the machine's torchvision: {' '.join(info['left_to_torch'])}")  # type: ignore[arg-type]
    print(
        f"{args.out}: wheels {info['wheels_mb']:.1f} MB + {args.variant} {info['model_mb']:.1f} MB"
        f" + {info['digits']} digits; with the code ({code_mb:.1f} MB): {total:.1f} MB to carry"
        f" (limit {args.limit_mb:.0f} MB)"
    )
    if total > args.limit_mb:
        print(f"over the {args.limit_mb:.0f} MB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
