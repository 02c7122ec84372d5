"""The ``densenet serve`` start-up errors against really built artifacts."""

from __future__ import annotations

import pytest

from tests.support import run_cli


def test_missing_runtime_or_variant_lists_built_ones(build, model_dir):
    build("baseline")
    result = run_cli("serve", MODEL_DIR=str(model_dir), MODEL_VARIANT="tensorrt")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "no artifact for MODEL_VARIANT='tensorrt'" in line
    assert "baseline [torch, onnxruntime, openvino]" in line
    wrong_runtime = run_cli("serve", MODEL_DIR=str(model_dir), MODEL_RUNTIME="tensorrt")
    assert wrong_runtime.returncode == 2
    assert "has no 'tensorrt' artifact" in wrong_runtime.stderr


def bad_copy(source, tmp_path, change):
    """A copy of the built variant at ``source`` with ``change(manifest_data, variant_dir)``
    applied to its manifest: the weights and their digests stay as built."""
    import json
    import shutil

    variant_dir = tmp_path / "models" / source.name
    shutil.copytree(source, variant_dir)
    path = variant_dir / "manifest.json"
    data = json.loads(path.read_text())
    change(data, variant_dir)
    if not path.is_symlink():
        path.write_text(json.dumps(data))
    return variant_dir.parent


def _preprocess(**fields):
    def change(data, _):
        data["preprocess"].update(fields)

    return change


def _manifest_linked_out(data, variant_dir):
    import json

    outside = variant_dir.parent.parent / "elsewhere.json"
    outside.write_text(json.dumps(data))
    (variant_dir / "manifest.json").unlink()
    (variant_dir / "manifest.json").symlink_to(outside)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_preprocess(std=[0, 0, 0]), "std [0.0, 0.0, 0.0] must be finite and greater than 0"),
        (_preprocess(std=[0.2, -0.2, 0.2]), "must be finite and greater than 0"),
        (_preprocess(crop_size=100_000, resize_size=100_000), "less than or equal to 2048"),
        (_preprocess(resize_size=0), "greater than or equal to 1"),
        (_preprocess(interpolation="lanczos9"), "interpolation 'lanczos9' is not one of"),
        (_manifest_linked_out, "manifest.json resolves outside"),
    ],
    ids=["std-0", "std-negative", "crop-100000", "resize-0", "interpolation", "symlink-out"],
)
def test_a_manifest_the_server_cannot_serve_exits_2_with_one_line(build, tmp_path, change, message):
    models = bad_copy(build("baseline"), tmp_path, change)
    result = run_cli("serve", MODEL_DIR=str(models), MODEL_RUNTIME="onnxruntime", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
