"""The FastAPI service of a trained model: ``create_app(model_dir, model_code)``.

Endpoints: ``POST /predict``, ``GET /healthz`` (liveness), ``GET /readyz`` (503 until the model is
loaded), ``GET /metadata`` (the model card) and ``GET /metrics`` (Prometheus).

Extension point (monitoring, issue 4): ``app.state.after_predict`` is a list of hooks called after
every successful prediction as ``hook(frame, predictions, request_id)``, with the raw request frame
(schema columns and dtypes, before preprocessing) and the JSON-ready predictions. Hooks run on the
request path, so they must be cheap (queue heavy work); an exception in a hook is logged and never
fails the request. ``app.state.predictor`` holds the loaded :class:`~.loader.Predictor`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import FastAPI, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .loader import Predictor, read_card
from .logs import configure_logging, http_request_fields, trace_fields
from .metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from .monitoring.api import install_monitoring

__all__ = ["AfterPredictHook", "RequestContextMiddleware", "build_request_models", "create_app"]

logger = logging.getLogger("nb2prod.service")
access_logger = logging.getLogger("nb2prod.access")

#: ``hook(frame, predictions, request_id)``, called after each successful prediction.
AfterPredictHook = Callable[[pd.DataFrame, list[Any], str], None]

#: Batches up to this size are predicted on the event loop; a threadpool hop costs more than
#: a small prediction, and the GIL gives CPU-bound model code no parallelism anyway. Larger
#: batches go to a thread so that /healthz keeps answering.
INLINE_MAX_ROWS = 64

_JSON = "application/json"
_REQUEST_ID_MAX = 200
_ROW_SOURCES = ("instances", "dataframe_records", "dataframe_split")

# --- request models --------------------------------------------------------------------------

_KIND_TYPES: dict[str, Any] = {
    "number": float,
    "integer": int,
    "boolean": bool,
    "string": str,
    "datetime": datetime,
}


def _level_text(value: Any) -> Any:
    # Category levels are strings in the schema; accept 3 for level "3".
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _column_type(column: Mapping[str, Any]) -> Any:
    kind = column["kind"]
    levels = column.get("levels")
    annotation: Any
    if kind == "category" and levels:
        annotation = Annotated[Literal.__getitem__(tuple(levels)), BeforeValidator(_level_text)]
    else:
        annotation = _KIND_TYPES.get(kind, str)
    return annotation | None if column.get("nullable") else annotation


def _field_name(index: int, column: str) -> str:
    # A safe, unique identifier; the real column name is the alias (what clients send).
    stem = "".join(char if char.isalnum() else "_" for char in column.lower()).strip("_")
    return f"c{index}_{stem[:40]}" if stem.isascii() else f"c{index}"


def _split_to_records(value: Any) -> Any:
    """MLflow's ``{"columns": [...], "data": [[...], ...]}`` -> records, validated as rows."""
    if not isinstance(value, Mapping):
        raise ValueError("dataframe_split must be an object with 'columns' and 'data'")
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not isinstance(data, list):
        raise ValueError("dataframe_split needs 'columns' (a list of names) and 'data' (rows)")
    records = []
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise ValueError(f"data[{number}] must be a list of {len(columns)} values")
        records.append(dict(zip(columns, row, strict=True)))
    return records


_SPLIT_SCHEMA = {
    "type": "object",
    "description": "MLflow's pandas 'split' orient: column names and rows of values.",
    "properties": {
        "columns": {"type": "array", "items": {"type": "string"}},
        "data": {"type": "array", "items": {"type": "array", "items": {}}},
        "index": {"type": "array", "items": {}},
    },
    "required": ["columns", "data"],
}


def build_request_models(schema: Mapping[str, Any]) -> tuple[type[BaseModel], list[str]]:
    """The ``/predict`` body model for a schema, and its row model's field names in column order.

    One typed field per input column (aliased to the real column name, so names with spaces or
    slashes work); unknown keys are ignored.
    """
    columns = list(schema["columns"])
    field_names = [_field_name(index, column["name"]) for index, column in enumerate(columns)]
    fields: dict[str, Any] = {}
    for name, column in zip(field_names, columns, strict=True):
        example = column.get("example")
        fields[name] = (
            _column_type(column),
            Field(
                alias=column["name"],
                examples=[example] if example is not None else None,
                description=f"{column['kind']} ({column['dtype']})",
            ),
        )
    row_model = create_model(
        "InputRow", __config__=ConfigDict(extra="ignore", populate_by_name=False), **fields
    )
    rows = Annotated[list[row_model], Field(min_length=1)]  # type: ignore[valid-type]
    example_row = {column["name"]: column.get("example") for column in columns}
    request_model = create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="ignore", json_schema_extra={"examples": [{"instances": [example_row]}]}
        ),
        __doc__="Rows to predict: send exactly one of the three fields.",
        instances=(rows | None, Field(default=None, description="Rows as {column: value}.")),
        dataframe_records=(rows | None, Field(default=None, description="MLflow's records.")),
        dataframe_split=(
            Annotated[rows, BeforeValidator(_split_to_records), WithJsonSchema(_SPLIT_SCHEMA)]
            | None,
            Field(default=None),
        ),
    )
    return request_model, field_names


def _openapi_components(request_model: type[BaseModel]) -> dict[str, Any]:
    schema = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components[request_model.__name__] = schema
    return components


# --- responses -------------------------------------------------------------------------------


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, default=str), status_code=status, media_type=_JSON)


def _validation_error(errors: list[dict[str, Any]]) -> Response:
    """A 422 in FastAPI's own validation shape: ``{"detail": [{"loc": [...], ...}]}``."""
    return _json({"detail": errors}, 422)


def _no_rows_error() -> Response:
    return _validation_error(
        [
            {
                "type": "missing",
                "loc": ["body", "instances"],
                "msg": "Field required: send one of 'instances', 'dataframe_records' "
                "or 'dataframe_split'",
                "input": None,
            }
        ]
    )


# --- middleware ------------------------------------------------------------------------------


def _header_value(raw: bytes) -> str:
    return raw.decode("latin-1")


def _route_label(scope: Scope, status: int) -> str:
    """The metrics ``path`` label: the route template, so that label values stay bounded.

    FastAPI records its own routes in ``scope["route"]``; the few plain Starlette routes (docs)
    have fixed paths, so their path is used. Anything else that 404s is "unmatched".
    """
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    return "unmatched" if status == 404 else str(scope["path"])


class _PredictRoute(Route):
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

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, trace_project: str | None) -> None:
        self.app = app
        self.metrics = metrics
        self.trace_project = trace_project

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
                scope["method"], _route_label(scope, status), status, elapsed
            )
            level = (
                logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
            )
            if access_logger.isEnabledFor(level):
                self._log_access(
                    scope, level, status, elapsed, request_id, user_agent, trace_header
                )

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
    card = read_card(model_dir)
    model_version = str(card["model_version"])
    request_model, field_names = build_request_models(card["input_schema"])
    configure_logging()
    metrics = ServiceMetrics()
    metrics.set_model_version(model_version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()  # uvicorn configured its loggers after create_app ran
        try:
            app.state.predictor = Predictor(model_dir, model_code)
        except Exception:
            logger.exception("could not load the model from %s", model_dir)
            raise
        logger.info("model %s loaded from %s", model_version, model_dir)
        # nb2prod_runtime.serve starts with the collector off (imports and the model are
        # long-lived objects; collecting them over and over only slows start-up). Freeze
        # what exists now so later collections skip it, and collect as usual from here.
        gc.freeze()
        gc.enable()
        if app.state.monitor is not None:
            app.state.monitor.start()  # drift checks, off the request path (issue 4)
        yield
        logger.info("shutting down")
        if app.state.monitor is not None:
            app.state.monitor.stop()

    app = FastAPI(
        title=str(card.get("name", "model")),
        version=model_version,
        description=f"Predictions from the notebook {card.get('notebook', {}).get('path', '')}.",
        lifespan=lifespan,
    )
    app.state.predictor = None
    app.state.after_predict = list(after_predict)
    app.state.metrics = metrics
    # Monitoring (issue 4): an after_predict hook, /monitoring/drift and /feedback.
    install_monitoring(app, card, metrics.registry, model_code)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        trace_project=os.environ.get("GOOGLE_CLOUD_PROJECT"),
    )
    metadata_body = json.dumps(card).encode()

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """Liveness: 200 while the process runs."""
        return _json({"status": "ok"})

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Readiness: 503 until the model is loaded, then 200."""
        if app.state.predictor is None:
            return _json({"status": "loading"}, 503)
        return _json({"status": "ready", "model_version": model_version})

    @app.get("/metadata", tags=["model"])
    async def metadata() -> Response:
        """The model card."""
        return Response(metadata_body, media_type=_JSON)

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/predict",
        tags=["model"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
            }
        },
        responses={
            200: {"model": PredictResponse, "description": "One prediction per row."},
            422: {"description": "Invalid input: the detail names the field."},
            503: {"description": "The model is still loading."},
        },
    )
    async def predict(request: Request) -> Response:
        """Predict rows sent as ``instances``, ``dataframe_records`` or ``dataframe_split``."""
        predictor: Predictor | None = app.state.predictor
        if predictor is None:
            return _json({"detail": "the model is still loading"}, 503)
        body = await request.body()
        if not body.strip():
            return _no_rows_error()
        try:
            payload = request_model.model_validate_json(body)
        except ValidationError as err:
            errors: list[dict[str, Any]] = [
                {**error, "loc": ["body", *error["loc"]]} for error in err.errors(include_url=False)
            ]
            return _validation_error(errors)
        sent = [source for source in _ROW_SOURCES if getattr(payload, source) is not None]
        if len(sent) != 1:
            if not sent:
                return _no_rows_error()
            message = f"send exactly one of {', '.join(_ROW_SOURCES)}, not {' and '.join(sent)}"
            return _validation_error([{"type": "value_error", "loc": ["body"], "msg": message}])
        rows = [[row.__dict__[name] for name in field_names] for row in getattr(payload, sent[0])]
        request_id: str = request.scope["state"]["request_id"]
        try:
            if len(rows) <= INLINE_MAX_ROWS:
                predictions = _predict_rows(app, predictor, rows, request_id)
            else:
                predictions = await run_in_threadpool(
                    _predict_rows, app, predictor, rows, request_id
                )
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
    app.router.routes.insert(0, _PredictRoute("/predict", predict, methods=["POST"]))

    components = _openapi_components(request_model)
    base_openapi = app.openapi

    def openapi_with_request_models() -> dict[str, Any]:
        schema = base_openapi()  # cached by FastAPI after the first call
        schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return schema

    app.openapi = openapi_with_request_models  # type: ignore[method-assign]
    return app


class PredictResponse(BaseModel):
    """What ``POST /predict`` returns."""

    predictions: list[Any] = Field(description="One prediction per input row, in order.")
    model_version: str


def _predict_rows(
    app: FastAPI, predictor: Predictor, rows: Sequence[Sequence[Any]], request_id: str
) -> list[Any]:
    """Frame the rows, predict, and run the after-predict hooks."""
    frame = predictor.frames.from_rows(rows)
    hooks: list[AfterPredictHook] = app.state.after_predict
    if not hooks:
        return predictor.predict_frame(frame)
    # A copy-on-write shallow copy, so that preprocess code mutating its input (df["x"] = ...)
    # does not change the raw frame the hooks see.
    predictions = predictor.predict_frame(frame.copy(deep=False))
    for hook in hooks:
        try:
            hook(frame, predictions, request_id)
        except Exception:
            logger.exception(
                "after_predict hook %r failed",
                hook,
                extra={"json_fields": {"requestId": request_id}},
            )
    return predictions
