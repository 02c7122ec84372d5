"""The Locust suite, run headless against a real local server."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
LOCUST = Path(sys.executable).parent / "locust"


def run_locust(
    url: str, out: Path, seconds: int, users: int = 2, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LOADTEST_MODE": "constant",
        "LOADTEST_USERS": str(users),
        "LOADTEST_DURATION": str(seconds),
        "LOADTEST_SUMMARY": str(out / "summary.json"),
        **extra,
    }
    return subprocess.run(
        [
            str(LOCUST),
            "-f",
            str(ROOT / "loadtest" / "locustfile.py"),
            "--headless",
            "--host",
            url,
            "--csv",
            str(out / "run"),
            "--html",
            str(out / "report.html"),
            "--json-file",
            str(out / "run"),
            "--only-summary",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=ROOT,
    )


def read_stats(out: Path) -> list[dict[str, str]]:
    with (out / "run_stats.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_locust_run_has_no_failures_and_writes_reports(build, serve, tmp_path):
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime")
    result = run_locust(server.url, tmp_path, seconds=10)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_stats(tmp_path)
    assert {"Type", "Name", "Request Count", "Failure Count", "50%", "99%", "Requests/s"} <= set(
        rows[0]
    )
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Failure Count"]) == 0
    posts = [r for r in rows if r["Type"] == "POST"]
    names = {r["Name"] for r in posts}
    assert any(n.startswith("/predict multipart jpeg") for n in names)
    assert any(n.startswith("/predict multipart png") for n in names)
    assert any(n.startswith("/predict raw") for n in names)
    assert sum(int(r["Request Count"]) for r in posts) > 10
    server_rows = {r["Name"] for r in rows if r["Type"] == "SERVER"}
    assert server_rows == {"inference", "queue", "decode+preprocess"}
    for row in posts:
        assert float(row["50%"]) > 0 and float(row["Requests/s"]) >= 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["requests"] > 10 and summary["rps"] > 0
    assert summary["latency_ms_p50"] <= summary["latency_ms_p95"] <= summary["latency_ms_p99"]
    (step,) = summary["steps"]
    assert step["users"] == 2 and step["failures"] == 0 and step["requests"] > 10
    assert step["server_inference_ms_p50"] > 0
    assert 0 < step["locust_cpu"] <= 1.5  # one Locust process: at most about one CPU
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert (tmp_path / "run_failures.csv").is_file()


def test_a_non_200_answer_is_a_failure(build, serve, tmp_path):
    build("baseline")
    # Bodies over 1 KiB get 413 from this server: the larger images in the pool all are.
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime", MAX_BODY_BYTES="1024")
    result = run_locust(server.url, tmp_path, seconds=5, users=1)
    assert result.returncode != 0  # Locust exits non-zero when any request failed
    rows = read_stats(tmp_path)
    large = [
        r
        for r in rows
        if r["Type"] == "POST" and ("640x480" in r["Name"] or "1024x768" in r["Name"])
    ]
    assert large
    for row in large:
        assert int(row["Request Count"]) > 0
        assert int(row["Failure Count"]) == int(row["Request Count"]), row["Name"]
    total = next(r for r in rows if r["Name"] == "Aggregated")
    posts = [r for r in rows if r["Type"] == "POST"]
    assert int(total["Failure Count"]) == sum(int(r["Failure Count"]) for r in posts) > 0
    with (tmp_path / "run_failures.csv").open() as fh:
        failures = list(csv.DictReader(fh))
    assert failures and all("HTTP 413" in f["Error"] for f in failures)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # Locust's final figures: the CSV above is its last periodic snapshot, up to a second old.
    final = json.loads((tmp_path / "run.json").read_text())
    sent = [e for e in final if e["method"] != "SERVER"]  # SERVER: the server's own timings
    assert summary["failures"] == sum(e["num_failures"] for e in sent) > 0
    assert summary["requests"] == sum(e["num_requests"] for e in sent)


def test_the_v2_task_sends_n_images_per_request_and_counts_images(build, serve, tmp_path):
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime", MAX_BATCH_SIZE="4")
    result = run_locust(
        server.url,
        tmp_path,
        seconds=8,
        users=1,
        LOADTEST_PROTOCOL="v2",
        LOADTEST_IMAGES_PER_REQUEST="4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    posts = [r for r in read_stats(tmp_path) if r["Type"] == "POST"]
    assert [r["Name"] for r in posts] == ["/v2 infer x4"]
    assert int(posts[0]["Request Count"]) > 3 and int(posts[0]["Failure Count"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["protocol"] == "v2" and summary["images_per_request"] == 4
    (step,) = summary["steps"]
    assert step["images_per_sec"] == pytest.approx(4 * step["rps"])


def test_with_worker_processes_the_master_summarizes_every_workers_requests(build, serve, tmp_path):
    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime")
    result = run_locust(server.url, tmp_path, 8, 4, "--processes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((tmp_path / "run.json").read_text())
    sent = sum(e["num_requests"] for e in final if e["method"] != "SERVER")
    summary = json.loads((tmp_path / "summary.json").read_text())
    (step,) = summary["steps"]
    assert sent > 20 and summary["requests"] == sent
    # Every request the workers made reached the master: in the step's figures, or counted as
    # completed after it ended (while the workers' users were stopping).
    assert step["requests"] + summary["requests_outside_steps"] == sent
    assert step["requests"] >= 0.9 * sent and step["failures"] == 0
    assert step["server_inference_ms_p50"] > 0


def test_the_capacity_plans_simulator_reproduces_a_measured_sweep(build, serve, tmp_path):
    """One pod at fixed concurrency 1, 2, 4 and 8, measured by the Locust suite's sweep and
    simulated from that measurement: p50 and p95 agree within 15 %."""
    from service.plan.measured import from_locust
    from service.plan.planner import validate

    build("baseline")
    server = serve(MODEL_VARIANT="baseline", MODEL_RUNTIME="onnxruntime")
    sweep = {"LOADTEST_STEPS": "1,2,4,8", "LOADTEST_WINDOW": "1", "LOADTEST_STEP_MAX": "4"}
    result = run_locust(server.url, tmp_path, 30, 1, LOADTEST_MODE="sweep", **sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["users"] for s in summary["steps"]] == [1, 2, 4, 8]
    for step in summary["steps"]:
        q = step["latency_ms_quantiles"]
        assert len(q) == 101 and q == sorted(q)
        assert q[50] == pytest.approx(step["latency_ms_p50"], rel=0.01)
    service, measured = from_locust(summary, "baseline", "onnxruntime", "sweep")
    for row in validate(service, measured, seconds=30):
        for q in ("p50", "p95"):
            simulated, real = row[f"direct_{q}_ms"], row[f"measured_{q}_ms"]
            assert simulated == pytest.approx(real, rel=0.15), (row["users"], q)


def test_the_reference_servers_answer_the_load_test_and_the_minimal_one_runs_the_model(
    build, serve, model_dir, tmp_path, heldout_digits
):
    """loadtest/floor.py: the empty server answers without looking; the minimal one gives the
    service's own top-1 (same decode, same engine), for raw and multipart bodies."""
    import httpx

    from service.bench.server import spawn_server

    build("distilled")
    pngs = heldout_digits[0][:12]
    service = serve(MODEL_VARIANT="distilled", MODEL_RUNTIME="onnxruntime")
    with httpx.Client(base_url=service.url, timeout=30) as client:
        expected = [
            client.post("/predict", files={"file": ("d.png", d)}).json()["predictions"][0]["index"]
            for d in pngs
        ]
    service.stop()
    env = {"MODEL_DIR": str(model_dir), "MODEL_VARIANT": "distilled"}
    env |= {"MODEL_RUNTIME": "onnxruntime", "NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "loadtest" / "floor.py")]
    for mode in ("empty", "minimal"):
        log = tmp_path / f"{mode}.log"
        with spawn_server({**env, "FLOOR_MODE": mode}, log, cwd=ROOT, command=command) as server:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                raw = [
                    client.post("/predict", content=d, headers={"content-type": "image/png"})
                    for d in pngs
                ]
                multipart = client.post("/predict", files={"file": ("d.png", pngs[0])})
            answers = [r.json() for r in [*raw, multipart]]
            assert all(set(a) == {"predictions", "timing"} for a in answers)
            top1 = [a["predictions"][0]["index"] for a in answers]
            if mode == "empty":
                assert set(top1) == {0} and answers[0]["timing"]["inference_ms"] == 0
            else:
                assert top1 == [*expected, expected[0]]
                assert all(a["timing"]["inference_ms"] > 0 for a in answers)


def test_overhead_compares_the_service_with_the_minimal_server_in_process(
    build, model_dir, tmp_path
):
    """loadtest/overhead.py runs both apps on the same requests and reports their difference;
    with one intra-op thread the service takes its one-hop path, as the CPU revision does."""
    build("distilled")
    out = tmp_path / "overhead.json"
    env = {**os.environ, "MODEL_DIR": str(model_dir), "MODEL_VARIANT": "distilled"}
    env |= {"MODEL_RUNTIME": "onnxruntime", "NUM_THREADS": "1", "LOG_LEVEL": "warning"}
    command = [sys.executable, str(ROOT / "loadtest" / "overhead.py")]
    done = subprocess.run(
        [*command, "--rounds", "3", "--requests", "8", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["service_path"] == "one-hop"
    assert len(result["rounds_us"]["service"]) == len(result["rounds_us"]["minimal"]) == 3
    assert result["service_us"] > 0 and result["minimal_us"] > 0
    o = result["overhead_us"]
    assert o["q1"] <= o["median"] <= o["q3"]
    # 8 requests a round: the pool's first four images, each multipart and raw.
    assert len(result["by_request"]) == 8
    assert all(t["service_us"] > 0 and t["minimal_us"] > 0 for t in result["by_request"].values())
    assert {name.rsplit(" ", 1)[1] for name in result["by_request"]} == {"multipart", "raw"}
    assert isinstance(result["multipart_over_raw_us"], float)
    assert "the service's extra cost" in done.stdout
    bad = subprocess.run(
        [*command, "--rounds", "1"], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "--rounds must be at least 2" in bad.stderr
