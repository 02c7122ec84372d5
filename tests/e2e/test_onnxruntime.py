"""ONNX Runtime serving: torch-free process, same answers as torch, cold-start command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.manifest import read_manifest
from service.variants import list_variants
from tests.support import http_client, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CPU_VARIANTS = list_variants(cpu_only=True)


def served_top1(server, pngs: list[bytes]) -> list[int]:
    out = []
    with http_client(server) as client:
        for data in pngs:
            response = client.post("/predict", files={"file": ("d.png", data)})
            assert response.status_code == 200, response.text
            out.append(response.json()["predictions"][0]["index"])
    return out


@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_onnxruntime_answers_match_torch(build, serve, heldout_digits, variant):
    variant_dir = build(variant)
    manifest = read_manifest(variant_dir)
    check = manifest.artifacts["onnxruntime"].metrics
    assert check["checked_on"] == "360 held-out images"
    if manifest.artifacts["onnxruntime"].format == "onnx-fp32":
        assert check["max_abs_logit_diff_vs_torch"] <= 1e-3
    else:
        assert check["agreement_top1_vs_torch"] >= 0.97
    pngs, labels = heldout_digits[0][:60], heldout_digits[1][:60]
    ort_server = serve(MODEL_VARIANT=variant, MODEL_RUNTIME="onnxruntime")
    ort = served_top1(ort_server, pngs)
    with http_client(ort_server) as client:  # what it was made from, as the manifest says
        assert client.get("/model").json()["source_weights"] == manifest.source_weights
    ort_server.stop()
    torch_server = serve(MODEL_VARIANT=variant, MODEL_RUNTIME="torch")
    reference = served_top1(torch_server, pngs)
    torch_server.stop()
    agreement = np.mean(np.array(ort) == np.array(reference))
    threshold = 1.0 if manifest.artifacts["onnxruntime"].format == "onnx-fp32" else 0.95
    assert agreement >= threshold, (variant, agreement)
    assert np.mean(np.array(ort) == np.array(labels)) >= 0.93


def test_onnxruntime_server_never_loads_torch(build, serve, sample_photos):
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime")
    with http_client(server) as client:
        assert (
            client.post("/predict", files={"file": ("p.jpg", sample_photos[0])}).status_code == 200
        )
        assert client.get("/model").json()["runtime"] == "onnxruntime"
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "onnxruntime" in maps  # the check can see what was loaded...
    assert "libtorch" not in maps and "/torch/" not in maps  # ...and torch was not
    server.stop()


def test_coldstart_command_writes_well_formed_json(build, model_dir, tmp_path):
    build("baseline")
    out = tmp_path / "coldstart.json"
    result = run_cli(
        "coldstart",
        "--variant",
        "baseline",
        "--runtime",
        "onnxruntime",
        "--runs",
        "2",
        "--model-dir",
        str(model_dir),
        "--out",
        str(out),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(out.read_text())
    assert entry["variant"] == "baseline" and entry["runtime"] == "onnxruntime"
    assert entry["runs"] == 2 and len(entry["samples"]) == 2
    for sample in entry["samples"]:
        assert 0 < sample["port_open_s"] <= sample["ready_s"] <= sample["first_predict_s"]
        assert sample["rss_mb_ready"] > 10
        # The server's own figure counts from exec too, so it lands near the client's.
        assert abs(sample["server_time_to_ready_s"] - sample["ready_s"]) < 0.5
    for key in ("port_open_s", "ready_s", "first_predict_s", "rss_mb_ready"):
        summary = entry["summary"][key]
        assert summary["min"] <= summary["median"] <= summary["max"]
    assert "| baseline | onnxruntime |" in out.with_suffix(".md").read_text()
