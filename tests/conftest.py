"""Shared fixtures: real artifacts built once per session, real servers on 127.0.0.1.

Tiers: ``tests/unit`` is the fast tier (nothing trained, no server process: at most uvicorn in
a thread with a fake engine; ``make test-fast``); every other directory is marked ``slow``
here, and ``tests/e2e`` also ``e2e``.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.bench.server import ServerProcess, spawn_server
from tests.support import ROOT, fake_server

# Small epoch budgets keep the suite inside CI's time; the defaults (`make artifacts`) train longer.
TEST_EPOCHS = {"baseline": 14, "pruned": 6, "distilled": 15, "distilled-pruned": 6}
TESTS = Path(__file__).resolve().parent


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.path).relative_to(TESTS).parts[0]
        if tier != "unit":
            item.add_marker(pytest.mark.slow)
        if tier == "e2e":
            item.add_marker(pytest.mark.e2e)
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU visible)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MODEL_DIR shared by the session; variants are built into it on first use.

    ``DENSENET_TEST_MODELS=DIR`` keeps them in DIR across sessions (for local iteration).
    """
    keep = os.environ.get("DENSENET_TEST_MODELS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def build(model_dir: Path) -> Callable[[str], Path]:
    """``build(variant)`` -> its directory, built once per session with test-sized budgets."""
    from service.optimize.options import BuildOptions
    from service.optimize.pipeline import build_variant
    from service.variants import get_variant, lineage

    def _build(variant: str) -> Path:
        target = model_dir / variant
        if not (target / "manifest.json").is_file():
            options = BuildOptions(
                out=model_dir,
                epochs=TEST_EPOCHS.get(variant),
                student="densenet-tiny",
                calibration_images=128,
                runtimes=("torch", "onnxruntime", "openvino"),
            )
            for needed in [*reversed(lineage(variant)), get_variant(variant).teacher]:
                if needed is not None:  # each at its own test budget, not this variant's
                    _build(needed)
            build_variant(variant, options)
        return target

    return _build


@pytest.fixture(scope="session")
def serve(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """``serve(**env)``: a real ``densenet serve`` on MODEL_DIR, stopped at the session's end."""
    logs = tmp_path_factory.mktemp("server-logs")
    numbers = itertools.count()
    with ExitStack() as stack:

        def _serve(wait_ready: bool = True, **env: str) -> ServerProcess:
            # No readiness-off period on SIGTERM unless a test asks for one: servers still up
            # at the session's end are stopped one after another.
            full_env = {
                "MODEL_DIR": str(model_dir),
                "NUM_THREADS": "2",
                "DRAIN_SECONDS": "0",
                **env,
            }
            log = logs / f"server-{next(numbers)}.log"
            return stack.enter_context(spawn_server(full_env, log, wait_ready=wait_ready, cwd=ROOT))

        yield _serve


@pytest.fixture
def serve_fake() -> Iterator[Callable[..., str]]:
    """``serve_fake(**settings)``: the app with a fake engine on a real uvicorn; its URL."""
    with ExitStack() as stack:
        yield lambda **settings: stack.enter_context(fake_server(**settings))


@pytest.fixture(scope="session")
def sample_photos() -> list[bytes]:
    """The two real JPEG photos scikit-learn ships (china.jpg, flower.jpg)."""
    from sklearn.datasets import load_sample_images

    return [Path(name).read_bytes() for name in load_sample_images().filenames]


@pytest.fixture(scope="session")
def heldout_digits() -> tuple[list[bytes], list[int]]:
    """Held-out digits (never trained on) written as 8x8 PNG files' bytes, with labels."""
    from service.optimize.data import digits_split

    _, _, images, labels = digits_split()
    pngs = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    return pngs, [int(y) for y in labels]


@pytest.fixture(scope="session")
def legacy_imagenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised DenseNet-121 saved in torchvision's legacy key layout."""
    import torch
    from torchvision.models import densenet121

    torch.manual_seed(0)
    out = {}
    for key, value in densenet121(weights=None).state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        for old in ("norm1", "norm2", "conv1", "conv2", "relu1", "relu2"):
            key = key.replace(f".{old}.", f".{old[:-1]}.{old[-1]}.")  # noqa: PLW2901
        out[key] = value
    path = tmp_path_factory.mktemp("weights") / "densenet121-a639ec97.pth"
    torch.save(out, path)
    return path
