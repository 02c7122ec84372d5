"""HTTP plumbing around the routes: body-size guard, request metrics, the one JSON error shape."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.errors import PayloadTooLarge, ServiceError, error_body
from service.metrics import Metrics

log = logging.getLogger("service.middleware")
# nginx's status for "the client closed the connection before the answer": it is not a
# server error, and counting it apart keeps the 5xx rate honest.
CLIENT_CLOSED_REQUEST = 499
_CLOSE = (b"connection", b"close")


def error_response(
    status: int, code: str, message: str, path: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response with :func:`~service.errors.error_body` for a request to ``path``."""
    body = error_body(status, code, message, path)
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` without reading them into memory.

    A declared Content-Length over the limit is answered 413 before a byte is read; a chunked
    body is counted as it streams and the read fails with PayloadTooLarge at the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                response = error_response(
                    413,
                    PayloadTooLarge.code,
                    f"body is {int(value)} bytes; the limit is {limit}",
                    scope["path"],
                )
                await response(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """``requests_total{route,status}``, ``request_duration_seconds{route}``, in-flight gauge.

    While ``draining()`` every response also carries ``Connection: close``, so keep-alive
    clients move to a fresh connection (to another pod, behind a load balancer) before the
    server stops listening, rather than holding one it must close under them.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: list[BaseRoute],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.draining():
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.inflight.dec()
            route = getattr(scope.get("route"), "path", None)
            # A request refused before routing (413 on its Content-Length) is labelled with the
            # route it would have reached; unknown paths share one label so scanners can't blow
            # up cardinality.
            label = route or self._route_of(scope)
            self.metrics.requests_total.labels(route=label, status=str(status)).inc()
            self.metrics.request_duration.labels(route=label).observe(time.perf_counter() - start)

    def _route_of(self, scope: Scope) -> str:
        for candidate in self.routes:
            if candidate.matches(scope)[0] is Match.FULL:
                return str(getattr(candidate, "path", "unmatched"))
        return "unmatched"


def install_middleware(
    app: FastAPI, settings: Settings, metrics: Metrics, draining: Callable[[], bool]
) -> None:
    """Body limit innermost, metrics outermost (so 413s are counted too).

    The metrics' ``route`` labels are the paths of the app's routes.
    """
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        MetricsMiddleware, metrics=metrics, routes=app.router.routes, draining=draining
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one error shape; never leak internals in a 500."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status_code >= 500 and exc.status_code != 503:  # ours to fix, not the client's
            log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.message)
        return error_response(exc.status_code, exc.code, exc.message, request.url.path, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return error_response(
            422, "validation_error", details or "invalid request", request.url.path
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(
            exc.status_code, code, message, request.url.path, dict(exc.headers or {})
        )

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return error_response(
            CLIENT_CLOSED_REQUEST,
            "client_closed_request",
            "the client closed the connection",
            request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error", request.url.path)
