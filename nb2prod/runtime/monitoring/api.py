"""The monitoring endpoints, and the wiring of a :class:`~.monitoring.Monitor` into the app.

``GET /monitoring/drift`` serves the last drift check (``?refresh=true`` runs one first, in a
worker thread); ``POST /feedback`` joins ground-truth labels to earlier predictions by request
id. With ``NB2PROD_MONITORING=0`` nothing is hooked into ``/predict`` and both answer 503.
With ``NB2PROD_ADMIN_TOKEN`` set, both need ``Authorization: Bearer <token>`` (``admin.py``).
"""

from __future__ import annotations

import json
import logging
from types import ModuleType
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from ..admin import admin_guard
from ..batcher import BatchAwareHook
from ..card import ModelCard
from ..limits import Limits
from ..request_body import BodyError, decode_json
from .alerts import WebhookURLError
from .feedback import FeedbackError, quality_metric
from .metrics import MonitorMetrics
from .monitor import Monitor, monitoring_enabled

__all__ = ["install_monitoring"]

_JSON = "application/json"

logger = logging.getLogger("nb2prod.monitoring")


# The /feedback body, for the OpenAPI document (monitor.feedback checks it).
_LABEL = {"anyOf": [{"type": "string"}, {"type": "number"}], "description": "A true label."}
_ITEM = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string", "description": "X-Request-ID of the /predict answer."},
        "label": _LABEL,
        "labels": {
            "type": "array",
            "minItems": 1,
            "items": _LABEL,
            "description": "One true label per predicted row, in the request's order.",
        },
    },
    "required": ["request_id"],
}
_BODY = {"oneOf": [_ITEM, {"type": "array", "items": _ITEM, "minItems": 1}]}
_FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Rows accepted, and the live quality metric."},
    404: {"description": "Unknown, expired or already labelled request id."},
    409: {"description": "The request id was used by several /predict calls: ambiguous."},
    413: {"description": "Body over NB2PROD_MAX_BODY_BYTES."},
    422: {"description": "Not JSON, the wrong shape, or a label the model cannot produce."},
    503: {"description": "Monitoring is off."},
}


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, default=str), status_code=status, media_type=_JSON)


def install_monitoring(
    app: FastAPI, card: ModelCard, registry: CollectorRegistry, model_code: ModuleType
) -> Monitor | None:
    """Add the monitoring routes and the after_predict hook; None when monitoring is off.

    The app's lifespan starts and stops the returned monitor's background thread. A webhook
    URL that may not carry the token (``alerts.check_webhook_url``) stops the service from
    starting, with one ERROR line: a service asked to alert must not run without alerts.
    """
    monitor: Monitor | None = None
    if monitoring_enabled():
        metrics = MonitorMetrics(registry, quality_metric(card.output_kind))
        try:
            monitor = Monitor(card, metrics, model_code=model_code)
        except WebhookURLError as err:
            logger.error("%s", err)
            raise
        hook = BatchAwareHook(monitor.after_predict, monitor.after_predict_batch)
        app.state.after_predict.append(hook)
    app.state.monitor = monitor
    app.include_router(_router(monitor))
    return monitor


def _router(monitor: Monitor | None) -> APIRouter:
    """``/monitoring/drift`` and ``/feedback``, behind the admin token when one is set."""
    router = APIRouter(tags=["monitoring"], dependencies=[Depends(admin_guard())])
    off = {"detail": "monitoring is off in this service (NB2PROD_MONITORING=0)"}

    @router.get("/monitoring/drift")
    async def monitoring_drift(refresh: bool = False) -> Response:
        """Drift of each input column and of the predictions vs training, and the verdict.

        The statistics come from the last background check; ``refresh=true`` runs one now.
        """
        if monitor is None:
            return _json(off, 503)
        report = await run_in_threadpool(monitor.check) if refresh else monitor.report()
        return _json(report)

    offload_bytes = Limits.from_env().offload_bytes

    @router.post(
        "/feedback",
        openapi_extra={"requestBody": {"required": True, "content": {_JSON: {"schema": _BODY}}}},
        responses=_FEEDBACK_RESPONSES,
    )
    async def feedback(request: Request) -> Response:
        """Ground truth for earlier predictions: ``{"request_id", "label"}`` or ``"labels"``.

        ``request_id`` is the ``X-Request-ID`` the ``/predict`` answer carried; ``labels`` has
        one label per row of that request, in order. A list of such items is accepted too.
        Unknown or expired ids get a 404 and nothing is recorded.
        """
        if monitor is None:
            return _json(off, 503)
        try:
            body = await decode_json(await request.body(), offload_bytes)
        except BodyError as err:  # not JSON, or nested too deeply
            return _json({"detail": err.detail}, err.status)
        try:
            return _json(monitor.feedback(body))
        except FeedbackError as err:
            content: dict[str, Any] = {"detail": str(err)}
            if err.unknown:
                content["unknown_request_ids"] = err.unknown
            return _json(content, err.status)

    return router
