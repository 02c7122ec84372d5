"""Service settings: one pydantic-settings class, read from the environment."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.engines import list_runtimes
from service.engines.base import CudaOptions
from service.variants import list_variants

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota.

    A Knative/Kubernetes CPU limit becomes a CFS quota (``cpu.max``), not an affinity
    mask, so ``os.cpu_count()`` alone would oversubscribe a pod limited to 2 CPUs on a
    64-core node. A fractional quota rounds up (1.5 CPUs: 2 threads).
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class Settings(BaseSettings):
    """Everything the server reads from its environment (names are upper-case env vars)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", protected_namespaces=("settings_",)
    )

    model_variant: str = Field(
        "baseline", description=f"Variant to serve, one of: {', '.join(list_variants())}."
    )
    model_runtime: str = Field(
        "torch", description=f"Runtime that executes it, one of: {', '.join(list_runtimes())}."
    )
    model_dir: Path = Field(
        Path("models"), description="Directory holding one sub-directory per built variant."
    )
    model_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Serve only the artifact with this sha256 (the manifest's digest must "
        "match it, and the file's digest the manifest's); unset: the manifest's is checked.",
    )
    model_name: str = Field(
        "densenet",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The model's name in the Open Inference Protocol (/v2/models/NAME); its "
        "version is the variant served.",
    )
    host: str = Field("0.0.0.0", description="Interface `densenet serve` binds to.")
    port: int = Field(8080, ge=1, le=65535, description="Port `densenet serve` listens on.")
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest decoded image (width x height) accepted."
    )
    max_image_bytes: int = Field(
        128 * 2**20,
        ge=2**20,
        description="Most memory one image may take while decoded, converted and resized, "
        "judged from its header; over it a JPEG is decoded at reduced size if that fits, "
        "anything else gets 413. Times MAX_QUEUE_SIZE, it must fit in the memory limit.",
    )
    max_images_per_request: int = Field(
        16, ge=1, description="Most images one /v2 inference request may carry (413 above)."
    )
    max_json_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest JSON part of a /v2 request (413 above); tensors beyond it go in "
        "the binary data extension.",
    )
    jpeg_decode: Literal["reduced", "exact"] = Field(
        "reduced",
        description="reduced: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) "
        "still at least the resize target, then resized as usual; exact: at full size, as "
        "torchvision's transforms do (other formats are always decoded in full).",
    )
    engine_workers: int = Field(
        1,
        ge=1,
        description="Engine calls run at once, each with NUM_THREADS intra-op threads (for a "
        "small model on 2 CPUs, 2 workers x 1 thread can beat 1 x 2). TensorRT: 1 only.",
    )
    top_k: int = Field(5, ge=1, le=1000, description="Default number of labels returned.")
    num_threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads for the runtime; default: the CPUs the container is given.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device for the torch runtime; auto picks CUDA when present."
    )
    cuda_precision: Literal["fp16", "bf16", "fp32"] = Field(
        "fp16",
        description="Torch on CUDA: precision of weights and activations (inputs are cast on "
        "the GPU); fp32 is the reference the others are measured against.",
    )
    openvino_precision: Literal["f32", "bf16"] = Field(
        "f32",
        description="OpenVINO on the CPU: inference precision. f32 gives the variant's "
        "measured accuracy; bf16 (CPUs with AVX-512 BF16 or AMX) is faster and is its own "
        "accuracy, which the build measures. OpenVINO's own default on such CPUs is bf16.",
    )
    cuda_graphs: bool = Field(
        True,
        description="Torch on CUDA: capture one CUDA graph per batch-size bucket (powers of "
        "two up to MAX_BATCH_SIZE) at start-up and pad each batch up to the nearest.",
    )
    torch_compile: Literal["off", "default", "max-autotune"] = Field(
        "off",
        description="Torch on CUDA: torch.compile the model at start-up (minutes for "
        "max-autotune, once per bucket); off keeps start-up short.",
    )
    max_batch_size: int = Field(
        1, ge=1, description="Dynamic batching: most requests run together (1 = off)."
    )
    batch_timeout_ms: float = Field(
        2.0, ge=0, description="Dynamic batching: longest a request waits for batch companions."
    )
    max_queue_size: int = Field(
        8,
        ge=1,
        description="Predict requests admitted at once (decoding, queued or running); "
        "more get 503 with Retry-After.",
    )
    body_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest a /predict body may take to arrive; a slower upload gets 408 "
        "and gives its place back.",
    )
    max_uploads: int | None = Field(
        None,
        ge=1,
        description="/predict bodies being received at once, before a request is admitted "
        "to the model (so slow uploads cannot hold MAX_QUEUE_SIZE's places); more get 503. "
        "Default: 2 x MAX_QUEUE_SIZE.",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=4096,
        description="Largest request line + headers accepted; more get 431 as they arrive.",
    )
    header_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Longest a request's headers may take to arrive (408 after), and a new "
        "connection may stay silent (closed after).",
    )
    drain_seconds: float = Field(
        3.0, ge=0, description="On SIGTERM, report not-ready this long before shutting down."
    )
    log_level: str = Field("info", description="Log level for the service and uvicorn.")

    @field_validator("model_variant")
    @classmethod
    def _known_variant(cls, value: str) -> str:
        if value not in list_variants():
            known = ", ".join(list_variants())
            raise ValueError(f"unknown MODEL_VARIANT {value!r}; known: {known}")
        return value

    @field_validator("model_runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        if value not in list_runtimes():
            raise ValueError(
                f"unknown MODEL_RUNTIME {value!r}; known: {', '.join(list_runtimes())}"
            )
        return value

    @model_validator(mode="after")
    def _one_worker_for_tensorrt(self) -> Settings:
        if self.model_runtime == "tensorrt" and self.engine_workers > 1:
            raise ValueError(
                "ENGINE_WORKERS must be 1 with MODEL_RUNTIME=tensorrt: a TensorRT execution "
                "context runs one call at a time"
            )
        return self

    @property
    def uploads(self) -> int:
        """Bodies received at once."""
        return self.max_uploads or 2 * self.max_queue_size

    @property
    def cuda(self) -> CudaOptions:
        """How the torch runtime runs on a GPU."""
        return CudaOptions(
            precision=self.cuda_precision, graphs=self.cuda_graphs, compile=self.torch_compile
        )

    @property
    def threads(self) -> int:
        """Intra-op thread count actually used."""
        return self.num_threads or available_cpus()
