"""What ``nb2prod check --json`` and ``nb2prod tag`` print: plain data and a table."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .. import pipeline
from ..build.tagging import TagReport
from ..errors import Nb2ProdError
from ..models import TRAINING_ROLES, NotebookSpec
from ..runtime.plan import ServingPlan


def findings(spec: NotebookSpec, plan: ServingPlan) -> dict[str, Any]:
    """``check --json`` when the notebook passes: the cells, their roles and the serving plan."""
    return {
        "ok": True,
        "notebook": str(spec.path),
        "cells": [
            {
                "cell": cell.number,
                "role": cell.role,
                "runs_in_training": cell.role in TRAINING_ROLES,
                "from": cell.origin,
                "first_line": cell.first_line if cell.source.strip() else "",
            }
            for cell in spec.cells
        ],
        "kale_blocks": [
            {"block": b.name, "role": b.role, "cells": list(b.cells), "how": b.how}
            for b in spec.kale_blocks
        ],
        "preprocess_style": spec.preprocess_style,
        "predict_style": spec.predict_style,
        "serving_reads": list(spec.serving_reads),
        "parameters": {k: repr(v) for k, v in spec.parameters.items()},
        "pip_hints": list(spec.pip_hints),
        "recorded": [
            {"cell": s.cell, "line": s.line, "kind": s.kind, "expression": s.expression}
            for s in plan.sites
        ],
        "notices": list(spec.notices),
    }


def refusal(notebook: Path, err: Nb2ProdError, role_map: dict[str, str]) -> dict[str, Any]:
    """``check --json`` when the notebook is refused: the error, and the cells as tagged."""
    return {
        "ok": False,
        "notebook": str(notebook),
        "error": err.message,
        "hint": err.hint,
        "exit_code": err.exit_code,
        "cells": pipeline.cell_listing(notebook, role_map),
    }


def tag_table(report: TagReport) -> str:
    """The ``nb2prod tag`` table: cell, role, where it comes from, why, and the first line."""
    lines = [f"{'cell':>4}  {'role':<11} {'from':<10} {'why':<52} first line"]
    for c in report.cells:
        origin = c.origin or ""
        lines.append(
            f"{c.cell:>4}  {c.role or '-':<11} {origin:<10} {c.reason[:52]:<52} {c.first_line[:40]}"
        )
    if report.kale_blocks:
        lines.append("Kubeflow Kale blocks:")
        lines.extend(f"  {b.name:<20} -> {b.role:<11} ({b.how})" for b in report.kale_blocks)
    hint = report.predict_missing
    if hint is not None:
        lines.append(
            "No cell makes predictions on its own (a predict cell must not also score them). "
            f"Add this cell after cell {hint.after_cell}:"
        )
        lines.append(textwrap.indent(hint.source, "    "))
    wanted = report.wanted_tags()
    if wanted:
        command = f"nb2prod tag {report.path.name} --write"
        lines.append(f"{len(wanted)} cells would be tagged; `{command}` adds them.")
    return "\n".join(lines)
