"""Request context as a plain ASGI middleware: request id, access log line, request metrics.

Also where a request's end is classified for the metrics: a client that hangs up before its
body arrived is ``499`` (nginx's "client closed request"), not a server error.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import http_request_fields, trace_fields
from .metrics import ServiceMetrics

__all__ = ["CLIENT_CLOSED_REQUEST", "RequestContextMiddleware", "PredictRoute"]

logger = logging.getLogger("nb2prod.service")
access_logger = logging.getLogger("nb2prod.access")

#: The status recorded (never sent) when the client disconnected before it was answered.
CLIENT_CLOSED_REQUEST = 499

_JSON = "application/json"
_REQUEST_ID_MAX = 200


def _header_value(raw: bytes) -> str:
    return raw.decode("latin-1")


def _route_label(scope: Scope, known_paths: Collection[str]) -> str:
    """The metrics ``path`` label: the route template, so that label values stay bounded.

    FastAPI records its own routes in ``scope["route"]``; the few plain Starlette routes (docs)
    have fixed paths, so a known path is used. Anything else (a 404, or a 413 answered before
    routing) is "unmatched": a client must not be able to mint label values.
    """
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    path = str(scope["path"])
    return path if path in known_paths else "unmatched"


class PredictRoute(Route):
    """A plain Starlette route that records itself in the scope as FastAPI's routes do."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


class RequestContextMiddleware:
    """Request id, access log line and request metrics, as a plain ASGI middleware.

    ``X-Request-ID`` is echoed when the client sent a sane one, else a uuid4 hex is generated;
    it is put in ``scope["state"]["request_id"]`` and on every response. An exception that
    escapes the app becomes a logged (with traceback) 500.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        trace_project: str | None,
        known_paths: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.trace_project = trace_project
        # Read once, on the first request: routes are all added by then.
        self._read_known_paths = known_paths
        self._known_paths: Collection[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = user_agent = trace_header = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = _header_value(value)
            elif key == b"user-agent":
                user_agent = _header_value(value)
            elif key == b"x-cloud-trace-context":
                trace_header = _header_value(value)
        if not request_id or len(request_id) > _REQUEST_ID_MAX or not request_id.isprintable():
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # Nobody is left to answer; not the service's fault, so not a 500.
            status = CLIENT_CLOSED_REQUEST
        except Exception:
            status = 500
            logger.exception(
                "unhandled error in %s %s",
                scope["method"],
                scope["path"],
                extra={"json_fields": self._context(request_id, trace_header)},
            )
            if response_started:
                raise  # too late for a response: let the server drop the connection
            await _send_plain(send, 500, b'{"detail":"Internal Server Error"}', id_header)
        finally:
            elapsed = time.perf_counter() - started_at
            self.metrics.observe_request(
                scope["method"], _route_label(scope, self._paths()), status, elapsed
            )
            level = (
                logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
            )
            if access_logger.isEnabledFor(level):
                self._log_access(
                    scope, level, status, elapsed, request_id, user_agent, trace_header
                )

    def _paths(self) -> Collection[str]:
        if self._known_paths is None:
            self._known_paths = frozenset(self._read_known_paths())
        return self._known_paths

    def _context(self, request_id: str, trace_header: str | None) -> dict[str, Any]:
        return {"requestId": request_id, **trace_fields(trace_header, self.trace_project)}

    def _log_access(
        self,
        scope: Scope,
        level: int,
        status: int,
        elapsed: float,
        request_id: str,
        user_agent: str | None,
        trace_header: str | None,
    ) -> None:
        query = scope.get("query_string") or b""
        url = scope["path"] + ("?" + query.decode("latin-1") if query else "")
        client = scope.get("client")
        fields = self._context(request_id, trace_header)
        fields.update(
            http_request_fields(
                method=scope["method"],
                url=url,
                status=status,
                latency_seconds=elapsed,
                user_agent=user_agent,
                remote_ip=client[0] if client else None,
            )
        )
        # makeRecord + handle instead of .log(): skips the caller lookup (a stack walk).
        record = access_logger.makeRecord(
            access_logger.name,
            level,
            "",
            0,
            f"{scope['method']} {url} {status}",
            (),
            None,
            extra={"json_fields": fields},
        )
        access_logger.handle(record)


async def _send_plain(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", _JSON.encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
