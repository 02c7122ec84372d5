"""Pods for the capacity plan's tests: synthetic latency distributions and the measurement
files `make loadtest` and `make benchmark` would write for them."""

from __future__ import annotations

import numpy as np

from service.plan.measured import ColdStarts, ServiceTimes

COLD = ColdStarts((0.7, 0.75, 0.8), "test")


def flat(latency_s: float, levels: tuple[int, ...] = (1, 2, 4, 8)) -> ServiceTimes:
    """A pod whose latency does not depend on concurrency (+-1 %): Knative's arithmetic holds
    exactly, so the autoscaler is what is under test."""
    q = np.linspace(0.99, 1.01, 101) * latency_s
    return ServiceTimes("test", "onnxruntime", levels, np.stack([q] * len(levels)), source="t")


def cpu_bound(levels: tuple[int, ...] = (1, 2, 4, 8)) -> ServiceTimes:
    """A one-CPU pod: 5 ms alone, throughput flat from 2 in flight, a long tail."""
    base = np.interp(np.linspace(0, 1, 101), [0, 0.5, 0.95, 1], [2.5, 5, 14, 20]) / 1e3
    return ServiceTimes(
        "test", "onnxruntime", levels, np.stack([base * max(1, c * 0.85) for c in levels]), "t"
    )


def sweep_summary(service: ServiceTimes, variant: str = "distilled") -> dict:
    """A load-test summary.json with ``service``'s distribution (as loadtest/run.py writes)."""
    steps = [
        {
            "users": c,
            "latency_ms_quantiles": list(service.at(c) * 1e3),
            "latency_ms_p50": service.sample(c, 0.5) * 1e3,
            "latency_ms_p95": service.sample(c, 0.95) * 1e3,
            "rps": service.throughput(c),
        }
        for c in service.levels
    ]
    return {
        "variant": variant,
        "runtime": "onnxruntime",
        "machine": "test",
        "server_cpus": [0],
        "server_env": {"NUM_THREADS": "1", "ENGINE_WORKERS": "1"},
        "coldstart": {"samples": [{"first_predict_s": s} for s in COLD.samples]},
        "locust": {"steps": steps},
    }


BENCH_HEADER = "model_variant,runtime,device,batch_size,latency_ms_p50,accuracy_top1,"
BENCH_HEADER += "accuracy_delta_vs_baseline\n"


def bench_csv(path, delta: str = "-0.002", variant: str = "distilled") -> None:
    path.write_text(
        BENCH_HEADER
        + "baseline,onnxruntime,cpu,1,30,0.98,0.0\n"
        + f"{variant},onnxruntime,cpu,1,3,0.978,{delta}\n"
    )
