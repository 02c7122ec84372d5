"""``make loadtest``: cold starts, a local server, a Locust sweep, and a summary.

Local mode (default), all on 127.0.0.1 and bounded in time:
  1. cold start: N fresh server processes, exec -> first successful /predict;
  2. a server with the chosen variant/runtime, pinned to its own CPUs, and a Locust sweep
     (steps of users, each held until three windows agree within 10%) on the other CPUs;
  3. the same engine measured in-process on the same CPUs, for the served/in-process ratios;
  4. summary.json + summary.md beside Locust's CSV and HTML report.

Knative mode (``--knative-url``): waits until the Knative Service has no pods (scaled to zero),
then times the first request; repeated ``--coldstart-runs`` times. A Service with
``min-scale`` >= 1 never scales to zero: its first requests are timed as they come, warm, and
the result says so. ``--host`` sets the Host header (the Service's domain) for clusters
without DNS, where the URL is the ingress's address. Needs kubectl with permission to get the
Service and list its pods, nothing more.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtest"))

from service.bench import coldstart  # noqa: E402
from service.bench.markdown import table  # noqa: E402
from service.bench.server import spawn_server  # noqa: E402
from service.timing import summarize, time_callable  # noqa: E402

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def cpu_split() -> tuple[set[int], set[int]]:
    """Server CPUs and load-generator CPUs: half each, so they do not fight for cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


@contextlib.contextmanager
def local_server(
    model_dir: Path,
    variant: str,
    runtime: str,
    cpus: set[int],
    log: Path,
    extra_env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> Iterator[str]:
    """A ``densenet serve`` process (or ``command``, a reference server reading the same
    environment) pinned to ``cpus``; yields its URL once ready."""
    env = {
        "MODEL_DIR": str(model_dir),
        "MODEL_VARIANT": variant,
        "MODEL_RUNTIME": runtime,
        "NUM_THREADS": str(len(cpus)),
        "LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    with spawn_server(env, log, cpus=cpus, cwd=ROOT, command=command) as server:
        yield server.url


def locust_command(url: str, prefix: Path, *extra: str) -> list[str]:
    """Headless Locust on this suite: CSV, HTML and JSON reports named after ``prefix``."""
    return [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--json-file",
        str(prefix),
        "--only-summary",
        *extra,
    ]


def run_locust(
    url: str, out: Path, cpus: set[int], env: dict[str, str], limit_s: float, processes: int = 1
) -> dict[str, Any]:
    """Headless Locust with the given shape; CSV + HTML + summary JSON under ``out``.

    ``processes`` > 1 runs Locust as a master and that many workers (``--processes``); the
    workers send their records to the master, which writes the one summary.
    """
    summary = out / "locust_summary.json"
    full_env = {**os.environ, "LOADTEST_SUMMARY": str(summary), **env}
    extra = ["--processes", str(processes)] if processes > 1 else []
    subprocess.run(
        locust_command(url, out / "locust", "--stop-timeout", "10", *extra),
        env=full_env,
        timeout=limit_s,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    return json.loads(summary.read_text())


# The servers the reference table compares, each with its loadtest/floor.py mode (None: the
# service itself, `densenet serve`).
REFERENCES: dict[str, str | None] = {"the service": None, "minimal": "minimal", "empty": "empty"}


def reference_servers(
    args: argparse.Namespace,
    server_cpus: set[int],
    locust_cpus: set[int],
    server_env: dict[str, str],
    users: list[int],
) -> dict[str, dict[str, dict[str, Any]]]:
    """The service beside ``loadtest/floor.py``'s empty and minimal servers, under the same
    load: what HTTP alone costs, and what the service's work costs with no framework.

    This machine's speed drifts over minutes, so the three take turns: ``args.reference_rounds``
    rounds of service, minimal, empty, one Locust run per user count each. Per server and user
    count the round with the median req/s is kept; every round is under ``"rounds"``.
    """
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {str(n): [] for n in users} for name in REFERENCES
    }
    for round_ in range(args.reference_rounds):
        for name, mode in REFERENCES.items():
            label = mode or "service"
            with local_server(
                args.model_dir,
                args.variant,
                args.runtime,
                server_cpus,
                args.out / "reference" / f"{label}-{round_}.log",
                {**server_env, **({"FLOOR_MODE": mode} if mode else {})},
                command=[sys.executable, str(ROOT / "loadtest" / "floor.py")] if mode else None,
            ) as url:
                for n in users:
                    where = args.out / "reference" / f"{label}-{round_}-{n}"
                    where.mkdir(parents=True, exist_ok=True)
                    shape = {
                        "LOADTEST_MODE": "constant",
                        "LOADTEST_USERS": str(n),
                        "LOADTEST_DURATION": str(args.reference_seconds),
                    }
                    step = run_locust(
                        url, where, locust_cpus, shape, 60 + 2 * args.reference_seconds
                    )
                    runs[name][str(n)].append(step["steps"][0])
    out: dict[str, dict[str, Any]] = {
        name: {n: median_run(steps) for n, steps in by_users.items()}
        for name, by_users in runs.items()
    }
    out["rounds"] = runs
    return out


def framework_overhead(
    args: argparse.Namespace, server_cpus: set[int], server_env: dict[str, str]
) -> dict[str, Any]:
    """``loadtest/overhead.py`` in its own process on the server's CPUs: what the service costs
    per request beyond the minimal server, in-process, without HTTP or Locust."""
    out = args.out / "overhead.json"
    env = {
        **os.environ,
        "MODEL_DIR": str(args.model_dir),
        "MODEL_VARIANT": args.variant,
        "MODEL_RUNTIME": args.runtime,
        "LOG_LEVEL": "warning",
        **server_env,
    }
    subprocess.run(
        [sys.executable, str(ROOT / "loadtest" / "overhead.py"), "--out", str(out)],
        env=env,
        check=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, server_cpus),
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return {k: v for k, v in result.items() if k not in ("rounds_us", "by_request")}


def median_run(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median req/s (the lower of the two middle ones for an even count)."""
    ordered = sorted(steps, key=lambda s: s["rps"])
    return ordered[(len(ordered) - 1) // 2]


def in_process(
    model_dir: Path, variant: str, runtime: str, cpus: set[int], seconds: float
) -> dict[str, dict[str, float]]:
    """On the server's CPUs, batch 1: the engine alone; decode + preprocess + engine cycling
    through the load test's image pool, with JPEGs decoded as the server does (reduced) and
    exactly; and decode + preprocess alone of the pool's photo-sized JPEGs, both ways."""
    from images import image_pool

    from service.bench.core import load_engine
    from service.imaging import decode_and_preprocess

    def summary(times: list[float]) -> dict[str, float]:
        return {
            "latency_ms_p50": 1e3 * summarize(times)["p50"],
            "throughput_samples_sec": len(times) / sum(times),
            "iterations": len(times),
        }

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        engine = load_engine(variant, runtime, model_dir, threads=len(cpus))
        spec = engine.manifest.preprocess
        pool = [data for _, _, data in image_pool()]
        first = decode_and_preprocess(pool[0], spec, 10**8)[0][None]
        out = {
            "engine": summary(
                time_callable(lambda: engine.predict(first), min_time_s=seconds, min_iters=20)
            )
        }
        for name, reduced in (("pipeline", True), ("pipeline_exact", False)):
            images = itertools.cycle(pool)

            def pipeline(reduced: bool = reduced, images: Iterator[bytes] = images) -> None:
                array = decode_and_preprocess(next(images), spec, 10**8, reduced=reduced)[0]
                engine.predict(array[None])

            times = time_callable(pipeline, min_time_s=seconds, min_iters=2 * len(pool))
            out[name] = summary(times)
        photos = [
            data
            for name, _, data in image_pool()
            if name.startswith("jpeg 640") or name.startswith("jpeg 1024")
        ]
        for name, reduced in (("jpeg_decode_reduced", True), ("jpeg_decode_exact", False)):
            jpegs = itertools.cycle(photos)

            def decode(reduced: bool = reduced, jpegs: Iterator[bytes] = jpegs) -> None:
                decode_and_preprocess(next(jpegs), spec, 10**8, reduced=reduced)

            out[name] = summary(time_callable(decode, min_time_s=seconds, min_iters=20))
    finally:
        os.sched_setaffinity(0, previous)
    return out


def concurrent_calls_per_sec(
    predict: Any, batch: np.ndarray, callers: int, seconds: float
) -> float:
    """Calls of ``predict(batch)`` per second from ``callers`` threads calling back to back."""
    import threading

    stop = time.perf_counter() + seconds
    counts = [0] * callers

    def call(i: int) -> None:
        while time.perf_counter() < stop:
            predict(batch)
            counts[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def engine_workers_in_process(
    model_dir: Path, variant: str, runtime: str, seconds: float
) -> list[dict[str, Any]]:
    """Images/s of the engine alone on every CPU this process may use, batch 1, with as many
    callers as workers: W concurrent calls of T intra-op threads each, for W x T = CPUs."""
    from service.bench.core import load_engine

    cpus = len(os.sched_getaffinity(0))
    rows = []
    for workers in sorted({1, cpus}):
        threads = max(1, cpus // workers)
        engine = load_engine(variant, runtime, model_dir, threads=threads)
        size = engine.manifest.preprocess.crop_size
        batch = np.zeros((1, 3, size, size), dtype=np.float32)
        for _ in range(5):
            engine.predict(batch)
        rate = concurrent_calls_per_sec(engine.predict, batch, workers, seconds)
        rows.append({"engine_workers": workers, "threads_each": threads, "images_per_sec": rate})
    return rows


def min_scale(kubectl: list[str], service: str) -> int:
    """The Service's ``autoscaling.knative.dev/min-scale`` (0 when unset)."""
    path = "{.spec.template.metadata.annotations.autoscaling\\.knative\\.dev/min-scale}"
    out = subprocess.run(
        [*kubectl, "get", "ksvc", service, "-o", f"jsonpath={path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return int(out or 0)


def wait_for_zero_pods(kubectl: list[str], service: str, wait_s: float) -> None:
    """Block until the Service has no pods (it scaled to zero)."""
    selector = f"serving.knative.dev/service={service}"
    deadline = time.monotonic() + wait_s
    while True:
        pods = subprocess.run(
            [*kubectl, "get", "pods", "-l", selector, "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not pods:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} still has {len(pods)} pod(s) after {wait_s}s")
        time.sleep(2)


def knative_coldstart(
    url: str,
    service: str,
    kubectl: list[str],
    runs: int,
    wait_s: float,
    host: str | None = None,
) -> dict[str, Any]:
    """Wait for zero pods, then time the first request; ``runs`` times.

    With min-scale >= 1 there is no scale-to-zero to wait for: each run is a warm request.
    """
    floor = min_scale(kubectl, service)
    headers = {"Content-Type": "image/png", **({"Host": host} if host else {})}
    samples = []
    for _ in range(runs):
        if floor == 0:
            wait_for_zero_pods(kubectl, service, wait_s)
        request = urllib.request.Request(
            f"{url}/predict", data=coldstart.sample_png(), headers=headers
        )
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
        samples.append(time.perf_counter() - start)
    return {
        "mode": "knative",
        "url": url,
        "host": host,
        "min_scale": floor,
        "measured": "cold (from zero pods)" if floor == 0 else f"warm (min-scale {floor})",
        "runs": runs,
        "first_request_s": coldstart.spread(samples),
        "samples": samples,
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a report."""

    def f(v: Any, spec: str = ".1f") -> str:
        return "-" if v is None else format(v, spec)

    header = [
        "users",
        "stable",
        "seconds",
        "requests",
        "failures",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "server inference p50 ms",
        "server queue p50 ms",
        "Locust CPU",
    ]
    rows = [
        [
            s["users"],
            s["stable"],
            f"{s['seconds']:.0f}",
            s["requests"],
            s["failures"],
            f(s["rps"]),
            f(s["latency_ms_p50"]),
            f(s["latency_ms_p95"]),
            f(s["latency_ms_p99"]),
            f(s["server_inference_ms_p50"], ".2f"),
            f(s["server_queue_ms_p50"], ".2f"),
            f(s.get("locust_cpu"), ".2f"),
        ]
        for s in summary["locust"]["steps"]
    ]
    lines = [
        f"# Load test: {summary['variant']} on {summary['runtime']}",
        "",
        f"Machine: {summary['machine']}",
        "",
        table(header, rows),
    ]
    c = summary.get("coldstart")
    if c:
        first = c["summary"]["first_predict_s"]
        lines += [
            "",
            f"Cold start (exec -> first successful /predict, {c['runs']} runs): median "
            f"{first['median']:.3f} s (min {first['min']:.3f}, max {first['max']:.3f}).",
        ]
    r = summary.get("served_vs_in_process")
    if r:
        lines += [
            "",
            f"Served throughput / in-process engine throughput: "
            f"{r['throughput_ratio']:.2f} (goal >= 0.90).",
        ]
        if "p50_overhead_ms" in r:
            lines += [
                "",
                f"Served p50 at 1 user minus in-process engine p50: {r['p50_overhead_ms']:.2f} ms "
                f"(goal <= 3 ms), of which server-side decode + preprocess p50 "
                f"{f(r.get('server_decode_preprocess_ms_p50'), '.2f')} ms. Minus in-process "
                f"decode + preprocess + engine p50: "
                f"{f(r.get('p50_overhead_vs_pipeline_ms'), '.2f')} ms (goal <= 0.5 ms).",
            ]
        else:
            lines += ["", "No 1-user step in this run: the per-request overhead is not measured."]
        lines += [
            "",
            f"In-process engine alone: p50 {r['in_process']['latency_ms_p50']:.2f} ms, "
            f"{r['in_process']['throughput_samples_sec']:.0f} images/s. In-process decode + "
            f"preprocess + engine over the same image pool: "
            f"{r['in_process_pipeline']['throughput_samples_sec']:.0f} images/s; served / "
            f"that: {r['throughput_ratio_vs_pipeline']:.2f} (goal >= 0.95).",
        ]
        if "jpeg_decode_speedup" in r:
            d = r["jpeg_decode_preprocess_ms_p50"]
            lines += [
                "",
                f"Decode + preprocess of the pool's 640x480 and 1024x768 JPEGs, p50: "
                f"{d['exact']:.2f} ms exact, {d['reduced']:.2f} ms reduced (JPEG_DECODE): "
                f"{r['jpeg_decode_speedup']:.2f}x (goal >= 2x). In-process pipeline with exact "
                f"JPEG decoding: "
                f"{r['in_process_pipeline_exact_jpeg']['throughput_samples_sec']:.0f} images/s.",
            ]
        if r.get("engine_workers"):
            cells = ", ".join(
                f"{w['engine_workers']} x {w['threads_each']} thread(s): "
                f"{w['images_per_sec']:.0f} images/s"
                for w in r["engine_workers"]
            )
            lines += ["", f"Engine alone on all CPUs, workers x intra-op threads: {cells}."]
        if r.get("reference_servers"):
            lines += ["", reference_table(summary)]
        if r.get("framework_overhead"):
            o = r["framework_overhead"]
            lines += [
                "",
                f"In-process, without HTTP (`loadtest/overhead.py`, {o['rounds']} alternating "
                f"rounds of {o['requests_per_round']} requests): the service takes "
                f"{o['overhead_us']['median']:.0f} us per request more than the minimal server "
                f"(quartiles {o['overhead_us']['q1']:.0f} to {o['overhead_us']['q3']:.0f} us), "
                f"{o['service_us']:.0f} against {o['minimal_us']:.0f} us."
                + (
                    ""
                    if o.get("multipart_over_raw_us") is None
                    else " A multipart body costs the minimal server "
                    f"{o['multipart_over_raw_us']:.0f} us more than the same image sent raw "
                    "(median over the pool's images)."
                ),
            ]
    return "\n".join(lines) + "\n"


def reference_table(summary: dict[str, Any]) -> str:
    """The service beside ``loadtest/floor.py``'s empty and minimal servers, same load."""
    r = summary["served_vs_in_process"]
    pipeline = r["in_process_pipeline"]
    steps = {str(s["users"]): s for s in summary["locust"]["steps"]}
    measured = {k: v for k, v in r["reference_servers"].items() if k != "rounds"}
    servers = {"the service": steps, **measured}  # interleaved figures replace the sweep's
    servers = {name: servers[name] for name in ("empty", "minimal", "the service")}
    rounds = r["reference_servers"].get("rounds")
    what = {
        "empty": "reads the body, fixed answer",
        "minimal": "Starlette parsing + decode + engine, one hop",
        "the service": "densenet serve",
    }
    rows = []
    for name, by_users in servers.items():
        one, four = by_users.get("1"), by_users.get("4")
        rows.append(
            [
                f"{name} ({what[name]})",
                "-" if one is None else f"{one['latency_ms_p50']:.2f}",
                "-"
                if one is None
                else f"{one['latency_ms_p50'] - pipeline['latency_ms_p50']:+.2f}",
                "-" if four is None else f"{four['rps']:.1f}",
                "-" if four is None else f"{four['rps'] / pipeline['throughput_samples_sec']:.2f}",
                "-" if four is None else f"{four.get('locust_cpu', 0):.2f}",
            ]
        )
    header = [
        "server",
        "p50 ms, 1 user",
        "minus pipeline p50",
        "req/s, 4 users",
        "/ pipeline images/s",
        "Locust CPU",
    ]
    taken = (
        f"{len(rounds['minimal']['1'])} interleaved rounds (service, minimal, empty in turn), the "
        "median round of each; "
        if rounds
        else ""
    )
    return (
        f"Reference servers (`loadtest/floor.py`) on the same CPU, same load; {taken}in-process "
        f"pipeline p50 {pipeline['latency_ms_p50']:.2f} ms, "
        f"{pipeline['throughput_samples_sec']:.0f} images/s:\n\n" + table(header, rows)
    )


def batching_gain(args: argparse.Namespace) -> dict[str, Any]:
    """Throughput at ``--concurrency`` users with and without dynamic batching, per runtime."""
    server_cpus, locust_cpus = cpu_split()
    rows = []
    for runtime in (args.runtimes or "onnxruntime,torch").split(","):
        for max_batch in (1, args.max_batch):
            out = args.out / f"batching-{runtime}-b{max_batch}"
            out.mkdir(parents=True, exist_ok=True)
            env = {
                "LOADTEST_MODE": "constant",
                "LOADTEST_USERS": str(args.concurrency),
                "LOADTEST_DURATION": str(args.seconds),
            }
            extra = {
                "MAX_BATCH_SIZE": str(max_batch),
                "BATCH_TIMEOUT_MS": str(args.batch_timeout_ms),
                "MAX_QUEUE_SIZE": str(4 * args.concurrency),
            }
            log = out / "server.log"
            with local_server(
                args.model_dir, args.variant, runtime, server_cpus, log, extra
            ) as url:
                result = run_locust(url, out, locust_cpus, env, args.seconds + 120, args.processes)
            (step,) = result["steps"]
            rows.append(
                {
                    "runtime": runtime,
                    "max_batch_size": max_batch,
                    "concurrency": args.concurrency,
                    "rps": step["rps"],
                    "latency_ms_p50": step["latency_ms_p50"],
                    "latency_ms_p99": step["latency_ms_p99"],
                    "failures": step["failures"],
                }
            )
    for row in rows:
        base = next(r for r in rows if r["runtime"] == row["runtime"] and r["max_batch_size"] == 1)
        row["throughput_gain"] = row["rps"] / base["rps"] if base["rps"] else None
    return {"variant": args.variant, "seconds": args.seconds, "rows": rows}


def protocol_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s through /predict (one image per request) and /v2 infer (``--images`` per
    request), one server per runtime, the same image pool, ``--concurrency`` users each. The
    server may batch up to ``--images`` images per engine call, across /predict requests too."""
    server_cpus, locust_cpus = cpu_split()
    runtimes = args.runtimes.split(",") if args.runtimes else [args.runtime]
    rows = []
    for runtime in runtimes:
        rows += protocol_rows(args, runtime, server_cpus, locust_cpus)
    return {
        "variant": args.variant,
        "runtimes": runtimes,
        "seconds": args.seconds,
        "server_cpus": sorted(server_cpus),
        "max_batch_size": args.images,
        "rows": rows,
    }


def protocol_rows(
    args: argparse.Namespace, runtime: str, server_cpus: set[int], locust_cpus: set[int]
) -> list[dict[str, Any]]:
    """/predict then /v2 against one server on ``runtime``."""
    rows = []
    log = args.out / f"protocols-{runtime}-server.log"
    extra = {"MAX_BATCH_SIZE": str(args.images), "BATCH_TIMEOUT_MS": str(args.batch_timeout_ms)}
    with local_server(args.model_dir, args.variant, runtime, server_cpus, log, extra) as url:
        for protocol, images in (("predict", 1), ("v2", args.images)):
            out = args.out / f"protocol-{runtime}-{protocol}"
            out.mkdir(parents=True, exist_ok=True)
            env = {
                "LOADTEST_MODE": "constant",
                "LOADTEST_USERS": str(args.concurrency),
                "LOADTEST_DURATION": str(args.seconds),
                "LOADTEST_PROTOCOL": protocol,
                "LOADTEST_IMAGES_PER_REQUEST": str(images),
            }
            result = run_locust(url, out, locust_cpus, env, args.seconds + 120, args.processes)
            (step,) = result["steps"]
            rows.append(
                {
                    "runtime": runtime,
                    "protocol": protocol,
                    "images_per_request": images,
                    "concurrency": args.concurrency,
                    "rps": step["rps"],
                    "images_per_sec": step["images_per_sec"],
                    "latency_ms_p50": step["latency_ms_p50"],
                    "latency_ms_p99": step["latency_ms_p99"],
                    "failures": step["failures"],
                }
            )
    base = rows[0]["images_per_sec"]
    for row in rows:
        row["images_per_sec_vs_predict"] = row["images_per_sec"] / base if base else None
    return rows


def protocols_markdown(result: dict[str, Any]) -> str:
    """The protocol comparison as a table."""
    header = [
        "runtime",
        "endpoint",
        "images/request",
        "users",
        "req/s",
        "images/s",
        "p50 ms",
        "p99 ms",
        "failures",
        "images/s vs /predict",
    ]
    rows = [
        [
            r["runtime"],
            "/predict" if r["protocol"] == "predict" else "/v2/models/densenet/infer",
            r["images_per_request"],
            r["concurrency"],
            f"{r['rps']:.1f}",
            f"{r['images_per_sec']:.1f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p99']:.1f}",
            r["failures"],
            f"{r['images_per_sec_vs_predict']:.2f}x",
        ]
        for r in result["rows"]
    ]
    title = (
        f"# /predict vs Open Inference Protocol: {result['variant']} on "
        f"{', '.join(result['runtimes'])}, {result['seconds']} s per cell"
    )
    return f"{title}\n\n{table(header, rows)}\n"


CPU_SERVICE = ROOT / "k8s" / "densenet-cpu.yaml"


def cpu_service_spec(manifest: Path = CPU_SERVICE) -> dict[str, Any]:
    """The CPU Knative Service's revision template spec: what the load test measures."""
    import yaml

    spec: dict[str, Any] = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
    return spec


def container_concurrency(manifest: Path = CPU_SERVICE) -> int:
    """The CPU Knative Service's ``containerConcurrency``: the users one pod is measured at."""
    return int(cpu_service_spec(manifest)["containerConcurrency"])


def served(manifest: Path = CPU_SERVICE) -> tuple[str, str]:
    """The variant and runtime the CPU Knative Service serves (its MODEL_VARIANT and
    MODEL_RUNTIME): what the load test, the protocol and runtime comparisons and the loop
    profile measure unless told otherwise."""
    (container,) = cpu_service_spec(manifest)["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return env["MODEL_VARIANT"], env["MODEL_RUNTIME"]


def resident_mib(url: str) -> float:
    """The server's resident memory from its own /metrics (prometheus-client's process
    collector), in MiB."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / 2**20
    raise RuntimeError(f"{url}/metrics has no process_resident_memory_bytes")


def runtime_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """The CPU revision's pod on each runtime: cold starts (exec -> first answer), then
    ``--reference-rounds`` rounds taking turns, each a fresh server under ``--concurrency``
    users (here by default the manifest's containerConcurrency) for ``--seconds``, with its
    RSS."""
    server_cpus, locust_cpus = cpu_split()
    runtimes = (args.runtimes or "onnxruntime,openvino").split(",")
    users = args.concurrency
    server_env = {"NUM_THREADS": str(len(server_cpus)), "ENGINE_WORKERS": "1"}
    cold = {}
    for runtime in runtimes:
        print(f"{runtime}: cold start x{args.coldstart_runs} ...", file=sys.stderr)
        cold[runtime] = coldstart.run(
            args.variant, runtime, args.model_dir, args.coldstart_runs, server_env
        )["summary"]
    rounds: dict[str, list[dict[str, Any]]] = {r: [] for r in runtimes}
    for n, runtime in itertools.product(range(args.reference_rounds), runtimes):
        out = args.out / f"runtime-{runtime}-{n}"
        out.mkdir(parents=True, exist_ok=True)
        env = {
            "LOADTEST_MODE": "constant",
            "LOADTEST_USERS": str(users),
            "LOADTEST_DURATION": str(args.seconds),
        }
        print(f"{runtime}: round {n + 1}, {users} users x {args.seconds} s ...", file=sys.stderr)
        log = out / "server.log"
        with local_server(
            args.model_dir, args.variant, runtime, server_cpus, log, server_env
        ) as url:
            idle = resident_mib(url)
            result = run_locust(url, out, locust_cpus, env, args.seconds + 120, args.processes)
            loaded = resident_mib(url)
        (step,) = result["steps"]
        rounds[runtime].append({**step, "rss_mib_warm": idle, "rss_mib_after_load": loaded})
    rows = []
    for runtime in runtimes:
        got = rounds[runtime]

        def median(key: str, got: list[dict[str, Any]] = got) -> float:
            return float(np.median([r[key] for r in got]))

        rows.append(
            {
                "runtime": runtime,
                "users": users,
                "rps": median("rps"),
                "rps_rounds": [r["rps"] for r in got],
                "latency_ms_p50": median("latency_ms_p50"),
                "latency_ms_p99": median("latency_ms_p99"),
                "failures": sum(r["failures"] for r in got),
                "rss_mib_warm": median("rss_mib_warm"),
                "rss_mib_after_load": max(r["rss_mib_after_load"] for r in got),
                "coldstart_first_predict_s": cold[runtime]["first_predict_s"],
                "coldstart_rss_mb_ready": cold[runtime]["rss_mb_ready"],
            }
        )
    base = rows[0]["rps"]
    for row in rows:
        row["rps_vs_first"] = row["rps"] / base if base else None
    from service.bench.config import BenchConfig
    from service.bench.runner import machine_description

    machine = machine_description(BenchConfig(threads=len(server_cpus)))
    return {
        "variant": args.variant,
        "machine": f"{machine['cpu']}, server on {len(server_cpus)} CPU(s), Locust on "
        f"{len(locust_cpus)}; onnxruntime {machine['onnxruntime']}, "
        f"openvino {machine['openvino']}",
        "server_env": server_env,
        "seconds": args.seconds,
        "rounds": args.reference_rounds,
        "coldstart_runs": args.coldstart_runs,
        "rows": rows,
    }


def runtimes_markdown(result: dict[str, Any]) -> str:
    """The runtime comparison as a table."""
    first = result["rows"][0]["runtime"]

    def spread(s: dict[str, float], fmt: str) -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    header = [
        "runtime",
        "users",
        "req/s (median of rounds)",
        f"vs {first}",
        "p50 ms",
        "p99 ms",
        "failures",
        "cold start: exec -> first answer (s)",
        "RSS ready (MiB)",
        "RSS warm / after load (MiB)",
    ]
    rows = [
        [
            r["runtime"],
            r["users"],
            f"{r['rps']:.1f} ({min(r['rps_rounds']):.1f}-{max(r['rps_rounds']):.1f})",
            f"{r['rps_vs_first']:.2f}x",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p99']:.1f}",
            r["failures"],
            spread(r["coldstart_first_predict_s"], ".2f"),
            spread(r["coldstart_rss_mb_ready"], ".0f"),
            f"{r['rss_mib_warm']:.0f} / {r['rss_mib_after_load']:.0f}",
        ]
        for r in result["rows"]
    ]
    title = (
        f"# The CPU revision's pod per runtime: {result['variant']}, {result['rounds']} rounds "
        f"of {result['seconds']} s taking turns, {result['coldstart_runs']} cold starts each"
    )
    return f"{title}\n\n{result['machine']}; pod env {result['server_env']}.\n\n" + (
        f"{table(header, rows)}\n"
    )


def batching_markdown(result: dict[str, Any]) -> str:
    """The batching comparison as a table."""
    header = ["runtime", "MAX_BATCH_SIZE", "users", "req/s", "p50 ms", "p99 ms", "failures", "gain"]
    rows = [
        [
            r["runtime"],
            r["max_batch_size"],
            r["concurrency"],
            f"{r['rps']:.1f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p99']:.1f}",
            r["failures"],
            f"{r['throughput_gain']:.2f}x",
        ]
        for r in result["rows"]
    ]
    title = f"# Dynamic batching on CPU: {result['variant']}, {result['seconds']} s per cell"
    return f"{title}\n\n{table(header, rows)}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    variant, runtime = served()
    p.add_argument("--model-dir", type=Path, default=ROOT / "models")
    p.add_argument("--variant", default=variant, help="default: the CPU Service's")
    p.add_argument("--runtime", default=runtime, help="default: the CPU Service's")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "loadtest")
    p.add_argument("--steps", default="1,2,4,8")
    p.add_argument("--window", type=float, default=5.0)
    p.add_argument("--step-max", type=float, default=45.0)
    p.add_argument("--coldstart-runs", type=int, default=5)
    p.add_argument(
        "--reference-seconds", type=int, default=10, help="per run of the reference servers"
    )
    p.add_argument(
        "--reference-rounds",
        type=int,
        default=3,
        help="rounds of the service and the reference servers, taking turns",
    )
    p.add_argument("--knative-url")
    p.add_argument("--ksvc", default="densenet-cpu")
    p.add_argument("--namespace", default="default")
    p.add_argument("--kube-context")
    p.add_argument("--host", help="Host header for --knative-url (the Service's domain)")
    p.add_argument("--scale-to-zero-wait", type=float, default=600)
    p.add_argument("--batching", action="store_true", help="compare MAX_BATCH_SIZE 1 vs N")
    p.add_argument(
        "--runtimes",
        help="comma-separated: --batching (default onnxruntime,torch), --protocols (default "
        "--runtime) and --compare-runtimes (default onnxruntime,openvino) measure each",
    )
    p.add_argument(
        "--compare-runtimes",
        action="store_true",
        help="the CPU revision's pod on each of --runtimes: cold start, RSS, req/s at its "
        "containerConcurrency, rounds taking turns",
    )
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-timeout-ms", type=float, default=5.0)
    p.add_argument(
        "--concurrency",
        type=int,
        help="users: default 8, or the CPU Service's containerConcurrency (--compare-runtimes)",
    )
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument(
        "--protocols", action="store_true", help="compare /predict with /v2 infer (images/s)"
    )
    p.add_argument("--images", type=int, default=8, help="--protocols: images per /v2 request")
    p.add_argument(
        "--processes", type=int, default=1, help="Locust worker processes (master + N workers)"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.concurrency is None:
        args.concurrency = container_concurrency() if args.compare_runtimes else 8

    if args.protocols:
        result = protocol_comparison(args)
        (args.out / "protocols.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "protocols.md").write_text(protocols_markdown(result))
        print(protocols_markdown(result))
        return 0

    if args.compare_runtimes:
        result = runtime_comparison(args)
        (args.out / "runtimes.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "runtimes.md").write_text(runtimes_markdown(result))
        print(runtimes_markdown(result))
        return 0

    if args.batching:
        result = batching_gain(args)
        (args.out / "batching.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "batching.md").write_text(batching_markdown(result))
        print(batching_markdown(result))
        return 0

    if args.knative_url:
        context = ["--context", args.kube_context] if args.kube_context else []
        result = knative_coldstart(
            args.knative_url,
            args.ksvc,
            ["kubectl", *context, "-n", args.namespace],
            args.coldstart_runs,
            args.scale_to_zero_wait,
            host=args.host,
        )
        (args.out / "knative_coldstart.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["first_request_s"], indent=2))
        return 0

    from service.bench.config import BenchConfig
    from service.bench.runner import machine_description

    server_cpus, locust_cpus = cpu_split()
    print(f"cold start x{args.coldstart_runs} ...", file=sys.stderr)
    cold = coldstart.run(
        args.variant,
        args.runtime,
        args.model_dir,
        args.coldstart_runs,
        {"NUM_THREADS": str(len(server_cpus))},
    )
    steps = [int(s) for s in args.steps.split(",")]
    limit = len(steps) * (args.step_max + 2 * args.window) + 60
    env = {
        "LOADTEST_MODE": "sweep",
        "LOADTEST_STEPS": args.steps,
        "LOADTEST_WINDOW": str(args.window),
        "LOADTEST_STEP_MAX": str(args.step_max),
    }
    print(
        f"sweep {args.steps} users (server on CPUs {sorted(server_cpus)}, "
        f"Locust on {sorted(locust_cpus)}) ...",
        file=sys.stderr,
    )
    # The pod the sweep measures, recorded so `densenet plan` can size Knative's pods like it.
    server_env = {"NUM_THREADS": str(len(server_cpus)), "ENGINE_WORKERS": "1"}
    with local_server(
        args.model_dir,
        args.variant,
        args.runtime,
        server_cpus,
        args.out / "server.log",
        server_env,
    ) as url:
        locust = run_locust(url, args.out, locust_cpus, env, limit, args.processes)
    print("reference servers (loadtest/floor.py) ...", file=sys.stderr)
    references = reference_servers(args, server_cpus, locust_cpus, server_env, [1, 4])
    print("framework overhead in-process (loadtest/overhead.py) ...", file=sys.stderr)
    overhead = framework_overhead(args, server_cpus, server_env)
    measured = in_process(args.model_dir, args.variant, args.runtime, server_cpus, 5.0)
    engine, pipeline = measured["engine"], measured["pipeline"]
    workers = engine_workers_in_process(args.model_dir, args.variant, args.runtime, 5.0)
    one = next((s for s in locust["steps"] if s["users"] == 1), None)
    best_rps = max((s["rps"] for s in locust["steps"]), default=0.0)
    ratio: dict[str, Any] = {
        "in_process": engine,
        "served_best_rps": best_rps,
        "throughput_ratio": best_rps / engine["throughput_samples_sec"],
        "in_process_pipeline": pipeline,
        "in_process_pipeline_exact_jpeg": measured["pipeline_exact"],
        "throughput_ratio_vs_pipeline": best_rps / pipeline["throughput_samples_sec"],
        "jpeg_decode_preprocess_ms_p50": {
            "reduced": measured["jpeg_decode_reduced"]["latency_ms_p50"],
            "exact": measured["jpeg_decode_exact"]["latency_ms_p50"],
        },
        "jpeg_decode_speedup": measured["jpeg_decode_exact"]["latency_ms_p50"]
        / measured["jpeg_decode_reduced"]["latency_ms_p50"],
        "engine_workers": workers,
        "reference_servers": references,
        "framework_overhead": overhead,
    }
    if one and one["latency_ms_p50"] is not None:
        ratio["p50_overhead_ms"] = one["latency_ms_p50"] - engine["latency_ms_p50"]
        ratio["p50_overhead_vs_pipeline_ms"] = one["latency_ms_p50"] - pipeline["latency_ms_p50"]
        ratio["server_decode_preprocess_ms_p50"] = (
            None
            if one["server_total_ms_p50"] is None or one["server_inference_ms_p50"] is None
            else one["server_total_ms_p50"]
            - one["server_inference_ms_p50"]
            - (one["server_queue_ms_p50"] or 0)
        )
    machine = machine_description(BenchConfig(threads=len(server_cpus)))
    summary = {
        "variant": args.variant,
        "runtime": args.runtime,
        "machine": f"{machine['cpu']}, server on {len(server_cpus)} CPU(s), Locust on "
        f"{len(locust_cpus)}; onnxruntime {machine['onnxruntime']}, torch {machine['torch']}",
        "server_cpus": sorted(server_cpus),
        "server_env": server_env,
        "locust_cpus": sorted(locust_cpus),
        "coldstart": cold,
        "locust": locust,
        "served_vs_in_process": ratio,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
