"""The build pipeline: the source a variant is made from, and the runtimes it builds."""

from __future__ import annotations

import pytest

from service.manifest import read_manifest
from service.optimize.common import BuildContext
from service.optimize.data import digits_task
from service.optimize.options import BuildOptions
from service.optimize.pipeline import attach_source, runtimes_to_build
from service.variants import get_variant


def test_a_missing_source_is_built_with_its_own_runtimes(tmp_path):
    # `densenet build tensorrt --runtime tensorrt` with no baseline: the baseline is built
    # for torch and onnxruntime, not refused for lacking a tensorrt build.
    options = BuildOptions(out=tmp_path, epochs=1, runtimes=("tensorrt",))
    ctx = BuildContext("tensorrt", options, digits_task(options.image_size))
    attach_source(ctx, "baseline")
    source, manifest = ctx.require_source()
    assert manifest.variant == "baseline" and sum(p.numel() for p in source.parameters()) > 0
    assert sorted(read_manifest(tmp_path / "baseline").artifacts) == ["onnxruntime", "torch"]
    assert ctx.derived_from() == {
        "kind": "derived",
        "from": "baseline",
        "sha256": manifest.artifact("torch").sha256,
    }


def test_runtimes_follow_the_table_unless_narrowed():
    pruned = get_variant("pruned")
    assert runtimes_to_build(pruned, BuildOptions()) == ["torch", "onnxruntime"]
    assert runtimes_to_build(pruned, BuildOptions(runtimes=("onnxruntime",))) == ["onnxruntime"]
    with pytest.raises(ValueError, match="tensorrt builds for tensorrt; asked for torch"):
        runtimes_to_build(get_variant("tensorrt"), BuildOptions(runtimes=("torch",)))
