"""Write cell tags into a notebook file and change nothing else, byte for byte.

``nb2prod tag NB --write`` must leave outputs, widget state, other tools' metadata, key
order, indentation, escaping and line endings exactly as they were: a user's diff should
show only the ``tags`` lists. Re-serializing with nbformat would not (it re-sorts keys,
re-indents and re-escapes files that other tools wrote), so the new text is spliced into
the original: a small scanner records where each JSON value and key sits, and only the
``tags`` value of a changed cell (or a new ``"tags"`` member, or a new ``"metadata"``
member) is replaced or inserted, in the layout its neighbours already use.

The result is checked by parsing it: it must equal the original with exactly the wanted
tag changes, or nothing is written. The file is replaced atomically, and not at all if it
changed on disk since it was read.

A little over 400 lines: the position-keeping JSON scanner serves only this writer, so it
lives here rather than in a module of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NotebookError

_WS = re.compile(r"[ \t\n\r]*")
_INDENT = re.compile(r"[ \t]*")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERAL = re.compile(r"true|false|null|NaN|Infinity|-Infinity")
#: A ``\\uXXXX`` escape of a non-ASCII character: the writer used ensure_ascii=True.
_NON_ASCII_ESCAPE = re.compile(r"(?<!\\)\\u(?!00[0-7])[0-9a-fA-F]{4}")
_BOM = "\ufeff"
_HINT = "Tag the cells in Jupyter instead (View > Cell Toolbar > Tags)."


@dataclass(frozen=True)
class TagChange:
    """One cell whose tags ``write_tags`` changes."""

    cell: int  # 1-based position among ALL cells (markdown included), as nb2prod numbers cells
    before: tuple[str, ...]  # the cell's tags as read
    after: tuple[str, ...]  # the tags written


@dataclass(slots=True)
class _Node:
    """A JSON value's span in the text ``[start, end)``; members or items for containers."""

    kind: str  # "object", "array" or "scalar"
    start: int
    end: int = 0
    members: list[_Member] = field(default_factory=list)
    items: list[_Node] = field(default_factory=list)


@dataclass(slots=True)
class _Member:
    """An object member: its decoded key, the key's span and its value."""

    key: str
    key_start: int
    key_end: int
    value: _Node


@dataclass(frozen=True)
class _Style:
    """How the file lays out JSON, read from the top-level object and its strings."""

    multiline: bool  # containers opened on their own lines (json.dumps indent=...)
    unit: str  # one level of indentation
    newline: str
    key_sep: str  # between a key and its value, e.g. ": "
    item_sep: str  # between items written on one line, e.g. ", "
    ensure_ascii: bool


class _Scanner:
    """A JSON parser that keeps positions; the text has already passed ``json.loads``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def value(self) -> _Node:
        """Scan the value at the current position (after whitespace)."""
        self._skip_ws()
        char = self.text[self.pos : self.pos + 1]
        if char and char in "{[":
            return self._container(char)
        patterns = (_STRING,) if char == '"' else (_LITERAL, _NUMBER)
        match = next(filter(None, (p.match(self.text, self.pos) for p in patterns)), None)
        if match is None:
            raise ValueError(f"unexpected character at offset {self.pos}")
        self.pos = match.end()
        return _Node("scalar", match.start(), match.end())

    def _container(self, opening: str) -> _Node:
        node = _Node("object" if opening == "{" else "array", self.pos)
        closing = "}" if opening == "{" else "]"
        self.pos += 1
        self._skip_ws()
        if self.text.startswith(closing, self.pos):
            node.end = self.pos = self.pos + 1
            return node
        while True:
            if opening == "{":
                node.members.append(self._member())
            else:
                node.items.append(self.value())
            self._skip_ws()
            if self.text.startswith(",", self.pos):
                self.pos += 1
                self._skip_ws()
                continue
            self._expect(closing)
            node.end = self.pos
            return node

    def _member(self) -> _Member:
        match = _STRING.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"expected a key at offset {self.pos}")
        self.pos = match.end()
        self._skip_ws()
        self._expect(":")
        raw = match.group()
        key = raw[1:-1] if "\\" not in raw else json.loads(raw)
        return _Member(key, match.start(), match.end(), self.value())

    def _skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def _expect(self, char: str) -> None:
        if not self.text.startswith(char, self.pos):
            raise ValueError(f"expected {char!r} at offset {self.pos}")
        self.pos += 1


def plan_tag_changes(text: str, wanted: Mapping[int, Sequence[str]]) -> tuple[str, list[TagChange]]:
    """The new notebook text with each cell N's tags replaced by wanted[N]; cells not in
    wanted are untouched. Pure function."""
    data = _load(text)
    cells = _cells(data)
    _check_wanted(wanted, len(cells))
    changes = [
        TagChange(number, _tags_of(cells[number - 1], number), tuple(wanted[number]))
        for number in sorted(wanted)
    ]
    changes = [change for change in changes if change.before != change.after]
    if not changes:
        return text, []
    try:
        root = _Scanner(text).value()
    except (ValueError, RecursionError) as err:
        raise NotebookError(f"cannot locate the cells in the notebook's JSON: {err}") from err
    style = _detect_style(text, root)
    cells_node = _last_member(root, "cells")
    assert cells_node is not None and len(cells_node.value.items) == len(cells)
    edits = [
        _cell_edit(text, style, cells_node.value.items[change.cell - 1], change.after)
        for change in changes
    ]
    new_text = _splice(text, edits)
    _verify(text, new_text, changes)
    return new_text, changes


def write_tags(path: Path, wanted: Mapping[int, Sequence[str]]) -> list[TagChange]:
    """Apply plan_tag_changes to the file atomically; return the changes (empty list: file
    untouched, not even rewritten)."""
    # Through a symlink, write the file it points to rather than replace the link.
    target = Path(path).resolve()
    try:
        original = target.read_bytes()
    except OSError as err:
        raise NotebookError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        text = original.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NotebookError(f"{path} is not UTF-8 text ({err})") from err
    bom = _BOM if text.startswith(_BOM) else ""
    try:
        new_text, changes = plan_tag_changes(text[len(bom) :], wanted)
    except NotebookError as err:
        raise NotebookError(f"{path}: {err.message}", hint=err.hint) from err
    if changes:
        _replace_atomically(target, original, (bom + new_text).encode("utf-8"))
    return changes


def _load(text: str) -> Any:
    """Parse the notebook; NaN and Infinity become comparable tokens (NaN != NaN)."""
    try:
        return json.loads(text, parse_constant=lambda name: ("<constant>", name))
    except (ValueError, RecursionError) as err:
        raise NotebookError(
            f"the notebook is not valid JSON ({err})",
            hint="Open and save it in Jupyter, or fix the JSON by hand.",
        ) from err


def _cells(data: Any) -> list[Any]:
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise NotebookError("the file is not a Jupyter notebook: it has no list of cells")
    return cells


def _check_wanted(wanted: Mapping[int, Sequence[str]], count: int) -> None:
    """Refuse cell numbers that don't exist and tags that nbformat would reject."""
    for number, tags in wanted.items():
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= count:
            raise NotebookError(
                f"cannot tag cell {number!r}: the notebook has cells 1 to {count}",
                hint="Cells are numbered from 1, markdown cells included.",
            )
        # nbformat's schema: tags are unique, non-empty strings without commas.
        bad = [t for t in tags if not isinstance(t, str) or not t or "," in t]
        if bad or isinstance(tags, str) or len(set(tags)) != len(tags):
            raise NotebookError(
                f"cannot tag cell {number} with {list(tags)!r}: tags must be distinct, "
                "non-empty strings without commas",
                hint=_HINT,
            )


def _tags_of(cell: Any, number: int) -> tuple[str, ...]:
    metadata = cell.get("metadata", {}) if isinstance(cell, dict) else None
    tags = metadata.get("tags", []) if isinstance(metadata, dict) else None
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise NotebookError(
            f"cell {number} has malformed metadata: its tags are not a list of strings",
            hint=_HINT,
        )
    return tuple(tags)


def _last_member(node: _Node, key: str) -> _Member | None:
    # json.loads keeps the last of duplicate keys; locate the same one.
    return next((m for m in reversed(node.members) if m.key == key), None)


def _line_indent(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    return _INDENT.match(text, start).group()  # type: ignore[union-attr]


def _detect_style(text: str, root: _Node) -> _Style:
    first = root.members[0]
    opening = text[root.start + 1 : first.key_start]
    multiline = "\n" in opening
    tail = opening.rsplit("\n", 1)[-1]
    base = _line_indent(text, root.start)
    unit = tail[len(base) :] if tail.startswith(base) else tail
    item_sep = ", "
    if not multiline and len(root.members) > 1:
        item_sep = text[first.value.end : root.members[1].key_start]
    non_ascii = any(ord(char) > 127 for char in text)
    return _Style(
        multiline=multiline,
        unit=unit,
        newline="\r\n" if "\r\n" in opening else "\n",
        key_sep=text[first.key_end : first.value.start],
        item_sep=item_sep,
        # Without a non-ASCII character either way, follow nbformat (ensure_ascii=False).
        ensure_ascii=not non_ascii and bool(_NON_ASCII_ESCAPE.search(text)),
    )


_Render = Callable[[str, bool], str]  # (indentation of the line, multiline?) -> JSON text


def _cell_edit(
    text: str, style: _Style, cell: _Node, after: tuple[str, ...]
) -> tuple[int, int, str]:
    """The one splice that gives this cell the tags ``after``: (start, end, replacement)."""
    new_items = [json.dumps(tag, ensure_ascii=style.ensure_ascii) for tag in after]

    def tags(base: str, multiline: bool) -> str:
        return _array(style, new_items, base, multiline)

    metadata = _last_member(cell, "metadata")
    if metadata is None:
        return _insert_member(
            text, style, cell, "metadata", lambda b, ml: _object(style, "tags", tags, b, ml)
        )
    old = _last_member(metadata.value, "tags")
    if old is None:
        return _insert_member(text, style, metadata.value, "tags", tags)
    return _replace_array(text, style, metadata.value, old.value, after)


def _object(style: _Style, key: str, render: _Render, base: str, multiline: bool) -> str:
    """A new one-member object, laid out as json.dumps with the file's indent would write
    it at indentation ``base``."""
    if not multiline:
        return "{" + json.dumps(key) + style.key_sep + render(base, False) + "}"
    inner = base + style.unit
    member = json.dumps(key) + style.key_sep + render(inner, True)
    return "{" + style.newline + inner + member + style.newline + base + "}"


def _array(style: _Style, items: list[str], base: str, multiline: bool) -> str:
    """A new array of already-serialized items, laid out as json.dumps with the file's
    indent would write it at indentation ``base``."""
    if not items:
        return "[]"
    if not multiline:
        return "[" + style.item_sep.join(items) + "]"
    inner = style.newline + base + style.unit
    return "[" + inner + ("," + inner).join(items) + style.newline + base + "]"


def _replace_array(
    text: str, style: _Style, metadata: _Node, old: _Node, after: tuple[str, ...]
) -> tuple[int, int, str]:
    """Replace an existing tags list, reusing its layout and its tags' original escaping."""
    raw = {json.loads(text[i.start : i.end]): text[i.start : i.end] for i in reversed(old.items)}
    items = [raw.get(tag) or json.dumps(tag, ensure_ascii=style.ensure_ascii) for tag in after]
    if not items or not old.items:
        multiline = style.multiline and "\n" in text[metadata.start : metadata.end]
        return old.start, old.end, _array(style, items, _line_indent(text, old.start), multiline)
    opening = text[old.start + 1 : old.items[0].start]
    closing = text[old.items[-1].end : old.end - 1]
    if len(old.items) > 1:
        gap = text[old.items[0].end : old.items[1].start]
    else:
        gap = "," + opening if "\n" in opening else style.item_sep
    return old.start, old.end, "[" + opening + gap.join(items) + closing + "]"


def _insert_member(
    text: str, style: _Style, obj: _Node, key: str, render: _Render
) -> tuple[int, int, str]:
    """Add ``key`` to ``obj``: where nbformat's sorted keys would put it if the object's keys
    are sorted, else last; separated and indented like its siblings."""
    members = obj.members
    if not members:
        base = _line_indent(text, obj.start)
        return obj.start, obj.end, _object(style, key, render, base, style.multiline)
    keys = [m.key for m in members]
    index = bisect_left(keys, key) if keys == sorted(keys) else len(keys)
    if len(members) > 1:
        right = min(max(index, 1), len(members) - 1)
        gap = text[members[right - 1].value.end : members[right].key_start]
    else:
        opening = text[obj.start + 1 : members[0].key_start]
        gap = "," + opening if "\n" in opening else style.item_sep
    multiline = "\n" in gap
    base = gap.rsplit("\n", 1)[-1] if multiline else ""
    key_sep = text[members[0].key_end : members[0].value.start]
    member = json.dumps(key) + key_sep + render(base, multiline)
    if index < len(members):
        at = members[index].key_start
        return at, at, member + gap
    at = members[-1].value.end
    return at, at, gap + member


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    parts: list[str] = []
    done = 0
    for start, end, replacement in sorted(edits):
        assert start >= done, "edits of different cells never overlap"
        parts += [text[done:start], replacement]
        done = end
    return "".join([*parts, text[done:]])


def _verify(old_text: str, new_text: str, changes: list[TagChange]) -> None:
    """Refuse a result that is not the original with exactly these tag changes."""
    expected = _load(old_text)
    for change in changes:
        cell = expected["cells"][change.cell - 1]
        cell.setdefault("metadata", {})["tags"] = list(change.after)
    try:
        actual = _load(new_text)
    except NotebookError:
        actual = None
    if actual != expected:
        raise NotebookError(
            "writing the tags would change more than the tags (the notebook's JSON layout "
            "is not one nb2prod can edit safely); nothing was written",
            hint=_HINT + " Or run `nb2prod tag` without --write and add the tags shown.",
        )


def _replace_atomically(path: Path, original: bytes, new: bytes) -> None:
    """Write ``new`` to a temporary file beside ``path`` and rename it over ``path``, unless
    the file no longer holds ``original``; on any failure the original stays as it was."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise NotebookError(f"cannot write beside {path}: {err.strerror or err}") from err
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(new)
            handle.flush()
            os.fsync(handle.fileno())
        temp.chmod(mode)
        if path.read_bytes() != original:
            raise NotebookError(
                f"{path} changed on disk while nb2prod was tagging it; nothing was written",
                hint="Save or close the notebook in Jupyter, then run the command again.",
            )
        temp.replace(path)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise NotebookError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        # KeyboardInterrupt included: the original is untouched, leave no temporary file.
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable; best effort (some file systems can't open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
