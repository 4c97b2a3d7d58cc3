"""What one HTTP peer can make the server hold: body bytes per route, header bytes, header time.

- `BodyLimit`, an ASGI middleware: a request body over its route's bound is refused with 413,
  before a byte of it is read when Content-Length says so, else as soon as the running count of
  received bytes passes the bound (chunked bodies too). The app never sees more than the bound.
- `server_options(http)`: uvicorn's keep-alive timeout, header size bound and connection limit,
  and its HTTP protocol with a header-read timeout (uvicorn has none of its own): a peer that does
  not finish a request's headers within ``header_timeout`` seconds of its first byte (or of
  connecting) is dropped, so slow-header clients cannot pile up.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, MutableMapping

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from dicomd.config import HttpConfig
from dicomd.errors import TooLarge

LOGIN_FORM_BYTES = 16 * 1024
IMPORT_PATH = "/data/services/import"
LOGIN_PATH = "/data/services/auth"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def body_bound(path: str, http: HttpConfig) -> int | None:
    """The most body bytes a request to ``path`` may carry (None: no bound)."""
    if path.startswith("/REST/"):
        path = "/data/" + path[len("/REST/"):]
    path = path.rstrip("/") or "/"
    if path == IMPORT_PATH:
        return http.max_upload_bytes or None
    if path == LOGIN_PATH:
        return LOGIN_FORM_BYTES
    return http.max_request_bytes


class BodyLimit:
    """Pure ASGI middleware enforcing `body_bound` (see the module docstring). A refused request's
    response closes the connection, so its unread body is never read either."""

    def __init__(self, app: Callable[..., Awaitable[None]], http: HttpConfig) -> None:
        self.app = app
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bound = body_bound(scope["path"], self.http)
        if bound is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > bound:
            await _refuse(send, f"request body of {declared} bytes is over this path's limit of {bound} bytes")
            return
        seen = 0
        over = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                raise TooLarge(f"request body is over this path's limit of {bound} bytes")
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound:
                    over = True
                    raise TooLarge(f"request body is over this path's limit of {bound} bytes")
            return message

        async def closing(message: Message) -> None:
            if over and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, text: str) -> None:
    body = text.encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


# ---------------------------------------------------------------- uvicorn


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a bound on the time a request's headers may take to arrive.

    The clock starts when the connection is made, and for later requests on a kept-alive
    connection at their first byte; it stops when h11 has read the whole request head.
    """

    header_timeout: float = 15.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._start_header_clock()  # (part of) a request head, not complete yet
        else:
            self._stop_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_options(http: HttpConfig) -> dict[str, Any]:
    """Keyword arguments for uvicorn.Config bounding what peers can hold."""
    protocol = type("BoundedH11Protocol", (HeaderTimeoutH11,), {"header_timeout": http.header_timeout})
    return {
        "http": protocol,
        "timeout_keep_alive": http.keep_alive_timeout,
        "h11_max_incomplete_event_size": http.max_header_bytes,
        "limit_concurrency": http.max_connections,
    }
