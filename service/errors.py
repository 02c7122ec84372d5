"""Domain exceptions.

A ``ServiceError`` maps to the HTTP status its docstring names and to the one JSON error shape
(the handlers are in ``middleware.py``); a ``ConfigurationError`` stops start-up or a build
with one line and never reaches a client.
"""

from __future__ import annotations

from typing import Any

OIP_PREFIX = "/v2"


def error_body(status: int, code: str, message: str, path: str = "") -> dict[str, Any]:
    """The error body for a request to ``path``.

    ``{"error": {"code", "message", "status"}}`` everywhere but under ``/v2``, where the Open
    Inference Protocol's ``{"error": "<message>"}`` is what its clients parse.
    """
    if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
        return {"error": message}
    return {"error": {"code": code, "message": message, "status": status}}


class ServiceError(Exception):
    """Base class for errors a client can be told about."""

    status_code = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    """Not an image, corrupt, truncated, or a malformed request. HTTP_400"""

    status_code = 400
    code = "invalid_input"


class InvalidParameter(ServiceError):
    """A query parameter outside what the API documents for it. HTTP_422"""

    status_code = 422
    code = "validation_error"


class MissingFile(ServiceError):
    """A multipart request without the ``file`` field. HTTP_400"""

    status_code = 400
    code = "missing_file"


class UnsupportedMediaType(ServiceError):
    """Content type or image format the service does not decode. HTTP_415"""

    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    """Body over MAX_BODY_BYTES, a JSON part over MAX_JSON_BYTES, or more images than
    MAX_IMAGES_PER_REQUEST. HTTP_413"""

    status_code = 413
    code = "payload_too_large"


class ImageTooLarge(ServiceError):
    """Declared image dimensions over MAX_IMAGE_PIXELS (decompression bomb guard). HTTP_413"""

    status_code = 413
    code = "image_too_large"


class NonFiniteOutput(ServiceError):
    """The model's outputs for an image are NaN or infinite: the artifact, not the request,
    is at fault, and no such number is ever written as JSON. HTTP_500"""

    code = "non_finite_output"


class ModelNotFound(ServiceError):
    """An Open Inference Protocol model name or version this server does not serve. HTTP_404"""

    status_code = 404
    code = "model_not_found"


class RequestTimeout(ServiceError):
    """The request body did not arrive within BODY_TIMEOUT_SECONDS. HTTP_408"""

    status_code = 408
    code = "request_timeout"
    headers = {"Connection": "close"}


class Overloaded(ServiceError):
    """The bounded request queue is full. HTTP_503 with Retry-After"""

    status_code = 503
    code = "overloaded"
    headers = {"Retry-After": "1"}


class NotReady(ServiceError):
    """Model not loaded yet, or the server is draining. HTTP_503"""

    status_code = 503
    code = "not_ready"
    headers = {"Retry-After": "1"}


class ConfigurationError(Exception):
    """Start-up cannot proceed: unknown variant/runtime, bad settings. Never reaches a client."""


class UnknownName(ConfigurationError, ValueError):
    """An unknown variant or runtime name; the message lists the known ones."""


class ArtifactNotFound(ConfigurationError):
    """The selected variant/runtime has no artifact under MODEL_DIR."""


class RuntimeUnavailable(ConfigurationError):
    """The runtime cannot run here (e.g. TensorRT without CUDA, a missing package)."""


class IncompatibleArtifact(ConfigurationError):
    """A manifest written in a format this version cannot read (e.g. a newer schema)."""


class InvalidArtifact(ConfigurationError):
    """A manifest that does not parse or contradicts itself, or a file entry that points
    outside its variant directory."""


class ArtifactTampered(ConfigurationError):
    """A weights file whose sha256 is not the one its manifest (or MODEL_SHA256) records."""
