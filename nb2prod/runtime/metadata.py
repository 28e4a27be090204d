"""What ``GET /metadata`` serves: the part of the model card a prediction client needs.

An allow-list, not a deny-list, so that a field added to the card later stays private until
someone decides a client needs it. Served: name, model version, nb2prod version, when it was
trained, the evaluation metrics, the output kind, the notebook's path relative to its
repository, and the input schema (per column: name, dtype, kind, nullable, levels, ordered).
Never served: golden rows, the reference profile, parameters, libraries, seeds, the data
fingerprint, absolute paths, and the schema's example values (they come from a training row).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

__all__ = ["public_metadata", "relative_notebook_path"]

_CARD_FIELDS = ("name", "model_version", "nb2prod_version", "trained_at", "metrics")
_COLUMN_FIELDS = ("name", "dtype", "kind", "nullable", "levels", "ordered")


def _as_mapping(card: Any) -> Mapping[str, Any]:
    """The card as JSON: a dict as it is, a typed card through its ``to_json()``."""
    if isinstance(card, Mapping):
        return card
    return dict(card.to_json())


def relative_notebook_path(path: str) -> str:
    """A repository-relative path as it is; an absolute one (an old card) as its file name."""
    for flavour in (PurePosixPath, PureWindowsPath):
        if flavour(path).is_absolute():
            return flavour(path).name
    return path


def public_metadata(card: Any) -> dict[str, Any]:
    """The allow-listed fields of ``card`` (a dict or a typed card), as JSON."""
    data = _as_mapping(card)
    public: dict[str, Any] = {name: data.get(name) for name in _CARD_FIELDS}
    public["metrics"] = dict(data.get("metrics") or {})
    public["output"] = {"kind": (data.get("output") or {}).get("kind")}
    notebook = data.get("notebook") or {}
    public["notebook"] = {"path": relative_notebook_path(str(notebook.get("path", "")))}
    schema = data.get("input_schema") or {}
    public["input_schema"] = {
        "columns": [
            {key: column[key] for key in _COLUMN_FIELDS if key in column}
            for column in schema.get("columns", [])
        ]
    }
    return public
