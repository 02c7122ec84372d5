"""HTTP routes: /predict, /healthz, /readyz, /metrics, /model.

:func:`add_routes` puts them on the app's own router. Handlers take the ``Request`` and read
what they need from it (the state, ``top_k``) instead of through FastAPI dependencies and
parameters: that, with no included router to match through, measured 0.05 to 0.1 ms less per
request on the project's CPU (docs/loadtest.md, "Request path").
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.build_info import build_info
from service.errors import (
    InvalidInput,
    InvalidParameter,
    MissingFile,
    NotReady,
    UnsupportedMediaType,
)
from service.imaging import MEDIA_TYPES
from service.intake import decode_and_run, receive_body
from service.postprocess import require_finite, top_k_predictions
from service.schemas import ErrorResponse, Health, ModelInfo, PredictResponse, Timing
from service.state import service_state

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 408, 413, 415, 422, 503)
}
TOP_K_MAX = 1000
IMAGE_MEDIA_TYPES = sorted(set(MEDIA_TYPES.values()))
_PREDICT_OPENAPI = {
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": "Labels to return (default: TOP_K).",
            "schema": {"type": "integer", "minimum": 1, "maximum": TOP_K_MAX},
        }
    ],
    "requestBody": {
        "required": True,
        "description": "One image in a format the service decodes (any other image/* "
        "type is read by its content too).",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary", "minLength": 1}},
                    "required": ["file"],
                },
                "encoding": {"file": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}},
            },
            **{
                media: {"schema": {"type": "string", "format": "binary", "minLength": 1}}
                for media in IMAGE_MEDIA_TYPES
            },
        },
    },
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


def requested_top_k(request: Request, default: int) -> int:
    """The ``top_k`` query parameter: an integer from 1 to TOP_K_MAX, else 422."""
    raw = request.query_params.get("top_k")
    if raw is None:
        return default
    short_digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(TOP_K_MAX))
    k = int(raw) if short_digits else 0
    if not 1 <= k <= TOP_K_MAX:
        raise InvalidParameter(f"query.top_k: must be an integer from 1 to {TOP_K_MAX}")
    return k


async def predict(request: Request) -> Response:
    """Classify one image: multipart field `file`, or a raw image/* body."""
    state = service_state(request)
    # While draining, requests are still served: routers may send a few before they notice.
    if not state.ready or state.batcher is None or state.manifest is None:
        raise NotReady("model is not ready")
    start = time.perf_counter()
    manifest = state.manifest
    top_k = requested_top_k(request, state.settings.top_k)
    data = await receive_body(state, lambda: read_image_bytes(request))
    async with state.batcher.admit():
        decoded, (result,) = await decode_and_run([data], state)
    post_start = time.perf_counter()
    require_finite(result.logits)
    predictions = top_k_predictions(result.logits, manifest.labels, top_k)
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


async def healthz() -> Health:
    """Liveness: 200 whenever the process can answer."""
    return Health(status="ok")


async def readyz(request: Request) -> Health:
    """Readiness: 200 once the model is loaded and warmed up, 503 before and while draining."""
    service_state(request).require_ready()
    return Health(status="ready")


async def metrics(request: Request) -> Response:
    """Prometheus exposition."""
    registry = service_state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def model_info(request: Request) -> ModelInfo:
    """What is being served: variant, runtime, architecture and the build's measured metrics."""
    state = service_state(request)
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
        build=build_info(state.runtime),
    )


def add_routes(router: APIRouter) -> None:
    """Put these routes on ``router``: the app's own (``app.router``), since FastAPI matches
    the routes of a router included with ``include_router`` twice per request."""
    router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        # The answer is built as a PredictResponse (validated once, there) and encoded by
        # pydantic-core straight to JSON: FastAPI's response_model would dump, validate and
        # serialize it a second time on every request.
        response_model=None,
        responses={200: {"model": PredictResponse}, **_ERRORS},
        openapi_extra=_PREDICT_OPENAPI,
    )
    router.add_api_route("/healthz", healthz, methods=["GET"], response_model=Health)
    not_ready: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse}}
    router.add_api_route(
        "/readyz", readyz, methods=["GET"], response_model=Health, responses=not_ready
    )
    router.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    router.add_api_route(
        "/model", model_info, methods=["GET"], response_model=ModelInfo, responses=not_ready
    )
