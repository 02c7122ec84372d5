"""``densenet coldstart``: what a scale-from-zero request pays, measured on fresh processes.

Each run execs ``python -m service serve`` and times, from just before exec: the port opening,
``/readyz`` turning 200, and the first ``/predict`` being answered; plus the process's RSS when
ready and the server's own ``time_to_ready_seconds``. Torch-free: it is run on serving images.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

PHASES = ("port_open_s", "ready_s", "first_predict_s")


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_png() -> bytes:
    """A small generated RGB image (any image will do for timing)."""
    img = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _request(
    port: int, method: str, path: str, body: bytes = b"", ctype: str = ""
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (graceful drain), then SIGKILL if it has not exited within ``timeout``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: Any, process: subprocess.Popen[bytes], timeout: float, what: str) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {what}")
        if predicate():
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"no {what} within {timeout}s")


def _ready(port: int) -> bool:
    try:
        return _request(port, "GET", "/readyz")[0] == 200
    except OSError:
        return False


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def measure_once(env: dict[str, str], image: bytes, timeout: float = 180.0) -> dict[str, float]:
    """One cold start of a fresh server process."""
    port = free_port()
    full_env = {**os.environ, **env, "PORT": str(port), "HOST": "127.0.0.1"}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        port_open = _wait(lambda: _port_open(port), process, timeout, "open port")
        ready = _wait(lambda: _ready(port), process, timeout, "readiness")
        rss = psutil.Process(process.pid).memory_info().rss
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + image
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, _ = _request(
            port, "POST", "/predict", body, f"multipart/form-data; boundary={boundary}"
        )
        first = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"first /predict answered {status}")
        metrics = _request(port, "GET", "/metrics")[1].decode()
    finally:
        stop(process)
    return {
        "port_open_s": port_open - start,
        "ready_s": ready - start,
        "first_predict_s": first - start,
        "rss_mb_ready": rss / 2**20,
        "server_time_to_ready_s": _metric(metrics, "time_to_ready_seconds") or float("nan"),
        "server_model_load_s": _metric(metrics, "model_load_seconds") or float("nan"),
    }


def summarize(values: list[float]) -> dict[str, float]:
    """Median and spread of one measured quantity."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def run(
    variant: str, runtime: str, model_dir: Path, runs: int, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``runs`` cold starts of one variant/runtime; per-run figures and their summary."""
    env = {
        "MODEL_VARIANT": variant,
        "MODEL_RUNTIME": runtime,
        "MODEL_DIR": str(model_dir),
        "LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    image = sample_png()
    samples = [measure_once(env, image) for _ in range(runs)]
    keys = [*PHASES, "rss_mb_ready", "server_time_to_ready_s", "server_model_load_s"]
    return {
        "variant": variant,
        "runtime": runtime,
        "runs": runs,
        "threads": env.get("NUM_THREADS") or "default (CPUs available)",
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "summary": {k: summarize([s[k] for s in samples]) for k in keys},
        "samples": samples,
    }


def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of cold-start medians (and spread)."""
    lines = [
        "| variant | runtime | exec->port (s) | exec->ready (s) | exec->first predict (s) "
        "| RSS ready (MB) | server time_to_ready (s) |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(summary: dict[str, dict[str, float]], key: str, fmt: str = ".3f") -> str:
        s = summary[key]
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    for r in results:
        s = r["summary"]
        lines.append(
            f"| {r['variant']} | {r['runtime']} | {cell(s, 'port_open_s')} | "
            f"{cell(s, 'ready_s')} | {cell(s, 'first_predict_s')} | "
            f"{cell(s, 'rss_mb_ready', '.0f')} | {cell(s, 'server_time_to_ready_s')} |"
        )
    return "\n".join(lines)


def write(results: list[dict[str, Any]], out: Path) -> None:
    """JSON (every sample) and Markdown (the table)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "Cold start: median (min-max) over fresh processes, measured from just before exec.\n\n"
        + format_table(results)
        + "\n"
    )
