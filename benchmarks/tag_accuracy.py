"""How often ``nb2prod tag`` proposes the role a careful person gives a cell.

Runs ``nb2prod tag NB --json`` over three sets of notebooks and compares each code cell's
proposed role with the hand role:

- ``tests/untagged/*/``: the notebooks as written (Kale tags included: they are the input);
  the hand roles are ``hand_tags.json`` beside each notebook. Exact match, ``null`` included.
- ``tests/messy/*/`` and ``example_notebooks/``: the notebooks' own role tags are the hand roles,
  stripped (tags and ``# nb2prod: ROLE`` first lines) in a temporary copy before ``tag`` reads
  it. Their untagged cells are never run by nb2prod, so a hand ``null`` there is matched by a
  proposed ``null`` or ``skip``.

Prints, per notebook, ``right/total`` and the misses as ``hand -> proposed`` with their cell
numbers, then the overall ratio. Prints ``n/a`` if this nb2prod has no ``tag`` command.

    python benchmarks/tag_accuracy.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("parameters", "load", "preprocess", "train", "evaluate", "predict", "skip")
_DIRECTIVE = re.compile(r"^\s*#\s*nb2prod:\s*(\w+)\s*$")


@dataclass(frozen=True)
class Subject:
    """One notebook to tag: where ``tag`` reads it, the hand roles, and how they match."""

    label: str
    notebook: Path
    hand: dict[int, str | None]
    #: True where an untagged cell is as good as ``skip`` (the hand roles came from tags).
    null_is_skip: bool


@dataclass
class Score:
    """Right and total cells of one notebook, and the misses by (hand, proposed)."""

    right: int = 0
    total: int = 0
    misses: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))


class TagUnavailableError(RuntimeError):
    """Raised when the installed nb2prod has no ``tag`` command."""


def untagged_subjects() -> list[Subject]:
    """The untagged corpus as written, against its hand_tags.json."""
    subjects = []
    for hand_file in sorted((ROOT / "tests" / "untagged").glob("*/hand_tags.json")):
        folder = hand_file.parent
        cells = json.loads(hand_file.read_text(encoding="utf-8"))["cells"]
        hand = {int(number): role for number, role in cells.items()}
        subjects.append(Subject(folder.name, folder / f"{folder.name}.ipynb", hand, False))
    return subjects


def stripped_subject(label: str, notebook: Path, scratch: Path) -> Subject:
    """A copy of ``notebook`` in ``scratch`` without its role tags and directives; its own tags
    become the hand roles. Data files are not copied: ``tag`` only reads the notebook."""
    nb = nbformat.read(notebook, as_version=4)
    hand: dict[int, str | None] = {}
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        tags = list(cell.get("metadata", {}).get("tags", []))
        roles = [tag for tag in tags if tag in ROLES]
        lines = cell.source.splitlines()
        directive = _DIRECTIVE.match(lines[0]) if lines else None
        if directive and directive.group(1) in ROLES:
            roles.append(directive.group(1))
            cell.source = "\n".join(lines[1:])
        hand[number] = roles[0] if roles else None
        kept = [tag for tag in tags if tag not in ROLES]
        if kept:
            cell.metadata["tags"] = kept
        else:
            cell.metadata.pop("tags", None)
    copy = scratch / label / notebook.name
    copy.parent.mkdir(parents=True)
    nbformat.write(nb, copy)
    return Subject(label, copy, hand, True)


def proposed_roles(notebook: Path) -> dict[int, str | None]:
    """``nb2prod tag NOTEBOOK --json``'s role per cell number."""
    result = subprocess.run(
        [sys.executable, "-m", "nb2prod", "tag", str(notebook), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0 and "No such command" in result.stderr:
        raise TagUnavailableError(result.stderr.strip().splitlines()[-1])
    if result.returncode != 0:
        raise RuntimeError(
            f"nb2prod tag {notebook.name} exited {result.returncode}:\n{result.stderr}"
        )
    found: dict[str, Any] = json.loads(result.stdout)
    return {int(entry["cell"]): entry["role"] for entry in found["cells"]}


def score(subject: Subject, proposed: dict[int, str | None]) -> Score:
    """Compare every hand-tagged cell with the proposal (a cell ``tag`` left out is a miss)."""
    result = Score()
    for number, hand in sorted(subject.hand.items()):
        got = proposed.get(number, "<absent>")
        result.total += 1
        if got == hand or (subject.null_is_skip and hand is None and got == "skip"):
            result.right += 1
        else:
            result.misses[(str(hand), str(got))].append(number)
    return result


def report(label: str, result: Score) -> str:
    """One line per notebook, and one indented line per kind of miss."""
    lines = [f"{label:<36} {result.right:>3}/{result.total:<3}"]
    for (hand, got), cells in sorted(result.misses.items()):
        numbers = ", ".join(str(n) for n in cells)
        lines.append(f"    {hand:>10} -> {got:<10} x{len(cells)}  (cells {numbers})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score ``nb2prod tag`` on the three notebook sets and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="notebook names to score (default: all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tag-accuracy-") as scratch_dir:
        scratch = Path(scratch_dir)
        subjects = untagged_subjects()
        for notebook in sorted((ROOT / "tests" / "messy").glob("*/*.ipynb")):
            subjects.append(stripped_subject(f"messy/{notebook.stem}", notebook, scratch))
        for notebook in sorted((ROOT / "example_notebooks").glob("*.ipynb")):
            subjects.append(stripped_subject(f"examples/{notebook.stem}", notebook, scratch))
        if args.only:
            subjects = [s for s in subjects if s.notebook.stem in args.only]
        totals, confusion = Score(), Counter[tuple[str, str]]()
        for subject in subjects:
            try:
                result = score(subject, proposed_roles(subject.notebook))
            except TagUnavailableError as err:
                print(f"tag accuracy: n/a ({err})")
                return 0
            except RuntimeError as err:
                print(f"{subject.label:<36} error: {err}")
                continue
            print(report(subject.label, result))
            totals.right += result.right
            totals.total += result.total
            for key, cells in result.misses.items():
                confusion[key] += len(cells)
    ratio = totals.right / totals.total if totals.total else float("nan")
    print(f"\noverall {totals.right}/{totals.total} = {ratio:.1%}")
    for (hand, got), count in confusion.most_common():
        print(f"    {hand:>10} -> {got:<10} x{count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
