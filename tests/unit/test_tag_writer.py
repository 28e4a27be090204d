"""``nb2prod tag --write`` changes only the tags lists of a notebook file, byte for byte.

Expected files are built independently of the writer: by serializing the expected notebook
the same way the fixture was serialized (nbformat.write, json.dumps with the same options), or
by hand for small files with unusual layouts.
"""

from __future__ import annotations

import copy
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nb2prod.build import tag_writer
from nb2prod.build.tag_writer import TagChange, plan_tag_changes, write_tags
from nb2prod.errors import NotebookError

PNG = (  # a 1x1 PNG, base64 as Jupyter stores it
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WIDGETS = {
    "application/vnd.jupyter.widget-state+json": {
        "state": {
            "8f2a": {
                "model_module": "@jupyter-widgets/controls",
                "model_module_version": "2.0.0",
                "model_name": "IntSliderModel",
                "state": {"description": "n", "max": 10, "value": 3},
            }
        },
        "version_major": 2,
        "version_minor": 0,
    }
}
#: Cell 1 is markdown: nb2prod numbers cells among all cells.
WANTED: dict[int, tuple[str, ...]] = {
    2: ("imports",),  # "metadata": {}
    3: ("load",),  # "metadata": {"collapsed": false, "scrolled": true}
    4: ("parameters-papermill", "block:load", "parameters"),  # other tools' tags kept, in order
    5: ("train", "modèle"),  # a non-ASCII tag follows the file's escaping
}
CHANGES = [
    TagChange(2, (), ("imports",)),
    TagChange(3, (), ("load",)),
    TagChange(
        4,
        ("parameters-papermill", "block:load"),
        ("parameters-papermill", "block:load", "parameters"),
    ),
    TagChange(5, (), ("train", "modèle")),
]


def _notebook() -> nbformat.NotebookNode:
    outputs = [
        new_output("stream", name="stdout", text="loaded 150 rows\nréussi ✓\n"),
        new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
        new_output(
            "error", ename="KeyError", evalue="'x'", traceback=["\x1b[0;31mKeyError\x1b[0m"]
        ),
    ]
    cells = [
        new_markdown_cell("# Modèle des données 数据"),
        new_code_cell("import pandas as pd\n# données: 数据"),
        new_code_cell(
            "df = pd.read_csv('iris.csv')\ndf.plot()",
            metadata={"collapsed": False, "scrolled": True},
            outputs=outputs,
            execution_count=2,
        ),
        new_code_cell("alpha = 0.5", metadata={"tags": ["parameters-papermill", "block:load"]}),
        new_code_cell("model.fit(X, y)"),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["widgets"] = WIDGETS
    return nb


def _with_tags(nb: dict[str, Any], wanted: dict[int, tuple[str, ...]]) -> Any:
    expected = copy.deepcopy(nb)
    for number, tags in wanted.items():
        expected["cells"][number - 1].setdefault("metadata", {})["tags"] = list(tags)
    return expected


def _nbformat_text(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"  # what nbformat.write puts in a file


SERIALIZERS: dict[str, Callable[[nbformat.NotebookNode], str]] = {
    "nbformat": _nbformat_text,
    "nbformat-ascii": lambda nb: nbformat.writes(nb, ensure_ascii=True) + "\n",
    "nbformat-crlf": lambda nb: _nbformat_text(nb).replace("\n", "\r\n"),
    "nbformat-no-final-newline": nbformat.writes,
    "compact": json.dumps,  # ensure_ascii=True, keys in insertion order, one line
    "compact-unicode": lambda nb: json.dumps(nb, ensure_ascii=False, separators=(",", ":")),
    "indent2": lambda nb: json.dumps(nb, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))  # bytes: CRLF stays CRLF
    return path


def _valid(text: str) -> None:
    nbformat.validate(nbformat.reads(text, as_version=4))


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_only_the_tags_change_byte_for_byte(tmp_path: Path, serializer: str) -> None:
    nb = _notebook()
    dump = SERIALIZERS[serializer]
    path = _write(tmp_path / "model.ipynb", dump(nb))

    changes = write_tags(path, WANTED)

    assert changes == CHANGES
    written = path.read_bytes().decode("utf-8")
    assert written == dump(_with_tags(nb, WANTED))
    _valid(written)
    assert os.listdir(tmp_path) == ["model.ipynb"]


def test_nbformat_layout_of_a_new_tags_member(tmp_path: Path) -> None:
    """The brief's example, spelled out: ``{}`` opens at the cell's depth, indent 1."""
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(_notebook()))
    write_tags(path, {2: ("train",)})
    assert '   "metadata": {\n    "tags": [\n     "train"\n    ]\n   },\n' in path.read_text()


def test_other_tools_tags_can_be_replaced(tmp_path: Path) -> None:
    nb = _notebook()
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(nb))
    wanted = {4: ("block:load", "load")}
    assert write_tags(path, wanted) == [
        TagChange(4, ("parameters-papermill", "block:load"), ("block:load", "load"))
    ]
    assert path.read_text() == _nbformat_text(_with_tags(nb, wanted))
    assert write_tags(path, {4: ()}) == [TagChange(4, ("block:load", "load"), ())]
    assert path.read_text() == _nbformat_text(_with_tags(nb, {4: ()}))


@pytest.mark.parametrize(
    "metadata",
    [
        {"trusted": True},  # "tags" goes before the only key, as sorted keys put it
        {"jupyter": {"source_hidden": True}, "trusted": True},  # between two keys
        {"tags": []},  # an empty list becomes a multi-line one
        {"tags": ["a"], "trusted": True},
    ],
)
@pytest.mark.parametrize(
    "dump",
    [
        _nbformat_text,
        lambda nb: json.dumps(nb, sort_keys=True),
        lambda nb: json.dumps(nb, indent=3, sort_keys=True).replace("\n", "\r\n"),
    ],
    ids=["nbformat", "compact-sorted", "indent3-crlf"],
)
def test_metadata_shapes(
    tmp_path: Path, metadata: dict[str, Any], dump: Callable[[Any], str]
) -> None:
    nb = new_notebook(cells=[new_markdown_cell("x"), new_code_cell("y = 1", metadata=metadata)])
    path = _write(tmp_path / "nb.ipynb", dump(nb))
    wanted = {2: ("train", "b")}
    assert write_tags(path, wanted) == [
        TagChange(2, tuple(metadata.get("tags", ())), ("train", "b"))
    ]
    assert path.read_bytes().decode() == dump(_with_tags(nb, wanted))
    _valid(path.read_text())


def test_cell_without_metadata_gets_one_in_sorted_or_last_position(tmp_path: Path) -> None:
    cell = {"cell_type": "code", "execution_count": None, "outputs": [], "source": "x = 1"}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    indented = _write(tmp_path / "a.ipynb", json.dumps(nb, indent=1, sort_keys=True) + "\n")
    write_tags(indented, {1: ("train",)})
    expected = _with_tags(nb, {1: ("train",)})
    assert indented.read_text() == json.dumps(expected, indent=1, sort_keys=True) + "\n"

    compact = _write(tmp_path / "b.ipynb", '{"cells": [{"source": "x", "cell_type": "code"}]}')
    write_tags(compact, {1: ("train",)})
    expected_text = (
        '{"cells": [{"source": "x", "cell_type": "code", "metadata": {"tags": ["train"]}}]}'
    )
    assert compact.read_text() == expected_text


def test_unusual_layout_is_kept(tmp_path: Path) -> None:
    """Tabs, an inline tags list in an indented file, unsorted keys, an escaped tag kept."""
    before = (
        '{\n\t"cells": [\n'
        '\t\t{\n\t\t\t"cell_type": "code",\n'
        '\t\t\t"metadata": {"tags": ["caf\\u00e9", "b"]},\n'
        '\t\t\t"source": "x = \'é\'"\n\t\t},\n'
        '\t\t{\n\t\t\t"cell_type": "code",\n'
        '\t\t\t"metadata": {\n\t\t\t\t"zeta": 1,\n\t\t\t\t"alpha": [1, 2]\n\t\t\t},\n'
        '\t\t\t"source": "y = 2"\n\t\t}\n'
        '\t],\n\t"metadata": {},\n\t"nbformat": 4,\n\t"nbformat_minor": 4\n}'
    )
    after = (
        '{\n\t"cells": [\n'
        '\t\t{\n\t\t\t"cell_type": "code",\n'
        '\t\t\t"metadata": {"tags": ["caf\\u00e9", "b", "train"]},\n'
        '\t\t\t"source": "x = \'é\'"\n\t\t},\n'
        '\t\t{\n\t\t\t"cell_type": "code",\n'
        '\t\t\t"metadata": {\n\t\t\t\t"zeta": 1,\n\t\t\t\t"alpha": [1, 2],\n'
        '\t\t\t\t"tags": [\n\t\t\t\t\t"predict"\n\t\t\t\t]\n\t\t\t},\n'
        '\t\t\t"source": "y = 2"\n\t\t}\n'
        '\t],\n\t"metadata": {},\n\t"nbformat": 4,\n\t"nbformat_minor": 4\n}'
    )
    new_text, changes = plan_tag_changes(before, {1: ("café", "b", "train"), 2: ("predict",)})
    assert new_text == after
    assert changes == [
        TagChange(1, ("café", "b"), ("café", "b", "train")),
        TagChange(2, (), ("predict",)),
    ]


def test_byte_order_mark_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_bytes(b'\xef\xbb\xbf{"cells": [{"metadata": {}, "cell_type": "code"}]}')
    write_tags(path, {1: ("train",)})
    expected = b'\xef\xbb\xbf{"cells": [{"metadata": {"tags": ["train"]}, "cell_type": "code"}]}'
    assert path.read_bytes() == expected


def test_unchanged_request_does_not_touch_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(_notebook()))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.read_bytes()
    inode = path.stat().st_ino

    assert write_tags(path, {2: (), 4: ("parameters-papermill", "block:load")}) == []
    assert write_tags(path, {}) == []
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert path.stat().st_ino == inode


def test_permissions_and_symlinks_are_kept(tmp_path: Path) -> None:
    real = _write(tmp_path / "real.ipynb", _nbformat_text(_notebook()))
    real.chmod(0o640)
    link = tmp_path / "link.ipynb"
    link.symlink_to(real)

    write_tags(link, {2: ("train",)})

    assert link.is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert json.loads(real.read_text())["cells"][1]["metadata"] == {"tags": ["train"]}
    assert sorted(os.listdir(tmp_path)) == ["link.ipynb", "real.ipynb"]


def test_refuses_when_the_file_changed_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(_notebook()))
    saved_by_jupyter = _nbformat_text(_with_tags(_notebook(), {5: ("mine",)}))
    plan = tag_writer.plan_tag_changes

    def plan_then_user_saves(text: str, wanted: dict[int, tuple[str, ...]]):
        result = plan(text, wanted)
        path.write_text(saved_by_jupyter)
        return result

    monkeypatch.setattr(tag_writer, "plan_tag_changes", plan_then_user_saves)
    with pytest.raises(NotebookError, match="changed on disk") as info:
        write_tags(path, {2: ("train",)})
    assert info.value.hint
    assert path.read_text() == saved_by_jupyter
    assert os.listdir(tmp_path) == ["nb.ipynb"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(_notebook()))
    before = path.read_bytes()

    def interrupted(*args: object) -> None:
        raise failure(28, "No space left on device") if failure is OSError else failure()

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(NotebookError if failure is OSError else KeyboardInterrupt):
        write_tags(path, {2: ("train",)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["nb.ipynb"]


def test_a_splice_that_changes_more_than_tags_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(_notebook()))
    before = path.read_bytes()
    monkeypatch.setattr(tag_writer, "_array", lambda *args: '["something else"]')
    with pytest.raises(NotebookError, match="more than the tags"):
        write_tags(path, {2: ("train",)})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["nb.ipynb"]


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ({0: ("train",)}, "cells 1 to 5"),
        ({6: ("train",)}, "cells 1 to 5"),
        ({2: ("a,b",)}, "without commas"),
        ({2: ("",)}, "non-empty"),
        ({2: ("train", "train")}, "distinct"),
    ],
)
def test_bad_requests_are_refused(
    tmp_path: Path, wanted: dict[int, tuple[str, ...]], message: str
) -> None:
    path = _write(tmp_path / "nb.ipynb", _nbformat_text(_notebook()))
    before = path.read_bytes()
    with pytest.raises(NotebookError, match=message):
        write_tags(path, wanted)
    assert path.read_bytes() == before


def test_broken_files_are_refused(tmp_path: Path) -> None:
    not_json = _write(tmp_path / "a.ipynb", '{"cells": [')
    with pytest.raises(NotebookError, match="not valid JSON"):
        write_tags(not_json, {1: ("train",)})
    bad_tags = _write(tmp_path / "b.ipynb", '{"cells": [{"metadata": {"tags": "train"}}]}')
    with pytest.raises(NotebookError, match="not a list of strings"):
        write_tags(bad_tags, {1: ("train",)})
    with pytest.raises(NotebookError, match="cannot read"):
        write_tags(tmp_path / "missing.ipynb", {1: ("train",)})
