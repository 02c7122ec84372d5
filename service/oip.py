"""Open Inference Protocol (KServe V2) REST endpoints under ``/v2``, beside ``/predict``.

The model is named ``MODEL_NAME`` (``densenet``) whatever variant a revision serves, so clients
and traffic splits between revisions keep one URL; its one version is the variant
(``/v2/models/densenet/versions/distilled/infer`` pins it, and is a 404 on a revision serving
another). Inputs, exactly one per request:

- ``image``: ``BYTES`` ``[N]``, encoded images (JPEG, PNG, ...), decoded and preprocessed
  exactly as ``/predict`` does; base64 strings in JSON, raw in the binary data extension.
- ``input``: ``FP32`` ``[N, 3, S, S]``, already preprocessed (the manifest's mean, std, size).

Outputs: ``logits`` and ``probabilities``, ``FP32`` ``[N, C]``; with ``parameters:
{"classification": k}`` either becomes ``BYTES`` ``[N, k]`` strings ``"score:index:label"``,
as Triton's classification extension does. Errors are ``{"error": "<message>"}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from service import __version__
from service.errors import OIP_PREFIX, InvalidInput, ModelNotFound, NotReady, PayloadTooLarge
from service.intake import decode_and_run, receive_body
from service.oip_codec import (
    HEADER_LENGTH,
    InferRequest,
    Output,
    Tensor,
    bytes_elements,
    count,
    encode_response,
    finite_array,
    parse_request,
)
from service.postprocess import require_finite, softmax, top_k_indices
from service.state import ServiceState, service_state

EXTENSIONS = ["binary_tensor_data", "classification"]
PLATFORMS = {
    "torch": "pytorch_torch",
    "onnxruntime": "onnxruntime_onnx",
    "tensorrt": "tensorrt_plan",
}
INPUTS = {"image": "BYTES", "input": "FP32"}
OUTPUTS = ("logits", "probabilities")

_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    }
}
_OBJECT: dict[str, Any] = {"content": {"application/json": {"schema": {"type": "object"}}}}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }
    },
    **{code: _ERROR for code in (400, 404, 408, 413, 415, 503)},
}
INFER_DESCRIPTION = (
    "The schema states the JSON form with base64 images, and every request it admits is "
    "served within the size limits (413 above them). Also accepted, though a JSON Schema "
    "cannot tie a length to a header or a shape to "
    "a data count: the binary data extension (Content-Type application/octet-stream, a JSON "
    "header of Inference-Header-Content-Length bytes, then each input's binary_data_size "
    "bytes), and an FP32 input named 'input' of shape [N, 3, S, S], S the model's input side."
)


def infer_openapi(model_name: str, max_images: int, versioned: bool) -> dict[str, Any]:
    """The inference request as OpenAPI can state it (:data:`INFER_DESCRIPTION`)."""
    image = {"type": "string", "format": "byte", "contentMediaType": "image/*", "minLength": 1}
    version = {"type": "string", "description": "the variant served (any other: 404)"}
    # One branch per image count: the shape's one dimension is the number of images.
    counts = [
        {
            "properties": {
                "shape": {"const": [n]},
                "data": {"type": "array", "items": image, "minItems": n, "maxItems": n},
            }
        }
        for n in range(1, max_images + 1)
    ]
    image_input = {
        "type": "object",
        "properties": {
            "name": {"const": "image"},
            "datatype": {"const": "BYTES"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array", "items": image},
            # binary_data_size would say the data follows the JSON header instead.
            "parameters": {"type": "object", "not": {"required": ["binary_data_size"]}},
        },
        "required": ["name", "datatype", "shape", "data"],
        "oneOf": counts,
    }
    output = {
        "type": "object",
        "properties": {
            "name": {"enum": list(OUTPUTS)},
            "parameters": {
                "type": "object",
                "properties": {
                    "classification": {"type": "integer", "minimum": 0},
                    "binary_data": {"type": "boolean"},
                },
            },
        },
        "required": ["name"],
    }
    return {
        "description": INFER_DESCRIPTION,
        "parameters": [
            # Any other name is a 404: this server serves one model.
            {"name": "name", "in": "path", "required": True, "schema": {"enum": [model_name]}},
            *(
                [{"name": "model_version", "in": "path", "required": True, "schema": version}]
                if versioned
                else []
            ),
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "parameters": {
                                "type": "object",
                                "properties": {"binary_data_output": {"type": "boolean"}},
                            },
                            "inputs": {
                                "type": "array",
                                "items": image_input,
                                "minItems": 1,
                                "maxItems": 1,
                            },
                            "outputs": {"type": "array", "items": output},
                        },
                        "required": ["inputs"],
                    }
                },
            },
        },
    }


def _model(state: ServiceState, name: str, model_version: str | None) -> None:
    """404 unless ``name`` (and ``model_version``, if given) is what this server serves."""
    if name != state.settings.model_name:
        raise ModelNotFound(
            f"unknown model {name!r}; this server serves {state.settings.model_name!r}"
        )
    if state.manifest is None:
        raise NotReady("model is loading")
    if model_version is not None and model_version != state.manifest.variant:
        raise ModelNotFound(
            f"model {name!r} has no version {model_version!r}; its version is the variant "
            f"being served, {state.manifest.variant!r}"
        )


async def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and protocol extensions."""
    return {"name": "densenet-serving", "version": __version__, "extensions": EXTENSIONS}


async def server_live() -> dict[str, bool]:
    """Liveness, as /healthz."""
    return {"live": True}


async def server_ready(request: Request) -> dict[str, bool]:
    """Readiness, as /readyz: loaded and warmed up, and not draining."""
    service_state(request).require_ready()
    return {"ready": True}


def _metadata(state: ServiceState, name: str, model_version: str | None) -> dict[str, Any]:
    _model(state, name, model_version)
    m = state.manifest
    assert m is not None
    size = m.preprocess.crop_size
    return {
        "name": name,
        "versions": [m.variant],
        "platform": PLATFORMS.get(state.runtime, state.runtime),
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, 3, size, size]},
        ],
        "outputs": [
            {"name": out, "datatype": "FP32", "shape": [-1, m.num_classes]} for out in OUTPUTS
        ],
    }


async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """Model metadata: versions, platform, inputs and outputs."""
    return _metadata(service_state(request), name, None)


async def model_version_metadata(name: str, model_version: str, request: Request) -> dict[str, Any]:
    """Model metadata of one version (the variant served)."""
    return _metadata(service_state(request), name, model_version)


def _model_ready(state: ServiceState, name: str, model_version: str | None) -> dict[str, Any]:
    _model(state, name, model_version)
    state.require_ready()
    return {"name": name, "ready": True}


async def model_ready(name: str, request: Request) -> dict[str, Any]:
    """200 once the model is ready, 503 before and while draining."""
    return _model_ready(service_state(request), name, None)


async def model_version_ready(name: str, model_version: str, request: Request) -> dict[str, Any]:
    """200 once the model is ready, 503 before and while draining."""
    return _model_ready(service_state(request), name, model_version)


# The inference handlers read their path parameters from the request, as /predict reads its
# query (no per-request parameter solving); their OpenAPI parameters are infer_openapi's.
async def infer(request: Request) -> Response:
    """Classify N images (BYTES) or N preprocessed tensors (FP32) in one request."""
    name = request.path_params["name"]
    return await _infer(request, service_state(request), name, None)


async def infer_version(request: Request) -> Response:
    """Inference on one version (the variant served)."""
    params = request.path_params
    return await _infer(request, service_state(request), params["name"], params["model_version"])


@dataclass(frozen=True)
class _Requested:
    name: str
    classification: int
    binary: bool


async def _infer(
    request: Request, state: ServiceState, name: str, model_version: str | None
) -> Response:
    _model(state, name, model_version)
    if not state.ready or state.batcher is None:
        raise NotReady("model is not ready")
    settings = state.settings
    body = await receive_body(state, request.body)
    parsed = parse_request(body, request.headers.get(HEADER_LENGTH), settings.max_json_bytes)
    tensor = _the_input(parsed, state)
    requested = _requested_outputs(parsed)
    request_id = parsed.header.get("id")
    if "id" in parsed.header and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, not {request_id!r}")
    del parsed  # the rest of the header (whatever else a client sent) is not kept while queued
    async with state.batcher.admit():
        if tensor.datatype == "BYTES":
            decoded, results = await decode_and_run(bytes_elements(tensor), state)
            inputs = decoded.inputs
        else:
            inputs = np.array(finite_array(tensor, "FP32"), dtype=np.float32)
            results = await state.batcher.submit_many(inputs)
    state.metrics.request_images.labels(route=request.scope["route"].path).observe(len(inputs))
    post_start = time.perf_counter()
    logits = np.stack([r.logits for r in results]).astype(np.float32)
    if tensor.datatype == "BYTES":
        require_finite(logits)
    elif not np.isfinite(logits).all():
        raise InvalidInput(
            f"input {tensor.name!r}: the model's outputs for these values are not finite: "
            "they are far outside the range of a preprocessed image"
        )
    assert state.manifest is not None
    header: dict[str, Any] = {"model_name": name, "model_version": state.manifest.variant}
    if request_id is not None:
        header["id"] = request_id
    values = {"logits": logits, "probabilities": softmax(logits).astype(np.float32)}
    outputs = [_output(r, values[r.name], state.manifest.labels) for r in requested]
    content, json_length = encode_response(header, outputs)
    state.metrics.postprocess.observe(time.perf_counter() - post_start)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(json_length)},
    )


def _the_input(parsed: InferRequest, state: ServiceState) -> Tensor:
    """The one input, checked against what the model takes before anything is decoded."""
    if len(parsed.inputs) != 1:
        raise InvalidInput(f"send exactly one input ('image' or 'input'), not {len(parsed.inputs)}")
    tensor = parsed.inputs[0]
    expected = INPUTS.get(tensor.name)
    if expected is None:
        raise InvalidInput(f"unknown input {tensor.name!r}; known: 'image' (BYTES), 'input' (FP32)")
    if tensor.datatype != expected:
        raise InvalidInput(f"input {tensor.name!r} must be {expected}, not {tensor.datatype}")
    assert state.manifest is not None
    size = state.manifest.preprocess.crop_size
    want = [-1] if expected == "BYTES" else [-1, 3, size, size]
    shape = list(tensor.shape)
    if len(shape) != len(want) or any(w not in (-1, d) for d, w in zip(shape, want, strict=True)):
        raise InvalidInput(f"input {tensor.name!r}: shape {shape} is not {want}")
    limit = state.settings.max_images_per_request
    if shape[0] == 0:
        raise InvalidInput(f"input {tensor.name!r} holds no images")
    if shape[0] > limit:
        raise PayloadTooLarge(
            f"{shape[0]} images in one request; the limit is {limit} (MAX_IMAGES_PER_REQUEST)"
        )
    return tensor


def _flag(params: dict[str, Any], name: str, default: bool, where: str) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}{name} must be true or false, not {value!r}")
    return value


def _requested_outputs(parsed: InferRequest) -> list[_Requested]:
    binary_default = _flag(parsed.parameters, "binary_data_output", False, "parameters.")
    if "outputs" not in parsed.header:
        return [_Requested(name, 0, binary_default) for name in OUTPUTS]
    entries = parsed.header["outputs"]
    if not isinstance(entries, list):
        raise InvalidInput("'outputs' must be a list")
    requested = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("name") not in OUTPUTS:
            got = entry.get("name") if isinstance(entry, dict) else entry
            raise InvalidInput(f"outputs[{i}]: unknown output {got!r}; known: {', '.join(OUTPUTS)}")
        params = entry.get("parameters", {})
        if not isinstance(params, dict):
            raise InvalidInput(f"outputs[{i}]: parameters must be an object")
        k = count(params.get("classification", 0))
        if k is None:
            raise InvalidInput(f"outputs[{i}]: classification must be a non-negative integer")
        binary = _flag(params, "binary_data", binary_default, f"outputs[{i}].parameters.")
        requested.append(_Requested(entry["name"], k, binary))
    return requested


def _output(requested: _Requested, values: np.ndarray, labels: list[str]) -> Output:
    if not requested.classification:
        return Output(requested.name, "FP32", values.shape, values, requested.binary)
    k = min(requested.classification, values.shape[1])
    strings = [
        f"{row[i]:f}:{i}:{labels[i]}".encode() for row in values for i in top_k_indices(row, k)
    ]
    return Output(requested.name, "BYTES", (len(values), k), strings, requested.binary)


def add_routes(router: APIRouter, model_name: str, max_images: int) -> None:
    """Put the protocol's routes, under ``/v2``, on ``router`` (the app's own, as
    :func:`service.routes.add_routes` does), for the model ``model_name``."""
    tags: list[str | Enum] = ["Open Inference Protocol"]
    model = f"{OIP_PREFIX}/models/{{name}}"
    version = f"{model}/versions/{{model_version}}"
    found: dict[int | str, dict[str, Any]] = {200: _OBJECT, 404: _ERROR, 503: _ERROR}

    def get(path: str, endpoint: Callable[..., Any], responses: dict[int | str, Any]) -> None:
        router.add_api_route(path, endpoint, methods=["GET"], responses=responses, tags=tags)

    def post(path: str, endpoint: Callable[..., Any]) -> None:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            responses=_INFER_RESPONSES,
            openapi_extra=infer_openapi(model_name, max_images, versioned=path.startswith(version)),
            tags=tags,
        )

    get(OIP_PREFIX, server_metadata, {200: _OBJECT})
    get(f"{OIP_PREFIX}/health/live", server_live, {200: _OBJECT})
    get(f"{OIP_PREFIX}/health/ready", server_ready, {200: _OBJECT, 503: _ERROR})
    get(model, model_metadata, found)
    get(version, model_version_metadata, found)
    get(f"{model}/ready", model_ready, found)
    get(f"{version}/ready", model_version_ready, found)
    post(f"{model}/infer", infer)
    post(f"{version}/infer", infer_version)
