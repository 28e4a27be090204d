"""Sensitive input columns: ``# nb2prod: sensitive=ssn,email`` in the parameters cell, and
``--sensitive ssn,email``.

The union of both goes into the build record; training checks each name against the input
columns it finds (a typo would otherwise log the very column it meant to hide) and writes
them to the model card's ``sensitive_columns``, which the prediction log never writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import ConfigError, NotebookError
from ..models import Cell, SensitiveColumn

__all__ = ["SENSITIVE_DIRECTIVE", "parse_sensitive_option", "sensitive_columns"]

SENSITIVE_DIRECTIVE = "sensitive"
#: ``# nb2prod: sensitive=a,b`` (spaces allowed around ``:``, ``=`` and the commas).
_DIRECTIVE = re.compile(r"^\s*#\s*nb2prod\s*:\s*sensitive\b\s*(?P<rest>.*)$")
#: What a mistyped directive still looks like (after code, in capitals): refused, never skipped,
#: since a directive that is silently ignored logs the very column it meant to hide.
_LOOKALIKE = re.compile(r"#\s*nb2prod\s*:\s*sensitive", re.IGNORECASE)
FLAG_SOURCE = "--sensitive"


def parse_sensitive_option(values: Iterable[str]) -> tuple[str, ...]:
    """``--sensitive a,b --sensitive c`` as ("a", "b", "c"); ConfigError for an empty name."""
    names: list[str] = []
    for value in values:
        parts = [part.strip() for part in value.split(",")]
        if not all(parts):
            raise ConfigError(
                f"--sensitive {value!r}: a column name is empty",
                hint="Name the columns, comma-separated: --sensitive ssn,email.",
            )
        names.extend(parts)
    return tuple(dict.fromkeys(names))


def sensitive_columns(
    cells: Sequence[Cell], flag: Sequence[str] = ()
) -> tuple[SensitiveColumn, ...]:
    """The directive's columns (parameters cells only), then the flag's: each name once, with
    where it was first marked. NotebookError for a malformed directive, or one in another cell
    (it would protect nothing there, silently)."""
    found: dict[str, SensitiveColumn] = {}
    for cell in cells:
        for number, line in enumerate(cell.source.splitlines(), start=1):
            match = _DIRECTIVE.match(line)
            where = f"{cell.label}, line {number}"
            if match is None:
                if _LOOKALIKE.search(line):
                    raise NotebookError(
                        f"{where}: `{line.strip()}` is not read as a sensitive directive",
                        hint="Write it on a line of its own, in lower case: "
                        "`# nb2prod: sensitive=ssn,email`.",
                    )
                continue
            if cell.role != "parameters":
                raise NotebookError(
                    f"{where}: `{line.strip()}` belongs in the parameters cell",
                    hint="Move the line into the cell tagged `parameters`, or pass "
                    "--sensitive COL,... to nb2prod build.",
                )
            for name in _names(match.group("rest"), where, line):
                found.setdefault(name, SensitiveColumn(name, where))
    for name in flag:
        found.setdefault(name, SensitiveColumn(name, FLAG_SOURCE))
    return tuple(found.values())


def _names(rest: str, where: str, line: str) -> list[str]:
    text = rest.strip()
    parts = [part.strip() for part in text[1:].split(",")] if text.startswith("=") else []
    if not parts or not all(parts):
        raise NotebookError(
            f"{where}: `{line.strip()}` should name the columns: `# nb2prod: sensitive=ssn,email`",
            hint="List the input columns the prediction log must never write, comma-separated.",
        )
    return parts
