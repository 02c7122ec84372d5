"""OpenVINO serving: the ONNX artifact (NNCF's int8 graph for the static int8 variants) on
OpenVINO's CPU plugin, torch-free, the same answers as ONNX Runtime, concurrent callers, and
clear refusals."""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.bench.core import load_engine
from service.bench.server import start_server
from service.imaging import decode_and_preprocess
from service.manifest import read_manifest
from service.variants import list_variants
from tests.e2e.test_oip import predict_probabilities, triton_probabilities
from tests.e2e.test_onnxruntime import served_top1
from tests.support import http_client

CPU_VARIANTS = list_variants(cpu_only=True)


def onnxruntime_top1(model_dir: Path, variant: str, pngs: list[bytes]) -> list[int]:
    """ONNX Runtime's top-1s for ``pngs``, in process, preprocessed as the server does."""
    engine = load_engine(variant, "onnxruntime", model_dir, threads=2)
    spec = engine.manifest.preprocess
    batch = np.stack([decode_and_preprocess(p, spec, max_pixels=10**6)[0] for p in pngs])
    return [int(i) for i in engine.predict(batch).argmax(axis=1)]


@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_openvino_answers_match_torch_and_onnxruntime(
    build, serve, model_dir, heldout_digits, variant
):
    manifest = read_manifest(build(variant))
    onnx, entry = manifest.artifacts["onnxruntime"], manifest.artifacts["openvino"]
    if manifest.build_settings.get("calibration_split") == "train":  # the static int8 ones
        # NNCF's int8 graph, its own file, calibrated on the images ORT's quantizer used.
        assert entry.format == "onnx-int8-nncf" and entry.file == "model-openvino.onnx"
        assert entry.sha256 != onnx.sha256
        assert entry.details["calibration_images"] == onnx.details["calibration_images"]
    else:  # one file, both runtimes
        assert (entry.file, entry.sha256) == (onnx.file, onnx.sha256)
    check = entry.metrics
    assert check["checked_on"] == "360 held-out images"
    if entry.format == "onnx-fp32":
        assert check["max_abs_logit_diff_vs_torch"] <= 1e-3
        assert check["agreement_top1_vs_torch"] >= 0.995
    else:  # an int8 graph (NNCF's, or ORT's dynamic one), run as int8 by OpenVINO
        assert check["agreement_top1_vs_torch"] >= 0.97
    pngs, labels = heldout_digits[0][:60], heldout_digits[1][:60]
    openvino_server = serve(MODEL_VARIANT=variant, MODEL_RUNTIME="openvino")
    openvino = served_top1(openvino_server, pngs)
    openvino_server.stop()
    ort = onnxruntime_top1(model_dir, variant, pngs)  # its serving is test_onnxruntime's
    threshold = 1.0 if entry.format == "onnx-fp32" else 0.95
    assert np.mean(np.array(openvino) == np.array(ort)) >= threshold, (openvino, ort)
    assert np.mean(np.array(openvino) == np.array(labels)) >= 0.93


def test_openvino_serves_v2_to_the_triton_client_without_torch(build, serve, sample_photos):
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="openvino", MAX_BATCH_SIZE="8")
    expected = predict_probabilities(server, sample_photos)
    for binary in (True, False):
        got = triton_probabilities(server, sample_photos, binary)
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
        assert np.abs(got - expected).max() < 1e-5
    with http_client(server) as client:
        assert client.get("/model").json()["execution"].startswith("cpu (OpenVINO ")
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "openvino" in maps
    assert "libtorch" not in maps and "/torch/" not in maps
    server.stop()


def test_sixteen_concurrent_callers_each_get_their_own_answer(build, model_dir):
    build("baseline")
    engine = load_engine("baseline", "openvino", model_dir, threads=2)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 32, 32), dtype=np.float32) for _ in range(16)]
    alone = [engine.predict(b) for b in batches]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(engine.predict, batches * 4))
    for i, got in enumerate(together):
        np.testing.assert_array_equal(got, alone[i % 16])
    assert len({a.tobytes() for a in alone}) == 16  # sixteen different answers to tell apart


def run_server(env: dict[str, str], log: Path) -> tuple[int, str]:
    server = start_server({"DRAIN_SECONDS": "0", **env}, log)
    try:
        server.process.wait(timeout=120)
    finally:
        server.stop()
    return server.process.returncode, server.log().strip().splitlines()[-1]


def test_without_openvino_the_server_says_what_to_install(build, model_dir, tmp_path):
    build("baseline")
    shadow = tmp_path / "shadow" / "openvino"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named openvino')\n")
    env = {
        "MODEL_DIR": str(model_dir),
        "MODEL_RUNTIME": "openvino",
        "PYTHONPATH": str(shadow.parent),
    }
    status, last = run_server(env, tmp_path / "server.log")
    assert status == 1
    assert last == (
        "densenet serve: model load failed: MODEL_RUNTIME=openvino needs openvino: "
        "pip install '.[openvino]'"
    )


def test_a_tampered_file_is_refused_on_openvino_too(build, tmp_path):
    broken = tmp_path / "models" / "baseline"
    shutil.copytree(build("baseline"), broken)
    graph = broken / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    env = {"MODEL_DIR": str(broken.parent), "MODEL_RUNTIME": "openvino"}
    status, last = run_server(env, tmp_path / "server.log")
    assert status == 2 and "changed after the build; refusing to serve it" in last


def test_bf16_where_the_cpu_has_it_is_measured_and_served(build, serve, heldout_digits):
    from service.engines.openvino_engine import cpu_precisions

    manifest = read_manifest(build("baseline"))
    bf16 = manifest.artifacts["openvino"].metrics["bf16"]
    if "BF16" not in cpu_precisions():
        assert bf16.startswith("not measured")
        pytest.skip("this CPU does not run bf16")
    assert bf16["agreement_top1_vs_torch"] >= 0.97
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="openvino", OPENVINO_PRECISION="bf16")
    served = served_top1(server, heldout_digits[0][:30])
    assert np.mean(np.array(served) == np.array(heldout_digits[1][:30])) >= 0.9
    with http_client(server) as client:
        assert ", bf16, " in client.get("/model").json()["execution"]
