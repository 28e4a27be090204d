"""Which role each cell has, and where the role comes from.

In order of precedence: nb2prod's own Jupyter tag (``train``) or first-line directive
(``# nb2prod: train``); a Kubeflow Kale tag (see kale.py); and, for an untagged cell that only
defines functions, classes or constants that run cells use, ``definitions`` (it runs in the
training script, in notebook order, as if it were tagged). An untagged cell that *computes* a
name a run cell reads is refused here, naming the cell, the name and the role to tag it with,
so that ``check`` finds it instead of a training run failing on a NameError.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import NotebookError
from ..models import ROLES, TRAINING_ROLES, Cell, ImportBinding, KaleBlock
from . import kale
from .roles import SETUP, definition_cells, propose_roles

ROLE_COMMENT = re.compile(r"^\s*#\s*nb2prod\s*:\s*([\w-]+)\s*$")
#: A line that keeps a cell out of record/replay (the fit refusal applies instead).
STRICT_DIRECTIVE = "strict"


def own_role(number: int, source: str, tags: list[str]) -> tuple[str | None, str | None]:
    """The role nb2prod's own tag or directive gives the cell, and which of the two it was."""
    roles = [tag for tag in tags if tag in ROLES]
    origin = "tag" if roles else None
    first = next((line for line in source.splitlines() if line.strip()), "")
    comment = ROLE_COMMENT.match(first)
    if comment and comment.group(1) != STRICT_DIRECTIVE:
        if comment.group(1) == "sensitive":  # the directive, without its columns
            raise NotebookError(
                f"cell {number}: {first.strip()!r} names no columns",
                hint="Name them, in the parameters cell: `# nb2prod: sensitive=ssn,email`.",
            )
        if comment.group(1) not in ROLES:
            raise NotebookError(
                f"cell {number}: unknown role {comment.group(1)!r} in {first.strip()!r}",
                hint=f"Roles are: {', '.join(ROLES)}.",
            )
        roles.append(comment.group(1))
        origin = origin or "directive"
    roles = list(dict.fromkeys(roles))
    if len(roles) > 1:
        raise NotebookError(
            f"cell {number} ({first.strip()[:80]!r}) has several roles: {', '.join(roles)}",
            hint="Give each cell one role; split the cell if it does two jobs.",
        )
    return (roles[0], origin) if roles else (None, None)


def kale_roles(
    tags: Mapping[int, list[str]],
    own: set[int],
    baseline: Sequence[Cell],
    role_map: Mapping[str, str],
) -> tuple[dict[int, str], tuple[KaleBlock, ...]]:
    """Roles from Kale's tags for the cells without an nb2prod role, and the block mapping.

    ``baseline`` holds every code cell read without roles: the analysis that maps blocks reads
    their code.
    """
    steps = kale.kale_steps(tags, own)
    if not steps:
        if role_map:
            raise NotebookError(
                "--role-map maps Kubeflow Kale blocks, and this notebook has no Kale "
                "`block:`/`step:` tags",
                hint="Tag the cells with nb2prod's roles instead (`nb2prod tag NOTEBOOK --write`).",
            )
        return {}, ()
    proposals, _ = propose_roles(baseline)
    blocks = kale.kale_blocks(steps, proposals, role_map)
    return kale.roles_by_cell(blocks, proposals), tuple(blocks)


def include_definitions(cells: list[Cell], notices: list[str]) -> list[Cell]:
    """Untagged cells that only define what run cells read (or seed the session) run too."""
    defining = definition_cells(cells)
    out = list(cells)
    # Backwards, so that a constant an included helper reads is included too
    # (``def load(path=HOUSING_PATH)`` in one untagged cell, ``HOUSING_PATH = ...`` above it).
    read: set[str] = set()
    for index in reversed(range(len(out))):
        cell = out[index]
        if cell.role is None and cell.number in defining and cell.code.strip():
            if read & set(cell.binds) or _seeds(cell):
                out[index] = cell = replace(cell, role="definitions", origin="definition")
        if cell.role in TRAINING_ROLES:
            read |= set(cell.reads)
    included = [c for c in out if c.origin == "definition"]
    if included:
        listed = ", ".join(str(c.number) for c in included)
        names = sorted({n for c in included for n in c.binds})
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        notices.append(
            f"untagged cells {listed} only define things the tagged cells use"
            + (f" ({shown})" if shown else "")
            + "; nb2prod runs them too, in notebook order"
        )
    return out


def refuse_untagged_bindings(
    cells: Sequence[Cell], imports: Mapping[str, ImportBinding], path: Path
) -> None:
    """A cell nb2prod runs (in training or serving) must not read a name that only cells it
    never runs (untagged, ``skip``) bind."""
    for cell in cells:
        if not _runs(cell) or cell.role == "parameters":
            continue
        for name in cell.reads:
            if name in imports:
                continue
            binders = [c for c in cells if name in c.binds and c is not cell]
            if not binders or any(_runs(c) for c in binders):
                continue
            where = [c for c in binders if c.number < cell.number] or binders
            binder = where[-1]
            proposals = {p.cell: p for p in propose_roles(cells)[0]}
            proposal = proposals.get(binder.number)
            role = proposal.role if proposal and proposal.role not in (None, "skip") else None
            role = role or ("evaluate" if cell.role == "evaluate" else "load")
            kind = "a `skip` cell" if binder.role == "skip" else "untagged"
            raise NotebookError(
                f"{cell.label} reads `{name}`, which only cell {binder.number} ({kind}, "
                f"{binder.first_line!r}) binds, and nb2prod never runs that cell",
                hint=f"Tag cell {binder.number} `{role}` (or run `nb2prod tag {path.name}` to "
                f"see a role for every cell), or move the line that binds `{name}` into a "
                "tagged cell.",
            )


def _runs(cell: Cell) -> bool:
    return cell.role not in (None, "skip")


def _seeds(cell: Cell) -> bool:
    """The cell seeds a random generator: without it, training would not match Run All."""
    try:
        tree = ast.parse(cell.code)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in SETUP
        and "seed" in node.func.attr
        for node in ast.walk(tree)
    )
