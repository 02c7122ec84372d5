"""The lock files: every image and the test environment install from a hashed lock, the locks
match pyproject.toml and each other, and the check says `make lock` when they do not."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_lock


def copy_of_the_inputs(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def test_the_committed_locks_match_pyproject_and_each_other():
    assert check_lock.problems() == []


def test_a_dependency_the_lock_lacks_fails_the_check(tmp_path):
    root = copy_of_the_inputs(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace('  "psutil>=5.9",\n', '  "psutil>=5.9",\n  "tomli-w>=1.0",\n')
    )
    found = check_lock.problems(root)
    assert "requirements/serve-onnxruntime.txt lacks tomli-w>=1.0: run make lock" in found
    assert "requirements/dev.txt lacks tomli-w>=1.0: run make lock" in found
    # A raised bound the pinned version no longer meets.
    pyproject.write_text(text.replace('"onnxruntime>=1.20"', '"onnxruntime>=99"'))
    (line,) = [p for p in check_lock.problems(root) if "serve-onnxruntime" in p]
    assert re.fullmatch(r".*pins onnxruntime==[\d.]+, outside onnxruntime>=99: run make lock", line)


def test_an_image_lock_pinned_apart_from_the_tests_fails_the_check(tmp_path):
    root = copy_of_the_inputs(tmp_path)
    lock = root / "requirements" / "serve-openvino.txt"
    version = re.search(r"^numpy==(\S+) ", lock.read_text(), re.MULTILINE).group(1)
    lock.write_text(lock.read_text().replace(f"numpy=={version} ", "numpy==1.26.0 "))
    (line,) = check_lock.problems(root)
    assert "serve-openvino.txt pins numpy==1.26.0, requirements/dev.txt" in line


@pytest.mark.parametrize(
    ("dockerfile", "lock"),
    [
        ("Dockerfile", '"requirements/serve-${MODEL_RUNTIME}.txt"'),
        ("Dockerfile.gpu", "requirements/gpu-torch.txt"),
        ("loadtest/Dockerfile", "/tmp/requirements.txt"),
        ("monitoring/tensorboard.Dockerfile", "/tmp/requirements.txt"),
    ],
)
def test_every_image_installs_its_lock_by_hash(dockerfile, lock):
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if "pip" in line and " install " in line]
    assert any(
        "--require-hashes" in i and "--no-deps" in i and f"-r {lock}" in re.sub(r"\s+", " ", i)
        for i in installs
    ), installs
    # Nothing else is resolved: any other install is the project itself without dependencies
    # (or, for the TensorRT image without requirements/gpu.txt, the gpu extra's exact pins).
    for install in installs:
        if "--require-hashes" not in install:
            assert "--no-deps ." in install or '".[gpu]"' in install, install


def test_make_install_and_ci_install_the_dev_lock_by_hash():
    makefile = (ROOT / "Makefile").read_text()
    stamp = makefile[makefile.index("$(STAMP): pyproject.toml requirements/dev.txt") :]
    stamp = stamp[: stamp.index("\n\n")]
    assert "--require-hashes --no-deps -r requirements/dev.txt" in stamp
    assert "--no-deps -e ." in stamp
    assert "'.[dev]'" not in stamp


def test_the_private_apis_protocol_py_uses_are_held_to_one_minor_version():
    import tomllib

    from packaging.requirements import Requirement

    text = (ROOT / "service" / "protocol.py").read_text()
    assert "from uvicorn.protocols.http.httptools_impl import" in text
    assert "import httptools" in text
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {Requirement(d).name: Requirement(d).specifier for d in deps}
    for name in ("uvicorn", "httptools"):
        bounds = {s.operator: s.version for s in reqs[name]}
        assert set(bounds) == {">=", "<"}, (name, bounds)
        low, high = (tuple(int(x) for x in bounds[op].split(".")[:2]) for op in (">=", "<"))
        assert high == (low[0], low[1] + 1), (name, bounds)  # one minor version
