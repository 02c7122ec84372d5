"""End-to-end: a real ``densenet serve`` process on 127.0.0.1, real images over real HTTP."""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from service.bench.server import ServerProcess, free_port, start_server
from tests.support import encode as png
from tests.support import http_client, metric

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(build, serve):
    build("baseline")
    return serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="torch", MAX_BODY_BYTES="2000000")


def assert_prediction(body: dict, k: int = 5) -> None:
    assert body["variant"] == "baseline" and body["runtime"] == "torch"
    assert len(body["model_sha256"]) == 64
    preds = body["predictions"]
    assert len(preds) == k
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs)
    assert {p["label"] for p in preds} <= {str(d) for d in range(10)}
    timing = body["timing"]
    for key in ("decode_ms", "preprocess_ms", "queue_ms", "inference_ms", "postprocess_ms"):
        assert timing[key] >= 0
    assert timing["total_ms"] >= timing["inference_ms"]


def test_heldout_digits_are_classified_correctly(server, heldout_digits):
    pngs, labels = heldout_digits
    correct = 0
    with http_client(server) as client:
        for data, label in zip(pngs[:100], labels[:100], strict=True):
            response = client.post("/predict", files={"file": ("digit.png", data, "image/png")})
            assert response.status_code == 200, response.text
            correct += response.json()["predictions"][0]["label"] == str(label)
    assert correct >= 95


def test_multipart_and_raw_body_give_the_same_answer(server, sample_photos):
    with http_client(server) as client:
        for photo in sample_photos:
            multipart = client.post("/predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
            raw = client.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
            assert multipart.status_code == raw.status_code == 200
            assert_prediction(multipart.json())
            assert multipart.json()["predictions"] == raw.json()["predictions"]


def test_pillow_made_formats_and_modes(server):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), "RGB")
    bodies = {
        "png": png(rgb),
        "webp": png(rgb, "WEBP"),
        "bmp": png(rgb, "BMP"),
        "gif": png(rgb.convert("P"), "GIF"),
        "cmyk-jpeg": png(rgb.convert("CMYK"), "JPEG"),
        "rgba-png": png(rgb.convert("RGBA")),
        "gray16-png": png(Image.fromarray((rng.integers(0, 65535, (60, 80))).astype(np.uint16))),
    }
    with http_client(server) as client:
        for name, body in bodies.items():
            response = client.post("/predict", files={"file": (f"x.{name}", body)})
            assert response.status_code == 200, (name, response.text)
            assert_prediction(response.json())


def test_top_k_query(server, heldout_digits):
    with http_client(server) as client:
        response = client.post("/predict?top_k=3", files={"file": ("d.png", heldout_digits[0][0])})
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == 3
        bad = client.post("/predict?top_k=0", files={"file": ("d.png", heldout_digits[0][0])})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "validation_error"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_bad_inputs_get_clear_4xx_and_the_server_keeps_serving(server, sample_photos):
    big = Image.new("L", (20_000, 20_000))
    cases = [
        ({"files": {"file": ("x.png", b"definitely not an image")}}, 400, "invalid_input"),
        ({"files": {"file": ("x.jpg", sample_photos[0][:5000])}}, 400, "invalid_input"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "invalid_input"),
        ({"files": {"other": ("x.png", png(Image.new("RGB", (8, 8))))}}, 400, "missing_file"),
        ({"data": {"file": "just text"}, "files": {"x": ("a", b"b")}}, 400, "missing_file"),
        (
            {"content": b"{}", "headers": {"content-type": "application/json"}},
            415,
            "unsupported_media_type",
        ),
        (
            {"files": {"file": ("x.tiff", png(Image.new("RGB", (8, 8)), "TIFF"))}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content": b"0" * 2_000_001, "headers": {"content-type": "image/png"}},
            413,
            "payload_too_large",
        ),
        ({"files": {"file": ("bomb.png", png(big, optimize=True))}}, 413, "image_too_large"),
        (
            {
                "content": b"--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
            400,
            None,
        ),
    ]
    with http_client(server) as client:
        for kwargs, status, code in cases:
            response = client.post("/predict", **kwargs)
            if code is None:  # malformed multipart: a 400 of either kind
                assert response.status_code == 400, response.text
                assert response.json()["error"]["code"] in {"invalid_input", "missing_file"}
            else:
                assert_error(response, status, code)
        assert_error(client.get("/nope"), 404, "not_found")
        assert_error(client.get("/predict"), 405, "method_not_allowed")
        ok = client.post("/predict", files={"file": ("p.jpg", sample_photos[1])})
        assert ok.status_code == 200
    assert server.process.poll() is None


def test_metrics_move_after_requests(server, sample_photos):
    with http_client(server) as client:
        before = client.get("/metrics").text
        for _ in range(3):
            assert (
                client.post("/predict", files={"file": ("p.jpg", sample_photos[0])}).status_code
                == 200
            )
        assert (
            client.post(
                "/predict", content=b"xx", headers={"content-type": "image/png"}
            ).status_code
            == 400
        )
        after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = '{route="/predict",status="200"}'
    bad = '{route="/predict",status="400"}'
    assert metric(text, "requests_total", ok) - metric(before, "requests_total", ok) == 3
    assert metric(text, "requests_total", bad) - metric(before, "requests_total", bad) == 1
    for name in (
        "request_preprocess_seconds_count",
        "request_predict_seconds_count",
        "request_postprocess_seconds_count",
    ):
        assert metric(text, name) - metric(before, name) >= 3, name
    assert metric(text, "request_duration_seconds_count", '{route="/predict"}') >= 4
    assert metric(text, "model_load_seconds") > 0
    assert metric(text, "time_to_ready_seconds") > metric(text, "model_load_seconds")
    assert re.search(r'^model_info\{.*variant="baseline".*\} 1\.0$', text, re.MULTILINE)
    assert 'request_duration_seconds_bucket{le="0.001",route="/predict"}' in text
    assert 'request_duration_seconds_bucket{le="10.0",route="/predict"}' in text
    assert "inflight_requests" in text


def test_health_and_metrics_answer_while_inference_is_busy(server, sample_photos):
    body = sample_photos[0]

    def hammer() -> int:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post("/predict", files={"file": ("p.jpg", body)}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(hammer) for _ in range(24)]
        with http_client(server, timeout=5) as client:
            for _ in range(5):
                assert client.get("/healthz").status_code == 200
                assert client.get("/metrics").status_code == 200
        statuses = [f.result() for f in futures]
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 8


def test_model_endpoint_describes_the_artifact(server):
    with http_client(server) as client:
        info = client.get("/model").json()
    assert info["variant"] == "baseline" and info["task"] == "digits"
    assert info["input_size"] == 32 and info["num_classes"] == 10
    assert info["metrics"]["accuracy_top1"] >= 0.97


def test_readiness_timeline_and_graceful_sigterm(build, serve, sample_photos):
    build("baseline")
    server = serve(
        wait_ready=False, MODEL_VARIANT="baseline", MODEL_RUNTIME="torch", DRAIN_SECONDS="2"
    )
    seen_503 = False
    deadline = time.monotonic() + 120
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get("/readyz")
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            if response.status_code == 503:
                seen_503 = True
                assert client.get("/healthz").status_code == 200
                early = client.post("/predict", files={"file": ("p", sample_photos[0])})
                if client.get("/readyz").status_code == 503:  # still loading after the call
                    assert early.status_code == 503
                    assert early.json()["error"]["code"] == "not_ready"
            elif response.status_code == 200:
                break
            time.sleep(0.02)
        assert seen_503, "readiness never reported 503 while loading"
        assert client.get("/readyz").status_code == 200

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                lambda: httpx.post(
                    f"{server.url}/predict", files={"file": ("p", sample_photos[0])}, timeout=30
                )
            )
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert client.get("/readyz").status_code == 503
            during_drain = client.post("/predict", files={"file": ("p", sample_photos[1])})
            assert in_flight.result().status_code == 200
        assert during_drain.status_code == 200
    server.process.wait(timeout=30)
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert "draining" in server.log()


def test_plain_uvicorn_serves_the_same_app(build, model_dir, tmp_path, heldout_digits):
    build("baseline")
    port = free_port()
    env = {**os.environ, "MODEL_DIR": str(model_dir), "MODEL_RUNTIME": "onnxruntime"}
    command = [sys.executable, "-m", "uvicorn", "service.app:app", "--host", "127.0.0.1"]
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as fh:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    server = ServerProcess(process, port, log, started=time.perf_counter())
    try:
        server.wait_ready()
        with http_client(server) as client:
            body = client.post("/predict", files={"file": ("d.png", heldout_digits[0][0])}).json()
        assert body["runtime"] == "onnxruntime"
        assert body["predictions"][0]["label"] == str(heldout_digits[1][0])
    finally:
        server.stop()
    assert "ready: variant=baseline runtime=onnxruntime" in server.log()


def test_a_corrupt_artifact_exits_non_zero_with_the_reason(build, tmp_path):
    import shutil

    from service.manifest import read_manifest, sha256_file, write_manifest

    source = build("baseline")
    broken = tmp_path / "models" / "baseline"
    shutil.copytree(source, broken)
    graph = broken / "model.onnx"
    graph.write_bytes(b"not an onnx graph")
    env = {"MODEL_DIR": str(broken.parent), "MODEL_RUNTIME": "onnxruntime", "DRAIN_SECONDS": "0"}

    def run() -> tuple[int, str]:
        server = start_server(env, tmp_path / "server.log")
        try:
            server.process.wait(timeout=60)
        finally:
            server.stop()
        return server.process.returncode, server.log().strip().splitlines()[-1]

    # Changed after the build: refused before anything loads.
    status, last = run()
    assert status == 2 and "changed after the build; refusing to serve it" in last
    # A build that wrote a broken file (its manifest agrees with it): the load fails.
    manifest = read_manifest(broken)
    manifest.artifacts["onnxruntime"].sha256 = sha256_file(graph)
    manifest.artifacts["onnxruntime"].size_bytes = graph.stat().st_size
    write_manifest(broken, manifest)
    status, last = run()
    assert status == 1 and last.startswith("densenet serve: model load failed: ")
