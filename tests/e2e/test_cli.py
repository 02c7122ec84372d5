"""The ``densenet serve`` start-up errors against really built artifacts."""

from __future__ import annotations

from tests.support import run_cli


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
