"""The CPU image's environment, made the way its Dockerfile makes it: the lock's pinned wheels
fetched once, then installed offline by hash into a fresh venv; the service imports and serves
its runtime from it, and its SBOM lists the locked versions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow
LOCK = ROOT / "requirements" / "serve-onnxruntime.txt"


def run(*args: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def locked_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lock")
    wheels = tmp / "wheels"
    # The only network step (pip's cache serves repeats): the exact files the lock names.
    run(sys.executable, "-m", "pip", "download", "--quiet", "--require-hashes", "--no-deps",
        "--only-binary", ":all:", "-r", LOCK, "-d", wheels)  # fmt: skip
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index",
        "--find-links", wheels, "--require-hashes", "--no-deps", "-r", LOCK)  # fmt: skip
    return venv


def locked_versions() -> dict[str, str]:
    return {
        name.lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9._-]+)==(\S+) ", LOCK.read_text(), re.M)
    }


def test_the_lock_installs_offline_and_the_service_runs_from_it(locked_venv, tmp_path):
    script = (
        "import importlib.metadata as m, importlib.util as u, json, numpy as np\n"
        "from service.app import create_app\n"
        "from service.engines import get_engine_class\n"
        "get_engine_class('onnxruntime')\n"
        "import onnxruntime\n"
        "assert u.find_spec('torch') is None\n"
        "names = ['onnxruntime', 'numpy', 'pillow', 'fastapi', 'uvicorn', 'pydantic']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    out = run(locked_venv / "bin" / "python", "-c", script)  # the checkout on sys.path (cwd)
    locked = locked_versions()
    for name, version in json.loads(out).items():
        assert locked[name] == version, name


def test_the_sbom_of_the_locked_environment_lists_the_locked_versions(locked_venv, tmp_path):
    sbom = tmp_path / "sbom.cdx.json"
    cyclonedx = Path(sys.executable).parent / "cyclonedx-py"
    run(cyclonedx, "environment", "--output-format", "JSON", "--output-file", sbom,
        locked_venv / "bin" / "python")  # fmt: skip
    components = {
        c["name"].lower(): c["version"] for c in json.loads(sbom.read_text())["components"]
    }
    locked = locked_versions()
    for name in ("onnxruntime", "numpy", "pillow", "fastapi"):
        assert components[name] == locked[name], name
    assert "torch" not in components
