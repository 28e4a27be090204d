"""Events in, predictions out: ``POST /pubsub`` for Pub/Sub push and Eventarc CloudEvents.

A push subscription (or an Eventarc trigger on a topic, which delivers the same envelope as
a binary-mode CloudEvent) posts ``{"message": {"data": BASE64, "messageId": ...}, ...}``.
``data`` holds one row (an object), a list of rows, or a ``/predict`` body; it is validated
and predicted exactly as ``POST /predict`` does, with the message id as the request id.

- The predictions are published to ``NB2PROD_RESULT_TOPIC`` (``projects/P/topics/T``, or
  ``T`` with ``GOOGLE_CLOUD_PROJECT``) with the attributes ``nb2prod_message_id`` and
  ``model_version``; then the message is acknowledged (204).
- A message that can never score (bad envelope, bad base64 or JSON, rows that fail
  validation or that the model code refuses) is acknowledged too, so Pub/Sub never
  redelivers it forever: it is logged, and published to ``NB2PROD_DEAD_LETTER_TOPIC``
  when set, with the reason in the ``nb2prod_error`` attribute.
- A result that can't be published (the Pub/Sub API is unreachable) answers 503, so Pub/Sub
  retries the message later.

Publishing uses Pub/Sub's REST API with the standard library (``PUBSUB_EMULATOR_HOST`` for
the emulator, else the metadata server's token), so the image needs no gRPC client.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from .request_body import BodyError, PredictBodyParser
from .request_models import ROW_SOURCES

__all__ = ["PublishError", "Publisher", "install_pubsub"]

logger = logging.getLogger("nb2prod.service")

RESULT_TOPIC_ENV = "NB2PROD_RESULT_TOPIC"
DEAD_LETTER_TOPIC_ENV = "NB2PROD_DEAD_LETTER_TOPIC"
_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts"
_METADATA_TOKEN_URL = _METADATA + "/default/token"  # the URL of a token, not a token
#: Seconds a publish may take before the message is left for Pub/Sub to redeliver.
PUBLISH_TIMEOUT_SECONDS = 10.0

PredictRows = Callable[[FastAPI, Any, Sequence[Sequence[Any]], str], list[Any]]


class PublishError(RuntimeError):
    """The Pub/Sub API did not take a message (unreachable, refused)."""


class BadMessage(ValueError):
    """A message that can never score: acknowledged, logged, dead-lettered."""


class Publisher:
    """Publishes to one topic through Pub/Sub's REST API (``topics.publish``)."""

    def __init__(self, topic: str) -> None:
        if "/" not in topic:
            project = os.environ.get("GOOGLE_CLOUD_PROJECT", "")
            topic = f"projects/{project}/topics/{topic}"
        self.topic = topic
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        base = f"http://{emulator}" if emulator else "https://pubsub.googleapis.com"
        self.url = f"{base}/v1/{topic}:publish"
        self.emulated = bool(emulator)
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def publish(self, data: bytes, attributes: dict[str, str]) -> None:
        """Publish one message; PublishError when the API does not take it."""
        body = {"messages": [{"data": base64.b64encode(data).decode(), "attributes": attributes}]}
        headers = {"Content-Type": "application/json"}
        if not self.emulated:
            headers["Authorization"] = f"Bearer {self._access_token()}"
        request = urllib.request.Request(  # noqa: S310 - the Pub/Sub API or its emulator
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=PUBLISH_TIMEOUT_SECONDS) as response:  # noqa: S310
                response.read()
        except OSError as err:
            raise PublishError(f"publishing to {self.topic} failed: {err}") from err

    def _access_token(self) -> str:
        """The service account's token from the metadata server, cached until near expiry."""
        with self._lock:
            if self._token is None or self._token[1] < time.monotonic() + 60:
                request = urllib.request.Request(  # noqa: S310 - the metadata server
                    _METADATA_TOKEN_URL, headers={"Metadata-Flavor": "Google"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                        token = json.loads(response.read())
                except OSError as err:
                    raise PublishError(f"no access token from the metadata server: {err}") from err
                expires = time.monotonic() + float(token.get("expires_in", 300))
                self._token = (str(token["access_token"]), expires)
            return self._token[0]


def _topic(name: str) -> Publisher | None:
    topic = os.environ.get(name, "").strip()
    return Publisher(topic) if topic else None


def _message(envelope: Any, headers: Any) -> tuple[str, bytes]:
    """(message id, the decoded data) of a push envelope; BadMessage when it is not one."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        raise BadMessage("not a Pub/Sub push envelope: no `message` object")
    message = envelope["message"]
    message_id = str(
        message.get("messageId") or message.get("message_id") or headers.get("ce-id") or ""
    )
    try:
        data = base64.b64decode(str(message.get("data", "")), validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadMessage(f"message.data is not base64: {err}") from err
    if not data.strip():
        raise BadMessage("message.data is empty")
    return message_id, data


def _predict_body(data: bytes) -> bytes:
    """``data`` as a ``/predict`` body: one row, a list of rows, or already a body."""
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadMessage(f"message.data is not JSON: {err}") from err
    if isinstance(payload, dict) and any(source in payload for source in ROW_SOURCES):
        return data
    rows = payload if isinstance(payload, list) else [payload]
    return json.dumps({"instances": rows}).encode()


def install_pubsub(
    app: FastAPI,
    parser: PredictBodyParser,
    predict_rows: PredictRows,
    model_version: str,
    count_predictions: Callable[[int], None],
) -> None:
    """Add ``POST /pubsub`` (see the module docstring)."""
    results, dead = _topic(RESULT_TOPIC_ENV), _topic(DEAD_LETTER_TOPIC_ENV)

    def handle(predictor: Any, body: bytes, headers: Any, request_id: str) -> Response:
        message_id = request_id
        data = b""
        try:
            try:
                envelope = json.loads(body)
            except (ValueError, UnicodeDecodeError) as err:
                raise BadMessage(f"the body is not JSON: {err}") from err
            message_id, data = _message(envelope, headers)
            message_id = message_id or request_id
            rows = parser.parse_large(_predict_body(data))
            predictions = predict_rows(app, predictor, rows, message_id)
            count_predictions(len(rows))  # nb2prod_predictions_total, as /predict counts
        except (BadMessage, BodyError, ValueError, TypeError, KeyError) as err:
            reason = _reason(err)
            logger.warning(
                "pubsub message %s not scored (acknowledged): %s",
                message_id,
                reason,
                extra={"json_fields": {"requestId": request_id, "messageId": message_id}},
            )
            if dead is not None:
                attributes = {"nb2prod_message_id": message_id, "nb2prod_error": reason[:1000]}
                dead.publish(data or body, attributes)
            return Response(status_code=204)
        if results is not None:
            result = {"predictions": predictions, "model_version": model_version}
            results.publish(
                json.dumps(result).encode(),
                {"nb2prod_message_id": message_id, "model_version": model_version},
            )
        return Response(status_code=204)

    @app.post("/pubsub", tags=["model"], status_code=204)
    async def pubsub(request: Request) -> Response:
        """Pub/Sub push (and Eventarc): predict the rows in ``message.data``; the predictions go
        to ``NB2PROD_RESULT_TOPIC``. A message that can't score is acknowledged and dead-lettered
        (``NB2PROD_DEAD_LETTER_TOPIC``); 503 when a topic can't be reached (Pub/Sub retries)."""
        predictor = app.state.predictor
        if predictor is None:
            return Response(status_code=503)
        body = await request.body()
        request_id: str = request.scope["state"]["request_id"]
        try:
            return await run_in_threadpool(handle, predictor, body, request.headers, request_id)
        except PublishError as err:
            logger.warning("%s; Pub/Sub will redeliver the message", err)
            return Response(status_code=503)


def _reason(err: Exception) -> str:
    if isinstance(err, BodyError):
        return f"invalid rows: {json.dumps(err.detail, default=str)[:800]}"
    if isinstance(err, BadMessage):
        return str(err)
    return f"{type(err).__name__}: {err}"
