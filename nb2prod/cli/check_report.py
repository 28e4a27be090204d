"""What ``nb2prod check --json`` and ``nb2prod tag`` print: plain data and a table."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from .. import pipeline
from ..build.tagging import TagReport
from ..errors import Nb2ProdError
from ..models import TRAINING_ROLES, NotebookSpec, PreprocessCheck
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


def describe_run(run: PreprocessCheck) -> str:
    """What ``check --run`` ran and found, for a person."""
    stop = f", stopped before train cell {run.stopped_before}" if run.stopped_before else ""
    lines = [f"ran cells {_cell_list(run.cells)} in {run.seconds:.1f} s{stop}"]
    if run.trained:
        why = ", ".join(f"`{name}` (cell {cell})" for name, cell in run.needs.items())
        lines.append(
            f"  note: train cell(s) {_cell_list(run.trained)} ran too: "
            + (f"preprocess reads {why}" if why else "a preprocess cell comes after them")
        )
    lines.extend(
        f"  recorded: cell {site['cell']}, line {site['line']}: {site['expression']} -> "
        f"{site['value']}"
        for site in run.recorded
    )
    if not run.ran:
        lines.append(f"preprocess on sample rows: nothing to run before training ({run.reason})")
        return "\n".join(lines)
    found = run.findings
    output = f" -> `{found['output']}`" if found.get("output") else ""
    guess = ""
    if found.get("output_is_a_guess"):
        guess = " (nb2prod's guess until the model is trained)"
    lines.append(
        f"preprocess on sample rows of `{found['raw_input']}` ({found['training_rows']} rows): "
        f"ok{output}{guess}"
    )
    lines.append(
        f"  1 row -> {_shape(found['features_single'])}; {found['batch_rows']} rows -> "
        f"{_shape(found['features_batch'])}"
    )
    if found.get("compared_alone_and_batch"):
        lines.append("  each row's features are the same alone as in the batch")
    return "\n".join(lines)


def _cell_list(cells: tuple[int, ...] | list[int]) -> str:
    return ", ".join(map(str, cells)) or "(none)"


def _shape(shape: Any) -> str:
    return " x ".join(map(str, shape)) if isinstance(shape, list) else str(shape)


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
