"""What the service's framework costs per request, measured without sockets or a load generator.

    python loadtest/overhead.py [--rounds 30] [--requests 64] [--cpu 0] [--out FILE]

Calls two ASGI apps in this process, in turn, with the same requests (the load test's image
pool, each image as multipart and as a raw body): the service (``create_app`` with its real
lifecycle, on ``MODEL_DIR``/``MODEL_VARIANT``/``MODEL_RUNTIME`` and the other settings from the
environment) and ``loadtest/floor.py``'s minimal server (Starlette's body and multipart
parsing, then the same decode, preprocess and engine in one hop to one thread). Both run on one
uvloop event loop, as under ``densenet serve``; ``--cpu`` pins the process to one CPU, as the
CPU revision's pod is.

There is no HTTP and no Locust, so what separates the two is what the service adds: routing,
limits, admission, metrics, the validated answer and the error shape. Rounds alternate, so the
machine's drift falls on both; the report is the median of the rounds' per-request differences,
with its quartiles. ``make loadtest`` runs it beside the HTTP comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from starlette.types import ASGIApp, Message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtest"))

from floor import make_app  # noqa: E402
from images import image_pool  # noqa: E402
from urllib3 import encode_multipart_formdata  # noqa: E402

from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402

Request = tuple[bytes, bytes]  # content type, body


def requests() -> list[Request]:
    """Every image of the load test's pool, as multipart (field ``file``) and as a raw body."""
    out = []
    for _, ctype, data in image_pool():
        body, multipart = encode_multipart_formdata({"file": ("image", data, ctype)})
        out.append((multipart.encode(), body))
        out.append((ctype.encode(), data))
    return out


async def call(app: ASGIApp, request: Request) -> None:
    """One POST /predict through ``app``; fails unless it answers 200."""
    ctype, body = request
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
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", ctype),
            (b"content-length", b"%d" % len(body)),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    delivered = False
    status = 0

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"{ctype.decode()} request answered {status}")


async def per_request_us(app: ASGIApp, batch: list[Request]) -> float:
    """Microseconds per request over ``batch``, one request at a time."""
    started = time.perf_counter()
    for request in batch:
        await call(app, request)
    return (time.perf_counter() - started) / len(batch) * 1e6


async def measure(rounds: int, count: int) -> dict[str, Any]:
    service = create_app(Settings())
    minimal = make_app("minimal")
    pool = requests()
    batch = [pool[i % len(pool)] for i in range(count)]
    async with service.router.lifespan_context(service):
        state = service.state.service
        while not state.ready:
            if state.load_error is not None:
                raise SystemExit(f"the service did not load: {state.load_error}")
            await asyncio.sleep(0.05)
        apps: dict[str, Callable[[list[Request]], Awaitable[float]]] = {
            "service": lambda b: per_request_us(service, b),
            "minimal": lambda b: per_request_us(minimal, b),
        }
        for run in apps.values():  # warm-up: caches, allocators, the engine's first calls
            await run(batch)
        taken: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(rounds):
            for name, run in apps.items():
                taken[name].append(await run(batch))
        mode = "one-hop" if state.batcher is not None and state.batcher.direct else "batcher"
    differences = [s - m for s, m in zip(taken["service"], taken["minimal"], strict=True)]
    q1, median, q3 = statistics.quantiles(differences, n=4)
    return {
        "rounds": rounds,
        "requests_per_round": count,
        "service_path": mode,
        "service_us": statistics.median(taken["service"]),
        "minimal_us": statistics.median(taken["minimal"]),
        "overhead_us": {"median": median, "q1": q1, "q3": q3},
        "rounds_us": taken,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=64, help="requests per app per round")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the report has quartiles)")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    result = uvloop.run(measure(args.rounds, args.requests))
    o = result["overhead_us"]
    print(
        f"per request: service {result['service_us']:.0f} us, minimal {result['minimal_us']:.0f} "
        f"us; the service's extra cost {o['median']:.0f} us (quartiles {o['q1']:.0f} to "
        f"{o['q3']:.0f}), {result['rounds']} alternating rounds of {result['requests_per_round']}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
