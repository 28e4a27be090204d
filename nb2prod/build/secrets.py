"""Refuse to bake a secret: a parameter whose name says password, token, secret or key.

Parameters are literals that nb2prod writes into the build directory (build.json),
the model card and the generated serving code, so they end up in every image built
from it. A password typed into the parameters cell would ship with
the model. Reading it from the environment at run time keeps it out: such reads are
not literals, so they never reach this check.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError, NotebookError
from ..models import Cell
from .names import parameter_assignments

__all__ = ["looks_like_secret", "refuse_secret_parameters"]

#: Words of a parameter name that mark it as a secret on their own.
SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "credential", "credentials", "apikey"}
)
#: Word pairs that do: api_key, access_key, private_key, ...
SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "key")}
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def looks_like_secret(name: str) -> bool:
    """True when a name's words say it holds a secret (``db_password``, ``apiKey``, ``HF_TOKEN``).

    Whole words only, so that ``max_tokens`` or ``tokenizer`` are ordinary parameters.
    """
    words = [word.lower() for word in _WORD.findall(name)]
    if SECRET_WORDS.intersection(words):
        return True
    return any(pair in SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def _is_secret_value(value: Any) -> bool:
    # An empty string or None is a placeholder, not a secret; numbers are not secrets.
    return isinstance(value, (str, bytes)) and len(value) > 0


def _hint(name: str) -> str:
    return (
        f"Read it at run time in the cell that uses it, e.g. "
        f'`{name} = os.environ["{name.upper()}"]`, and remove it from the parameters cell: '
        "parameters are written into the build directory, the model card and the image."
    )


def refuse_secret_parameters(cells: Iterable[Cell], overrides: Mapping[str, Any]) -> None:
    """Raise NotebookError (cell, line, name) for a secret-looking parameter with a literal value.

    ``overrides`` are the ``-p name=value`` flags; a secret there is a ConfigError.
    """
    for cell, stmt, name, value in parameter_assignments(cells):
        if name is None or not looks_like_secret(name.id) or not isinstance(value, ast.Constant):
            continue  # not a parameter (the parameters check says so), or not a secret
        if _is_secret_value(value.value):
            raise NotebookError(
                f"{cell.label}, line {stmt.lineno}: the parameter `{name.id}` looks like "
                "a secret and has a literal value, which nb2prod would bake into the build "
                "and the image",
                hint=_hint(name.id),
            )
    for name, value in overrides.items():
        if looks_like_secret(name) and _is_secret_value(value):
            raise ConfigError(
                f"-p {name}: `{name}` looks like a secret; nb2prod would bake its value into "
                "the build and the image",
                hint=_hint(name),
            )
