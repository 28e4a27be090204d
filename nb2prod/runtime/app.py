"""The FastAPI service of a trained model: ``create_app(model_dir, model_code)``.

Endpoints: ``POST /predict``, ``POST /pubsub`` (Pub/Sub push, pubsub.py), ``GET /healthz``
(liveness), ``GET /readyz`` (503 until the model is loaded), ``GET /metadata`` (the public part
of the model card, ``metadata.py``) and ``GET /metrics`` (Prometheus).

Extension point (monitoring): ``app.state.after_predict`` is a list of hooks called after
every successful prediction as ``hook(frame, predictions, request_id)``, with the raw request frame
(schema columns and dtypes, before preprocessing) and the JSON-ready predictions. When concurrent
requests are predicted together (``batcher.py``), each request still gets its own call with its
own rows, or one call for the batch for a :class:`~.batcher.BatchAwareHook`. Hooks run on the
request path, so they must be cheap (queue heavy work); an exception in a hook is logged and never
fails the request. ``app.state.predictor`` holds the loaded :class:`~.loader.Predictor`.

Request bodies are bounded before they are read (``limits.py``) and parsed off the event loop
when large (``request_body.py``); the request id, access log and metrics middleware is in
``middleware.py``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .admin import admin_guard
from .batcher import BatchAwareHook, Batcher, BatchingError, BatchingMode, batching_mode
from .limits import BodyLimitMiddleware, Limits
from .loader import Predictor, load_card
from .logs import configure_logging
from .metadata import public_metadata, relative_notebook_path
from .metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from .middleware import PredictRoute, RequestContextMiddleware
from .monitoring.api import install_monitoring
from .prediction_log import install_prediction_log
from .pubsub import install_pubsub
from .request_body import BodyError, PredictBodyParser, build_request_models

__all__ = ["AfterPredictHook", "RequestContextMiddleware", "build_request_models", "create_app"]

logger = logging.getLogger("nb2prod.service")

#: ``hook(frame, predictions, request_id)``, called after each successful prediction.
AfterPredictHook = Callable[[pd.DataFrame, list[Any], str], None]

#: Batches up to this size are predicted on the event loop; a threadpool hop costs more than
#: a small prediction, and the GIL gives CPU-bound model code no parallelism anyway. Larger
#: batches go to a thread so that /healthz keeps answering.
INLINE_MAX_ROWS = 64

#: Large bodies decoded and predicted at once. The work holds the GIL in short steps, so
#: more at once would not be faster, only keep more decoded rows in memory.
LARGE_BODIES_AT_ONCE = 2
#: The interpreter's GIL switch interval while serving (Python's default is 5 ms).
SWITCH_INTERVAL_SECONDS = 0.001

_JSON = "application/json"


def _openapi_components(request_model: type[BaseModel]) -> dict[str, Any]:
    schema = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components[request_model.__name__] = schema
    return components


# --- responses -------------------------------------------------------------------------------


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, default=str), status_code=status, media_type=_JSON)


# --- the app ---------------------------------------------------------------------------------


def create_app(
    model_dir: Path | str,
    model_code: ModuleType,
    *,
    after_predict: Iterable[AfterPredictHook] = (),
) -> FastAPI:
    """The service for the model in ``model_dir``, calling the build's ``model_code`` module.

    The card is read now, to type every input column in the OpenAPI schema; the model state is
    loaded in the lifespan startup (``/readyz`` is 503 until then). ``after_predict`` hooks (see
    the module docstring) start the ``app.state.after_predict`` list, which can be appended to.
    """
    model_dir = Path(model_dir)
    card = load_card(model_dir)
    limits = Limits.from_env()
    parser = PredictBodyParser(card.input_schema, limits)
    configure_logging()
    metrics = ServiceMetrics()
    metrics.set_model_version(card.model_version)
    app = FastAPI(
        title=card.name,
        version=card.model_version,
        description="Predictions from the notebook "
        f"{relative_notebook_path(str(card.notebook.get('path', '')))}.",
        lifespan=_lifespan(model_dir, model_code, card.model_version, card.batching),
    )
    app.state.predictor = None
    app.state.batcher = None
    app.state.after_predict = list(after_predict)
    app.state.metrics = metrics
    # Monitoring: an after_predict hook, /monitoring/drift and /feedback.
    install_monitoring(app, card, metrics.registry, model_code)
    install_prediction_log(app, card)  # after_predict hook; app.state.prediction_log
    app.description += "\n\n" + _limits_description(limits)
    # Added first, so it runs inside the request context: a 413 is logged and counted too.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=limits.max_body_bytes)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        trace_project=os.environ.get("GOOGLE_CLOUD_PROJECT"),
        known_paths=lambda: [getattr(route, "path", "") for route in app.routes],
    )
    _add_ops_routes(app, metrics, json.dumps(public_metadata(card)).encode(), card.model_version)
    _add_predict_route(app, parser, limits, metrics, card.model_version)
    install_pubsub(app, parser, _predict_rows, card.model_version, metrics.count_predictions)
    _add_request_models_to_openapi(app, _openapi_components(parser.request_model))
    return app


def _lifespan(
    model_dir: Path, model_code: ModuleType, model_version: str, verdict: dict[str, Any]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the model at startup (``/readyz`` is 503 until then), start and stop monitoring.

    The batching settings are checked first: ``NB2PROD_BATCHING=on`` for a build that can't
    be batched safely stops the start-up with the reason, before the model loads.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()  # uvicorn configured its loggers after create_app ran
        try:
            mode = batching_mode(verdict)
        except BatchingError as err:
            logger.error("refusing to start: %s", err)
            raise
        try:
            app.state.predictor = Predictor(model_dir, model_code)
        except Exception:
            logger.exception("could not load the model from %s", model_dir)
            raise
        logger.info("model %s loaded from %s", model_version, model_dir)
        app.state.batcher = _batcher(app, mode)
        # nb2prod_runtime.serve starts with the collector off (imports and the model are
        # long-lived objects; collecting them over and over only slows start-up). Freeze
        # what exists now so later collections skip it, and collect as usual from here.
        gc.freeze()
        gc.enable()
        # Large bodies are parsed in a worker thread that holds the GIL between steps; the
        # event loop needs it back several times per request (after each socket call), and
        # waits up to one switch interval each time: 1 ms instead of 5 keeps /healthz fast.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        if app.state.monitor is not None:
            app.state.monitor.start()  # drift checks, off the request path
        if app.state.prediction_log is not None:
            app.state.prediction_log.start()
        yield
        logger.info("shutting down")
        if app.state.monitor is not None:
            app.state.monitor.stop()
        if app.state.prediction_log is not None:
            app.state.prediction_log.stop()  # drain the queue, publish the open file

    return lifespan


def _add_ops_routes(
    app: FastAPI, metrics: ServiceMetrics, metadata_body: bytes, model_version: str
) -> None:
    """``/healthz``, ``/readyz`` (GET and HEAD), ``/metadata`` and ``/metrics``."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """Liveness: 200 while the process runs."""
        return _json({"status": "ok"})

    # Probes and load balancers may use HEAD; HTTP has it mean GET without the body, so it
    # is served but not listed again in the OpenAPI document.
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Readiness: 503 until the model is loaded, then 200."""
        if app.state.predictor is None:
            return _json({"status": "loading"}, 503)
        return _json({"status": "ready", "model_version": model_version})

    app.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)

    @app.get("/metadata", tags=["model"], dependencies=[Depends(admin_guard())])
    async def metadata() -> Response:
        """Name, version, metrics, output kind and input schema (no training data)."""
        return Response(metadata_body, media_type=_JSON)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text exposition format 0.0.4."}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _add_predict_route(
    app: FastAPI,
    parser: PredictBodyParser,
    limits: Limits,
    metrics: ServiceMetrics,
    model_version: str,
) -> None:
    """``POST /predict``: documented as a FastAPI route, served by a faster plain route."""
    large_bodies = threading.BoundedSemaphore(LARGE_BODIES_AT_ONCE)

    def predict_large(
        predictor: Predictor, body: bytes, request_id: str
    ) -> tuple[list[list[Any]], list[Any]]:
        """Parse, validate and predict a large body: in a worker thread, a few at a time."""
        with large_bodies:
            rows = parser.parse_large(body)
            return rows, _predict_rows(app, predictor, rows, request_id)

    @app.post("/predict", tags=["model"], **_predict_openapi(limits))
    async def predict(request: Request) -> Response:
        """Predict rows sent as ``instances``, ``dataframe_records`` or ``dataframe_split``.

        ``instances`` rows are objects ``{column: value}`` or lists of values in the input
        schema's column order (as ``/metadata`` lists the columns), all in one form.
        """
        predictor: Predictor | None = app.state.predictor
        if predictor is None:
            return _json({"detail": "the model is still loading"}, 503)
        body = await request.body()
        request_id: str = request.scope["state"]["request_id"]
        try:
            if parser.is_large(len(body)):
                rows, predictions = await run_in_threadpool(
                    predict_large, predictor, body, request_id
                )
            else:
                rows = parser.parse_small(body)
                batcher: Batcher | None = app.state.batcher
                if batcher is not None and batcher.accepts(rows):
                    predictions = await batcher.predict(rows, request_id)
                elif len(rows) <= INLINE_MAX_ROWS:
                    predictions = _predict_rows(app, predictor, rows, request_id)
                else:
                    predictions = await run_in_threadpool(
                        _predict_rows, app, predictor, rows, request_id
                    )
        except BodyError as err:
            return _json({"detail": err.detail}, err.status)
        except (ValueError, TypeError, KeyError) as err:
            # Valid types, but the model code refused the values: the client's problem.
            logger.warning(
                "prediction rejected: %s: %s",
                type(err).__name__,
                err,
                extra={"json_fields": {"requestId": request_id}},
            )
            return _json({"detail": f"{type(err).__name__}: {err}"}, 422)
        metrics.count_predictions(len(rows))
        return Response(
            json.dumps({"predictions": predictions, "model_version": model_version}),
            media_type=_JSON,
        )

    # The APIRoute above documents /predict; requests are served by a plain Starlette route put
    # in front of every other route, which skips FastAPI's dependency solving (the endpoint
    # validates the body itself) and the route scan: ~30 us a request.
    app.router.routes.insert(0, PredictRoute("/predict", predict, methods=["POST"]))


def _predict_openapi(limits: Limits) -> dict[str, Any]:
    """How ``/predict`` is documented: the typed body, and what each status means."""
    return {
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
            }
        },
        "responses": {
            200: {"model": PredictResponse, "description": "One prediction per row."},
            413: {
                "description": f"Body over {limits.max_body_bytes} bytes "
                f"(NB2PROD_MAX_BODY_BYTES) or more than {limits.max_rows} rows (NB2PROD_MAX_ROWS)."
            },
            422: {"description": "Invalid input: the detail names the field."},
            503: {"description": "The model is still loading."},
        },
    }


def _add_request_models_to_openapi(app: FastAPI, components: dict[str, Any]) -> None:
    """The typed request rows (one property per input column) in the OpenAPI document."""
    base_openapi = app.openapi

    def openapi_with_request_models() -> dict[str, Any]:
        schema = base_openapi()  # cached by FastAPI after the first call
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return schema

    app.openapi = openapi_with_request_models  # type: ignore[method-assign]


def _limits_description(limits: Limits) -> str:
    return (
        f"Limits: a request body may have at most {limits.max_body_bytes} bytes "
        f"(`NB2PROD_MAX_BODY_BYTES`) and `/predict` at most {limits.max_rows} rows "
        "(`NB2PROD_MAX_ROWS`); larger requests get 413 before they are read whole. "
        "Invalid requests get 4xx with a `detail`; 5xx means a fault in the service."
    )


class PredictResponse(BaseModel):
    """What ``POST /predict`` returns."""

    predictions: list[Any] = Field(description="One prediction per input row, in order.")
    model_version: str


def _batcher(app: FastAPI, mode: BatchingMode) -> Batcher | None:
    """The request batcher when ``mode`` allows it; the startup log says which and why."""
    if not mode.enabled:
        logger.info("batching off: %s; each request is predicted on its own", mode.reason)
        return None
    logger.info(
        "batching on: up to %d rows, waiting at most %g ms under load (%s)",
        mode.max_rows,
        mode.max_wait_seconds * 1000,
        mode.reason,
    )
    metrics: ServiceMetrics = app.state.metrics

    def predict_many(requests: list[tuple[Sequence[Sequence[Any]], str]]) -> list[list[Any]]:
        return _predict_requests(app, app.state.predictor, requests)

    return Batcher(predict_many, mode, metrics.observe_batch)


def _predict_rows(
    app: FastAPI, predictor: Predictor, rows: Sequence[Sequence[Any]], request_id: str
) -> list[Any]:
    """Frame the rows, predict, and run the after-predict hooks."""
    return _predict_requests(app, predictor, [(rows, request_id)])[0]


def _predict_requests(
    app: FastAPI, predictor: Predictor, requests: list[tuple[Sequence[Sequence[Any]], str]]
) -> list[list[Any]]:
    """Several requests' rows framed and predicted at once; each request's predictions, and
    the after-predict hooks called once per request with its own rows and id."""
    rows = requests[0][0] if len(requests) == 1 else [r for rs, _ in requests for r in rs]
    frame = predictor.frames.from_rows(rows)
    hooks: list[AfterPredictHook] = app.state.after_predict
    if not hooks:
        predictions = predictor.predict_frame(frame)
    else:
        # A copy-on-write shallow copy, so that preprocess code mutating its input
        # (df["x"] = ...) does not change the raw frame the hooks see.
        predictions = predictor.predict_frame(frame.copy(deep=False))
    if len(requests) == 1:
        _run_hooks(hooks, frame, predictions, requests[0][1])
        return [predictions]
    spans, start = [], 0
    for request_rows, request_id in requests:
        spans.append((request_id, start, start + len(request_rows)))
        start += len(request_rows)
    answers = [predictions[start:end] for _, start, end in spans]
    for hook in hooks:
        if isinstance(hook, BatchAwareHook):
            _run_hooks([hook.batch], frame, predictions, spans)  # type: ignore[list-item]
            continue
        for (request_id, start, end), own in zip(spans, answers, strict=True):
            own_rows = frame.iloc[start:end].reset_index(drop=True)
            _run_hooks([hook], own_rows, own, request_id)
    return answers


def _run_hooks(
    hooks: list[AfterPredictHook], frame: pd.DataFrame, predictions: list[Any], request: Any
) -> None:
    """Call each hook; one that raises is logged, never fails the request. ``request`` is the
    request id (a batch-aware hook's ``batch``: the requests' spans)."""
    for hook in hooks:
        try:
            hook(frame, predictions, request)
        except Exception:
            ids = [span[0] for span in request] if isinstance(request, list) else request
            logger.exception(
                "after_predict hook %r failed", hook, extra={"json_fields": {"requestId": ids}}
            )
