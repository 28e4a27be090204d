"""The typed models of a ``/predict`` body: one field per input column, rows as objects or lists.

A row is an object ``{column: value}`` or, as in TF Serving's and KServe v1's row format, a list
of values in the input schema's column order (``instances`` only: ``dataframe_records`` is
MLflow's, and its rows are objects). All rows of one request have the same form: a mixed batch
is far more likely a client bug than a wish, and refusing it keeps the common form free of the
other's cost. Each form therefore has its own validating model, and a third one,
``PredictRequest``, only documents the body (both forms under ``anyOf``) in the OpenAPI schema.

:func:`list_row_errors` words pydantic's errors for list rows as clients need them: the column
by name instead of its position, and one error per row of the wrong length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ROW_SOURCES",
    "RequestModels",
    "build_models",
    "list_row_errors",
    "mixed_rows",
    "split_to_records",
    "word_errors",
]

ROW_SOURCES = ("instances", "dataframe_records", "dataframe_split")


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


def split_to_records(value: Any) -> Any:
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
        if len(options) == 1:
            field.update(options[0])
        elif options:
            field["anyOf"] = options
        field.pop("default", None)
    schema["minProperties"] = 1


def _name_list_items(schema: dict[str, Any], names: list[str]) -> None:
    """Title each position of the list-row form of ``instances`` with its column's name."""
    for option in schema["properties"]["instances"].get("anyOf", []):
        for name, item in zip(names, option["items"].get("prefixItems", []), strict=False):
            item["title"] = name


def _instances_description(names: list[str]) -> str:
    return (
        "Rows, all in one form: objects {column: value}, or lists of exactly "
        f"{len(names)} values in the input schema's column order: {_quoted(names)}."
    )


def _quoted(names: list[str]) -> str:
    return json.dumps(names, ensure_ascii=False)


@dataclass(frozen=True)
class RequestModels:
    """The models of one schema's ``/predict`` body."""

    #: ``PredictRequest``, both row forms: what the OpenAPI document shows (never validates).
    documented: type[BaseModel]
    #: Validates bodies with object rows (all three sources), in one call per body.
    objects: type[BaseModel]
    #: Validates bodies whose ``instances`` are list rows.
    lists: type[BaseModel]
    #: Validates a chunk of object rows (``InputRow``) or of list rows (tuples), as Python.
    object_rows: TypeAdapter[Any]
    list_rows: TypeAdapter[Any]
    #: The row model's field names, and the columns' real names, both in schema column order.
    field_names: list[str]
    column_names: list[str]


def _row_model(columns: list[Mapping[str, Any]], field_names: list[str]) -> type[BaseModel]:
    """``InputRow``: an object row, one typed field per column, aliased to its real name."""
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
    return create_model(
        "InputRow", __config__=ConfigDict(extra="ignore", populate_by_name=False), **fields
    )


def _request_model(
    instances: Any, records: Any, split: Any, description: str | None = None, document: Any = None
) -> type[BaseModel]:
    """A body model with its three row sources typed as given; ``document`` (a
    ``json_schema_extra``) makes it the documented one."""
    model: type[BaseModel] = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="ignore", json_schema_extra=document),
        __doc__="Rows to predict: send exactly one of the three fields.",
        instances=(instances | None, Field(default=None, description=description)),
        dataframe_records=(records | None, Field(default=None, description="MLflow's records.")),
        dataframe_split=(split | None, Field(default=None)),
    )
    return model


def build_models(schema: Mapping[str, Any]) -> RequestModels:
    """The models of the ``/predict`` body for an input schema (the card's ``input_schema``).

    One typed field per input column, aliased to the real column name (so names with spaces or
    slashes work); unknown keys are ignored. A list row is a tuple of the same column types.
    """
    columns = list(schema["columns"])
    names = [str(column["name"]) for column in columns]
    field_names = [_field_name(index, name) for index, name in enumerate(names)]
    row_model = _row_model(columns, field_names)
    list_row: Any = tuple.__class_getitem__(tuple(_column_type(column) for column in columns))
    object_rows = Annotated[list[row_model], Field(min_length=1)]  # type: ignore[valid-type]
    list_rows = Annotated[list[list_row], Field(min_length=1)]
    split = Annotated[object_rows, BeforeValidator(split_to_records), WithJsonSchema(_SPLIT_SCHEMA)]
    example_row = {column["name"]: column.get("example") for column in columns}

    def document(json_schema: dict[str, Any]) -> None:
        _document_sources(json_schema)
        _name_list_items(json_schema, names)
        json_schema["examples"] = [
            {"instances": [example_row]},
            {"instances": [list(example_row.values())]},
        ]

    either = object_rows | list_rows  # type: ignore[operator]
    description = _instances_description(names)
    return RequestModels(
        documented=_request_model(either, object_rows, split, description, document),
        objects=_request_model(object_rows, object_rows, split),
        # The other sources only need to be seen here ("send exactly one"), not validated.
        lists=_request_model(list_rows, Any, Any),
        object_rows=TypeAdapter(list[row_model]),  # type: ignore[valid-type]
        list_rows=TypeAdapter(list[list_row]),
        field_names=field_names,
        column_names=names,
    )


# --- errors --------------------------------------------------------------------------------------


def mixed_rows(row: int, first: int, row_is_list: bool) -> dict[str, Any]:
    """The error for ``instances`` row ``row`` in the other form than row ``first``."""
    forms = ("a list", "an object") if row_is_list else ("an object", "a list")
    return {
        "type": "value_error",
        "loc": ["body", "instances", row],
        "msg": f"row {row} is {forms[0]} but row {first} is {forms[1]}: send all rows of "
        "'instances' in one form, objects {column: value} or lists of values in column order",
    }


def _length_error(row: int, values: Any, names: list[str]) -> dict[str, Any]:
    count = len(values) if isinstance(values, list) else 0
    return {
        "type": "too_short" if count < len(names) else "too_long",
        "loc": ["body", "instances", row],
        "msg": f"row {row} has {count} values; a list row needs exactly {len(names)}, one per "
        f"column in this order: {_quoted(names)}",
        "input": values,
        "ctx": {"expected": len(names), "actual": count, "columns": names},
    }


def _row_of(error: Mapping[str, Any]) -> int | None:
    """The ``instances`` row an error is about (its location is ``["body", "instances", row,
    ...]``), or None."""
    loc = error["loc"]
    is_row = loc[:2] == ["body", "instances"] and len(loc) >= 3 and isinstance(loc[2], int)
    return loc[2] if is_row else None


def _is_length_error(error: Mapping[str, Any]) -> bool:
    # A long row is one "too_long" for the row; a short one a "missing" per absent position.
    depth = len(error["loc"])
    return (error["type"], depth) in {("too_long", 3), ("missing", 4)}


def list_row_errors(errors: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """pydantic's errors for list rows (locations ``["body", "instances", row, ...]``), worded
    for clients: a value's column by name, and a row of the wrong length as one error (its
    values are then in the wrong places, so their own errors would only mislead)."""
    wrong_length: dict[int, dict[str, Any]] = {}
    for error in errors:
        row = _row_of(error)
        if row is not None and _is_length_error(error):
            wrong_length.setdefault(row, _length_error(row, error.get("input"), names))
    worded: list[dict[str, Any]] = []
    said: set[int] = set()
    for error in errors:
        row = _row_of(error)
        loc = error["loc"]
        if row is None:
            worded.append(error)
        elif row in wrong_length:
            if row not in said:  # once per row, where its first error was
                said.add(row)
                worded.append(wrong_length[row])
        elif error["type"] == "tuple_type" and len(loc) == 3:
            message = f"Input should be a list of {len(names)} values in column order"
            worded.append({**error, "type": "list_type", "msg": message})
        elif len(loc) >= 4 and isinstance(loc[3], int) and loc[3] < len(names):
            worded.append({**error, "loc": [*loc[:3], names[loc[3]], *loc[4:]]})
        else:
            worded.append(error)
    return worded


def word_errors(
    errors: list[dict[str, Any]], names: list[str], lists: bool
) -> list[dict[str, Any]]:
    """Errors of a body's validation, as clients read them, alike from JSON and from Python:
    :func:`list_row_errors` for list rows; for object rows, a row that is no object says what
    a row is (and, for a list sent as an MLflow record, where list rows go)."""
    if lists:
        return list_row_errors(errors, names)
    return [
        _object_row_error(error) if error["type"] == "model_type" else error for error in errors
    ]


def _object_row_error(error: dict[str, Any]) -> dict[str, Any]:
    loc = error["loc"]
    if len(loc) != 3 or loc[0] != "body" or not isinstance(loc[2], int):
        return error
    message = "Input should be an object {column: value}"
    if loc[1] == "dataframe_records" and isinstance(error.get("input"), list):
        message += (
            ": rows of 'dataframe_records' are objects (MLflow's records); send rows as lists "
            "of values in column order as 'instances'"
        )
    return {**error, "msg": message}
