"""Expected predictions for a notebook, computed the way its author would compute them.

This is the tests' independent oracle: it shares no code with nb2prod. It runs the notebook top
to bottom in a real Jupyter kernel (every code cell except those tagged ``skip``, untagged
exploration cells included, magics and all, with the notebook's folder as working directory),
then runs a hand-written *recipe* in the same kernel on the given raw rows and reads the
predictions back as JSON.

A recipe is ordinary notebook code with three helpers defined for it:

- ``__rows``: the rows as a DataFrame built from their JSON values;
- ``__like(frame)``: ``__rows`` with ``frame``'s columns, column order and dtypes (a column the
  rows lack is filled with missing values), i.e. the rows as the notebook's own raw frame holds
  them;
- a line that is exactly ``{{cells:ROLE}}`` re-runs the notebook's cells tagged ROLE (script
  style notebooks have no function to call).

The recipe must bind ``__out`` to the predictions. The recipe for each example notebook is test
knowledge written by hand in :data:`RECIPES`, never derived from what nb2prod generates.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode

RECIPES: dict[str, str] = {
    # Function style: the notebook's own functions, on rows typed like the training frame X.
    "iris_function": "__out = predict(model, preprocess(__like(X)))",
    # Script style: rebind the raw frame the preprocess cell reads, re-run preprocess and
    # predict, and take the predict cell's last assignment.
    "wine_script": "\n".join(
        [
            "raw = __like(raw)",
            "{{cells:preprocess}}",
            "{{cells:predict}}",
            "__out = predictions",
        ]
    ),
    "diabetes_regression": "__out = predict(model, preprocess(__like(X)))",
}

RUN_TIMEOUT_SECONDS = 600
_MARKER = "__nb2prod_reference__:"
_CELLS_LINE = re.compile(r"^\{\{cells:([\w-]+)\}\}$")
_cache: dict[tuple[str, str, str, str], str] = {}

_PRELUDE = '''\
import json as __json

import pandas as __pd

__rows = __pd.DataFrame.from_records(__json.loads({rows_json!r}))


def __like(frame):
    """__rows with frame's columns, order and dtypes (missing columns filled with NaN)."""
    shaped = __pd.DataFrame(index=__rows.index)
    for column in frame.columns:
        if column in __rows.columns:
            values = __rows[column]
        else:
            values = __pd.Series(float("nan"), index=__rows.index)
        try:
            values = values.astype(frame[column].dtype)
        except (TypeError, ValueError):
            pass  # e.g. missing values in an integer column: keep what pandas inferred
        shaped[column] = values
    return shaped
'''

_EPILOGUE = f"""\
import json as __json

import numpy as __np


def __plain(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"prediction value {{value!r}} is not JSON serialisable")


print({_MARKER!r} + __json.dumps(__np.asarray(__out).tolist(), default=__plain))
"""


def cell_tags(cell: NotebookNode) -> list[str]:
    """The Jupyter tags of a cell."""
    return list(cell.get("metadata", {}).get("tags", []))


def reference_predictions(
    notebook_path: Path, rows: list[dict[str, Any]], recipe: str | None = None
) -> list[Any]:
    """Predictions the notebook's own code makes for raw ``rows``, as plain JSON values.

    ``recipe`` defaults to the hand-written one for the notebook's stem in :data:`RECIPES`.
    Results are cached in-process per notebook content, rows and recipe.
    """
    notebook_path = Path(notebook_path).resolve()
    if recipe is None:
        recipe = RECIPES[notebook_path.stem]
    rows_json = json.dumps(rows, sort_keys=True)
    digest = hashlib.sha256(notebook_path.read_bytes()).hexdigest()
    key = (str(notebook_path), digest, rows_json, recipe)
    if key not in _cache:
        _cache[key] = _run(notebook_path, rows_json, recipe)
    # Parse again on every call so that callers cannot mutate the cached value.
    predictions: list[Any] = json.loads(_cache[key])
    return predictions


def _run(notebook_path: Path, rows_json: str, recipe: str) -> str:
    notebook = nbformat.read(notebook_path, as_version=4)
    cells = [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code" and "skip" not in cell_tags(cell)
    ]
    extra = [_PRELUDE.format(rows_json=rows_json), *_recipe_cells(notebook, recipe), _EPILOGUE]
    notebook.cells = cells + [nbformat.v4.new_code_cell(source) for source in extra]
    client = NotebookClient(
        notebook,
        timeout=RUN_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook_path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        raise RuntimeError(f"reference run of {notebook_path.name} failed:\n{err}") from err
    stdout = "".join(
        output.get("text", "")
        for output in notebook.cells[-1].get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            return line[len(_MARKER) :]
    raise RuntimeError(f"reference run of {notebook_path.name} printed no predictions")


def _recipe_cells(notebook: NotebookNode, recipe: str) -> list[str]:
    """Split a recipe into kernel cells, expanding ``{{cells:ROLE}}`` lines into the notebook's
    cells with that tag (kept as separate cells so that cell magics such as %%time still work).
    """
    sources: list[str] = []
    pending: list[str] = []
    for line in recipe.splitlines():
        match = _CELLS_LINE.match(line.strip())
        if match is None:
            pending.append(line)
            continue
        if pending:
            sources.append("\n".join(pending))
            pending = []
        role = match.group(1)
        tagged = [
            cell.source
            for cell in notebook.cells
            if cell.cell_type == "code" and role in cell_tags(cell)
        ]
        if not tagged:
            raise ValueError(f"recipe asks for cells tagged {role!r}; the notebook has none")
        sources.extend(tagged)
    if pending:
        sources.append("\n".join(pending))
    return sources


def example_rows(name: str, count: int = 5) -> list[dict[str, Any]]:
    """``count`` raw rows spread over the dataset example ``name`` loads, shaped like its raw
    input frame (feature columns only, JSON values), the way a client would send them.
    """
    from sklearn.datasets import load_diabetes, load_iris, load_wine

    if name == "iris_function":
        frame = load_iris(as_frame=True).frame.drop(columns="target")
    elif name == "wine_script":
        frame = load_wine(as_frame=True).frame.drop(columns="target")
    elif name == "diabetes_regression":
        frame = load_diabetes(as_frame=True, scaled=False).frame.drop(columns="target")
        frame = frame.rename(
            columns={"s1": "tc", "s2": "ldl", "s3": "hdl", "s4": "tch", "s5": "ltg", "s6": "glu"}
        )
        frame["sex"] = frame["sex"].map({1.0: "female", 2.0: "male"})
    else:
        raise KeyError(name)
    step = max(len(frame) // count, 1)
    records: list[dict[str, Any]] = json.loads(
        json.dumps(frame.iloc[::step].head(count).to_dict(orient="records"))
    )
    return records
