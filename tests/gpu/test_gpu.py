"""CUDA paths: torch on the GPU, the TensorRT variant's build, parity and serving.

Skipped (by conftest) on machines without CUDA; the TensorRT tests skip, saying why, where
torch-tensorrt or TensorRT's libraries are missing.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest

from service.engines.base import CudaOptions
from service.engines.torch_engine import TorchEngine, strict_fp32
from service.imaging import decode_image, preprocess
from service.manifest import read_manifest, resolve
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


FP32_EAGER = CudaOptions(precision="fp32", graphs=False)


def _engine(variant_dir: Path, size: int | None = None, **options: object) -> TorchEngine:
    """The torch engine on CUDA, at the variant's own input size or at ``size``."""
    manifest, path = resolve(variant_dir.parent, variant_dir.name, "torch")
    if size is not None:
        spec = manifest.preprocess.model_copy(update={"resize_size": size, "crop_size": size})
        manifest = manifest.model_copy(update={"preprocess": spec})
    engine = TorchEngine(manifest, path, threads=2, device="cuda", cuda=CudaOptions(**options))  # type: ignore[arg-type]
    engine.load()
    return engine


def _digits(heldout_digits, engine: TorchEngine, count: int | None = None) -> np.ndarray:
    spec = engine.manifest.preprocess
    return np.stack(
        [preprocess(decode_image(png, 10**8), spec) for png in heldout_digits[0][:count]]
    )


def _predict(engine: TorchEngine, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate(
        [engine.predict(images[i : i + batch]) for i in range(0, len(images), batch)]
    )


def test_torch_runtime_on_cuda_answers_as_on_cpu(build, heldout_digits):
    from service.bench.core import load_engine

    model_dir = build("baseline").parent
    gpu = load_engine("baseline", "torch", model_dir, device="cuda", cuda=FP32_EAGER)
    cpu = load_engine("baseline", "torch", model_dir, device="cpu")
    assert gpu.device == "cuda"
    digits = np.stack(
        [preprocess(decode_image(png, 10**8), gpu.manifest.preprocess) for png in heldout_digits[0]]
    )
    with strict_fp32():
        on_gpu = gpu.predict(digits)
    on_cpu = cpu.predict(digits)
    assert on_gpu.shape == (len(digits), 10)
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.99
    assert np.abs(on_gpu - on_cpu).max() < 1e-2


@pytest.mark.parametrize("size", [None, 224])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_graphs_in_half_precision_agree_with_fp32(build, heldout_digits, size, precision):
    """The serving default (fp16, channels-last, CUDA graphs) against fp32 with TF32 off, on
    the held-out digits at the task's size and resized to 224."""
    variant_dir = build("baseline")
    reference = _engine(variant_dir, size, precision="fp32", graphs=False)
    fast = _engine(variant_dir, size, precision=precision)
    fast.warmup(batch_size=64)
    digits = _digits(heldout_digits, reference)
    with strict_fp32():
        expected = _predict(reference, digits)
    got = _predict(fast, digits)
    labels = np.asarray(heldout_digits[1])
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
    assert np.abs(got - expected).max() <= 0.05 * (expected.max() - expected.min())
    if size is None:  # the size the model was trained at
        assert (got.argmax(1) == labels).mean() >= 0.95


def test_cuda_graph_buckets_pad_batches_and_every_caller_gets_its_own_rows(build, heldout_digits):
    engine = _engine(build("baseline"))
    engine.warmup(batch_size=8)
    assert engine._graphs.captured == [1, 2, 4, 8]
    digits = _digits(heldout_digits, engine, 16)
    alone = np.concatenate([engine.predict(digits[i : i + 1]) for i in range(16)])
    padded = engine.predict(digits[:5])  # runs in the batch-8 graph
    assert padded.shape == (5, 10)
    tolerance = 0.02 * float(np.ptp(alone))  # other batch sizes may take other kernels
    np.testing.assert_allclose(padded, alone[:5], atol=tolerance)
    beyond = engine.predict(digits[:13])  # no graph holds 13: one for 16 is captured
    assert engine._graphs.captured == [1, 2, 4, 8, 16]
    np.testing.assert_allclose(beyond, alone[:13], atol=tolerance)
    engine.on_device(digits[:8])()  # the benchmark's GPU-only call replays the same graph
    engine.on_device(digits[:3])()
    np.testing.assert_allclose(engine.predict(digits[:1]), alone[:1], atol=1e-3)

    def call(i: int) -> np.ndarray:
        return np.concatenate([engine.predict(digits[i : i + 1]) for _ in range(5)])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(16)))
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer, np.repeat(alone[i : i + 1], 5, axis=0), atol=1e-3)


@pytest.mark.e2e
def test_torch_on_cuda_serves_with_batching(build, serve, heldout_digits):
    build("baseline")
    server = serve(
        MODEL_VARIANT="baseline",
        MODEL_RUNTIME="torch",
        DEVICE="cuda",
        MAX_BATCH_SIZE="32",
        MAX_QUEUE_SIZE="128",
    )
    with http_client(server) as client:
        assert "CUDA graphs" in client.get("/model").json()["execution"]
    answers = _all_at_once(server, heldout_digits[0][:64])
    assert all(a["runtime"] == "torch" for a in answers)
    assert max(a["timing"]["batch_size"] for a in answers) > 1
    right = sum(
        a["predictions"][0]["label"] == str(y)
        for a, y in zip(answers, heldout_digits[1], strict=False)
    )
    assert right >= 0.9 * 64


def _all_at_once(server, pngs: list[bytes]) -> list[dict]:
    """Every image posted at once, one connection each; every answer must be 200."""

    def post(data: bytes) -> dict:
        with http_client(server) as client:
            response = client.post("/predict", content=data, headers={"content-type": "image/png"})
            assert response.status_code == 200, response.text
            return response.json()

    with concurrent.futures.ThreadPoolExecutor(len(pngs)) as pool:
        return list(pool.map(post, pngs))


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
    answers = _all_at_once(server, pngs[:64])
    assert all(a["runtime"] == "tensorrt" for a in answers)
    assert max(a["timing"]["batch_size"] for a in answers) > 1
    server.stop()
