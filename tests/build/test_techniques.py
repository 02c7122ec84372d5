"""The optimization pipeline on the digits task: every variant's measured quality and size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from service.manifest import read_manifest
from service.variants import list_variants
from tests.support import ROOT, http_client, run_cli

pytestmark = pytest.mark.slow


def metrics(path: Path) -> dict:
    return read_manifest(path).metrics


def test_baseline_reaches_97_percent(build):
    m = metrics(build("baseline"))
    assert m["accuracy_top1"] >= 0.97
    assert m["test_images"] == 360
    assert "load_digits" in m["accuracy_dataset"]


def test_quantized_within_one_point(build):
    base, q = metrics(build("baseline")), metrics(build("quantized"))
    assert q["accuracy_top1"] >= base["accuracy_top1"] - 0.01
    manifest = read_manifest(build("quantized"))
    assert manifest.artifacts["torch"].format == "fx-int8"
    assert manifest.build_settings["calibration_images"] == 128
    # int8 weights: roughly a quarter of the fp32 file
    fp32_size = read_manifest(build("baseline")).artifacts["torch"].size_bytes
    assert manifest.artifacts["torch"].size_bytes < 0.35 * fp32_size


def test_quantized_dynamic_within_half_a_point(build):
    base, q = metrics(build("baseline")), metrics(build("quantized-dynamic"))
    assert q["accuracy_top1"] >= base["accuracy_top1"] - 0.005
    assert read_manifest(build("quantized-dynamic")).artifacts["torch"].format == "dynamic-int8"


def test_pruned_is_smaller_and_within_two_points(build):
    base_dir, pruned_dir = build("baseline"), build("pruned")
    base, pruned = metrics(base_dir), metrics(pruned_dir)
    assert pruned["accuracy_top1"] >= base["accuracy_top1"] - 0.02
    assert pruned["macs_224"] <= 0.5 * base["macs_224"]
    assert pruned["macs_native"] <= 0.5 * base["macs_native"]
    assert pruned["params"] < base["params"]
    b, p = read_manifest(base_dir), read_manifest(pruned_dir)
    assert p.artifacts["torch"].size_bytes < 0.7 * b.artifacts["torch"].size_bytes
    state = torch.load(pruned_dir / "model.pt", weights_only=True)
    assert state["features.conv0.weight"].shape[0] < 64  # fewer channels, really


def test_pruned_loads_without_torch_pruning(build):
    pruned_dir = build("pruned")
    code = (
        "import sys; sys.modules['torch_pruning'] = None\n"
        "from pathlib import Path\n"
        "from service.manifest import read_manifest\n"
        "from service.modeling import load_torch_model\n"
        f"d = Path({str(pruned_dir)!r}); m = read_manifest(d)\n"
        "import torch; model = load_torch_model(m, d / 'model.pt')\n"
        "print(model(torch.zeros(1, 3, 32, 32)).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 10])" in out.stdout


def test_distilled_is_a_third_of_the_compute_within_three_points(build):
    base, dist = metrics(build("baseline")), metrics(build("distilled"))
    assert dist["accuracy_top1"] >= base["accuracy_top1"] - 0.03
    assert dist["macs_224"] <= base["macs_224"] / 3
    manifest = read_manifest(build("distilled"))
    assert manifest.build_settings["student"] == "densenet-tiny"
    assert manifest.build_settings["distillation"]["temperature"] == 4.0
    assert manifest.architecture["name"] == "densenet"


def torch_sha256(variant_dir: Path) -> str:
    return read_manifest(variant_dir).artifacts["torch"].sha256


def test_distilled_quantized_is_the_student_in_int8_and_names_its_sources(build):
    student_dir, composed_dir = build("distilled"), build("distilled-quantized")
    student, composed = read_manifest(student_dir), read_manifest(composed_dir)
    assert composed.architecture == student.architecture  # the student, not DenseNet-121
    assert composed.artifacts["torch"].format == "fx-int8"
    assert composed.artifacts["onnxruntime"].format == "onnx-int8-qdq"
    assert composed.artifacts["torch"].size_bytes < 0.5 * student.artifacts["torch"].size_bytes
    assert composed.source_weights["chain"] == [
        {"variant": "distilled", "sha256": torch_sha256(student_dir)},
        {"variant": "baseline", "sha256": torch_sha256(build("baseline"))},
    ]
    assert composed.metrics["agreement_reference"] == "distilled"
    assert composed.metrics["accuracy_top1"] >= student.metrics["accuracy_top1"] - 0.02


def test_distilled_pruned_cuts_the_student_and_learns_from_the_baseline(build):
    student_dir, composed_dir = build("distilled"), build("distilled-pruned")
    student, composed = metrics(student_dir), metrics(composed_dir)
    assert composed["macs_224"] <= 0.7 * student["macs_224"]
    assert composed["params"] < student["params"]
    assert composed["accuracy_top1"] >= student["accuracy_top1"] - 0.03
    manifest = read_manifest(composed_dir)
    assert manifest.architecture["student"] == "densenet-tiny"
    assert manifest.source_weights["from"] == "distilled"
    assert manifest.source_weights["teacher"] == {
        "variant": "baseline",
        "sha256": torch_sha256(build("baseline")),
    }
    state = torch.load(composed_dir / "model.pt", weights_only=True)
    assert state["features.conv0.weight"].shape[0] < 24  # the student's 24 stem channels, cut


def test_every_manifest_records_the_measurements(build):
    for variant in list_variants(cpu_only=True):
        manifest = read_manifest(build(variant))
        m = manifest.metrics
        for key in (
            "params",
            "macs_native",
            "macs_224",
            "accuracy_top1",
            "accuracy_top5",
            "agreement_top1_vs_baseline",
            "accuracy_dataset",
        ):
            assert m[key] is not None, (variant, key)
        assert 0.9 <= m["agreement_top1_vs_baseline"] <= 1.0
        assert manifest.build_seconds and manifest.built_at
        for runtime in ("torch", "onnxruntime"):
            artifact = manifest.artifacts[runtime]
            assert (build(variant) / artifact.file).stat().st_size == artifact.size_bytes
            assert len(artifact.sha256) == 64


def test_failed_build_leaves_no_half_written_artifact(build, model_dir, monkeypatch, tmp_path):
    from service.optimize import onnx_export
    from service.optimize.options import BuildOptions
    from service.optimize.pipeline import build_variant

    build("baseline")
    out = tmp_path / "models"
    (out).mkdir()
    (out / "baseline").symlink_to(model_dir / "baseline")
    monkeypatch.setattr(onnx_export, "INT8_MIN_AGREEMENT", 1.01)  # make the export check fail
    with pytest.raises(onnx_export.ExportCheckFailed):
        build_variant("quantized", BuildOptions(out=out, calibration_images=32))
    assert sorted(p.name for p in out.iterdir()) == ["baseline"]


def in_process_probabilities(variant_dir: Path, pngs: list[bytes]) -> np.ndarray:
    from service.imaging import decode_image, preprocess
    from service.modeling import load_torch_model

    manifest = read_manifest(variant_dir)
    model = load_torch_model(manifest, variant_dir / "model.pt")
    out = []
    with torch.inference_mode():
        for data in pngs:  # batch 1, as served (dynamic int8 scales depend on the batch)
            x = preprocess(decode_image(data, 10**8), manifest.preprocess)[None]
            out.append(torch.softmax(model(torch.from_numpy(x)), dim=1)[0].numpy())
    return np.stack(out)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "variant", ["quantized", "quantized-dynamic", "pruned", "distilled", "distilled-pruned"]
)
def test_server_answers_equal_the_in_process_model(build, serve, heldout_digits, variant):
    variant_dir = build(variant)
    pngs = heldout_digits[0][:20]
    expected = in_process_probabilities(variant_dir, pngs)
    server = serve(MODEL_VARIANT=variant, MODEL_RUNTIME="torch")
    with http_client(server) as client:
        for data, probs in zip(pngs, expected, strict=True):
            response = client.post("/predict?top_k=10", files={"file": ("d.png", data)})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["variant"] == variant
            served = np.zeros(10)
            for p in body["predictions"]:
                served[p["index"]] = p["probability"]
            assert served.argmax() == probs.argmax()
            np.testing.assert_allclose(served, probs, atol=1e-5)
    server.stop()


def _write_imagenet_folder(root: Path) -> list[str]:
    from PIL import Image

    wnids = [f"n{i:08d}" for i in range(1000)]
    (root).mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text(
        "\n".join(f"{w} class {i}" for i, w in enumerate(wnids)) + "\n"
    )
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for wnid in (wnids[3], wnids[999]):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for j in range(count):
                pixels = rng.integers(0, 255, (96 + j, 120, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{j}.jpg")
    return wnids


def test_imagenet_layout_maps_wordnet_ids_to_class_indices(tmp_path):
    from service.optimize.baseline import imagenet_labels_and_preprocess
    from service.optimize.data import imagenet_task

    _write_imagenet_folder(tmp_path / "data")
    labels, spec = imagenet_labels_and_preprocess()
    task = imagenet_task(labels, spec, tmp_path / "data", None, seed=0)
    assert task.test is not None and len(task.test) == 4
    assert sorted({int(task.test[i][1]) for i in range(4)}) == [3, 999]
    image, _ = task.test[0]
    assert tuple(image.shape) == (3, 224, 224)
    assert task.train is not None and task.val is not None
    assert len(task.train) + len(task.val) == 6


def test_imagenet_variant_without_data_fails_clearly(tmp_path, legacy_imagenet_weights):
    result = run_cli(
        "build",
        "quantized",
        "--task",
        "imagenet",
        "--weights",
        str(legacy_imagenet_weights),
        "--runtime",
        "torch",
        "--out",
        str(tmp_path / "models"),
        timeout=600,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "quantized needs labelled training images for calibration" in last
    assert "--data DIR" in last
    assert not (tmp_path / "models" / "quantized").exists()
    # Refused before the missing source was built: the baseline it would have needed is absent.
    assert not (tmp_path / "models" / "baseline").exists()


def test_imagenet_build_with_data_measures_on_val(tmp_path, legacy_imagenet_weights):
    _write_imagenet_folder(tmp_path / "data")
    result = run_cli(
        "build",
        "baseline",
        "quantized",
        "--task",
        "imagenet",
        "--weights",
        str(legacy_imagenet_weights),
        "--data",
        str(tmp_path / "data"),
        "--runtime",
        "torch",
        "--calibration-images",
        "4",
        "--out",
        str(tmp_path / "models"),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for variant in ("baseline", "quantized"):
        manifest = json.loads((tmp_path / "models" / variant / "manifest.json").read_text())
        assert manifest["metrics"]["test_images"] == 4
        assert "val" in manifest["metrics"]["accuracy_dataset"]
        assert manifest["num_classes"] == 1000
