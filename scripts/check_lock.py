"""Checks the lock files against what asks for them, offline: ``make lock`` must have run.

Each lock in ``LOCKS`` is made from ``pyproject.toml`` (some extras) or a requirements ``.in``
file. It must pin every distribution those ask for, directly or through the project's own
extras, at a version their specifiers admit; and every distribution two locks share must be
pinned alike, so the test suite (``requirements/dev.txt``) runs the versions the images ship.
Exit status 1 with one line per problem, each ending in what to run.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# lock file -> what it is made from: ("pyproject", extras) or ("in", path)
LOCKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "requirements/dev.txt": ("pyproject", ("dev",)),
    "requirements/serve-onnxruntime.txt": ("pyproject", ("onnx",)),
    "requirements/serve-openvino.txt": ("pyproject", ("openvino",)),
    "requirements/gpu-torch.txt": ("pyproject", ("torch",)),
    "requirements/loadtest-image.txt": ("in", ("requirements/loadtest-image.in",)),
    "requirements/tensorboard-image.txt": ("in", ("requirements/tensorboard-image.in",)),
    "requirements/sbom.txt": ("in", ("requirements/sbom.in",)),
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, str]:
    """Distribution -> pinned version; every pin must carry a hash."""
    text = lock.read_text()
    found = {canonicalize_name(name): version for name, version in PIN.findall(text)}
    unhashed = [
        m.group(1) for m in PIN.finditer(text) if "--hash=sha256:" not in text[m.end() :][:200]
    ]
    if unhashed:
        raise ValueError(f"{lock.name}: no hash for {', '.join(unhashed)}")
    return found


def pyproject_requirements(pyproject: Path, extras: tuple[str, ...]) -> list[Requirement]:
    """The base dependencies and ``extras``', following the project's own extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    out: list[Requirement] = [Requirement(r) for r in project.get("dependencies", [])]
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise ValueError(f"{pyproject.name} has no extra {extra!r}")
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                todo.extend(req.extras)
            else:
                out.append(req)
    return out


def in_requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def problems(root: Path = ROOT, locks: dict[str, tuple[str, tuple[str, ...]]] = LOCKS) -> list[str]:
    """Every way the locks under ``root`` disagree with what they are made from."""
    found: list[str] = []
    locked: dict[str, dict[str, str]] = {}
    for lock_name, (kind, sources) in locks.items():
        lock = root / lock_name
        if not lock.is_file():
            found.append(f"{lock_name} is missing: run make lock")
            continue
        try:
            locked[lock_name] = pinned = pins(lock)
        except ValueError as exc:
            found.append(f"{exc}: run make lock")
            continue
        if kind == "pyproject":
            wanted = pyproject_requirements(root / "pyproject.toml", sources)
        else:
            wanted = [r for source in sources for r in in_requirements(root / source)]
        for req in wanted:
            if req.marker is not None and not req.marker.evaluate(
                {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
            ):
                continue
            version = pinned.get(canonicalize_name(req.name))
            if version is None:
                found.append(f"{lock_name} lacks {req}: run make lock")
            elif not req.specifier.contains(version, prereleases=True):
                found.append(
                    f"{lock_name} pins {req.name}=={version}, outside {req}: run make lock"
                )
    reference = locked.get("requirements/dev.txt", {})
    for lock_name, pinned in locked.items():
        for name, version in sorted(pinned.items()):
            if name in reference and reference[name] != version:
                found.append(
                    f"{lock_name} pins {name}=={version}, requirements/dev.txt "
                    f"{reference[name]}: the tests would not run what the image ships; "
                    "run make lock"
                )
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f"{len(LOCKS)} locks match pyproject.toml and each other")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
