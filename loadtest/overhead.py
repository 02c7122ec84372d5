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
with its quartiles. Per request kind (each image, multipart or raw) it also gives both apps'
median time, and what a multipart body costs the minimal server beyond the same image sent
raw. ``make loadtest`` runs it beside the HTTP comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Request:
    """One POST /predict: ``name`` says which image and how it is sent."""

    name: str
    content_type: bytes
    body: bytes


def requests() -> list[Request]:
    """Every image of the load test's pool, as multipart (field ``file``) and as a raw body."""
    out = []
    for name, ctype, data in image_pool():
        body, multipart = encode_multipart_formdata({"file": ("image", data, ctype)})
        out.append(Request(f"{name} multipart", multipart.encode(), body))
        out.append(Request(f"{name} raw", ctype.encode(), data))
    return out


async def call(app: ASGIApp, request: Request) -> None:
    """One POST /predict through ``app``; fails unless it answers 200."""
    ctype, body = request.content_type, request.body
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


async def each_us(app: ASGIApp, batch: list[Request]) -> list[float]:
    """Each request's time through ``app`` in microseconds, one request at a time."""
    times = []
    for request in batch:
        started = time.perf_counter()
        await call(app, request)
        times.append((time.perf_counter() - started) * 1e6)
    return times


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
        apps = {"service": service, "minimal": minimal}
        for app in apps.values():  # warm-up: caches, allocators, the engine's first calls
            await each_us(app, batch)
        taken: dict[str, list[float]] = {name: [] for name in apps}
        kinds: dict[str, dict[str, list[float]]] = {
            name: {r.name: [] for r in pool} for name in apps
        }
        for _ in range(rounds):
            for name, app in apps.items():
                times = await each_us(app, batch)
                taken[name].append(statistics.fmean(times))
                for request, us in zip(batch, times, strict=True):
                    kinds[name][request.name].append(us)
        mode = "one-hop" if state.batcher is not None and state.batcher.direct else "batcher"
    differences = [s - m for s, m in zip(taken["service"], taken["minimal"], strict=True)]
    q1, median, q3 = statistics.quantiles(differences, n=4)
    by_request = {
        r.name: {f"{which}_us": statistics.median(kinds[which][r.name]) for which in apps}
        for r in pool
        if kinds["minimal"][r.name]
    }
    multipart_extra = [
        times["minimal_us"] - by_request[raw]["minimal_us"]
        for name, times in by_request.items()
        if name.endswith(" multipart")
        and (raw := name.removesuffix(" multipart") + " raw") in by_request
    ]
    return {
        "rounds": rounds,
        "requests_per_round": count,
        "service_path": mode,
        "service_us": statistics.median(taken["service"]),
        "minimal_us": statistics.median(taken["minimal"]),
        "overhead_us": {"median": median, "q1": q1, "q3": q3},
        "by_request": by_request,
        "multipart_over_raw_us": statistics.median(multipart_extra) if multipart_extra else None,
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
    for name, times in result["by_request"].items():
        service_us, minimal_us = times["service_us"], times["minimal_us"]
        print(f"  {name:28} service {service_us:8.0f} us  minimal {minimal_us:8.0f} us")
    if result["multipart_over_raw_us"] is not None:
        print(
            f"a multipart body costs the minimal server {result['multipart_over_raw_us']:.0f} us "
            "more than the same image sent raw (median over the pool's images)"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
