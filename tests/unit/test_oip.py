"""Open Inference Protocol routes with a fake engine: metadata, health, inference in JSON and
binary, the classification extension, and hostile bodies answered 4xx with the OIP error body.
The real Triton and KServe clients run against a real uvicorn here too (tests/e2e compares
their answers with /predict's on a real model)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.config import Settings
from tests.support import FakeEngine, encode, metric

IMAGES = [encode(Image.new("RGB", (16, 12), (v, v, v))) for v in (0, 128, 255)]
INFER = "/v2/models/densenet/infer"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    settings = Settings(
        drain_seconds=0,
        max_batch_size=4,
        max_images_per_request=4,
        max_json_bytes=16_384,
        max_body_bytes=65_536,
        max_image_pixels=10_000,
    )
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def wait_ready(client: TestClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/v2/health/ready").json()
        time.sleep(0.01)


def oip_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return str(body["error"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_request(images: list[bytes], **extra: object) -> dict:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(images)]}
    return {"inputs": [{**tensor, "data": [b64(i) for i in images]}], **extra}


def binary_body(header: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {
        "inference-header-content-length": str(len(text)),
        "content-type": "application/octet-stream",
    }


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def split_binary(response) -> tuple[dict, bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_server_and_model_metadata(client):
    assert client.get("/v2").json() == {
        "name": "densenet-serving",
        "version": client.get("/v2").json()["version"],
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/densenet").json()
    assert meta == client.get("/v2/models/densenet/versions/baseline").json()
    assert meta["versions"] == ["baseline"] and meta["platform"] == "fake"
    assert meta["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]},
    ]
    assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, 10]}
    assert client.get("/v2/models/densenet/ready").json() == {"name": "densenet", "ready": True}
    assert "densenet" in oip_error(client.get("/v2/models/resnet"), 404)
    assert "'baseline'" in oip_error(client.get("/v2/models/densenet/versions/distilled"), 404)
    oip_error(client.post("/v2/models/densenet/versions/7/infer", json=image_request(IMAGES)), 404)


def test_not_ready_while_loading_and_while_draining(engine):
    engine.load_gate.clear()
    with TestClient(create_app(Settings(drain_seconds=0), engine=engine)) as client:
        assert "loading" in oip_error(client.get("/v2/health/ready"), 503)
        assert "loading" in oip_error(client.get("/v2/models/densenet/ready"), 503)
        oip_error(client.post(INFER, json=image_request(IMAGES)), 503)
        assert client.get("/v2/health/live").status_code == 200
        engine.load_gate.set()
        wait_ready(client)
        client.app.state.service.draining = True  # type: ignore[attr-defined]
        assert "draining" in oip_error(client.get("/v2/health/ready"), 503)


def test_json_images_answer_as_predict_does_in_one_engine_call(client, engine):
    before = len(engine.calls)
    response = client.post(INFER, json=image_request(IMAGES, id="r1"))
    assert engine.calls[before:] == [3]  # the three images ran together (MAX_BATCH_SIZE 4)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "r1" and body["model_name"] == "densenet"
    assert body["model_version"] == "baseline"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["logits"]["shape"] == [3, 10] and outputs["logits"]["datatype"] == "FP32"
    probs = np.asarray(outputs["probabilities"]["data"]).reshape(3, 10)
    for i, image in enumerate(IMAGES):
        single = client.post("/predict?top_k=10", files={"file": ("x.png", image)}).json()
        expected = {p["index"]: p["probability"] for p in single["predictions"]}
        assert np.allclose(probs[i], [expected[c] for c in range(10)], atol=1e-6)


def test_preprocessed_fp32_json_and_binary_agree(client):
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    tensor = {"name": "input", "datatype": "FP32", "shape": [2, 3, 8, 8]}
    as_json = client.post(INFER, json={"inputs": [{**tensor, "data": x.ravel().tolist()}]})
    body, headers = binary_body(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        },
        [x.tobytes()],
    )
    as_binary = client.post(INFER, content=body, headers=headers)
    assert as_binary.headers["content-type"] == "application/octet-stream"
    header, blob = split_binary(as_binary)
    assert [o["name"] for o in header["outputs"]] == ["logits"]  # only what was asked for
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 2 * 10 * 4}
    logits = np.frombuffer(blob, dtype="<f4").reshape(2, 10)
    from_json = as_json.json()["outputs"][0]["data"]
    assert np.allclose(logits.ravel(), from_json, atol=1e-6)
    assert np.allclose(logits, x.reshape(2, -1).mean(axis=1, keepdims=True) * np.arange(10))


def test_binary_images_and_the_classification_extension(client):
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [3],
                    "parameters": {"binary_data_size": len(length_prefixed(IMAGES))},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
            "parameters": {"binary_data_output": True},
        },
        [length_prefixed(IMAGES)],
    )
    header, blob = split_binary(client.post(INFER, content=body, headers=headers))
    out = header["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [3, 2]
    strings, offset = [], 0
    while offset < len(blob):
        (n,) = struct.unpack_from("<I", blob, offset)
        strings.append(blob[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    score, index, label = strings[4].split(":")  # the white image's most probable class
    assert (index, label) == ("9", "9") and 0 < float(score) <= 1
    assert strings[5].split(":")[1] == "8"


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("lying-prefix", 400, "says"),
        ("too-few-elements", 400, "holds 2"),
        ("binary-size-past-end", 400, "past the end"),
        ("header-length-past-end", 400, "Inference-Header-Content-Length"),
        ("negative-shape", 400, "non-negative"),
        ("huge-shape", 400, "is not"),
        ("huge-batch", 413, "MAX_IMAGES_PER_REQUEST"),
        ("oversized-json-data", 413, "MAX_JSON_BYTES"),
        ("unknown-datatype", 400, "unknown datatype"),
        ("wrong-datatype", 400, "must be BYTES"),
        ("element-count", 400, "data has 24"),
        ("not-base64", 400, "base64"),
        ("bad-image", 400, "image 1:"),
        ("not-json", 400, "not JSON"),
        ("deep-json", 400, "nests too deeply"),
        ("two-inputs", 400, "exactly one input"),
        ("unknown-output", 400, "unknown output"),
        ("bad-classification", 400, "classification"),
        ("wrong-size", 400, "is not [-1, 3, 8, 8]"),
        # What the published schema calls invalid is refused, not quietly read as a default.
        ("datatype-object", 400, "unknown datatype"),
        ("parameters-null", 400, "'parameters' must be an object"),
        ("input-parameters-null", 400, "parameters must be an object"),
        ("binary-size-null", 400, "binary_data_size must be a non-negative integer"),
        ("outputs-null", 400, "'outputs' must be a list"),
        ("binary-data-not-boolean", 400, "binary_data must be true or false"),
        ("id-not-a-string", 400, "'id' must be a string"),
    ],
)
def test_hostile_bodies_get_a_4xx_with_the_oip_error_body(client, case, status, says):
    image = {"name": "image", "datatype": "BYTES", "shape": [2]}
    fp32 = {"name": "input", "datatype": "FP32"}
    lie = struct.pack("<I", 10**9) + b"abc"
    bodies: dict[str, object] = {
        "lying-prefix": ({"inputs": [{**image, "parameters": {"binary_data_size": 7}}]}, [lie]),
        "too-few-elements": (
            {"inputs": [{**image, "shape": [3], "parameters": {"binary_data_size": 16}}]},
            [length_prefixed([b"abcd", b"efgh"])],
        ),
        "binary-size-past-end": (
            {"inputs": [{**image, "parameters": {"binary_data_size": 10**12}}]},
            [b"x" * 10],
        ),
        "negative-shape": {"inputs": [{**image, "shape": [-2], "data": []}]},
        "huge-shape": {"inputs": [{**fp32, "shape": [2**40, 3, 2**40, 8], "data": []}]},
        "huge-batch": {"inputs": [{**fp32, "shape": [2**40, 3, 8, 8], "data": []}]},
        "oversized-json-data": {"inputs": [{**fp32, "shape": [1, 3, 8, 8], "data": [0] * 10**4}]},
        "unknown-datatype": {"inputs": [{**image, "datatype": "FP128", "data": []}]},
        "wrong-datatype": {"inputs": [{**image, "datatype": "FP32", "data": [1.0, 2.0]}]},
        "element-count": {"inputs": [{**fp32, "shape": [1, 3, 8, 8], "data": [0.0] * 24}]},
        "not-base64": {"inputs": [{**image, "data": ["!!", "??"]}]},
        "bad-image": {"inputs": [{**image, "data": [b64(IMAGES[0]), b64(b"not an image")]}]},
        "two-inputs": {"inputs": [{**image, "data": []}, {**image, "data": []}]},
        "unknown-output": {**image_request(IMAGES[:1]), "outputs": [{"name": "features"}]},
        "bad-classification": {
            **image_request(IMAGES[:1]),
            "outputs": [{"name": "logits", "parameters": {"classification": "all"}}],
        },
        "wrong-size": {"inputs": [{**fp32, "shape": [1, 3, 9, 9], "data": [0.0] * 243}]},
        "datatype-object": {"inputs": [{**image, "datatype": {}, "data": []}]},
        "parameters-null": {**image_request(IMAGES[:1]), "parameters": None},
        "input-parameters-null": {"inputs": [{**image, "parameters": None, "data": []}]},
        "binary-size-null": {"inputs": [{**image, "parameters": {"binary_data_size": None}}]},
        "outputs-null": {**image_request(IMAGES[:1]), "outputs": None},
        "binary-data-not-boolean": {
            **image_request(IMAGES[:1]),
            "outputs": [{"name": "logits", "parameters": {"binary_data": {}}}],
        },
        "id-not-a-string": {**image_request(IMAGES[:1]), "id": 7},
    }
    if case == "header-length-past-end":
        response = client.post(
            INFER, content=b"{}", headers={"inference-header-content-length": "999"}
        )
    elif case == "not-json":
        response = client.post(
            INFER, content=b"\xff{", headers={"content-type": "application/json"}
        )
    elif case == "deep-json":
        response = client.post(INFER, content=b"[" * 3000 + b"]" * 3000)
    elif isinstance(bodies[case], tuple):
        header, blobs = bodies[case]  # type: ignore[misc]
        content, headers = binary_body(header, blobs)
        response = client.post(INFER, content=content, headers=headers)
    else:
        response = client.post(INFER, content=json.dumps(bodies[case]))
    assert says in oip_error(response, status)
    assert client.post(INFER, json=image_request(IMAGES[:1])).status_code == 200


def test_metrics_count_v2_apart_and_observe_images_per_request(client):
    client.post(INFER, json=image_request(IMAGES))
    client.post("/predict", files={"file": ("x.png", IMAGES[0])})
    text = client.get("/metrics").text
    route = 'route="/v2/models/{name}/infer"'
    assert metric(text, "requests_total", f'{{{route},status="200"}}') == 1
    assert metric(text, "requests_total", '{route="/predict",status="200"}') == 1
    assert metric(text, "request_images_sum", f"{{{route}}}") == 3
    assert metric(text, "request_images_sum", '{route="/predict"}') == 1


def test_a_413_on_content_length_uses_the_oip_body_under_v2(client):
    response = client.post(
        INFER, content=b"x" * 70_000, headers={"content-type": "application/json"}
    )
    assert "limit" in oip_error(response, 413)
    # Refused before routing, yet counted under the route it was for.
    text = client.get("/metrics").text
    assert metric(text, "requests_total", '{route="/v2/models/{name}/infer",status="413"}') == 1


def test_the_real_triton_and_kserve_clients(serve_fake):
    """Health, metadata, JSON and binary inference through both clients' own code."""
    import tritonclient.http as triton
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    url = serve_fake(max_batch_size=4)
    tc = triton.InferenceServerClient(url.removeprefix("http://"))
    assert tc.is_server_live() and tc.is_server_ready() and tc.is_model_ready("densenet")
    assert tc.get_model_metadata("densenet")["versions"] == ["baseline"]
    answers = []
    for binary in (True, False):
        tensor = triton.InferInput("image", [3], "BYTES")
        data = IMAGES if binary else [base64.b64encode(i) for i in IMAGES]
        tensor.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
        result = tc.infer(
            "densenet",
            [tensor],
            outputs=[
                triton.InferRequestedOutput("probabilities", binary_data=binary),
                triton.InferRequestedOutput("logits", binary_data=binary, class_count=1),
            ],
        )
        answers.append(result.as_numpy("probabilities"))
        top = [
            str(s[0], "utf-8") if isinstance(s[0], bytes) else s[0]
            for s in result.as_numpy("logits")
        ]
        assert [t.split(":")[1] for t in top] == ["0", "9", "9"]
    assert np.allclose(answers[0], answers[1], atol=1e-6)
    with pytest.raises(Exception, match="unknown model"):
        tc.infer("resnet", [tensor])

    async def kserve_answers() -> np.ndarray:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        try:
            assert await client.is_server_ready(url)
            assert await client.is_model_ready(url, "densenet")
            tensor = InferInput("image", [3], "BYTES")
            tensor.set_data_from_numpy(np.array(IMAGES, dtype=object), binary_data=True)
            request = InferRequest(
                model_name="densenet",
                infer_inputs=[tensor],
                request_outputs=[RequestedOutput("probabilities", {"binary_data": True})],
            )
            response = await client.infer(url, request, model_name="densenet")
            return response.outputs[0].as_numpy()
        finally:
            await client.close()

    assert np.allclose(asyncio.run(kserve_answers()), answers[0], atol=1e-6)


def test_json_numbers_with_a_zero_fraction_are_integers(client):
    """JSON has one number type, and JSON Schema's "integer" admits 1.0: so does the server."""
    body = image_request(IMAGES[:1])
    body["inputs"][0]["shape"] = [1.0]
    body["outputs"] = [{"name": "probabilities", "parameters": {"classification": 2.0}}]
    response = client.post(INFER, content=json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 2]
