"""The ``densenet`` command's start-up errors: one clear line, naming what exists."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_variant_stops_startup_with_one_line(tmp_path):
    result = run_cli("serve", MODEL_DIR=str(tmp_path), MODEL_VARIANT="tiny-yolo")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown MODEL_VARIANT 'tiny-yolo'" in lines[0] and "quantized-dynamic" in lines[0]


def test_unknown_runtime_stops_startup(tmp_path):
    result = run_cli("serve", MODEL_DIR=str(tmp_path), MODEL_RUNTIME="tvm")
    assert result.returncode == 2
    assert "unknown MODEL_RUNTIME 'tvm'" in result.stderr and "onnxruntime" in result.stderr


def test_missing_artifact_names_what_exists(tmp_path):
    empty = run_cli("serve", MODEL_DIR=str(tmp_path / "none"), MODEL_VARIANT="pruned")
    assert empty.returncode == 2
    assert "nothing is built" in empty.stderr


@pytest.mark.slow
def test_missing_runtime_or_variant_lists_built_ones(build, model_dir):
    build("baseline")
    result = run_cli("serve", MODEL_DIR=str(model_dir), MODEL_VARIANT="tensorrt")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "no artifact for MODEL_VARIANT='tensorrt'" in line
    assert "baseline [torch, onnxruntime]" in line
    wrong_runtime = run_cli("serve", MODEL_DIR=str(model_dir), MODEL_RUNTIME="tensorrt")
    assert wrong_runtime.returncode == 2
    assert "has no 'tensorrt' artifact" in wrong_runtime.stderr


def test_unknown_build_variant_lists_known_ones(tmp_path):
    result = run_cli("build", "sparse", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown variant 'sparse'" in result.stderr and "distilled" in result.stderr
