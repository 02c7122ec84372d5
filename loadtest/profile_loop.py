"""Where the event loop's time goes per request: the app under uvicorn with ``densenet serve``'s
settings and protocol, profiled with cProfile while one client (another process) sends the
load test's photo-sized JPEGs back to back; then the top entries and their share.

    python loadtest/profile_loop.py --model-dir models --requests 2000   # the CPU Service's variant

The profiler runs on the event loop's thread only, and only while the client runs: HTTP
parsing, routing, middleware, validation and JSON encoding. Decoding and inference run in
worker threads and are measured in-process by ``make loadtest`` instead. Time the loop spends
waiting (epoll) is left out of the shares.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "loadtest"))

from run import served  # noqa: E402

from service.bench.server import free_port  # noqa: E402

IDLE = ("select.epoll", "method 'poll'", "method 'select'", "_run_once", "run_forever")
CLIENT = """
import sys
sys.path.insert(0, sys.argv[3])
import httpx
from images import image_pool
jpegs = [d for name, _, d in image_pool() if name.startswith(("jpeg 640", "jpeg 1024"))]
with httpx.Client(base_url=sys.argv[1], timeout=30) as client:
    for i in range(int(sys.argv[2])):
        r = client.post("/predict", content=jpegs[i % len(jpegs)],
                        headers={"content-type": "image/jpeg"})
        r.raise_for_status()
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, default=ROOT / "models")
    variant, runtime = served()
    p.add_argument("--variant", default=variant, help="default: the CPU Service's")
    p.add_argument("--runtime", default=runtime, help="default: the CPU Service's")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1, help="NUM_THREADS (1: the CPU revision's pod)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "profile")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    profiler, elapsed = asyncio.run(profile(args))
    profiler.dump_stats(str(args.out / "server.prof"))
    text = (
        f"# Event-loop profile: {args.requests} POST /predict (raw JPEG body), one client\n\n"
        f"{args.variant} on {args.runtime}; {args.requests / elapsed:.0f} requests/s under "
        f"the profiler.\n\n{top_entries(args.out / 'server.prof', args.top)}"
    )
    (args.out / "profile.md").write_text(text)
    print(text)
    return 0


async def profile(args: argparse.Namespace) -> tuple[cProfile.Profile, float]:
    """Serve, wait until ready, profile the loop while the client runs; the profile and the
    client's wall time."""
    import uvicorn

    from service.app import create_app, engine_from_settings
    from service.config import Settings
    from service.protocol import http_protocol

    settings = Settings(
        model_dir=args.model_dir,
        model_variant=args.variant,
        model_runtime=args.runtime,
        num_threads=args.threads,
        log_level="warning",
        drain_seconds=0,
    )
    app = create_app(settings, engine=engine_from_settings(settings))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=http_protocol(settings),
            ws="none",
            log_level="warning",
            access_log=False,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not app.state.service.ready:
        await asyncio.sleep(0.05)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        f"http://127.0.0.1:{port}",
        str(args.requests),
        str(ROOT / "loadtest"),
    )
    profiler.enable()
    code = await client.wait()
    profiler.disable()
    elapsed = time.perf_counter() - started
    server.should_exit = True
    await serving
    if code != 0:
        raise SystemExit(f"the client failed with status {code}")
    return profiler, elapsed


def top_entries(path: Path, top: int) -> str:
    """The ``top`` functions by own time, as a Markdown table with their share of busy time."""
    stats = pstats.Stats(str(path), stream=io.StringIO())
    rows = []
    busy = 0.0
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        label = f"{Path(filename).name}:{line}({name})" if line else name
        if any(marker in label for marker in IDLE):
            continue
        busy += tottime
        rows.append((tottime, cumtime, calls, label))
    rows.sort(reverse=True)
    lines = [
        "| own time share | own s | cumulative s | calls | function |",
        "|---|---|---|---|---|",
    ]
    for tottime, cumtime, calls, label in rows[:top]:
        share = 100 * tottime / busy
        lines.append(f"| {share:.1f} % | {tottime:.3f} | {cumtime:.3f} | {calls} | `{label}` |")
    return "\n".join(lines) + f"\n\nBusy time of the loop's thread: {busy:.2f} s.\n"


if __name__ == "__main__":
    sys.exit(main())
