"""Reference servers for the load test: what any HTTP server on this stack costs per request.

    FLOOR_MODE=empty   python loadtest/floor.py   # reads the body, answers a fixed prediction
    FLOOR_MODE=minimal python loadtest/floor.py   # + the service's decode, preprocess and engine

Both are bare ASGI apps on uvicorn with uvloop and httptools, as ``densenet serve`` runs, on
``HOST``/``PORT``. ``empty`` does no work: its latency at one user is the round trip through
Locust, the kernel and uvicorn, the least any server adds. ``minimal`` does the service's work
with nothing around it: Starlette's body and multipart parsing, then decode + preprocess +
engine in one hop to one worker thread (``MODEL_DIR``/``MODEL_VARIANT``/``MODEL_RUNTIME``,
``NUM_THREADS`` intra-op threads); no routing, limits, metrics, validation or error shape.
``make loadtest`` serves both beside the service, so the report separates what the framework
costs from what HTTP itself costs. They are measuring instruments, not servers to deploy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("empty", "minimal")


def answer(index: int, timing: dict[str, float]) -> bytes:
    """The fields the load test checks: predictions and the server's timing breakdown."""
    return json.dumps(
        {
            "predictions": [{"index": index, "label": str(index), "probability": 1.0}],
            "timing": {"queue_ms": 0.0, "total_ms": 0.0, **timing},
        }
    ).encode()


EMPTY = answer(0, {"inference_ms": 0.0, "decode_ms": 0.0, "preprocess_ms": 0.0})


class Minimal:
    """The service's decode + preprocess + engine, in one worker thread."""

    def __init__(self) -> None:
        from service.bench.core import load_engine
        from service.config import Settings

        settings = Settings()
        self.settings = settings
        self.engine = load_engine(
            settings.model_variant,
            settings.model_runtime,
            settings.model_dir,
            threads=settings.threads,
        )
        self.engine.warmup()
        self.pool = ThreadPoolExecutor(1)

    def work(self, data: bytes) -> bytes:
        from service.imaging import decode_and_preprocess

        array, decode_s, preprocess_s = decode_and_preprocess(
            data,
            self.engine.manifest.preprocess,
            self.settings.max_image_pixels,
            self.settings.max_image_bytes,
            reduced=self.settings.jpeg_decode == "reduced",
        )
        started = time.perf_counter()
        logits = self.engine.predict(array[None])
        inference_s = time.perf_counter() - started
        return answer(
            int(np.argmax(logits[0])),
            {
                "inference_ms": 1e3 * inference_s,
                "decode_ms": 1e3 * decode_s,
                "preprocess_ms": 1e3 * preprocess_s,
            },
        )


async def image_bytes(scope: Scope, receive: Receive) -> bytes:
    request = Request(scope, receive)
    if request.headers.get("content-type", "").startswith("multipart/"):
        form = await request.form()
        upload: Any = form["file"]
        assert isinstance(upload, UploadFile)
        data = await upload.read()
        await form.close()
        return data
    return await request.body()


def make_app(mode: str) -> ASGIApp:
    """The reference server ``mode`` ("empty" or "minimal") as an ASGI app."""
    if mode not in MODES:
        raise ValueError(f"FLOOR_MODE must be 'empty' or 'minimal', not {mode!r}")
    minimal = Minimal() if mode == "minimal" else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/readyz":
            body = b'{"status":"ready"}'
        elif minimal is None:
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            body = EMPTY
        else:
            data = await image_bytes(scope, receive)
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(minimal.pool, minimal.work, data)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    try:
        application = make_app(os.environ.get("FLOOR_MODE", "empty"))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    uvicorn.run(
        application,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8080")),
        loop="uvloop",
        http="httptools",
        ws="none",
        access_log=False,
        log_level="warning",
    )
