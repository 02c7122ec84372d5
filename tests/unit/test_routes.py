"""Routes through FastAPI's TestClient with a fake engine: shapes, errors, limits, overload."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.config import Settings
from service.state import ServiceState
from tests.support import FakeEngine, encode, metric

GRAY = encode(Image.new("RGB", (16, 12), (128, 128, 128)))
WHITE = encode(Image.new("RGB", (16, 12), (255, 255, 255)))


def settings(**overrides: object) -> Settings:
    return Settings(**{"drain_seconds": 0, **overrides})  # type: ignore[arg-type]


def wait_ready(client: TestClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.01)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    app = create_app(settings(max_body_bytes=4096, max_image_pixels=10_000), engine=engine)
    # As a real server does: unexpected errors become the 500 answer, not a test-side raise.
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def state_of(client: TestClient) -> ServiceState:
    state: ServiceState = client.app.state.service  # type: ignore[attr-defined]
    return state


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {"error": {"code": code, "message": body["error"]["message"], "status": status}}
    assert body["error"]["message"]
    return body


def test_predict_answers_from_the_engine(client, engine):
    body = client.post("/predict", files={"file": ("x.png", WHITE)}).json()
    assert body["variant"] == "baseline" and body["runtime"] == "fake"
    assert body["model_sha256"] == "f" * 64
    assert [p["index"] for p in body["predictions"]] == [9, 8, 7, 6, 5]  # bright: high classes
    assert [p["label"] for p in body["predictions"]] == ["9", "8", "7", "6", "5"]
    assert body["timing"]["batch_size"] == 1
    assert engine.calls[-1] == 1


def test_multipart_and_raw_body_give_the_same_answer(client):
    multipart = client.post("/predict", files={"file": ("x.png", GRAY)}).json()
    raw = client.post("/predict", content=GRAY, headers={"content-type": "image/png"}).json()
    assert multipart["predictions"] == raw["predictions"]


def test_top_k_query(client):
    assert (
        len(client.post("/predict?top_k=2", files={"file": ("x", GRAY)}).json()["predictions"]) == 2
    )
    assert (
        len(client.post("/predict?top_k=50", files={"file": ("x", GRAY)}).json()["predictions"])
        == 10
    )
    assert_error(
        client.post("/predict?top_k=0", files={"file": ("x", GRAY)}), 422, "validation_error"
    )


@pytest.mark.parametrize("value", ["0", "1001", "-1", "+5", "2.0", "abc", "", "\u0663", "9" * 5000])
def test_top_k_outside_1_to_1000_is_a_422(client, value):
    response = client.post("/predict", params={"top_k": value}, files={"file": ("x", GRAY)})
    assert_error(response, 422, "validation_error")
    assert "top_k" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"files": {"file": ("x.png", b"not an image")}}, 400, "invalid_input"),
        ({"files": {"file": ("x.png", b"")}}, 400, "invalid_input"),
        ({"files": {"other": ("x.png", GRAY)}}, 400, "missing_file"),
        (
            {"content": GRAY, "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"content": GRAY}, 415, "unsupported_media_type"),
        (
            {"files": {"file": ("x.tif", encode(Image.new("RGB", (9, 9)), "TIFF"))}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content": b"x" * 5000, "headers": {"content-type": "image/png"}},
            413,
            "payload_too_large",
        ),
        (
            {"files": {"file": ("x.png", encode(Image.new("L", (200, 200))))}},
            413,
            "image_too_large",
        ),
        (
            {
                "content": b"--b\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=b"},
            },
            400,
            "missing_file",
        ),
    ],
    ids=[
        "garbage",
        "empty",
        "no-file-field",
        "text",
        "no-type",
        "tiff",
        "body-limit",
        "pixels",
        "bad-multipart",
    ],
)
def test_bad_requests_get_one_json_error_shape(client, kwargs, status, code):
    assert_error(client.post("/predict", **kwargs), status, code)
    assert client.post("/predict", files={"file": ("x.png", GRAY)}).status_code == 200


def test_unknown_paths_and_methods_use_the_error_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_engine_failure_is_a_500_that_reveals_nothing(client, engine):
    engine.predict_error = RuntimeError("secret internal detail")
    body = assert_error(client.post("/predict", files={"file": ("x", GRAY)}), 500, "internal_error")
    assert "secret" not in body["error"]["message"]
    engine.predict_error = None
    assert client.post("/predict", files={"file": ("x", GRAY)}).status_code == 200


def test_overload_is_503_with_retry_after_and_admitted_requests_finish(engine):
    app = create_app(settings(max_queue_size=2), engine=engine)
    with TestClient(app) as client:
        wait_ready(client)
        engine.gate.clear()  # the engine stalls: admitted requests stay in flight
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            admitted = [
                pool.submit(client.post, "/predict", files={"file": ("x", GRAY)}) for _ in range(2)
            ]
            deadline = time.monotonic() + 10
            while state_of(client).batcher.in_flight < 2:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            refused = client.post("/predict", files={"file": ("x", GRAY)})
            assert_error(refused, 503, "overloaded")
            assert refused.headers["retry-after"] == "1"
            assert client.get("/healthz").status_code == 200  # the event loop is free
            engine.gate.set()
            assert [f.result().status_code for f in admitted] == [200, 200]
        text = client.get("/metrics").text
    assert metric(text, "requests_total", '{route="/predict",status="503"}') == 1
    assert metric(text, "requests_total", '{route="/predict",status="200"}') == 2


def test_not_ready_while_loading_then_ready(engine):
    engine.load_gate.clear()
    with TestClient(create_app(settings(), engine=engine)) as client:
        assert_error(client.get("/readyz"), 503, "not_ready")
        assert client.get("/readyz").json()["error"]["message"] == "model is loading"
        assert client.get("/healthz").json() == {"status": "ok"}
        assert_error(client.post("/predict", files={"file": ("x", GRAY)}), 503, "not_ready")
        assert_error(client.get("/model"), 503, "not_ready")
        engine.load_gate.set()
        wait_ready(client)
        assert client.get("/model").json()["runtime"] == "fake"


def test_readyz_says_why_after_a_failed_load():
    engine = FakeEngine(load_error=RuntimeError("weights file is corrupt"))
    with TestClient(create_app(settings(), engine=engine)) as client:
        deadline = time.monotonic() + 10
        while "loading" in client.get("/readyz").json()["error"]["message"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        body = assert_error(client.get("/readyz"), 503, "not_ready")
        assert body["error"]["message"] == (
            "model failed to load: RuntimeError: weights file is corrupt"
        )
        assert_error(client.post("/predict", files={"file": ("x", GRAY)}), 503, "not_ready")


def test_draining_turns_readiness_off_but_still_serves(client):
    state_of(client).draining = True
    body = assert_error(client.get("/readyz"), 503, "not_ready")
    assert "draining" in body["error"]["message"]
    assert client.post("/predict", files={"file": ("x", GRAY)}).status_code == 200


def test_metrics_names_and_counts(client):
    client.post("/predict", files={"file": ("x", GRAY)})
    client.post("/predict", content=b"x" * 5000, headers={"content-type": "image/png"})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "requests_total",
        "request_duration_seconds_bucket",
        "inflight_requests",
        "request_preprocess_seconds_count",
        "request_predict_seconds_count",
        "request_postprocess_seconds_count",
        "request_queue_seconds_count",
        "inference_batch_size_count",
        "queue_depth",
        "model_load_seconds",
        "time_to_ready_seconds",
        "model_info",
        "process_resident_memory_bytes",
    ):
        assert f"\n{name}" in text, name
    assert metric(text, "requests_total", '{route="/predict",status="200"}') == 1
    assert metric(text, "requests_total", '{route="/predict",status="413"}') == 1
    assert (
        metric(
            text,
            "model_info",
            '{runtime="fake",sha256="' + "f" * 64 + '",task="fake",variant="baseline"}',
        )
        == 1
    )
    assert client.get("/nope").status_code == 404
    assert 'route="unmatched"' in client.get("/metrics").text


def test_the_served_versions_are_in_metrics_and_model(client):
    from importlib.metadata import version

    from prometheus_client.parser import text_string_to_metric_families

    from service import __version__

    wait_ready(client)
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    (sample,) = families["densenet_build_info"].samples
    labels = sample.labels
    assert sample.value == 1
    assert labels["version"] == __version__ and labels["runtime"] == "fake"
    for library in ("fastapi", "numpy", "pillow", "uvicorn", "pydantic", "starlette"):
        assert labels[library] == version(library), library
    assert client.get("/model").json()["build"] == labels


def test_openapi_documents_the_predict_body_and_errors(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    content = predict["requestBody"]["content"]
    media = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif"}
    assert set(content) == {"multipart/form-data"} | media
    # An empty file is no image: the schema says so, as the server does (400).
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["minLength"] == 1
    parts = content["multipart/form-data"]["encoding"]["file"]["contentType"]
    assert set(parts.split(", ")) == media
    assert {"400", "413", "415", "422", "503"} <= set(predict["responses"])


def test_draining_answers_close_the_connection(client):
    assert "connection" not in client.get("/healthz").headers
    state_of(client).draining = True
    assert client.get("/healthz").headers["connection"] == "close"
    served = client.post("/predict", files={"file": ("x", GRAY)})
    assert served.status_code == 200 and served.headers["connection"] == "close"


def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_the_host_header(client):
    response = client.post(
        "/predict/",
        files={"file": ("x", GRAY)},
        headers={"host": "evil.example"},
        follow_redirects=False,
    )
    assert_error(response, 404, "not_found")
    assert "location" not in response.headers


def test_error_messages_carry_no_heap_addresses(client):
    body = assert_error(
        client.post("/predict", files={"file": ("x", b"garbage")}), 400, "invalid_input"
    )
    assert "0x" not in body["error"]["message"] and "BytesIO" not in body["error"]["message"]


def test_a_client_that_disconnects_mid_body_is_a_499_not_a_500(engine, caplog):
    import anyio

    app = create_app(settings(), engine=engine)
    sent: list[dict] = []
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\npart'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", b"5000"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages = iter([{"type": "http.request", "body": body, "more_body": True}])

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    with TestClient(app) as client:  # runs the lifespan: the engine loads
        wait_ready(client)
        caplog.clear()
        anyio.run(app, scope, receive, send)
        text = client.get("/metrics").text
    assert sent[0]["status"] == 499
    assert metric(text, "requests_total", '{route="/predict",status="499"}') == 1
    assert 'status="500"' not in text
    assert "Traceback" not in caplog.text and "client disconnected" in caplog.text


@pytest.mark.parametrize("num_threads", [1, 2])
def test_with_one_thread_per_call_a_request_takes_one_hop_and_each_caller_its_own_answer(
    engine, num_threads
):
    """NUM_THREADS=1 without batching: decode and model call share one engine thread (the
    direct path); 16 concurrent callers with different images still get their own answers,
    and a bad image among them is a 400 that costs nobody else theirs."""
    shades = [encode(Image.new("RGB", (16, 12), (v, v, v))) for v in range(0, 256, 16)]
    app = create_app(
        settings(num_threads=num_threads, engine_workers=2, max_queue_size=32), engine=engine
    )
    with TestClient(app) as client:
        wait_ready(client)
        assert state_of(client).batcher.direct is (num_threads == 1)
        png = {"content-type": "image/png"}
        serial = [client.post("/predict?top_k=10", content=s, headers=png).json() for s in shades]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda s: client.post("/predict?top_k=10", content=s, headers=png),
                    [*shades, b"not an image"],
                )
            )
        assert_error(answers.pop(), 400, "invalid_input")
        assert [a.json()["predictions"] for a in answers] == [s["predictions"] for s in serial]
        assert len({str(a.json()["predictions"]) for a in answers}) > 8  # really different
        text = client.get("/metrics").text
    assert metric(text, "queue_depth") == 0
    assert metric(text, "inference_batch_size_count") == 2 * len(shades)
