"""The GPU check's preparation and a rehearsal of the check itself on the CPU.

The check runs once, unattended, on a GPU machine with no network: what can go wrong away from
the GPU (the bundle, the per-mode processes, the parity files, the server with batching, the
report) is run here first.
"""

from __future__ import annotations

import json

import numpy as np

from service.bench import gpu_bundle, gpu_check
from service.manifest import resolve


def test_the_bundle_carries_a_verified_variant_digits_and_the_wheels_torchvision_lacks(
    build, tmp_path
):
    model_dir = build("baseline").parent

    def fake_download(wheels, requirements_file, python_version):
        assert python_version == "3.12"
        assert "fastapi" in requirements_file.read_text()
        for name in (
            "numpy-2.5.5-cp312-cp312-manylinux_2_28_x86_64.whl",
            "pillow-13.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",
            "fastapi-0.165.0-py3-none-any.whl",
            "typing_extensions-4.16.0-py3-none-any.whl",
        ):
            (wheels / name).write_bytes(b"wheel")

    info = gpu_bundle.prepare(tmp_path / "bundle", model_dir, "baseline", download=fake_download)
    assert info["left_to_torch"] == [
        "numpy-2.5.5-cp312-cp312-manylinux_2_28_x86_64.whl",
        "pillow-13.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",
    ]
    assert info["wheels"] == [
        "fastapi-0.165.0-py3-none-any.whl",
        "typing_extensions-4.16.0-py3-none-any.whl",
    ]
    _, path = resolve(tmp_path / "bundle" / "models", "baseline", "torch")
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json", path.name]
    with np.load(tmp_path / "bundle" / "heldout_digits.npz") as digits:
        assert digits["images"].shape == (info["digits"], 8, 8)
        assert digits["images"].dtype == np.uint8 and set(digits["labels"]) == set(range(10))
    carried = path.stat().st_size + (path.parent / "manifest.json").stat().st_size
    assert info["model_mb"] == carried / 1e6


def test_the_gpu_check_rehearsed_on_the_cpu_writes_its_report(build, tmp_path):
    model_dir = build("baseline").parent
    out = tmp_path / "out"
    rc = gpu_check.main(
        [
            str(out),
            "--device",
            "cpu",
            "--model-dir",
            str(model_dir),
            "--image-size",
            "32",
            "--batch-sizes",
            "1",
            "3",
            "--min-time",
            "0.01",
            "--modes",
            "eager-fp32",
            "graphs-fp16",
        ]
    )
    assert rc == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert list(report["modes"]) == ["eager-fp32", "graphs-fp16"]
    for row in report["modes"].values():
        assert [c["batch_size"] for c in row["cells"]] == [1, 3]
        # On the CPU both modes are fp32 eager: the parity files must say they agree exactly.
        assert row["parity"]["agreement_top1_digits"] == 1.0
        assert row["parity"]["max_abs_logit_diff_digits"] < 1e-4
        assert row["parity"]["accuracy_top1_digits"] > 0.9
    serve = report["serve"]
    assert serve["ok"] == serve["requests"] == gpu_check.SERVE_REQUESTS
    assert serve["correct"] > 0.9 * serve["requests"] and serve["max_batch"] > 1
    text = (out / "gpu_check.md").read_text()
    assert "| eager-fp32 | fp32, channels-last, eager launches |" in text
    assert "## Goals" in text and "## Serving" in text
