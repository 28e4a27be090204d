"""The ``/predict`` request body: parsing it into rows while keeping the event loop free.

:class:`PredictBodyParser` turns a body into rows of values in schema column order, or raises
:class:`BodyError` (a 4xx with FastAPI's ``{"detail": [...]}`` shape); the models it validates
with, rows as objects or as lists, are in ``request_models.py``. Small bodies are validated in
one pydantic call on the event loop (a thread hop costs more than they do). Large bodies are
parsed in a worker thread by :func:`decode_json_in_steps` and validated in chunks of rows: every
C call (one row's JSON, one chunk's validation) is short, so the thread hands the GIL back to
the event loop every few milliseconds and ``/healthz`` keeps answering while it works. Both paths
give the same rows, limits and errors: the small one hands anything unusual to the large one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from .limits import Limits
from .request_models import ROW_SOURCES, build_models, mixed_rows, split_to_records, word_errors

__all__ = [
    "ROW_SOURCES",
    "BodyError",
    "PredictBodyParser",
    "build_request_models",
    "decode_json",
    "decode_json_in_steps",
    "parse_json_body",
]

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


# --- JSON in steps ---------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: Arrays this deep are decoded item by item, objects this deep key by key; anything deeper is
#: one C call, and so is every item of an array inside the body: a row, object or list. Depth 0
#: is the body, 1 a row source (the rows of ``instances`` are at 2), 2 the split's ``data``.
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
        if depth:
            item, pos = _DECODER.raw_decode(text, pos)
        else:
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


def _pydantic_errors(
    err: ValidationError, prefix: list[Any], names: list[str], lists: bool, offset: int = 0
) -> BodyError:
    """A 422 from a ValidationError, locations under ``prefix``, row numbers moved by offset;
    ``lists`` when the rows validated were list rows (``names``: the columns in order)."""
    errors = []
    for error in err.errors(include_url=False)[:_MAX_ERRORS]:
        loc = list(error["loc"])
        if offset and loc and isinstance(loc[0], int):
            loc[0] += offset
        errors.append({**error, "loc": [*prefix, *loc]})
    return BodyError(422, word_errors(errors, names, lists))


#: ``"instances": [[``, the start of list rows; whitespace as JSON allows it.
_LIST_ROWS = re.compile(rb'"instances"[ \t\n\r]*:[ \t\n\r]*\[[ \t\n\r]*\[')


def _looks_like_list_rows(body: bytes) -> bool:
    """Whether ``instances`` seems to hold list rows: a guess that picks the model to try
    first, checked by the validation, never the answer itself."""
    if b'"instances": [{' in body or b'"instances":[{' in body:
        return False  # object rows as JSON encoders write them: the common case, kept cheap
    at = body.find(b'"instances"')
    return at >= 0 and _LIST_ROWS.match(body, at) is not None


def _wrong_form(err: ValidationError, lists: bool) -> bool:
    """Whether the model tried on a small body was for the other row form (or mixed rows)."""
    other: type = dict if lists else list
    kind = "tuple_type" if lists else "model_type"
    return any(
        error["type"] == kind
        and len(error["loc"]) == 2
        and error["loc"][0] == "instances"
        and isinstance(error.get("input"), other)
        for error in err.errors(include_url=False, include_context=False)
    )


def _rows_are_lists(records: list[Any]) -> bool:
    """Whether decoded ``instances`` rows are lists (else objects); raises the 422 for a mix."""
    kinds = set(map(type, records))  # one C loop: this runs for every large body
    if list not in kinds or dict not in kinds:
        return list in kinds  # rows that are neither fail validation, each with its error
    first = next(i for i, row in enumerate(records) if type(row) in (dict, list))
    lists = type(records[first]) is list
    other = dict if lists else list
    number = next(i for i in range(first + 1, len(records)) if type(records[i]) is other)
    raise BodyError(422, [mixed_rows(number, first, row_is_list=not lists)])


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
        self.models = build_models(schema)
        #: The body model the OpenAPI document shows (``PredictRequest``).
        self.request_model: type[BaseModel] = self.models.documented
        self.field_names = self.models.field_names
        self.limits = limits

    def is_large(self, size: int | None) -> bool:
        """Whether a body of ``size`` bytes (None: unknown yet) goes off the event loop."""
        return size is None or size > self.limits.offload_bytes

    def parse_small(self, body: bytes) -> list[list[Any]]:
        """One pydantic call, on the event loop: the fast path for ordinary requests.

        The model is the one for the row form the body seems to use; a body it does not fit
        (mixed rows, a wrong guess) or with very many errors is parsed as a large one, which
        looks at every row, so both paths answer alike.
        """
        if not body.strip():
            raise _no_rows()
        lists = _looks_like_list_rows(body)
        model = self.models.lists if lists else self.models.objects
        try:
            payload = model.model_validate_json(body)
        except ValidationError as err:
            if err.error_count() > _MAX_ERRORS or _wrong_form(err, lists):
                # Perhaps 20,000 empty rows: the row limit (413) comes before their errors.
                return self.parse_large(body)
            raise _pydantic_errors(err, ["body"], self.models.column_names, lists) from err
        source = _one_source([s for s in ROW_SOURCES if getattr(payload, s) is not None])
        if lists and source != "instances":
            return self.parse_large(body)  # a wrong guess: only instances were validated
        rows = getattr(payload, source)
        if len(rows) > self.limits.max_rows:
            raise BodyError(413, _too_many_rows(self.limits.max_rows))
        if lists:
            return [list(row) for row in rows]
        names = self.field_names
        return [[row.__dict__[name] for name in names] for row in rows]

    def parse_large(self, body: bytes) -> list[list[Any]]:
        """Decode in steps and validate in chunks of rows; meant for a worker thread."""
        source, records = self._records(body)
        lists = source == "instances" and _rows_are_lists(records)
        adapter = self.models.list_rows if lists else self.models.object_rows
        names = self.field_names
        rows: list[list[Any]] = []
        for start in range(0, len(records), _CHUNK_ROWS):
            try:
                chunk = adapter.validate_python(records[start : start + _CHUNK_ROWS])
            except ValidationError as err:
                prefix = ["body", source]
                raise _pydantic_errors(err, prefix, self.models.column_names, lists, start) from err
            if lists:
                rows.extend(list(row) for row in chunk)
            else:
                rows.extend([row.__dict__[name] for name in names] for row in chunk)
        return rows

    def _records(self, body: bytes) -> tuple[str, list[Any]]:
        """The row source of a body and its rows as decoded JSON, at most ``max_rows`` of them."""
        if not body.strip():
            raise _no_rows()
        payload = parse_json_body(body, max_items=self.limits.max_rows)
        if not isinstance(payload, dict):
            raise BodyError(422, [_error("model_type", ["body"], "Input should be an object")])
        source = _one_source([s for s in ROW_SOURCES if payload.get(s) is not None])
        records = payload[source]
        if source == "dataframe_split":
            try:
                records = split_to_records(records)
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
        return source, records


def build_request_models(schema: Mapping[str, Any]) -> tuple[type[BaseModel], list[str]]:
    """The documented ``/predict`` body model for a schema, and its row model's field names in
    column order (see ``request_models.py``)."""
    models = build_models(schema)
    return models.documented, models.field_names
