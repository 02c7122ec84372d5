"""CUDA paths: torch on the GPU, the TensorRT variant's build, parity and serving.

Skipped (by conftest) on machines without CUDA; the TensorRT tests skip, saying why, where
torch-tensorrt or TensorRT's libraries are missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.imaging import decode_image, preprocess
from service.manifest import read_manifest
from tests.support import http_client

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def tensorrt_dir(build, model_dir):
    from service.engines.tensorrt_engine import import_torch_tensorrt
    from service.errors import RuntimeUnavailable
    from service.optimize.options import BuildOptions
    from service.optimize.pipeline import build_variant

    try:
        import_torch_tensorrt()
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))

    build("baseline")
    target = model_dir / "tensorrt"
    if not (target / "manifest.json").is_file():
        build_variant(
            "tensorrt",
            BuildOptions(out=model_dir, runtimes=("tensorrt",), trt_batch_opt=8, trt_batch_max=64),
        )
    return target


def test_tensorrt_agrees_with_fp32(tensorrt_dir):
    metrics = read_manifest(tensorrt_dir).artifacts["tensorrt"].metrics
    assert metrics["agreement_top1_vs_fp32"] >= 0.99
    assert metrics["max_abs_logit_diff_vs_fp32"] < 1.0
    assert metrics["accuracy_top1"] >= 0.97


def test_tensorrt_engine_runs_dynamic_batches(tensorrt_dir, heldout_digits):
    from service.bench.core import load_engine

    engine = load_engine("tensorrt", "tensorrt", tensorrt_dir.parent, device="cuda")
    fp32 = load_engine("baseline", "torch", tensorrt_dir.parent, device="cuda")
    size = engine.image_size
    assert engine.input_shape(1) == (1, 3, size, size) and engine.batch_max == 64
    digits = np.stack(
        [
            preprocess(decode_image(png, 10**8), engine.manifest.preprocess)
            for png in heldout_digits[0][:64]
        ]
    )
    for batch in (1, 7, 64):
        out = engine.predict(digits[:batch])
        assert out.shape == (batch, 10) and np.isfinite(out).all()
        assert (out.argmax(1) == fp32.predict(digits[:batch]).argmax(1)).mean() >= 0.95
    with pytest.raises(ValueError, match="--trt-image-size 224"):
        engine.predict(np.zeros((1, 3, 224, 224), dtype=np.float32))
    with pytest.raises(ValueError, match="exceeds the engine's maximum"):
        engine.predict(np.zeros((65, 3, size, size), dtype=np.float32))


def test_torch_runtime_on_cuda_answers_as_on_cpu(build, heldout_digits):
    from service.bench.core import load_engine

    model_dir = build("baseline").parent
    gpu = load_engine("baseline", "torch", model_dir, device="cuda")
    cpu = load_engine("baseline", "torch", model_dir, device="cpu")
    assert gpu.device == "cuda"
    digits = np.stack(
        [preprocess(decode_image(png, 10**8), gpu.manifest.preprocess) for png in heldout_digits[0]]
    )
    on_gpu, on_cpu = gpu.predict(digits), cpu.predict(digits)
    assert on_gpu.shape == (len(digits), 10)
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.99
    assert np.abs(on_gpu - on_cpu).max() < 1e-2  # TF32 convolutions may differ a little


@pytest.mark.e2e
def test_gpu_server_with_batching(tensorrt_dir, serve, heldout_digits):
    server = serve(
        MODEL_VARIANT="tensorrt",
        MODEL_RUNTIME="tensorrt",
        MAX_BATCH_SIZE="32",
        MAX_QUEUE_SIZE="64",
        DEVICE="cuda",
    )
    pngs, labels = heldout_digits
    correct = 0
    with http_client(server) as client:
        for data, label in zip(pngs[:50], labels[:50], strict=True):
            body = client.post("/predict", files={"file": ("d.png", data)}).json()
            assert body["runtime"] == "tensorrt"
            correct += body["predictions"][0]["label"] == str(label)
    assert correct >= 47
    # 64 requests at once: the batcher must form engine batches above 1.
    import concurrent.futures

    def post(data: bytes) -> dict:
        with http_client(server) as client:
            return client.post("/predict", files={"file": ("d.png", data)}).json()

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(post, pngs[:64]))
    assert all(a["runtime"] == "tensorrt" for a in answers)
    assert max(a["timing"]["batch_size"] for a in answers) > 1
    server.stop()
