"""Where the event loop's time goes per request: ``densenet serve`` under cProfile, one client
sending the load test's photo-sized JPEGs back to back, then the top entries and their share.

    python loadtest/profile.py --model-dir models --variant distilled --requests 2000

cProfile sees the thread it starts in, the event loop's: HTTP parsing, routing, middleware,
validation and JSON encoding. Decoding and inference run in worker threads and are measured
in-process by ``make loadtest`` instead. Time the loop spends waiting (epoll) is left out of
the shares. The server is stopped with SIGINT so the profile is written on the way out.
"""

from __future__ import annotations

import argparse
import io
import pstats
import signal
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtest"))

from images import image_pool  # noqa: E402

from service.bench.server import start_server  # noqa: E402

IDLE = ("select.epoll", "method 'poll'", "method 'select'", "run_forever", "_run_once")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, default=ROOT / "models")
    p.add_argument("--variant", default="distilled")
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "profile")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stats_path = args.out / "server.prof"
    env = {
        "MODEL_DIR": str(args.model_dir),
        "MODEL_VARIANT": args.variant,
        "MODEL_RUNTIME": args.runtime,
        "LOG_LEVEL": "warning",
    }
    server = start_server(
        env,
        args.out / "server.log",
        cwd=ROOT,
        python_args=("-m", "cProfile", "-o", str(stats_path)),
    )
    try:
        server.wait_ready()
        jpegs = [d for name, _, d in image_pool() if name.startswith(("jpeg 640", "jpeg 1024"))]
        started = time.perf_counter()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(args.requests):
                response = client.post(
                    "/predict",
                    content=jpegs[i % len(jpegs)],
                    headers={"content-type": "image/jpeg"},
                )
                response.raise_for_status()
        elapsed = time.perf_counter() - started
    finally:
        server.process.send_signal(signal.SIGINT)
        server.process.wait(timeout=60)
    report = top_entries(stats_path, args.top)
    text = (
        f"# Event-loop profile: {args.requests} POST /predict (raw JPEG body), one client\n\n"
        f"{args.variant} on {args.runtime}; {args.requests / elapsed:.0f} requests/s under "
        f"the profiler.\n\n{report}"
    )
    (args.out / "profile.md").write_text(text)
    print(text)
    return 0


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
