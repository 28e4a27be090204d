"""Events in, predictions out: ``POST /pubsub`` for Pub/Sub push and Eventarc CloudEvents.

Three shapes of request carry the same Pub/Sub message:

- a push subscription posts the envelope ``{"message": {"data": BASE64, "messageId": ...},
  "subscription": ...}``;
- Eventarc (a trigger on ``google.cloud.pubsub.topic.v1.messagePublished``) posts that
  envelope as a binary-mode CloudEvent, with ``ce-id``/``ce-type``/``ce-source`` headers;
- a structured-mode CloudEvent (``Content-Type: application/cloudevents+json``) holds the
  envelope in its ``data`` (or ``data_base64``).

``message.data`` holds one row (an object), a list of rows, or a ``/predict`` body; it is
validated and predicted exactly as ``POST /predict`` does. The request id is the message id,
else the CloudEvent id.

What each answer tells Pub/Sub (a push acknowledges on 102, 200, 201, 202 or 204 and
redelivers on anything else; Eventarc acknowledges on any 2xx):

- 204: done. The predictions were published to ``NB2PROD_RESULT_TOPIC`` (``projects/P/topics/T``,
  or ``T`` with ``GOOGLE_CLOUD_PROJECT``) with the attributes ``nb2prod_message_id`` and
  ``model_version``, or there is no result topic.
- 204 too for a message that can never score (bad envelope or event, an event of another
  type, bad base64 or JSON, rows that fail validation, model code that raises): the same
  message would fail the same way on every redelivery, so it is acknowledged, logged and,
  when ``NB2PROD_DEAD_LETTER_TOPIC`` is set, published there as sent, with the reason in the
  ``nb2prod_error`` attribute.
- 503: try again later. The model is still loading, or a topic can't be reached.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from .request_body import BodyError, PredictBodyParser
from .request_models import ROW_SOURCES

__all__ = ["MESSAGE_PUBLISHED", "PublishError", "Publisher", "install_pubsub"]

logger = logging.getLogger("nb2prod.service")

RESULT_TOPIC_ENV = "NB2PROD_RESULT_TOPIC"
DEAD_LETTER_TOPIC_ENV = "NB2PROD_DEAD_LETTER_TOPIC"
#: The CloudEvent type of a message published to a Pub/Sub topic (what Eventarc delivers).
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
_STRUCTURED_EVENT = "application/cloudevents+json"
_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts"
_METADATA_TOKEN_URL = _METADATA + "/default/token"  # the URL of a token, not a token
#: Seconds a publish may take before the message is left for Pub/Sub to redeliver.
PUBLISH_TIMEOUT_SECONDS = 10.0

PredictRows = Callable[[FastAPI, Any, Sequence[Sequence[Any]], str], list[Any]]


class PublishError(RuntimeError):
    """The Pub/Sub API did not take a message (unreachable, refused)."""


class BadMessage(ValueError):
    """A message that can never score: acknowledged, logged, dead-lettered.

    ``message_id`` is the message's (or event's) id when it was read before the fault.
    """

    def __init__(self, reason: str, message_id: str = "") -> None:
        super().__init__(reason)
        self.message_id = message_id


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


# --- reading a message -----------------------------------------------------------------------


def read_message(body: bytes, headers: Mapping[str, str]) -> tuple[str, bytes]:
    """(message id, else CloudEvent id, else ""; the decoded ``message.data``) of a request in
    any of the three shapes the module docstring lists; BadMessage when it is none of them."""
    event_id = headers.get("ce-id", "")  # binary mode; a structured event's is in the body
    try:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise BadMessage(f"the body is not JSON: {err}") from err
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type == _STRUCTURED_EVENT or (
            isinstance(payload, dict) and "specversion" in payload and "message" not in payload
        ):
            if not isinstance(payload, dict):
                raise BadMessage("a structured CloudEvent must be a JSON object")
            event_id = str(payload.get("id") or "")
            _check_event_type(payload.get("type"))
            payload = _structured_event_data(payload)
        elif "ce-type" in headers or "ce-specversion" in headers:  # binary: the body is data
            _check_event_type(headers.get("ce-type"))
        return _push_message(payload, event_id)
    except BadMessage as err:
        # Logged and dead-lettered under the best id known, so the sender can find it.
        err.message_id = err.message_id or event_id
        raise


def _check_event_type(event_type: Any) -> None:
    if event_type != MESSAGE_PUBLISHED:
        raise BadMessage(f"the CloudEvent type is {event_type!r}, not {MESSAGE_PUBLISHED}")


def _structured_event_data(event: dict[str, Any]) -> Any:
    """The ``data`` of a structured CloudEvent: JSON as is, or ``data_base64`` decoded."""
    if "data_base64" in event:
        try:
            return json.loads(base64.b64decode(str(event["data_base64"]), validate=True))
        except (binascii.Error, ValueError, UnicodeDecodeError) as err:
            raise BadMessage(f"the CloudEvent's data_base64 is not base64 JSON: {err}") from err
    return event.get("data")


def _push_message(envelope: Any, event_id: str) -> tuple[str, bytes]:
    """(message id, else ``event_id``; the decoded data) of a push envelope."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
        raise BadMessage("not a Pub/Sub push envelope: no `message` object")
    message = envelope["message"]
    message_id = str(message.get("messageId") or message.get("message_id") or event_id)
    try:
        data = base64.b64decode(str(message.get("data", "")), validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadMessage(f"message.data is not base64: {err}", message_id) from err
    if not data.strip():
        raise BadMessage("message.data is empty", message_id)
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


# --- the route -------------------------------------------------------------------------------


def install_pubsub(
    app: FastAPI,
    parser: PredictBodyParser,
    predict_rows: PredictRows,
    model_version: str,
    count_predictions: Callable[[int], None],
) -> None:
    """Add ``POST /pubsub`` (see the module docstring)."""
    results, dead = _topic(RESULT_TOPIC_ENV), _topic(DEAD_LETTER_TOPIC_ENV)

    def reject(err: Exception, message_id: str, sent: bytes, request_id: str) -> Response:
        """Acknowledge a message that can never score: log it, dead-letter it if configured."""
        reason = _reason(err)
        expected = isinstance(err, (BadMessage, BodyError, ValueError, TypeError, KeyError))
        logger.log(
            logging.WARNING if expected else logging.ERROR,
            "pubsub message %s not scored (acknowledged): %s",
            message_id,
            reason,
            exc_info=None if expected else err,  # a fault in the model code: its traceback
            extra={"json_fields": {"requestId": request_id, "messageId": message_id}},
        )
        if dead is not None:
            attributes = {"nb2prod_message_id": message_id, "nb2prod_error": reason[:1000]}
            dead.publish(sent, attributes)
        return Response(status_code=204)

    def handle(
        predictor: Any, body: bytes, headers: Mapping[str, str], request_id: str
    ) -> Response:
        message_id, data = request_id, b""
        try:
            try:
                message_id, data = read_message(body, headers)
                message_id = message_id or request_id
                rows = parser.parse_large(_predict_body(data))
                predictions = predict_rows(app, predictor, rows, message_id)
                count_predictions(len(rows))  # nb2prod_predictions_total, as /predict counts
            except Exception as err:  # every redelivery would fail the same way
                if isinstance(err, BadMessage) and err.message_id:
                    message_id = err.message_id
                return reject(err, message_id, data or body, request_id)
            if results is not None:
                result = {"predictions": predictions, "model_version": model_version}
                results.publish(
                    json.dumps(result).encode(),
                    {"nb2prod_message_id": message_id, "model_version": model_version},
                )
        except PublishError as err:
            # Not the message's fault: 503, so Pub/Sub delivers it again later.
            logger.warning(
                "pubsub message %s not published, Pub/Sub will redeliver it: %s",
                message_id,
                err,
                extra={"json_fields": {"requestId": request_id, "messageId": message_id}},
            )
            return Response(status_code=503)
        return Response(status_code=204)

    @app.post("/pubsub", tags=["model"], status_code=204)
    async def pubsub(request: Request) -> Response:
        """Pub/Sub push and Eventarc CloudEvents (binary or structured): predict the rows in
        ``message.data``; the predictions go to ``NB2PROD_RESULT_TOPIC``. A message that can't
        score is acknowledged and dead-lettered (``NB2PROD_DEAD_LETTER_TOPIC``); 503 while the
        model loads or when a topic can't be reached (Pub/Sub retries)."""
        predictor = app.state.predictor
        if predictor is None:
            return Response(status_code=503)
        body = await request.body()
        request_id: str = request.scope["state"]["request_id"]
        return await run_in_threadpool(handle, predictor, body, request.headers, request_id)


def _reason(err: Exception) -> str:
    if isinstance(err, BodyError):
        return f"invalid rows: {json.dumps(err.detail, default=str)[:800]}"
    if isinstance(err, BadMessage):
        return str(err)
    return f"{type(err).__name__}: {err}"
