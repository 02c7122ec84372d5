"""Shared fixtures: real artifacts built once per session, real servers on 127.0.0.1."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Small epoch budgets keep the suite inside CI's time; the defaults (`make artifacts`) train longer.
TEST_EPOCHS = {"baseline": 14, "pruned": 6, "distilled": 15}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU visible)")
    for item in items:
        if "gpu" in item.keywords:
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
    from service.build import build_variant
    from service.optimize.common import BuildOptions

    def _build(variant: str) -> Path:
        target = model_dir / variant
        if not (target / "manifest.json").is_file():
            options = BuildOptions(
                out=model_dir,
                epochs=TEST_EPOCHS.get(variant),
                student="densenet-tiny",
                calibration_images=128,
                runtimes=("torch", "onnxruntime"),
            )
            if variant != "baseline":
                _build("baseline")
            build_variant(variant, options)
        return target

    return _build


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` (the ``densenet`` command) in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A real ``densenet serve`` process."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(model_dir: Path, log_dir: Path, wait_ready: bool = True, **env: str) -> Server:
    """Start ``python -m service serve`` on a free loopback port."""
    port = free_port()
    full_env = {
        **os.environ,
        "MODEL_DIR": str(model_dir),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "NUM_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    if wait_ready:
        wait_until_ready(server)
    return server


def wait_until_ready(server: Server, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"server not ready in {timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def serve(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[Callable[..., Server]]:
    """Factory for servers that are all stopped at the end of the session."""
    started: list[Server] = []
    logs = tmp_path_factory.mktemp("server-logs")

    def _serve(wait_ready: bool = True, **env: str) -> Server:
        server = start_server(model_dir, logs, wait_ready=wait_ready, **env)
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def sample_photos() -> list[bytes]:
    """The two real JPEG photos scikit-learn ships (china.jpg, flower.jpg)."""
    from sklearn.datasets import load_sample_images

    return [Path(name).read_bytes() for name in load_sample_images().filenames]


@pytest.fixture(scope="session")
def heldout_digits() -> tuple[list[bytes], list[int]]:
    """Held-out digits (never trained on) written as 8x8 PNG files' bytes, with labels."""
    from service.data import digits_split

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
