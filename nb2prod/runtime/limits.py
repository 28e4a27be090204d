"""Request size limits: what one request may cost the service, enforced before it costs it.

One oversized POST used to be read whole into memory and could OOM-kill a container. The
:class:`BodyLimitMiddleware` answers 413 before reading a body whose ``Content-Length`` is over
``NB2PROD_MAX_BODY_BYTES``, and cuts a chunked body off as soon as it passes the limit. It is a
plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so bodies stream through it
and nothing is buffered here. ``NB2PROD_MAX_ROWS`` bounds the rows of one ``/predict`` call
(``request_body.py``), and bodies over ``NB2PROD_OFFLOAD_BYTES`` are parsed off the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "Limits"]

_MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """The request limits of one service; :meth:`from_env` reads them."""

    #: Larger bodies get 413. Worst-case body memory is about concurrency x this.
    max_body_bytes: int = 4 * _MiB
    #: More rows in one /predict call get 413.
    max_rows: int = 10_000
    #: Larger bodies are decoded and validated in a worker thread, in short steps.
    offload_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """``NB2PROD_MAX_BODY_BYTES``, ``NB2PROD_MAX_ROWS``, ``NB2PROD_OFFLOAD_BYTES``.

        A value that is not a positive integer raises ``ValueError`` at start-up, naming the
        variable: a typo must not silently leave the service unprotected.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            max_body_bytes=_positive(env, "NB2PROD_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_rows=_positive(env, "NB2PROD_MAX_ROWS", defaults.max_rows),
            offload_bytes=_positive(env, "NB2PROD_OFFLOAD_BYTES", defaults.offload_bytes),
        )


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be a positive integer")
    return value


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


def _too_large_body(limit: int) -> bytes:
    return (
        b'{"detail":"the request body is larger than '
        + str(limit).encode()
        + b' bytes (NB2PROD_MAX_BODY_BYTES)"}'
    )


class BodyLimitMiddleware:
    """413 for bodies over ``max_body_bytes``: at once from Content-Length, else while reading.

    With a Content-Length within the limit, the server (h11) delivers exactly that many bytes,
    so ``receive`` is passed through untouched: the common case costs one header scan.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared: int | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = int(value) if value.isdigit() else None
                break
        if declared is not None:
            if declared > limit:
                await _send_413(send, limit)
                return
            await self.app(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if response_started:
                raise
            await _send_413(send, limit)


async def _send_413(send: Send, limit: int) -> None:
    # No "Connection: close": uvicorn then reads and drops the rest of the body (bounded
    # memory) so the client, still sending, gets to read this answer.
    body = _too_large_body(limit)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
