"""Prometheus metrics, kept in one registry per app so several apps can live in one process."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from service.build_info import SERVING_LIBRARIES

# ~1 ms to 10 s, roughly x2 per step: resolves a 2 ms ONNX call and a 5 s cold request alike.
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# densenet_build_info's labels: service.build_info.build_info's keys.
BUILD_INFO_LABELS = (
    "version",
    "python",
    "runtime",
    "runtime_library",
    "runtime_version",
    *SERVING_LIBRARIES,
)


class Metrics:
    """All metrics the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        self.requests_total = Counter(
            "requests_total",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=reg,
        )
        self.inflight = Gauge("inflight_requests", "HTTP requests being handled now.", registry=reg)
        self.request_duration = Histogram(
            "request_duration_seconds",
            "Whole HTTP request time, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.preprocess = Histogram(
            "request_preprocess_seconds",
            "Decode + preprocess time of one image.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.predict = Histogram(
            "request_predict_seconds",
            "Inference time of the batch a /predict request ran in.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.postprocess = Histogram(
            "request_postprocess_seconds",
            "Softmax + top-k (or the /v2 outputs) + response building time.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_seconds = Histogram(
            "request_queue_seconds",
            "Time a preprocessed request waited for the engine.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            "inference_batch_size",
            "Images per engine call.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.request_images = Histogram(
            "request_images",
            "Images per answered inference request, by route (/predict: always 1).",
            ["route"],
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge("queue_depth", "Requests waiting for the engine.", registry=reg)
        self.model_load_seconds = Gauge(
            "model_load_seconds",
            "Time to load the model and run the warm-up inference.",
            registry=reg,
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 while the model is loaded, warmed up and the server is not draining (as /readyz).",
            registry=reg,
        )
        self.time_to_ready_seconds = Gauge(
            "time_to_ready_seconds", "Process start (exec) to ready.", registry=reg
        )
        self.build_info = Gauge(
            "densenet_build_info",
            "The served code's version and its libraries' (value is always 1).",
            list(BUILD_INFO_LABELS),
            registry=reg,
        )
        self.model_info = Gauge(
            "model_info",
            "The model being served (value is always 1).",
            ["variant", "runtime", "sha256", "task"],
            registry=reg,
        )
