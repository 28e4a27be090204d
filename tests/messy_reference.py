"""What each messy corpus notebook (tests/messy/) predicts for its own held-out rows, read from the
notebook's own run in a real Jupyter kernel: the oracle of tests/integration/test_messy_parity.py.

Like ``reference.py`` it shares no code with nb2prod, but it asks a different question. These
notebooks are not written for nb2prod: they predict for a held-out frame they built themselves
(Kaggle's test.csv, ``X_test`` from a split, ``X_val`` of a DictVectorizer). So the oracle does
not re-run cells on new rows; it runs the notebook once, as Run All without the ``skip`` cells
(the cells nb2prod would run, plus the untagged exploration cells), and then reads back:

- the **held-out rows as a client would send them**: raw values, before any preprocessing, the
  target left out. Each :class:`Case` says how to get them in hand-written kernel code (re-read
  the CSV, take ``.loc[X_test.index]``, or redo the notebook's own split), which is test
  knowledge, never derived from what nb2prod generates;
- the **notebook's own predictions** for those rows: the variable its predict cell binds.

Rows come back as JSON values (missing values as ``null``): a dict per row for frames, a list
per row for arrays. In the same kernel, after a ``%reset -f``, every code cell is then run again
in order, ``skip`` cells included, to show the notebook runs top to bottom as committed (sharing
the kernel saves a start-up and the imports per notebook).

Each run happens in a child process (``python tests/messy_reference.py NAME`` prints it as JSON),
one at a time on a background thread, so that :func:`prefetch` can run the next notebooks' kernels
while a test builds and serves the current one. Results are cached per notebook and data content
for the test session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode

MESSY_DIR = Path(__file__).resolve().parent / "messy"
#: The untagged corpus (tests/untagged/): notebooks as written, read the same way.
UNTAGGED_DIR = Path(__file__).resolve().parent / "untagged"
RUN_TIMEOUT_SECONDS = 300
#: One BLAS/OpenMP thread for the kernel, and for the builds and servers the parity test starts:
#: on a shared 2-core machine multi-threaded BLAS oversubscribes the cores and made an lbfgs fit
#: ten times slower. Set for both sides so that the notebook and nb2prod compute alike.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_MARKER = "__nb2prod_messy_reference__:"


@dataclass(frozen=True)
class Case:
    """How to read one corpus notebook's held-out rows and predictions after it ran."""

    #: Kernel code binding ``__rows`` to the raw held-out rows (a DataFrame or an array), in the
    #: order of the predictions, without the target column.
    rows: str
    #: The notebook variable holding its predictions for those rows.
    predictions: str


CASES: dict[str, Case] = {
    # Kaggle's own split: test.csv is the held-out frame, every column as the file has it.
    "titanic_kaggle": Case("__rows = pd.read_csv('test.csv')", "Y_pred"),
    # The split happens after LabelEncoder and the scaler rewrote df; X_test keeps df's index.
    "churn_labelencoder": Case(
        "__rows = pd.read_csv('WA_Fn-UseC_-Telco-Customer-Churn.csv')"
        ".loc[X_test.index].drop(columns='Churn')",
        "y_pred",
    ),
    "housing_columntransformer": Case(
        "__rows = pd.read_csv('datasets/housing/housing.csv')"
        ".loc[X_test.index].drop(columns='median_house_value')",
        "final_predictions",
    ),
    # id and the empty 'Unnamed: 32' column are part of the raw file, so part of the request.
    "xgboost_booster": Case(
        "__rows = pd.read_csv('data.csv').loc[X_test.index].drop(columns='diagnosis')", "preds"
    ),
    # X_test was rebound to scaled values: redo the notebook's split on the raw arrays, and
    # check it is the same split through the labels.
    "iris_ndarray": Case(
        "\n".join(
            [
                "from sklearn.datasets import load_iris as __load_iris",
                "from sklearn.model_selection import train_test_split as __split",
                "__X, __y = __load_iris(return_X_y=True)",
                "__parts = __split(__X, __y, test_size=0.3, random_state=42, stratify=__y)",
                "assert (__parts[3] == y_test).all()",
                "__rows = __parts[1]",
            ]
        ),
        "y_pred",
    ),
    # df_val was re-indexed and its values lower-cased: redo the two splits on the raw file.
    "churn_dictvectorizer": Case(
        "\n".join(
            [
                "from sklearn.model_selection import train_test_split as __split",
                "__raw = pd.read_csv('WA_Fn-UseC_-Telco-Customer-Churn.csv')",
                "__full, __test = __split(__raw, test_size=0.2, random_state=1)",
                "__train, __val = __split(__full, test_size=0.25, random_state=1)",
                "assert ((__val['Churn'] == 'Yes').astype(int).to_numpy() == y_val).all()",
                "__rows = __val.drop(columns='Churn')",
            ]
        ),
        "y_pred",
    ),
    "house_prices_dummies": Case("__rows = pd.read_csv('test.csv')", "preds"),
    "loan_get_dummies": Case(
        "__rows = pd.read_csv('train_u6lujuX_CVtuZ9i.csv')"
        ".loc[x_cv.index].drop(columns='Loan_Status')",
        "pred_cv",
    ),
}


#: The untagged corpus's notebooks (tests/untagged/, test_untagged_corpus.py), read as CASES are.
UNTAGGED_CASES: dict[str, Case] = {
    "kale_titanic": Case("__rows = pd.read_csv('data/test.csv')", "Y_pred"),
    "housing_helpers": Case(
        "__rows = pd.read_csv('datasets/housing/housing.csv')"
        ".loc[X_test.index].drop(columns='median_house_value')",
        "final_predictions",
    ),
    # X_test was rebound to a scaled frame with a fresh index; y_test keeps the file's.
    "no_tags_kaggle": Case(
        "__rows = pd.read_csv('diabetes.csv').loc[y_test.index].drop(columns='Outcome')",
        "predictions",
    ),
    "attrition_mixed": Case(
        "__rows = pd.read_csv('HR-Employee-Attrition.csv')"
        ".loc[X_test.index].drop(columns='Attrition')",
        "y_pred",
    ),
    # Arrays from the start: X_test is the raw held-out rows (the scaled ones are X_test_std).
    "wine_ndarray": Case("__rows = X_test", "y_pred"),
}


@dataclass(frozen=True)
class Reference:
    """A corpus notebook's held-out raw rows, its predictions for them, and whether Run All
    (skip cells included) got through every cell (``run_all_error`` is the error if not)."""

    rows: list[Any]
    predictions: list[Any]
    run_all_error: str | None


_EPILOGUE = f"""\
import json as __json
import math as __math

import numpy as __np
import pandas as __pd


def __plain(value):
    if value is None or value is __pd.NA or value is __pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and __math.isnan(value):
        return None
    return value


if isinstance(__rows, __pd.DataFrame):
    __records = [
        {{str(key): __plain(value) for key, value in record.items()}}
        for record in __rows.to_dict(orient="records")
    ]
else:
    __records = [[__plain(value) for value in row] for row in __np.asarray(__rows).tolist()]
__predicted = [__plain(value) for value in __np.asarray({{predictions}}).tolist()]
assert len(__records) == len(__predicted), (len(__records), len(__predicted))
__found = {{"rows": __records, "predictions": __predicted}}
print({_MARKER!r} + __json.dumps(__found, allow_nan=False))
"""

_runs: dict[tuple[str, str], Future[Reference]] = {}
_worker: list[ThreadPoolExecutor] = []


def notebook_dir(name: str) -> Path:
    """The folder of corpus notebook ``name``: the notebook and the data files it reads."""
    return (UNTAGGED_DIR if name in UNTAGGED_CASES else MESSY_DIR) / name


def notebook_path(name: str) -> Path:
    """The corpus notebook ``name`` itself."""
    return notebook_dir(name) / f"{name}.ipynb"


def reference(name: str) -> Reference:
    """The held-out rows and predictions of corpus notebook ``name``, run in a kernel (cached)."""
    return _run_of(name).result()


def prefetch(names: Iterable[str]) -> None:
    """Start the kernel runs of ``names`` in the background, in this order, one at a time."""
    for name in names:
        _run_of(name)


def cancel_pending() -> None:
    """Drop the runs that have not started (a test session stopping early need not wait)."""
    for key, run in list(_runs.items()):
        if run.cancel():
            del _runs[key]


def _run_of(name: str) -> Future[Reference]:
    key = (name, _content_digest(notebook_dir(name)))
    if key not in _runs:
        if not _worker:
            _worker.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="messy-ref"))
        _runs[key] = _worker[0].submit(_run_in_child, name)
    return _runs[key]


def _run_in_child(name: str) -> Reference:
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), name],
        capture_output=True,
        text=True,
        timeout=2 * RUN_TIMEOUT_SECONDS,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith(_MARKER):
            return Reference(**json.loads(line[len(_MARKER) :]))
    raise RuntimeError(f"reference run of {name} failed:\n{result.stdout}\n{result.stderr}")


def _content_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _tags(cell: NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _run(name: str, case: Case) -> Reference:
    """Run the notebook in a copy of its folder (its untagged cells may write files there)."""
    with tempfile.TemporaryDirectory(prefix=f"messy-{name}-") as scratch:
        folder = Path(shutil.copytree(notebook_dir(name), Path(scratch) / name))
        notebook = nbformat.read(folder / f"{name}.ipynb", as_version=4)
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        served = [cell for cell in code_cells if "skip" not in _tags(cell)]
        probe = [
            nbformat.v4.new_code_cell(case.rows),
            nbformat.v4.new_code_cell(_EPILOGUE.replace("{predictions}", case.predictions)),
        ]
        run_all = [nbformat.v4.new_code_cell("%reset -f"), *code_cells]
        notebook.cells = [*served, *probe, *run_all]
        client = NotebookClient(
            notebook,
            timeout=RUN_TIMEOUT_SECONDS,
            kernel_name="python3",
            resources={"metadata": {"path": str(folder)}},
        )
        with client.setup_kernel(env={**os.environ, **SINGLE_THREADED}):
            for index, cell in enumerate(notebook.cells[: len(served) + len(probe)]):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as err:
                    raise RuntimeError(f"reference run of {name} failed:\n{err}") from err
            found = _read_marker(notebook.cells[len(served) + len(probe) - 1])
            run_all_error = None
            first = len(served) + len(probe)
            for index, cell in enumerate(notebook.cells[first:], start=first):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as err:
                    run_all_error = str(err)
                    break
    return Reference(found["rows"], found["predictions"], run_all_error)


def _read_marker(cell: NotebookNode) -> dict[str, Any]:
    stdout = "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            found: dict[str, Any] = json.loads(line[len(_MARKER) :])
            return found
    raise RuntimeError("the reference epilogue printed no rows and predictions")


if __name__ == "__main__":
    found = _run(sys.argv[1], {**CASES, **UNTAGGED_CASES}[sys.argv[1]])
    print(_MARKER + json.dumps(dataclasses.asdict(found), allow_nan=False))
