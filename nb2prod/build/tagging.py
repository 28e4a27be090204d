"""``nb2prod tag``: a role for every code cell, where it comes from, and writing the tags.

A cell nb2prod already reads a role for (its own tag or directive, or a Kubeflow Kale tag)
keeps it; every other cell gets the role :mod:`roles` proposes. Writing adds only the proposed
and Kale-derived roles as Jupyter tags (tag_writer.py changes nothing else in the file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import TRAINING_ROLES, KaleBlock
from . import notebook
from .roles import PredictHint, propose_roles
from .tag_writer import TagChange, write_tags


@dataclass(frozen=True)
class TaggedCell:
    """One row of the table: the cell, its role, and why."""

    cell: int
    role: str | None
    reason: str
    first_line: str
    origin: str | None  # "tag" | "directive" | "kale" | "proposed" | "definition" | None
    tags: tuple[str, ...]  # the cell's Jupyter tags as read


@dataclass(frozen=True)
class TagReport:
    """What ``nb2prod tag`` found for a notebook."""

    path: Path
    cells: tuple[TaggedCell, ...]
    predict_missing: PredictHint | None
    kale_blocks: tuple[KaleBlock, ...]

    def to_json(self) -> dict[str, Any]:
        """The report as ``nb2prod tag --json`` prints it."""
        return {
            "notebook": str(self.path),
            "cells": [
                {
                    "cell": c.cell,
                    "role": c.role,
                    "reason": c.reason,
                    "first_line": c.first_line,
                    "from": c.origin,
                }
                for c in self.cells
            ],
            "predict_missing": (
                None
                if self.predict_missing is None
                else {
                    "after_cell": self.predict_missing.after_cell,
                    "source": self.predict_missing.source,
                }
            ),
        }

    def wanted_tags(self) -> dict[int, tuple[str, ...]]:
        """The tags ``--write`` sets: the cell's own tags plus the role nb2prod would add."""
        return {
            c.cell: (*c.tags, c.role)
            for c in self.cells
            if c.role is not None and c.origin in ("proposed", "kale") and c.role not in c.tags
        }


def tag_report(path: Path, role_map: dict[str, str] | None = None) -> TagReport:
    """Each code cell's role as nb2prod reads it, or as proposed when nothing gives one."""
    read = notebook.cell_roles(path, role_map)
    blocks = read.kale_blocks
    proposals, hint = propose_roles(read.cells)
    rows = []
    for cell, proposal in zip(read.cells, proposals, strict=True):
        role, origin = read.assigned.get(cell.number, (None, None))
        if role is not None:
            reason = _assigned_reason(origin, cell.number, blocks, proposal.reason)
        else:
            role, reason = proposal.role, proposal.reason
            origin = "proposed" if role is not None else _unassigned_origin(reason)
        first = cell.first_line if cell.source.strip() else "(empty cell)"
        tags = tuple(read.tags[cell.number])
        rows.append(TaggedCell(cell.number, role, reason, first, origin, tags))
    if any(r.role == "predict" for r in rows):
        hint = None
    return TagReport(path=path, cells=tuple(rows), predict_missing=hint, kale_blocks=blocks)


def write_report(report: TagReport) -> list[TagChange]:
    """Add the report's roles as tags to the notebook (atomically; nothing else changes)."""
    return write_tags(report.path, report.wanted_tags())


def _assigned_reason(
    origin: str | None, number: int, blocks: tuple[KaleBlock, ...], proposed: str
) -> str:
    if origin == "kale":
        block = next((b for b in blocks if number in b.cells), None)
        if block is not None:
            how = {"analysis": proposed, "--role-map": "--role-map", "kale tag": "Kale tag"}
            return f"Kale {block.name}: {how.get(block.how, block.how)}"
    return "tagged" if origin == "tag" else "`# nb2prod:` line"


def _unassigned_origin(reason: str) -> str | None:
    return "definition" if reason.startswith("defines") else None


def cell_listing(path: Path, role_map: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every code cell with the role its tags give it, for a ``check --json`` that refused.

    Read leniently: nothing is refused here (a notebook that cannot be read at all has no
    cells to list).
    """
    try:
        read = notebook.cell_roles(path, role_map)
    except Exception:  # the refusal being reported already says what is wrong
        return []
    rows = []
    for cell in read.cells:
        role, origin = read.assigned.get(cell.number, (None, None))
        rows.append(
            {
                "cell": cell.number,
                "role": role,
                "runs_in_training": role in TRAINING_ROLES,
                "from": origin,
                "first_line": cell.first_line if cell.source.strip() else "",
            }
        )
    return rows
