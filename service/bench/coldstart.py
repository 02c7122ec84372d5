"""``densenet coldstart``: what a scale-from-zero request pays, measured on fresh processes.

Each run execs ``python -m service serve`` and times, from just before exec: the port opening,
``/readyz`` turning 200, and the first ``/predict`` being answered; plus the process's RSS when
ready and the server's own ``time_to_ready_seconds``. Torch-free: it is run on serving images.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from service.bench.markdown import table
from service.bench.server import http_request, start_server
from service.timing import summarize

PHASES = ("port_open_s", "ready_s", "first_predict_s")
SUMMARY_KEYS = ("median", "min", "max", "stdev")


def sample_png() -> bytes:
    """A small generated RGB image (any image will do for timing)."""
    img = Image.linear_gradient("L").resize((64, 64)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def multipart(image: bytes, filename: str = "x.png") -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload with the image as ``file``."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def measure_once(
    env: dict[str, str], image: bytes, log_path: Path, timeout: float = 180.0
) -> dict[str, float]:
    """One cold start of a fresh server process (its output goes to ``log_path``).

    Raises:
        ServerFailed: the server exited or never became ready; the message has its log.
    """
    server = start_server(env, log_path)
    try:
        port_open = server.wait_for(server.port_open, "open port", timeout)
        ready = server.wait_for(server.is_ready, "readiness", timeout)
        rss = psutil.Process(server.process.pid).memory_info().rss
        body, ctype = multipart(image)
        status, _ = http_request(
            server.port, "POST", "/predict", body, headers={"Content-Type": ctype}, timeout=timeout
        )
        first = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"first /predict answered {status}:\n{server.log()[-3000:]}")
        metrics = http_request(server.port, "GET", "/metrics")[1].decode()
    finally:
        server.stop()
    start = server.started
    return {
        "port_open_s": port_open - start,
        "ready_s": ready - start,
        "first_predict_s": first - start,
        "rss_mb_ready": rss / 2**20,
        "server_time_to_ready_s": _metric(metrics, "time_to_ready_seconds") or float("nan"),
        "server_model_load_s": _metric(metrics, "model_load_seconds") or float("nan"),
    }


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and stdev of one measured quantity."""
    summary = summarize(values)
    return {key: summary[key] for key in SUMMARY_KEYS}


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
    with tempfile.TemporaryDirectory(prefix="coldstart-") as logs:
        samples = [measure_once(env, image, Path(logs) / f"server-{i}.log") for i in range(runs)]
    keys = [*PHASES, "rss_mb_ready", "server_time_to_ready_s", "server_model_load_s"]
    return {
        "variant": variant,
        "runtime": runtime,
        "runs": runs,
        "threads": env.get("NUM_THREADS") or "default (CPUs available)",
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "summary": {k: spread([s[k] for s in samples]) for k in keys},
        "samples": samples,
    }


def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of cold-start medians (and spread)."""

    def cell(summary: dict[str, dict[str, float]], key: str, fmt: str = ".3f") -> str:
        s = summary[key]
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    header = [
        "variant",
        "runtime",
        "exec->port (s)",
        "exec->ready (s)",
        "exec->first predict (s)",
        "RSS ready (MB)",
        "server time_to_ready (s)",
    ]
    rows = [
        [
            r["variant"],
            r["runtime"],
            cell(r["summary"], "port_open_s"),
            cell(r["summary"], "ready_s"),
            cell(r["summary"], "first_predict_s"),
            cell(r["summary"], "rss_mb_ready", ".0f"),
            cell(r["summary"], "server_time_to_ready_s"),
        ]
        for r in results
    ]
    return table(header, rows)


def write(results: list[dict[str, Any]], out: Path) -> None:
    """JSON (every sample) and Markdown (the table)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "Cold start: median (min-max) over fresh processes, measured from just before exec.\n\n"
        + format_table(results)
        + "\n"
    )
