"""Response bodies (they double as the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    """One of the top-k classes."""

    label: str
    index: int
    probability: float


class Timing(BaseModel):
    """Where the request's time went inside the server, in milliseconds."""

    decode_ms: float
    preprocess_ms: float
    queue_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    batch_size: int = Field(description="Images in the engine call this request ran in.")


class PredictResponse(BaseModel):
    """Answer to ``POST /predict``."""

    predictions: list[Prediction]
    variant: str
    runtime: str
    model_sha256: str
    timing: Timing


class ErrorBody(BaseModel):
    """Inner error object."""

    code: str
    message: str
    status: int


class ErrorResponse(BaseModel):
    """The one shape every error response has."""

    error: ErrorBody


class Health(BaseModel):
    """Liveness / readiness answer."""

    status: str


class ModelInfo(BaseModel):
    """What ``GET /model`` says about the loaded artifact."""

    variant: str
    runtime: str
    device: str
    execution: str = Field(
        description='How the engine runs there, e.g. "cpu" or "cuda (fp16, channels-last, '
        'CUDA graphs)".'
    )
    task: str
    architecture: dict[str, object]
    num_classes: int
    input_size: int
    model_sha256: str
    threads: int
    engine_workers: int
    jpeg_decode: str = Field(description="How JPEGs are decoded: reduced (DCT-scaled) or exact.")
    max_batch_size: int
    metrics: dict[str, object]
    source_weights: dict[str, object] = Field(
        description="What the artifact was made from: for a derived variant, `chain` lists "
        "each source variant with its torch artifact's sha256, nearest first."
    )
    build: dict[str, str] = Field(
        description="The served code's version, Python's, the runtime library's and the "
        "serving libraries' (fastapi, starlette, uvicorn, pydantic, numpy, pillow), as the "
        "densenet_build_info gauge labels them."
    )
