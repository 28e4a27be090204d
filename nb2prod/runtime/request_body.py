"""The ``/predict`` request body: its typed models, and parsing that keeps the event loop free.

:func:`build_request_models` types every input column for validation and the OpenAPI schema.
:class:`PredictBodyParser` turns a body into rows of values in schema column order, or raises
:class:`BodyError` (a 4xx with FastAPI's ``{"detail": [...]}`` shape). Small bodies are validated
in one pydantic call on the event loop (a thread hop costs more than they do). Large bodies are
parsed in a worker thread by :func:`decode_json_in_steps` and validated in chunks of rows: every
C call (one row's JSON, one chunk's validation) is short, so the thread hands the GIL back to
the event loop every few milliseconds and ``/healthz`` keeps answering while it works.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from .limits import Limits

__all__ = [
    "ROW_SOURCES",
    "BodyError",
    "PredictBodyParser",
    "build_request_models",
    "decode_json",
    "decode_json_in_steps",
    "parse_json_body",
]

ROW_SOURCES = ("instances", "dataframe_records", "dataframe_split")

#: Rows validated per pydantic call on the large-body path (a few milliseconds each).
_CHUNK_ROWS = 256
#: A 422 lists at most this many errors: a body of 20,000 bad rows must not echo 80,000.
_MAX_ERRORS = 50


class BodyError(Exception):
    """Raised when a request body cannot be used; ``status`` and ``detail`` are the answer."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


# --- request models --------------------------------------------------------------------------


def _not_a_boolean(value: Any) -> Any:
    # pydantic's lax mode reads JSON true/false as 1/0 for numbers; a boolean sent for a
    # number is a client bug that would otherwise skew predictions and drift statistics.
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "Input should be a number, not a boolean")
    return value


_NUMBER = Annotated[float, BeforeValidator(_not_a_boolean)]
_INTEGER = Annotated[int, BeforeValidator(_not_a_boolean)]
_KIND_TYPES: dict[str, Any] = {
    "number": _NUMBER,
    "integer": _INTEGER,
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
    if not all(isinstance(column, str) for column in columns):
        # Lists or objects as names would be unhashable dict keys below: a 500, not a 422.
        raise ValueError("dataframe_split 'columns' must be a list of column names (strings)")
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


def _document_sources(schema: dict[str, Any]) -> None:
    """Document what the endpoint enforces: a row source, never ``null``.

    "Exactly one of" is in the description only: spelled as a ``oneOf`` of ``required`` lists
    it leaves schema-driven generators (schemathesis) unable to draw a body at all.
    """
    for name in ROW_SOURCES:
        field = schema["properties"][name]
        options = [option for option in field.pop("anyOf", []) if option != {"type": "null"}]
        if options:
            field.update(options[0])
        field.pop("default", None)
    schema["minProperties"] = 1


def _models(schema: Mapping[str, Any]) -> tuple[type[BaseModel], type[BaseModel], list[str]]:
    """(request model, row model, row field names in column order) for a schema."""
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

    def document(json_schema: dict[str, Any]) -> None:
        _document_sources(json_schema)
        json_schema["examples"] = [{"instances": [example_row]}]

    request_model: type[BaseModel] = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="ignore", json_schema_extra=document),
        __doc__="Rows to predict: send exactly one of the three fields.",
        instances=(rows | None, Field(default=None, description="Rows as {column: value}.")),
        dataframe_records=(rows | None, Field(default=None, description="MLflow's records.")),
        dataframe_split=(
            Annotated[rows, BeforeValidator(_split_to_records), WithJsonSchema(_SPLIT_SCHEMA)]
            | None,
            Field(default=None),
        ),
    )
    return request_model, row_model, field_names


def build_request_models(schema: Mapping[str, Any]) -> tuple[type[BaseModel], list[str]]:
    """The ``/predict`` body model for a schema, and its row model's field names in column order.

    One typed field per input column (aliased to the real column name, so names with spaces or
    slashes work); unknown keys are ignored.
    """
    request_model, _, field_names = _models(schema)
    return request_model, field_names


# --- JSON in steps ---------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: Arrays this deep are decoded item by item, objects this deep key by key; anything deeper
#: (a row) is one C call. Depth 0 is the body, 1 a row source, 2 the split's ``data``.
_ARRAY_DEPTH, _OBJECT_DEPTH = 2, 1


def decode_json_in_steps(text: str, max_items: int | None = None) -> Any:
    """``json.loads(text)``, decoding the outer arrays and objects one item per C call.

    A thread running this gives the GIL back between items, so the event loop is never held
    for longer than one row takes. An outer array longer than ``max_items`` raises
    :class:`BodyError` (413) before the rest is decoded. Bad JSON raises ``ValueError``, too
    deep JSON ``RecursionError``, as ``json.loads`` does.
    """
    value, end = _decode(text, _skip(text, 0), 0, max_items)
    end = _skip(text, end)
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return value


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _decode(text: str, pos: int, depth: int, max_items: int | None) -> tuple[Any, int]:
    char = text[pos : pos + 1]
    if char == "[" and depth <= _ARRAY_DEPTH:
        return _decode_array(text, pos, depth, max_items)
    if char == "{" and depth <= _OBJECT_DEPTH:
        return _decode_object(text, pos, depth, max_items)
    value, end = _DECODER.raw_decode(text, pos)
    return value, end


def _decode_array(text: str, pos: int, depth: int, max_items: int | None) -> tuple[Any, int]:
    items: list[Any] = []
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return items, pos + 1
    while True:
        item, pos = _decode(text, pos, depth + 1, max_items)
        items.append(item)
        if max_items is not None and len(items) > max_items:
            raise BodyError(413, _too_many_rows(max_items))
        pos = _skip(text, pos)
        char = text[pos : pos + 1]
        if char == "]":
            return items, pos + 1
        if char != ",":
            raise ValueError(f"Expecting ',' delimiter: char {pos}")
        pos = _skip(text, pos + 1)


def _decode_object(text: str, pos: int, depth: int, max_items: int | None) -> tuple[Any, int]:
    result: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return result, pos + 1
    while True:
        if text[pos : pos + 1] != '"':
            raise ValueError(f"Expecting property name enclosed in double quotes: char {pos}")
        key, pos = scanstring(text, pos + 1)
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ":":
            raise ValueError(f"Expecting ':' delimiter: char {pos}")
        result[key], pos = _decode(text, _skip(text, pos + 1), depth + 1, max_items)
        pos = _skip(text, pos)
        char = text[pos : pos + 1]
        if char == "}":
            return result, pos + 1
        if char != ",":
            raise ValueError(f"Expecting ',' delimiter: char {pos}")
        pos = _skip(text, pos + 1)


def parse_json_body(body: bytes, max_items: int | None = None) -> Any:
    """Decode a JSON body (see :func:`decode_json_in_steps`); BodyError 422 when it isn't JSON."""
    try:
        return decode_json_in_steps(body.decode("utf-8"), max_items)
    except (ValueError, RecursionError) as err:
        # RecursionError: 100,000 nested brackets. UnicodeDecodeError is a ValueError.
        message = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise BodyError(
            422, [_error("json_invalid", ["body"], f"Invalid JSON: {message}")]
        ) from err


async def decode_json(body: bytes, offload_bytes: int) -> Any:
    """A JSON body other than /predict's (``/feedback``), decoded off the loop when large.

    Raises :class:`BodyError` (422, a one-line detail) when it is not JSON, too deep included.
    """
    try:
        if len(body) <= offload_bytes:
            return parse_json_body(body)
        return await run_in_threadpool(parse_json_body, body)
    except BodyError as err:
        raise BodyError(422, f"the body is not JSON: {err.detail[0]['msg']}") from err


# --- parsing /predict bodies -----------------------------------------------------------------


def _error(kind: str, loc: list[Any], msg: str) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg}


def _too_many_rows(max_rows: int) -> str:
    return f"at most {max_rows} rows per request (NB2PROD_MAX_ROWS): send smaller batches"


def _no_rows() -> BodyError:
    msg = "Field required: send one of 'instances', 'dataframe_records' or 'dataframe_split'"
    return BodyError(422, [{**_error("missing", ["body", "instances"], msg), "input": None}])


def _pydantic_errors(err: ValidationError, prefix: list[Any], offset: int = 0) -> BodyError:
    """A 422 from a ValidationError, locations under ``prefix``, row numbers moved by offset."""
    errors = []
    for error in err.errors(include_url=False)[:_MAX_ERRORS]:
        loc = list(error["loc"])
        if offset and loc and isinstance(loc[0], int):
            loc[0] += offset
        errors.append({**error, "loc": [*prefix, *loc]})
    return BodyError(422, errors)


def _one_source(present: list[str]) -> str:
    if len(present) == 1:
        return present[0]
    if not present:
        raise _no_rows()
    message = f"send exactly one of {', '.join(ROW_SOURCES)}, not {' and '.join(present)}"
    raise BodyError(422, [_error("value_error", ["body"], message)])


class PredictBodyParser:
    """Turns ``/predict`` bodies into rows of values in schema column order."""

    def __init__(self, schema: Mapping[str, Any], limits: Limits) -> None:
        self.request_model, row_model, self.field_names = _models(schema)
        self._rows = TypeAdapter(list[row_model])  # type: ignore[valid-type]
        self.limits = limits

    def is_large(self, size: int | None) -> bool:
        """Whether a body of ``size`` bytes (None: unknown yet) goes off the event loop."""
        return size is None or size > self.limits.offload_bytes

    def parse_small(self, body: bytes) -> list[list[Any]]:
        """One pydantic call, on the event loop: the fast path for ordinary requests."""
        if not body.strip():
            raise _no_rows()
        try:
            payload = self.request_model.model_validate_json(body)
        except ValidationError as err:
            if err.error_count() > _MAX_ERRORS:
                # Perhaps 20,000 empty rows: the row limit (413) comes before their errors.
                return self.parse_large(body)
            raise _pydantic_errors(err, ["body"]) from err
        source = _one_source([s for s in ROW_SOURCES if getattr(payload, s) is not None])
        rows = getattr(payload, source)
        if len(rows) > self.limits.max_rows:
            raise BodyError(413, _too_many_rows(self.limits.max_rows))
        names = self.field_names
        return [[row.__dict__[name] for name in names] for row in rows]

    def parse_large(self, body: bytes) -> list[list[Any]]:
        """Decode in steps and validate in chunks of rows; meant for a worker thread."""
        if not body.strip():
            raise _no_rows()
        max_rows = self.limits.max_rows
        payload = parse_json_body(body, max_items=max_rows)
        if not isinstance(payload, dict):
            raise BodyError(422, [_error("model_type", ["body"], "Input should be an object")])
        source = _one_source([s for s in ROW_SOURCES if payload.get(s) is not None])
        records = payload[source]
        if source == "dataframe_split":
            try:
                records = _split_to_records(records)
            except ValueError as err:
                raise BodyError(
                    422, [_error("value_error", ["body", source], f"Value error, {err}")]
                ) from err
        if not isinstance(records, list):
            raise BodyError(422, [_error("list_type", ["body", source], "Input should be a list")])
        if not records:
            raise BodyError(
                422, [_error("too_short", ["body", source], "List should have at least 1 item")]
            )
        names = self.field_names
        rows: list[list[Any]] = []
        for start in range(0, len(records), _CHUNK_ROWS):
            try:
                chunk = self._rows.validate_python(records[start : start + _CHUNK_ROWS])
            except ValidationError as err:
                raise _pydantic_errors(err, ["body", source], start) from err
            rows.extend([row.__dict__[name] for name in names] for row in chunk)
        return rows
