"""The build pipeline: the source a variant is made from, and the runtimes it builds."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from service.manifest import read_manifest
from service.optimize.common import BuildContext, source_chain
from service.optimize.data import digits_task
from service.optimize.options import BuildOptions
from service.optimize.pipeline import build_variant, runtimes_to_build
from service.variants import get_variant


def test_a_missing_source_is_built_first_with_its_own_runtimes(build, tmp_path, caplog):
    # distilled-quantized asked for onnxruntime only, with no distilled built: distilled is
    # built first, for torch and onnxruntime (the torch artifact is what gets quantized), from
    # the baseline already there; the manifest names the whole chain of sources.
    out = tmp_path / "models"
    out.mkdir()
    (out / "baseline").symlink_to(build("baseline"))
    options = BuildOptions(
        out=out, epochs=2, student="densenet-tiny", calibration_images=32, runtimes=("onnxruntime",)
    )
    with caplog.at_level(logging.INFO, logger="service.optimize.pipeline"):
        build_variant("distilled-quantized", options)
    assert (
        f"distilled-quantized is made from distilled, which is not in {out}: building it first "
        f"(`densenet build distilled --out {out}`)"
    ) in caplog.messages
    assert sorted(read_manifest(out / "distilled").artifacts) == [
        "onnxruntime",
        "openvino",
        "torch",
    ]
    composed = read_manifest(out / "distilled-quantized")
    assert sorted(composed.artifacts) == ["onnxruntime"]
    chain = composed.source_weights["chain"]
    assert chain == [
        {"variant": "distilled", "sha256": sha256_of(out / "distilled" / "model.pt")},
        {"variant": "baseline", "sha256": sha256_of(out / "baseline" / "model.pt")},
    ]
    assert (
        composed.source_weights["from"] == "distilled" and "teacher" not in composed.source_weights
    )
    assert composed.metrics["agreement_reference"] == "distilled"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_variant_made_from_scratch_records_no_chain(build):
    manifest = read_manifest(build("baseline"))
    assert source_chain(manifest) == []
    ctx = BuildContext("pruned", BuildOptions(), digits_task(32))
    with pytest.raises(RuntimeError, match="pruned is made from another variant; none was loaded"):
        ctx.derived_from()


def test_runtimes_follow_the_table_unless_narrowed():
    pruned = get_variant("pruned")
    assert runtimes_to_build(pruned, BuildOptions()) == ["torch", "onnxruntime", "openvino"]
    assert runtimes_to_build(pruned, BuildOptions(runtimes=("onnxruntime",))) == ["onnxruntime"]
    # OpenVINO serves the ONNX artifact: asking for it builds that too.
    openvino = BuildOptions(runtimes=("openvino",))
    assert runtimes_to_build(pruned, openvino) == ["onnxruntime", "openvino"]
    with pytest.raises(ValueError, match="tensorrt builds for tensorrt; asked for torch"):
        runtimes_to_build(get_variant("tensorrt"), BuildOptions(runtimes=("torch",)))


def test_the_quantizers_start_from_the_sources_own_onnx_export_unless_it_changed(
    build, tmp_path, monkeypatch, caplog
):
    # Re-exporting DenseNet-121 takes tens of seconds; the source's onnx-fp32 artifact is the
    # export of the same weights. A file that no longer matches its manifest is exported anew.
    import shutil

    from service.optimize import onnx_export
    from service.optimize.pipeline import attach_source

    out = tmp_path / "models"
    shutil.copytree(build("baseline"), out / "baseline")
    exported: list[Path] = []

    def fake_export(model: object, path: Path, image_size: int) -> Path:
        path.write_bytes(b"fresh export")
        exported.append(path)
        return path

    monkeypatch.setattr(onnx_export, "export_fp32", fake_export)
    ctx = BuildContext("quantized", BuildOptions(out=out), digits_task(32))
    attach_source(ctx, get_variant("quantized"))
    source_onnx = out / "baseline" / read_manifest(out / "baseline").artifact("onnxruntime").file
    with caplog.at_level(logging.INFO, logger="service.optimize.onnx_export"):
        first = onnx_export.source_fp32_onnx(ctx, tmp_path)
    assert not exported and first.read_bytes() == source_onnx.read_bytes()
    assert "quantized: quantizing baseline's own fp32 ONNX artifact" in caplog.messages

    with source_onnx.open("ab") as fh:
        fh.write(b"\0")
    first.unlink()
    with caplog.at_level(logging.WARNING, logger="service.optimize.onnx_export"):
        second = onnx_export.source_fp32_onnx(ctx, tmp_path)
    assert exported == [second] and second.read_bytes() == b"fresh export"
    assert any("quantized: exporting baseline again" in m for m in caplog.messages)
