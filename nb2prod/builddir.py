"""Reading and writing the JSON records stages leave in a build directory.

The model card, ``.nb2prod/image.json``, ``push.json`` and ``deploy.json`` pass
facts from one stage (or one CI job) to the next, so they are read with one
clear error and written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError


def read_json(path: Path, made_by: str) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError naming what writes it when missing or bad."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"{path} is missing", hint=f"It is written by {made_by}.") from err
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def read_optional(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    return read_json(path, "") if path.is_file() else None


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(tmp).chmod(0o644)
    Path(tmp).replace(path)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON, written atomically."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
