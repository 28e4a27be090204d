"""Kubeflow Kale's cell tags, read as nb2prod roles.

Kale tags cells ``block:NAME`` or ``step:NAME`` (``prev:NAME`` orders the pipeline and means
nothing here), and has five special tags: ``imports``, ``functions``, ``pipeline-parameters``,
``pipeline-metrics`` and ``skip``. As Kale does, an untagged cell continues the step (or special
tag) above it, ``skip`` never continues, and untagged cells before the first tag are not run.

The special tags map to roles directly (``imports``/``functions`` become ``definitions``, run
before every role's code as Kale prepends them to every step). A block gets the role that the
same analysis as ``nb2prod tag`` gives its cells (:func:`roles.block_role`), unless
``--role-map block=role`` says otherwise. nb2prod's own tags win over Kale's on the same cell.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import ConfigError
from ..models import ROLES
from ..models import KaleBlock as Block
from .roles import Proposal, block_role

SPECIAL = {
    "imports": "definitions",
    "functions": "definitions",
    "pipeline-parameters": "parameters",
    "pipeline-metrics": "evaluate",
    "skip": "skip",
}
_STEP = re.compile(r"^(?:block|step):([_a-z][_a-z0-9]*)?$")


def kale_steps(tags_by_cell: Mapping[int, Sequence[str]], own: set[int]) -> dict[int, str]:
    """Each code cell Kale runs -> its step (block name or special tag), as Kale reads them.

    ``tags_by_cell`` holds every code cell in order, with its tags; ``own`` the cells with an
    nb2prod role, which win over Kale and end the block above them. Empty unless some cell
    carries a ``block:``/``step:`` tag (Kale's special tags alone make no pipeline).
    """
    steps: dict[int, str] = {}
    previous: str | None = None
    if not any(_STEP.match(tag) for tags in tags_by_cell.values() for tag in tags):
        return steps
    for number, tags in tags_by_cell.items():
        if number in own:
            previous = None
            continue
        step = _kale_tag(tags)
        if step == "skip":
            steps[number] = "skip"  # and not "previous": the next untagged cell continues above
            continue
        if step is None:
            if previous is not None:
                steps[number] = previous
            continue
        steps[number] = previous = step
    return steps


def kale_blocks(
    steps: Mapping[int, str], proposals: Sequence[Proposal], role_map: Mapping[str, str]
) -> list[Block]:
    """The blocks in notebook order, each with its role."""
    proposed = {p.cell: p.role for p in proposals}
    names = list(dict.fromkeys(steps.values()))
    unknown = sorted(set(role_map) - set(names))
    if unknown:
        listed = ", ".join(n for n in names if n not in SPECIAL) or "(none)"
        raise ConfigError(
            f"--role-map names {', '.join(unknown)}, which is not a Kale block of this notebook",
            hint=f"The notebook's Kale blocks: {listed}.",
        )
    blocks = []
    for name in names:
        cells = tuple(n for n, step in steps.items() if step == name)
        if name in role_map:
            blocks.append(Block(name, role_map[name], cells, "--role-map"))
        elif name in SPECIAL:
            blocks.append(Block(name, SPECIAL[name], cells, "kale tag"))
        else:
            role = block_role([proposed.get(n) for n in cells]) or "definitions"
            # Kale runs every block: one nb2prod would skip still runs in training.
            blocks.append(Block(name, "evaluate" if role == "skip" else role, cells, "analysis"))
    return blocks


def roles_by_cell(blocks: Sequence[Block], proposals: Sequence[Proposal]) -> dict[int, str]:
    """Each Kale cell's role: its block's, except around the predict cell of a predict block.

    A block that predicts often also scores (``y_pred = model.predict(X_test)`` then
    ``accuracy_score(...)``): only the predicting cell is served; cells after it are evaluation,
    cells before it that prepare its input are preprocessing.
    """
    proposed = {p.cell: p.role for p in proposals}
    roles: dict[int, str] = {}
    for block in blocks:
        predicting = [n for n in block.cells if proposed.get(n) == "predict"]
        for number in block.cells:
            if block.role != "predict" or not predicting or block.how == "--role-map":
                roles[number] = block.role
            elif number == predicting[-1]:
                roles[number] = "predict"
            elif number > predicting[-1]:
                roles[number] = "evaluate"
            else:
                roles[number] = "preprocess" if proposed.get(number) == "preprocess" else "skip"
    return roles


def parse_role_map(text: str | None) -> dict[str, str]:
    """``--role-map loaddata=load,featureengineering=preprocess`` -> {block: role}."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        block, sep, role = (part.strip() for part in item.partition("="))
        if not sep or not block or role not in ROLES:
            raise ConfigError(
                f"--role-map: {item.strip()!r} is not BLOCK=ROLE",
                hint=f"Write it as --role-map loaddata=load,featureengineering=preprocess; "
                f"roles are: {', '.join(ROLES)}.",
            )
        mapping[block] = role
    return mapping


def _kale_tag(tags: Sequence[str]) -> str | None:
    for tag in tags:
        if tag in SPECIAL:
            return tag
        match = _STEP.match(tag)
        if match and match.group(1):
            return match.group(1)
    return None
