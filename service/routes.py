"""HTTP routes: /predict, /healthz, /readyz, /metrics, /model."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    InvalidInput,
    MissingFile,
    NotReady,
    UnsupportedMediaType,
)
from service.intake import decode_and_run, receive_body
from service.postprocess import top_k_predictions
from service.schemas import ErrorResponse, Health, ModelInfo, PredictResponse, Timing
from service.state import StateDep

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 408, 413, 415, 422, 503)
}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_image_bytes(request: Request) -> bytes:
    """The image bytes of a multipart (field ``file``) or raw ``image/*`` request."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except StarletteHTTPException as exc:  # python-multipart parse errors
            raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise MissingFile("multipart request has no file field named 'file'")
            return await upload.read()
        finally:
            await form.close()
    if media.startswith("image/") or media == "application/octet-stream":
        return await request.body()
    raise UnsupportedMediaType(
        f"content type {media or '(none)'!r} is not accepted; send multipart/form-data with "
        "a 'file' field, or a raw body with Content-Type image/*"
    )


@router.post(
    "/predict",
    # The answer is built as a PredictResponse (validated once, there) and encoded by
    # pydantic-core straight to JSON: FastAPI's response_model would dump, validate and
    # serialize it a second time on every request.
    response_model=None,
    responses={200: {"model": PredictResponse}, **_ERRORS},
    openapi_extra=_PREDICT_BODY,
)
async def predict(
    request: Request,
    state: StateDep,
    top_k: Annotated[int | None, Query(ge=1, le=1000, description="Labels to return.")] = None,
) -> Response:
    """Classify one image: multipart field `file`, or a raw image/* body."""
    # While draining, requests are still served: routers may send a few before they notice.
    if not state.ready or state.batcher is None or state.manifest is None:
        raise NotReady("model is not ready")
    start = time.perf_counter()
    manifest = state.manifest
    settings = state.settings
    data = await receive_body(state, lambda: read_image_bytes(request))
    async with state.batcher.admit():
        decoded, (result,) = await decode_and_run([data], state)
    post_start = time.perf_counter()
    predictions = top_k_predictions(result.logits, manifest.labels, top_k or settings.top_k)
    postprocess_s = time.perf_counter() - post_start
    state.metrics.postprocess.observe(postprocess_s)
    state.metrics.request_images.labels(route="/predict").observe(1)
    answer = PredictResponse(
        predictions=predictions,
        variant=manifest.variant,
        runtime=state.runtime,
        model_sha256=state.model_sha256,
        timing=Timing(
            decode_ms=decoded.decode_s * 1e3,
            preprocess_ms=decoded.preprocess_s * 1e3,
            queue_ms=result.queue_seconds * 1e3,
            inference_ms=result.inference_seconds * 1e3,
            postprocess_ms=postprocess_s * 1e3,
            total_ms=(time.perf_counter() - start) * 1e3,
            batch_size=result.batch_size,
        ),
    )
    return Response(answer.model_dump_json(), media_type="application/json")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: 200 whenever the process can answer."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorResponse}})
async def readyz(state: StateDep) -> Health:
    """Readiness: 200 once the model is loaded and warmed up, 503 before and while draining."""
    state.require_ready()
    return Health(status="ready")


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/model", response_model=ModelInfo, responses={503: {"model": ErrorResponse}})
async def model_info(state: StateDep) -> ModelInfo:
    """What is being served: variant, runtime, architecture and the build's measured metrics."""
    if state.manifest is None or state.engine is None:
        raise NotReady("model is loading")
    m = state.manifest
    return ModelInfo(
        variant=m.variant,
        runtime=state.runtime,
        device=state.engine.device,
        execution=state.engine.describe(),
        task=m.task,
        architecture=m.architecture,
        num_classes=m.num_classes,
        input_size=m.preprocess.crop_size,
        model_sha256=state.model_sha256,
        threads=state.settings.threads,
        engine_workers=state.settings.engine_workers,
        jpeg_decode=state.settings.jpeg_decode,
        max_batch_size=state.settings.max_batch_size,
        metrics=m.metrics,
        source_weights=m.source_weights,
    )
