"""The Open Inference Protocol on a real server with a real model, through the Triton and
KServe clients' own code: their answers equal /predict's for the same images, in JSON and in
the binary data extension, for encoded images and for preprocessed FP32 tensors."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

from service.imaging import decode_and_preprocess
from service.manifest import read_manifest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(build, serve):
    """The /v2 layer is the same for every runtime; /predict's parity across runtimes is
    tested elsewhere."""
    build("baseline")
    return serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime", MAX_BATCH_SIZE="8")


@pytest.fixture(scope="module")
def images(sample_photos, heldout_digits) -> list[bytes]:
    return [*sample_photos, *heldout_digits[0][:6]]


def predict_probabilities(server, images: list[bytes]) -> np.ndarray:
    rows = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for image in images:
            body = client.post("/predict?top_k=1000", files={"file": ("x", image)}).json()
            probs = {p["index"]: p["probability"] for p in body["predictions"]}
            rows.append([probs[i] for i in range(len(probs))])
    return np.asarray(rows)


def triton_probabilities(server, images: list[bytes], binary: bool) -> np.ndarray:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("densenet")
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    data = images if binary else [base64.b64encode(i) for i in images]
    tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
    result = client.infer(
        "densenet",
        [tensor],
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)],
    )
    return result.as_numpy("probabilities")


def test_triton_client_answers_equal_predicts(server, images):
    expected = predict_probabilities(server, images)
    for binary in (True, False):
        got = triton_probabilities(server, images, binary)
        assert got.shape == expected.shape
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
        assert np.abs(got - expected).max() < 1e-5


def test_triton_classification_extension_and_fp32_input(server, images, model_dir):
    manifest = read_manifest(model_dir / "baseline")
    arrays = np.stack(  # preprocessed as the server does (JPEG_DECODE=reduced)
        [decode_and_preprocess(i, manifest.preprocess, 40_000_000, reduced=True)[0] for i in images]
    )
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    meta = client.get_model_metadata("densenet")
    size = manifest.preprocess.crop_size
    assert meta["inputs"][1] == {"name": "input", "datatype": "FP32", "shape": [-1, 3, size, size]}
    tensor = triton.InferInput("input", list(arrays.shape), "FP32")
    tensor.set_data_from_numpy(arrays, binary_data=True)
    result = client.infer(
        "densenet",
        [tensor],
        outputs=[
            triton.InferRequestedOutput("probabilities", binary_data=True, class_count=3),
            triton.InferRequestedOutput("logits", binary_data=True),
        ],
    )
    expected = predict_probabilities(server, images)
    top = result.as_numpy("probabilities")
    assert top.shape == (len(images), 3)
    for row, probs in zip(top, expected, strict=True):
        score, index, label = row[0].decode().split(":")
        assert int(index) == probs.argmax() and label == manifest.labels[int(index)]
        assert abs(float(score) - probs.max()) < 1e-5
    logits = result.as_numpy("logits")
    assert (logits.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_kserve_client_answers_equal_predicts(server, images):
    expected = predict_probabilities(server, images)

    async def infer(binary: bool) -> np.ndarray:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            assert await client.is_server_live(server.url)
            assert await client.is_model_ready(server.url, "densenet")
            tensor = InferInput("image", [len(images)], "BYTES")
            data = images if binary else [base64.b64encode(i).decode() for i in images]
            tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
            request = InferRequest(
                model_name="densenet",
                infer_inputs=[tensor],
                request_outputs=[RequestedOutput("probabilities", {"binary_data": binary})],
            )
            response = await client.infer(server.url, request, model_name="densenet")
            return response.outputs[0].as_numpy()
        finally:
            await client.close()

    for binary in (True, False):
        got = asyncio.run(infer(binary))
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
        assert np.abs(got - expected).max() < 1e-5


def test_hostile_v2_bodies_at_the_default_limits_never_get_a_5xx(server, images):
    fp32 = {"name": "input", "datatype": "FP32"}
    million = {"inputs": [{**fp32, "shape": [1, 3, 32, 32], "data": [0.0] * 10**6}]}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    cases = {
        "a million JSON elements": (json.dumps(million).encode(), {}),
        "a lying length prefix": (
            header + b"\xff\xff\xff\x7fabcd",
            {"inference-header-content-length": str(len(header))},
        ),
        "binary_data_size past the body": (
            header + b"abc",
            {"inference-header-content-length": str(len(header))},
        ),
        "a huge shape": (
            json.dumps({"inputs": [{**fp32, "shape": [2**62, 3, 32, 32], "data": []}]}).encode(),
            {},
        ),
        "an unknown datatype": (
            json.dumps(
                {"inputs": [{"name": "image", "datatype": "STRING", "shape": [1]}]}
            ).encode(),
            {},
        ),
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for what, (body, headers) in cases.items():
            response = client.post("/v2/models/densenet/infer", content=body, headers=headers)
            assert 400 <= response.status_code < 500, (what, response.text)
            assert isinstance(response.json()["error"], str), what
        assert client.get("/v2/health/ready").status_code == 200
    assert server.process.poll() is None
