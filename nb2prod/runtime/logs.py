"""Structured logs: one JSON object per line on stdout, in the shape Cloud Logging parses.

Every record has ``severity``, ``message``, ``time`` and ``logger``. Extra structured fields go in
``extra={"json_fields": {...}}`` (the name google-cloud-logging uses), e.g. ``httpRequest`` for
access lines and ``logging.googleapis.com/trace`` to join a request's trace.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "http_request_fields", "trace_fields"]

#: uvicorn's loggers; their records are re-routed through the root JSON handler.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
#: uvicorn's access log is replaced by the runtime's own access line (with ``httpRequest``).
UVICORN_ACCESS_LOGGER = "uvicorn.access"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (exception tracebacks go into ``message``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            # In the message, so that Cloud Error Reporting finds the stack trace.
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": message,
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.timezone.utc).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "json_fields", None)
        if fields:
            entry.update(fields)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that looks up ``sys.stdout`` on every write.

    It follows redirections (pytest's capture, a test harness) instead of holding on to the
    stream that was current when logging was configured.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stdout


def configure_logging(level: int | str | None = None) -> None:
    """Send all logs (the app's and uvicorn's) to stdout as JSON lines. Safe to call repeatedly.

    The level defaults to ``$LOG_LEVEL`` or INFO. Call it again after anything that reconfigures
    logging (uvicorn does when it starts) to take the uvicorn loggers back.
    """
    root = logging.getLogger()
    if not any(isinstance(handler, _StdoutHandler) for handler in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO").upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger(UVICORN_ACCESS_LOGGER)
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


def trace_fields(header: str | None, project: str | None) -> dict[str, str]:
    """The Cloud Logging trace field for an ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` header."""
    if not header or not project:
        return {}
    trace_id = header.split("/", 1)[0].split(";", 1)[0].strip()
    if not trace_id:
        return {}
    return {"logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}"}


def http_request_fields(
    *,
    method: str,
    url: str,
    status: int,
    latency_seconds: float,
    user_agent: str | None,
    remote_ip: str | None,
) -> dict[str, Any]:
    """The ``httpRequest`` structure of a Cloud Logging access entry."""
    request: dict[str, Any] = {
        "requestMethod": method,
        "requestUrl": url,
        "status": status,
        "latency": f"{latency_seconds:.6f}s",
    }
    if user_agent:
        request["userAgent"] = user_agent
    if remote_ip:
        request["remoteIp"] = remote_ip
    return {"httpRequest": request}
