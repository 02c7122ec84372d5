"""The load-test runner's report, for sweeps with and without a 1-user step."""

from __future__ import annotations

import http.server
import importlib.util
import threading

import pytest

from tests.support import ROOT


def load_runner():
    spec = importlib.util.spec_from_file_location("loadtest_run", ROOT / "loadtest" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step(users: int) -> dict:
    return {
        "users": users,
        "stable": True,
        "seconds": 10.0,
        "requests": 100,
        "failures": 0,
        "rps": 10.0 * users,
        "latency_ms_p50": 5.0,
        "latency_ms_p95": 7.0,
        "latency_ms_p99": 9.0,
        "server_inference_ms_p50": 3.0,
        "server_queue_ms_p50": 0.1,
        "server_total_ms_p50": 4.0,
    }


def summary(steps: list[int], overhead: bool) -> dict:
    engine = {"latency_ms_p50": 3.0, "throughput_samples_sec": 300.0, "iterations": 50}
    ratio = {
        "in_process": engine,
        "in_process_pipeline": engine,
        "served_best_rps": 40.0,
        "throughput_ratio": 0.5,
        "throughput_ratio_vs_pipeline": 0.5,
    }
    if overhead:
        ratio |= {
            "p50_overhead_ms": 2.0,
            "server_decode_preprocess_ms_p50": 0.9,
            "p50_overhead_vs_pipeline_ms": 0.4,
        }
    return {
        "variant": "distilled",
        "runtime": "onnxruntime",
        "machine": "test",
        "locust": {"steps": [step(u) for u in steps]},
        "served_vs_in_process": ratio,
    }


def test_report_without_a_one_user_step_says_the_overhead_is_not_measured():
    text = load_runner().markdown(summary([2, 4], overhead=False))
    assert "| 2 | True | 10 | 100 | 0 | 20.0 |" in text
    assert "overhead is not measured" in text


def test_report_with_a_one_user_step_gives_the_overhead():
    text = load_runner().markdown(summary([1, 2], overhead=True))
    assert "minus in-process engine p50: 2.00 ms" in text
    assert "decode + preprocess p50 0.90 ms" in text
    assert "decode + preprocess + engine p50: 0.40 ms (goal <= 0.5 ms)" in text


class Recorder(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.hosts.append(self.headers["Host"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def fake_kubectl(tmp_path, min_scale: str) -> list[str]:
    """A stand-in for kubectl: the Service's min-scale, and one pod that never goes away."""
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *"get ksvc"*) printf "{min_scale}";; *"get pods"*) echo pod/x;; esac\n'
    )
    script.chmod(0o755)
    return [str(script)]


def test_knative_mode_sends_the_host_header_and_does_not_wait_on_min_scale(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        runner = load_runner()
        result = runner.knative_coldstart(
            url,
            "densenet-gpu",
            fake_kubectl(tmp_path, "1"),
            runs=2,
            wait_s=0.1,
            host="densenet-gpu.default.example.com",
        )
        assert result["min_scale"] == 1 and result["measured"] == "warm (min-scale 1)"
        assert Recorder.hosts[-2:] == ["densenet-gpu.default.example.com"] * 2
        with pytest.raises(TimeoutError, match="still has 1 pod"):  # min-scale 0: it waits
            runner.knative_coldstart(url, "densenet-cpu", fake_kubectl(tmp_path, ""), 1, 0.1)
    finally:
        server.shutdown()


def test_report_sets_the_service_beside_the_reference_servers():
    runner = load_runner()
    data = summary([1, 4], overhead=True)
    reference = {**step(1), "latency_ms_p50": 1.5, "locust_cpu": 0.5}
    data["served_vs_in_process"]["reference_servers"] = {
        "empty": {"1": {**reference, "latency_ms_p50": 0.5}, "4": {**reference, "rps": 900.0}},
        "minimal": {"1": reference, "4": {**reference, "rps": 240.0}},
    }
    text = runner.markdown(data)
    assert "in-process pipeline p50 3.00 ms, 300 images/s" in text
    assert "| empty (reads the body, fixed answer) | 0.50 | -2.50 | 900.0 | 3.00 | 0.50 |" in text
    assert (
        "| minimal (Starlette parsing + decode + engine, one hop) | 1.50 | -1.50 | 240.0 | 0.80 |"
        in text
    )
    assert "| the service (densenet serve) | 5.00 | +2.00 | 40.0 | 0.13 |" in text
    # Interleaved rounds: their median replaces the sweep's figures for the service.
    runs = {
        name: {
            "1": [{**reference, "rps": r} for r in rates],
            "4": [{**reference, "rps": r} for r in rates],
        }
        for name, rates in {
            "the service": (230.0, 250.0, 210.0),
            "minimal": (240.0, 235.0, 260.0),
            "empty": (900.0, 800.0, 950.0),
        }.items()
    }
    medians = {name: {n: runner.median_run(s) for n, s in by.items()} for name, by in runs.items()}
    assert medians["the service"]["4"]["rps"] == 230.0 and medians["minimal"]["4"]["rps"] == 240.0
    assert runner.median_run([{"rps": 2.0}, {"rps": 1.0}])["rps"] == 1.0
    data["served_vs_in_process"]["reference_servers"] = {**medians, "rounds": runs}
    text = runner.markdown(data)
    assert (
        "3 interleaved rounds (service, minimal, empty in turn), the median round of each" in text
    )
    assert "| the service (densenet serve) | 1.50 | -1.50 | 230.0 | 0.77 |" in text
    assert "loadtest/overhead.py" not in text
    data["served_vs_in_process"]["framework_overhead"] = {
        "rounds": 30,
        "requests_per_round": 64,
        "service_us": 4100.0,
        "minimal_us": 3650.0,
        "overhead_us": {"median": 450.0, "q1": 300.0, "q3": 610.0},
    }
    assert (
        "the service takes 450 us per request more than the minimal server (quartiles 300 to "
        "610 us), 4100 against 3650 us." in runner.markdown(data)
    )
    assert "multipart" not in runner.markdown(data).split("loadtest/overhead.py")[1]
    data["served_vs_in_process"]["framework_overhead"]["multipart_over_raw_us"] = 212.4
    assert (
        "A multipart body costs the minimal server 212 us more than the same image sent raw"
        in runner.markdown(data)
    )
