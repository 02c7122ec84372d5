"""HTTP/1.1 connection limits that live below the app: head size and time, lingering close.

uvicorn's httptools protocol accepts a request head of any size and for any time, and closes a
connection with the request body still unread (the kernel then answers the client's remaining
bytes with a reset, which can destroy the response before the client reads it). This subclass:

- refuses a request head (request line + headers) over ``max_header_bytes`` with 431, counted as
  the bytes arrive, so neither memory nor parsing time grows with what a client sends;
- answers 408 when a started head does not complete within ``header_timeout`` seconds, and
  closes a new connection that sends nothing for that long;
- answers a response sent before the body is in (413 on Content-Length, 503 before admission,
  408 on a stalled body) with ``Connection: close`` and a *lingering close*: the response is
  flushed, the write side shut, and the rest of the body read and dropped for at most
  ``linger_seconds`` and ``linger_bytes`` before the socket is closed;
- writes its own refusals (framing errors included) in the service's JSON error shape;
- on shutdown, closes a connection only between requests (:meth:`HttpProtocol.shutdown`;
  the listening socket's part is :mod:`service.graceful`'s).

``densenet serve`` builds it from the settings with :func:`http_protocol`; with the uvicorn CLI,
``--http service.protocol:HttpProtocol`` uses the settings' defaults.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.config import Settings
from service.errors import error_body

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
_DEFAULTS = Settings.model_fields


class _LingeringTransport:
    """The transport as one request's cycle sees it: ``close()`` lingers if its body is unread."""

    def __init__(self, protocol: HttpProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._transport = protocol.transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        if self._cycle.more_body and not self._transport.is_closing():
            self._protocol.linger()
        else:
            self._transport.close()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads and lingering close."""

    # A head is a request line and headers; browsers and gRPC-web stay far below 16 KiB, and
    # Envoy's default limit is 60 KiB.
    max_header_bytes: ClassVar[int] = _DEFAULTS["max_header_bytes"].default
    header_timeout: ClassVar[float] = _DEFAULTS["header_timeout_seconds"].default
    # Enough for a client on a fast link to finish sending a body we will not read, short
    # enough that a client that never stops cannot keep the connection.
    linger_seconds: ClassVar[float] = 2.0
    linger_bytes: ClassVar[int] = _DEFAULTS["max_body_bytes"].default
    # On shutdown an idle connection stays open until it has been idle this long: a client
    # that has just read an answer and has another request sends it well within this, and it
    # is served (with Connection: close) instead of meeting a closed socket. A connection idle
    # longer is at no more risk than at any keep-alive timeout.
    shutdown_idle_seconds: ClassVar[float] = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # from a request's first byte to the end of its headers
        self._in_body = False  # from the end of its headers to the end of its body
        self._head_bytes = 0  # bytes since the last request ended (or the connection began)
        self._idle_since = 0.0
        self._stopping = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discarded = 0

    # Connection lifecycle
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discard(data)
            return
        self._unset_keepalive_if_required()
        while data:
            if self._in_body:
                # A head pipelined behind this body in the same read is counted from the
                # next read on (pipelining only: clients send one request at a time).
                self._feed(data)
                return
            # Outside a body every byte belongs to a head, so a head is fed at most what is
            # left of MAX_HEADER_BYTES: the limit holds at its byte whatever the read size.
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self.refuse(
                    431,
                    "header_too_large",
                    f"request line and headers exceed {self.max_header_bytes} bytes "
                    "(MAX_HEADER_BYTES)",
                )
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            if not self._feed(piece):
                return

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False once the connection is being closed."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No WebSocket routes: an upgrade request is answered as plain HTTP.
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            self.logger.info("malformed HTTP request: %s", exc)
            self.refuse(400, "bad_request", f"malformed HTTP request: {exc}")
            return False
        return not self.transport.is_closing()

    # Parser callbacks
    def on_message_begin(self) -> None:
        if self._lingering:
            return
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        if self._lingering:
            return
        self._in_head = False
        self._in_body = True
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:
            return  # an upgrade: no new cycle
        if self._stopping:  # shutting down: this request is the connection's last
            cycle.keep_alive = False
        cycle.transport = _LingeringTransport(self, cycle)  # type: ignore[assignment]
        send = cycle.send

        async def send_closing_early(message: Any) -> None:
            # Answered before the body is in: the connection cannot be reused.
            if message["type"] == "http.response.start" and cycle.more_body:
                cycle.keep_alive = False
            await send(message)

        cycle.send = send_closing_early  # type: ignore[method-assign]

    def on_message_complete(self) -> None:
        if self._lingering:  # the unread body is all in: close cleanly now
            self.transport.close()
            return
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._idle_since = self.loop.time()

    # Graceful shutdown
    def shutdown(self) -> None:
        """Called by uvicorn's shutdown: finish what is on the connection, then close it.

        A request being answered or arriving (its head started) is the connection's last: its
        response carries ``Connection: close``. uvicorn's own ``shutdown`` closes an idle
        connection at once, and a request the client had just sent on it then gets a reset;
        here an idle connection closes once it has been idle ``shutdown_idle_seconds``.
        """
        self._stopping = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        elif not self._in_head:
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.transport.is_closing() or self._in_head or self._in_body:
            return  # a request arrived: it is answered, then the connection closes
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return
        left = self._idle_since + self.shutdown_idle_seconds - self.loop.time()
        if left > 0:
            self.loop.call_later(left, self._close_when_idle)
        else:
            self.transport.close()

    # Refusals and lingering close
    def send_400_response(self, msg: str) -> None:
        self.refuse(400, "bad_request", msg)

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` in the service's JSON error shape and close the connection."""
        body = json.dumps(error_body(status, code, message)).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self._in_head = False
        self._cancel_head_timer()
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def linger(self) -> None:
        """Flush the response, shut the write side, drop what the client still sends, close."""
        self._lingering = True
        self._cancel_head_timer()
        try:
            self.transport.write_eof()
        except (OSError, RuntimeError):
            self.transport.close()
            return
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(self.linger_seconds, self.transport.close)

    def _discard(self, data: bytes) -> None:
        self._discarded += len(data)
        if self._discarded > self.linger_bytes:
            self.transport.close()
            return
        try:  # parsed only to see where the body ends (on_message_complete)
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.transport.close()

    # Head timer
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._in_head:  # a new connection that never sent a byte
            self.transport.close()
            return
        self.refuse(
            408,
            "request_timeout",
            f"request headers did not arrive within {self.header_timeout:g} s "
            "(HEADER_TIMEOUT_SECONDS)",
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None


def http_protocol(settings: Settings) -> type[HttpProtocol]:
    """:class:`HttpProtocol` with the limits ``settings`` asks for."""
    return type(
        "HttpProtocol",
        (HttpProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout": settings.header_timeout_seconds,
            "linger_bytes": settings.max_body_bytes,
        },
    )
