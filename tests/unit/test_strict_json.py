"""Nothing but RFC 8259 JSON on the wire: NaN, infinity and values beyond FP32 are refused
on the way in, and outputs that are not finite never become NaN tokens on the way out, on
/v2 (JSON and binary) and /predict alike. Over sockets, to a real uvicorn with a fake engine."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support import FakeEngine, encode, fake_server

INFER = "/v2/models/densenet/infer"
SIZE = 8  # the fake engine's input side


def strict(response: httpx.Response) -> object:
    """The body parsed as Go's and Java's parsers would: NaN and Infinity are errors."""

    def refuse(token: str) -> object:
        raise AssertionError(f"{token} in the response: not JSON")

    return json.loads(response.content, parse_constant=refuse)


class NonFiniteEngine(FakeEngine):
    """A broken artifact: every output is NaN."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.full((len(batch), self.manifest.num_classes), np.nan, dtype=np.float32)


@pytest.fixture(scope="module")
def url():
    with fake_server() as url:
        yield url


def tensor_json(first: str, rest: str = "0") -> bytes:
    """An FP32 ``input`` whose first value is the JSON text ``first``, every other ``rest``."""
    values = ",".join([first] + [rest] * (3 * SIZE * SIZE - 1))
    tensor = f'"name":"input","datatype":"FP32","shape":[1,3,{SIZE},{SIZE}],"data":[{values}]'
    return ('{"inputs":[{' + tensor + "}]}").encode()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("NaN", "NaN is not a JSON value"),
        ("Infinity", "Infinity is not a JSON value"),
        ("-Infinity", "-Infinity is not a JSON value"),
        ("3.5e38", "beyond FP32's range"),
        ("1e400", "beyond FP32's range"),
    ],
)
def test_non_finite_json_input_is_refused_with_a_400_that_says_so(url, token, message):
    response = httpx.post(url + INFER, content=tensor_json(token), timeout=10)
    assert response.status_code == 400
    assert message in strict(response)["error"]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_binary_input_is_refused(url, value):
    array = np.zeros((1, 3, SIZE, SIZE), dtype="<f4")
    array.flat[5] = value
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = httpx.post(
        url + INFER,
        content=header + array.tobytes(),
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
        timeout=10,
    )
    assert response.status_code == 400
    assert "NaN, infinite or beyond FP32's range" in strict(response)["error"]


def test_finite_input_whose_outputs_overflow_is_refused(url):
    # FP32's largest value, finite everywhere: the fake model's mean times 9 overflows.
    response = httpx.post(url + INFER, content=tensor_json("3.4e38", "3.4e38"), timeout=10)
    assert response.status_code == 400
    assert "outputs for these values are not finite" in strict(response)["error"]


def test_a_model_answering_nan_gives_a_json_500_on_both_routes():
    image = encode(Image.new("RGB", (16, 16), (90, 90, 90)))
    with fake_server(NonFiniteEngine()) as url:
        predict = httpx.post(f"{url}/predict", files={"file": ("x.png", image)}, timeout=10)
        data = [base64.b64encode(image).decode()]
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": data}]}
        oip = httpx.post(url + INFER, json=body, timeout=10)
        top3 = [{"name": "probabilities", "parameters": {"classification": 3}}]
        classified = httpx.post(url + INFER, json={**body, "outputs": top3}, timeout=10)
    assert predict.status_code == 500
    assert strict(predict)["error"]["code"] == "non_finite_output"
    for response in (oip, classified):
        assert response.status_code == 500
        assert "not finite" in strict(response)["error"]


def test_finite_answers_are_strict_json(url):
    response = httpx.post(url + INFER, content=tensor_json("0.5"), timeout=10)
    assert response.status_code == 200
    outputs = strict(response)["outputs"]
    assert {o["name"] for o in outputs} == {"logits", "probabilities"}
