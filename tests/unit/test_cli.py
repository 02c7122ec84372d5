"""The ``densenet`` command's start-up errors: one clear line, naming what exists."""

from __future__ import annotations

from tests.support import run_cli


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


def test_unknown_build_variant_lists_known_ones(tmp_path):
    result = run_cli("build", "sparse", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "unknown variant 'sparse'" in result.stderr and "distilled" in result.stderr


def parse(*argv: str):
    import argparse

    from service.cli import _add_bench, _add_build

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    _add_build(sub)
    _add_bench(sub)
    return parser.parse_args(argv)


def test_build_defaults_are_the_build_options_defaults():
    from service.cli import build_options
    from service.optimize.options import BuildOptions

    assert build_options(parse("build", "baseline")) == BuildOptions()
    assert BuildOptions().runtimes is None  # every runtime the variant builds, in both
    chosen = build_options(parse("build", "pruned", "--runtime", "onnxruntime", "--seed", "3"))
    assert chosen == BuildOptions(runtimes=("onnxruntime",), seed=3)


def test_bench_defaults_are_the_bench_config_defaults():
    from service.bench.config import BenchConfig

    args = vars(parse("bench"))
    for field, value in vars(BenchConfig()).items():
        if field != "profile":
            assert args[field] == value, field


def test_a_tampered_artifact_stops_startup_with_one_line(tmp_path):
    from service.manifest import RuntimeArtifact, sha256_file, write_manifest
    from tests.support import fake_manifest

    variant_dir = tmp_path / "baseline"
    variant_dir.mkdir()
    weights = variant_dir / "model.onnx"
    weights.write_bytes(b"an onnx graph")
    manifest = fake_manifest()
    manifest.artifacts = {
        "onnxruntime": RuntimeArtifact(
            file="model.onnx", format="onnx-fp32", sha256=sha256_file(weights), size_bytes=13
        )
    }
    write_manifest(variant_dir, manifest)
    weights.write_bytes(b"an onnx graqh")  # one flipped byte
    result = run_cli("serve", MODEL_DIR=str(tmp_path), MODEL_RUNTIME="onnxruntime")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "changed after the build; refusing to serve it" in lines[0]


def test_a_setting_that_fails_its_pattern_is_named(tmp_path):
    result = run_cli("serve", MODEL_DIR=str(tmp_path), MODEL_SHA256="not-a-digest")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("densenet serve: MODEL_SHA256: String should match pattern")
