"""Helpers the tests import (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from service.bench.server import ServerProcess, free_port
from service.engines import Engine
from service.manifest import Manifest, Preprocess, RuntimeArtifact

ROOT = Path(__file__).resolve().parent.parent


def documentation() -> str:
    """The README and every docs page, as one text (what a reader can be told to run)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(page.read_text() for page in pages)


DIGIT_LABELS = [str(d) for d in range(10)]


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


def http_client(server: ServerProcess, timeout: float = 30.0) -> httpx.Client:
    """An HTTP client for a real server process."""
    return httpx.Client(base_url=server.url, timeout=timeout)


def encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    """``img`` encoded as ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def metric(text: str, name: str, labels: str = "") -> float:
    """Value of one sample in a Prometheus exposition (0 when absent)."""
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def fake_manifest(crop_size: int = 8, labels: list[str] | None = None) -> Manifest:
    """A manifest for a tiny fake model: ``crop_size`` inputs, one label per class."""
    labels = labels or DIGIT_LABELS
    return Manifest(
        variant="baseline",
        task="fake",
        architecture={"name": "fake"},
        num_classes=len(labels),
        labels=labels,
        preprocess=Preprocess(
            resize_size=crop_size, crop_size=crop_size, mean=(0.5,) * 3, std=(0.25,) * 3
        ),
        source_weights={"kind": "fake"},
        built_at="2026-01-01T00:00:00+00:00",
        artifacts={
            FakeEngine.runtime: RuntimeArtifact(
                file="model.fake", format="fake", sha256="f" * 64, size_bytes=0
            )
        },
    )


class FakeEngine(Engine):
    """A deterministic stand-in for a runtime, like KServe's DummyModel.

    Class ``i``'s logit is ``i`` times the image's mean, so a brighter image ranks higher
    classes first. ``gate`` (cleared) holds every ``predict`` until it is set, ``load_gate``
    (cleared) holds ``load``; ``load_error``/``predict_error`` make them raise;
    ``batch_max``/``size`` mimic a fixed-shape engine.
    """

    runtime = "fake"

    def __init__(
        self,
        manifest: Manifest | None = None,
        *,
        load_error: Exception | None = None,
        predict_error: Exception | None = None,
        size: int | None = None,
        batch_max: int | None = None,
    ) -> None:
        manifest = manifest or fake_manifest()
        super().__init__(manifest, Path("model.fake"), threads=1)
        self.load_error = load_error
        self.predict_error = predict_error
        self.size = size or manifest.preprocess.crop_size
        self.batch_max = batch_max
        self.gate = threading.Event()
        self.gate.set()
        self.load_gate = threading.Event()
        self.load_gate.set()
        self.calls: list[int] = []  # batch size of every predict after load
        self.loaded = False

    def load(self) -> None:
        self.load_gate.wait(timeout=30)
        if self.load_error is not None:
            raise self.load_error
        self.loaded = True

    def input_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        return (batch_size, 3, self.size, self.size)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.gate.wait(timeout=30)
        if self.predict_error is not None:
            raise self.predict_error
        self.calls.append(len(batch))
        means = batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)
        return (means * np.arange(self.manifest.num_classes, dtype=np.float32)).astype(np.float32)


@contextmanager
def fake_server(engine: Engine | None = None, **overrides: Any) -> Iterator[str]:
    """The app with ``engine`` (a :class:`FakeEngine` by default) under a real uvicorn in a
    thread, with ``densenet serve``'s server class and protocol and ``overrides`` as
    settings; yields its base URL once ready."""
    with fake_uvicorn(engine, **overrides) as (url, _):
        yield url


@contextmanager
def fake_uvicorn(engine: Engine | None = None, **overrides: Any) -> Iterator[tuple[str, Any]]:
    """:func:`fake_server`, also yielding the server (``server.should_exit = True`` starts
    its graceful shutdown)."""
    import uvicorn

    from service.app import create_app
    from service.config import Settings
    from service.graceful import Server
    from service.protocol import http_protocol

    settings = Settings(**{"drain_seconds": 0, **overrides})
    port = free_port()
    server = Server(
        uvicorn.Config(
            create_app(settings, engine=engine or FakeEngine()),
            host="127.0.0.1",
            port=port,
            http=http_protocol(settings),
            ws="none",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not _answers_ready(url):
            assert time.monotonic() < deadline, "the fake server did not become ready"
            time.sleep(0.02)
        yield url, server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
