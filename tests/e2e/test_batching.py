"""Dynamic batching and bounded admission with real engines and real servers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image

from service.batching import Batcher
from service.metrics import Metrics
from tests.support import http_client


def digits_batch(heldout_digits, manifest, n: int) -> np.ndarray:
    from service.imaging import decode_image, preprocess

    return np.stack(
        [preprocess(decode_image(p, 10**8), manifest.preprocess) for p in heldout_digits[0][:n]]
    )


@pytest.mark.slow
def test_batcher_forms_batches_and_returns_each_callers_row(build, heldout_digits):
    from service.bench.core import load_engine

    model_dir = build("baseline").parent
    engine = load_engine("baseline", "onnxruntime", model_dir, threads=2)
    images = digits_batch(heldout_digits, engine.manifest, 24)
    unbatched = np.stack([engine.predict(x[None])[0] for x in images])
    metrics = Metrics()

    async def scenario() -> list:
        batcher = Batcher(
            engine.predict, max_batch_size=8, timeout_s=0.05, max_in_flight=64, metrics=metrics
        )
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x) for x in images))
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert max(r.batch_size for r in results) > 1
    for result, expected in zip(results, unbatched, strict=True):
        np.testing.assert_allclose(result.logits, expected, atol=1e-4)
    assert [int(r.logits.argmax()) for r in results] == [int(e.argmax()) for e in unbatched]
    batches = metrics.batch_size.collect()[0].samples
    count = next(s.value for s in batches if s.name.endswith("_count"))
    total = next(s.value for s in batches if s.name.endswith("_sum"))
    assert total == 24 and count < 24


def predict_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    def one(body: bytes) -> httpx.Response:
        return httpx.post(f"{url}/predict", files={"file": ("x.png", body)}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def batch_metrics(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    count = float(re.search(r"^inference_batch_size_count ([0-9.e+]+)$", text, re.M).group(1))
    total = float(re.search(r"^inference_batch_size_sum ([0-9.e+]+)$", text, re.M).group(1))
    return count, total


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_batched_server_answers_every_caller_correctly(build, serve, heldout_digits, runtime):
    build("baseline")
    pngs = heldout_digits[0][:16]
    plain = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME=runtime, MAX_QUEUE_SIZE="64")
    expected = [r.json()["predictions"] for r in predict_all(plain.url, pngs)]
    plain.stop()
    batched = serve(
        MODEL_VARIANT="baseline",
        MODEL_RUNTIME=runtime,
        MAX_BATCH_SIZE="8",
        BATCH_TIMEOUT_MS="50",
        MAX_QUEUE_SIZE="64",
    )
    garbage = [b"not an image"] * 4
    responses = predict_all(batched.url, pngs + garbage)
    good, bad = responses[:16], responses[16:]
    assert all(r.status_code == 200 for r in good), [r.text for r in good if r.status_code != 200]
    assert all(r.status_code == 400 for r in bad)  # a bad decode fails only its own request
    for response, want in zip(good, expected, strict=True):
        got = response.json()["predictions"]
        assert [p["index"] for p in got] == [p["index"] for p in want]
        np.testing.assert_allclose(
            [p["probability"] for p in got], [p["probability"] for p in want], atol=1e-4
        )
    assert max(r.json()["timing"]["batch_size"] for r in good) > 1
    count, total = batch_metrics(batched.url)
    assert total >= 16 and total / count > 1  # inference_batch_size observed > 1
    batched.stop()


@pytest.mark.slow
@pytest.mark.e2e
def test_queue_overflow_gives_503_with_retry_after_and_nothing_else_breaks(
    build, serve, sample_photos
):
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="torch", MAX_QUEUE_SIZE="2")
    big = Image.open(io.BytesIO(sample_photos[0])).resize((2000, 1500))
    buf = io.BytesIO()
    big.save(buf, format="PNG")  # slow to decode: requests pile up
    responses = predict_all(server.url, [buf.getvalue()] * 24)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) > 0 and statuses.count(200) >= 2
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "overloaded"
        else:
            assert r.json()["predictions"]
    with http_client(server) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/predict", files={"file": ("p", sample_photos[1])}).status_code == 200
        text = client.get("/metrics").text
    assert 'requests_total{route="/predict",status="503"}' in text
    assert server.process.poll() is None
