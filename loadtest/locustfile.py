"""Locust suite for the DenseNet inference service.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080            # web UI
    LOADTEST_MODE=sweep locust -f loadtest/locustfile.py --headless --host URL --csv out/run

Every request POSTs a real image (JPEG and PNG of several sizes, multipart and raw body) and
is a failure unless it is a 200 with predictions. The server's own timing breakdown is
reported as extra Locust entries (type ``SERVER``: ``inference``, ``queue``, ``decode+preprocess``)
so the stats separate network/queueing from inference.

Environment (all optional):
    DENSENET_URL            host when --host is not given
    LOADTEST_MODE           "sweep" (steps of users) or "constant" (default: constant)
    LOADTEST_USERS          constant mode: users (default 4)
    LOADTEST_DURATION       constant mode: seconds (default 30)
    LOADTEST_STEPS          sweep mode: users per step, e.g. "1,2,4,8"
    LOADTEST_WINDOW         sweep mode: seconds per measurement window (default 5)
    LOADTEST_STEP_MAX       sweep mode: longest a step may last, seconds (default 60)
    LOADTEST_SUMMARY        write a JSON summary of the run (per step) to this path
    LOADTEST_PROTOCOL       "predict" (one image per POST /predict, the default) or "v2"
                            (Open Inference Protocol: POST /v2/models/MODEL/infer with the
                            binary data extension, LOADTEST_IMAGES_PER_REQUEST images each)
    LOADTEST_IMAGES_PER_REQUEST  v2: images per request (default 8)
    LOADTEST_MODEL          v2: the model name (default densenet)
"""

from __future__ import annotations

import json
import os
import random
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape, constant, events
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import image_pool

from service.timing import quantile_function, summarize

STABLE_SPREAD = 0.10  # three consecutive windows within 10% of their mean, like perf_analyzer

POOL = image_pool()
PROTOCOL = os.environ.get("LOADTEST_PROTOCOL", "predict")
IMAGES_PER_REQUEST = int(os.environ.get("LOADTEST_IMAGES_PER_REQUEST", "8"))
MODEL = os.environ.get("LOADTEST_MODEL", "densenet")
if PROTOCOL not in ("predict", "v2"):
    raise SystemExit(f"LOADTEST_PROTOCOL must be 'predict' or 'v2', not {PROTOCOL!r}")
# (completion time, ms, ok, images) for per-step stats; with workers (--processes N, or
# --master/--worker), each worker sends its records to the master with its periodic report.
RECORDS: list[tuple[float, float, bool, int]] = []
SERVER: list[tuple[float, dict[str, float]]] = []


class InferenceUser(FastHttpUser):
    """Closed loop: one request at a time per user, no think time."""

    host = os.environ.get("DENSENET_URL")
    wait_time = constant(0)

    def _check(self, response: Any, started: float) -> None:
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        if response.status_code != 200:
            response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
        elif not body or not body.get("predictions"):
            response.failure("200 without predictions")
        else:
            response.success()
            timing = body["timing"]
            SERVER.append((started, timing))
            for name, value in (
                ("inference", timing["inference_ms"]),
                ("queue", timing["queue_ms"]),
                ("decode+preprocess", timing["decode_ms"] + timing["preprocess_ms"]),
            ):
                events.request.fire(
                    request_type="SERVER",
                    name=name,
                    response_time=value,
                    response_length=0,
                    exception=None,
                    context={},
                )

    def predict_multipart(self) -> None:
        name, ctype, data = random.choice(POOL)
        started = time.time()
        with self.client.post(
            "/predict",
            files={"file": (f"image.{ctype.split('/')[1]}", data, ctype)},
            name=f"/predict multipart {name}",
            catch_response=True,
        ) as response:
            self._check(response, started)

    def predict_raw(self) -> None:
        name, ctype, data = random.choice(POOL)
        started = time.time()
        with self.client.post(
            "/predict",
            data=data,
            headers={"Content-Type": ctype},
            name=f"/predict raw {name}",
            catch_response=True,
        ) as response:
            self._check(response, started)

    def infer_v2(self) -> None:
        """N images as one BYTES tensor, in the binary data extension both ways."""
        images = [random.choice(POOL)[2] for _ in range(IMAGES_PER_REQUEST)]
        blob = b"".join(struct.pack("<I", len(i)) + i for i in images)
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [len(images)],
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
            }
        ).encode()
        with self.client.post(
            f"/v2/models/{MODEL}/infer",
            data=header + blob,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
            name=f"/v2 infer x{len(images)}",
            context={"images": len(images)},
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            outputs = json.loads(response.content)["outputs"]
            if outputs[0]["shape"] != [len(images), 1]:
                response.failure(f"unexpected output shape {outputs[0]['shape']}")
            else:
                response.success()

    # Multipart three times as often as raw bodies, or Open Inference Protocol only.
    tasks = {infer_v2: 1} if PROTOCOL == "v2" else {predict_multipart: 3, predict_raw: 1}


@events.request.add_listener
def _record(request_type: str, response_time: float, exception: Any, **kw: Any) -> None:
    if request_type != "SERVER":
        images = (kw.get("context") or {}).get("images", 1)
        RECORDS.append((time.time(), response_time, exception is None, images))


@events.report_to_master.add_listener
def _send_records(client_id: str, data: dict[str, Any]) -> None:
    data["densenet_records"], data["densenet_server"] = RECORDS[:], SERVER[:]
    RECORDS.clear()
    SERVER.clear()


@events.worker_report.add_listener
def _receive_records(client_id: str, data: dict[str, Any]) -> None:
    RECORDS.extend(tuple(r) for r in data.get("densenet_records", ()))
    SERVER.extend(tuple(s) for s in data.get("densenet_server", ()))


STATE: dict[str, Any] = {"steps": []}


def locust_cpu(cpu_started: float, seconds: float) -> float:
    """CPUs this Locust process used since ``cpu_started`` (``time.process_time``): near 1.0,
    the load generator, not the server, may be what limits the step (then add --processes).
    Under --processes it is the master's share only."""
    return round((time.process_time() - cpu_started) / max(seconds, 1e-9), 3)


class UserSweep(LoadTestShape):
    """Steps of users; each held until three windows agree within 10% (or a time limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = [int(s) for s in os.environ.get("LOADTEST_STEPS", "1,2,4").split(",")]
        self.window = float(os.environ.get("LOADTEST_WINDOW", "5"))
        self.step_max = float(os.environ.get("LOADTEST_STEP_MAX", "60"))
        self.index = 0
        self.step_started: float | None = None
        self.window_started = 0.0
        self.window_rps: list[float] = []

    def tick(self) -> tuple[int, float] | None:
        if self.index >= len(self.steps):
            return None
        users = self.steps[self.index]
        now = time.time()
        if self.step_started is None:
            self.step_started = self.window_started = now
            self.step_cpu = time.process_time()
            self.window_rps = []
        elif now - self.window_started >= self.window:
            done = sum(1 for r in RECORDS if r[0] >= self.window_started and r[2])
            self.window_rps.append(done / (now - self.window_started))
            self.window_started = now
            last = self.window_rps[-3:]
            # Workers report every few seconds, so the master's latest window is incomplete:
            # distributed steps run for LOADTEST_STEP_MAX each, without a stability verdict.
            stable = (
                not isinstance(self.runner, MasterRunner)
                and len(last) == 3
                and max(last) - min(last) <= STABLE_SPREAD * statistics.mean(last)
            )
            if stable or now - self.step_started >= self.step_max:
                STATE["steps"].append(
                    {
                        "users": users,
                        "start": self.step_started,
                        "end": now,
                        "stable": None if isinstance(self.runner, MasterRunner) else stable,
                        "window_rps": [round(w, 2) for w in self.window_rps],
                        "locust_cpu": locust_cpu(self.step_cpu, now - self.step_started),
                    }
                )
                self.index += 1
                self.step_started = None
                return self.tick()
        return users, users


class ConstantLoad(LoadTestShape):
    """A fixed number of users for a fixed time."""

    def __init__(self) -> None:
        super().__init__()
        self.users = int(os.environ.get("LOADTEST_USERS", "4"))
        self.duration = float(os.environ.get("LOADTEST_DURATION", "30"))
        self.started: float | None = None

    def tick(self) -> tuple[int, float] | None:
        now = time.time()
        if self.started is None:
            self.started = now
            self.cpu = time.process_time()
        if now - self.started >= self.duration:
            if not STATE["steps"]:
                STATE["steps"].append(
                    {
                        "users": self.users,
                        "start": self.started,
                        "end": now,
                        "stable": None,
                        "locust_cpu": locust_cpu(self.cpu, now - self.started),
                    }
                )
            return None
        return self.users, self.users


# Locust runs the one shape class this file defines: keep the selected one.
if os.environ.get("LOADTEST_MODE", "constant") == "sweep":
    del ConstantLoad
else:
    del UserSweep


def _percentile(values: list[float], q: int) -> float | None:
    return summarize(values, (q,))[f"p{q}"] if values else None


def step_summary() -> list[dict[str, Any]]:
    """Client and server figures for each step of the run."""
    out = []
    for step in STATE["steps"]:
        rows = [r for r in RECORDS if step["start"] <= r[0] < step["end"]]
        ok = [r[1] for r in rows if r[2]]
        server = [t for (ts, t) in SERVER if step["start"] <= ts < step["end"]]
        seconds = max(step["end"] - step["start"], 1e-9)
        out.append(
            {
                "users": step["users"],
                "seconds": round(seconds, 2),
                "locust_cpu": step.get("locust_cpu"),
                "stable": step.get("stable"),
                "window_rps": step.get("window_rps"),
                "requests": len(rows),
                "failures": sum(1 for r in rows if not r[2]),
                "rps": len(ok) / seconds,
                "images_per_sec": sum(r[3] for r in rows if r[2]) / seconds,
                "latency_ms_p50": _percentile(ok, 50),
                "latency_ms_p95": _percentile(ok, 95),
                "latency_ms_p99": _percentile(ok, 99),
                # The distribution itself (101 quantiles): `densenet plan` draws service
                # times from it.
                "latency_ms_quantiles": quantile_function(ok) if ok else None,
                "server_inference_ms_p50": _percentile([t["inference_ms"] for t in server], 50),
                "server_queue_ms_p50": _percentile([t["queue_ms"] for t in server], 50),
                "server_total_ms_p50": _percentile([t["total_ms"] for t in server], 50),
            }
        )
    return out


@events.quitting.add_listener
def _write_summary(environment: Any, **kw: Any) -> None:
    path = os.environ.get("LOADTEST_SUMMARY")
    if not path or isinstance(environment.runner, WorkerRunner):  # the master writes it
        return
    # The run's own requests: Locust's total also counts the SERVER timing entries.
    total = StatsEntry(environment.stats, "client", "")
    for entry in environment.stats.entries.values():
        if entry.method != "SERVER":
            total.extend(entry)
    document = {
        "host": environment.host,
        "protocol": PROTOCOL,
        "images_per_request": IMAGES_PER_REQUEST if PROTOCOL == "v2" else 1,
        "mode": os.environ.get("LOADTEST_MODE", "constant"),
        "requests": total.num_requests,
        "failures": total.num_failures,
        "rps": total.total_rps,
        "latency_ms_p50": total.get_response_time_percentile(0.5),
        "latency_ms_p95": total.get_response_time_percentile(0.95),
        "latency_ms_p99": total.get_response_time_percentile(0.99),
        "steps": step_summary(),
        # Requests that completed outside every step: after the last one ended, while the
        # users (on workers, after the master's stop message reached them) were stopping.
        "requests_outside_steps": sum(
            1 for r in RECORDS if not any(s["start"] <= r[0] < s["end"] for s in STATE["steps"])
        ),
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
