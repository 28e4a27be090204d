"""The typed serving plan: analysis of in-memory notebooks, its JSON, and what codegen says.

The JSON is read back from build directories and model cards that may be old or edited
by hand, so every malformed plan must fail with a PlanError that says to rebuild, never
with a KeyError.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nb2prod.build.codegen import generate_code
from nb2prod.build.notebook import read_notebook
from nb2prod.build.plan import serving_plan
from nb2prod.runtime.plan import (
    Bindings,
    CellsStep,
    FunctionStep,
    NoStep,
    PlanError,
    ServingPlan,
)

IMPORTS = "import pandas as pd\nfrom sklearn.linear_model import LogisticRegression"
LOAD = (
    "raw = pd.DataFrame({'a': [0.0, 1.0, 2.0, 3.0], 'b': [1.0, 0.0, 1.0, 0.0]})\n"
    "COLUMNS = ['a', 'b']\n"
    "y = [0, 0, 1, 1]"
)
TRAIN = "model = LogisticRegression().fit(features, y)"


def script_notebook(make_notebook: Callable[..., Path]) -> Path:
    return make_notebook(
        [
            (IMPORTS, None),
            (LOAD, ["load"]),
            ("features = raw[COLUMNS] * 2.0", ["preprocess"]),
            (TRAIN, ["train"]),
            ("model.predict(features)", ["predict"]),
        ]
    )


def function_notebook(make_notebook: Callable[..., Path]) -> Path:
    return make_notebook(
        [
            (IMPORTS, None),
            (LOAD, ["load"]),
            ("def preprocess(df):\n    return df[COLUMNS] * scale", ["preprocess"]),
            ("scale = 2.0\nmodel = LogisticRegression().fit(preprocess(raw), y)", ["train"]),
            ("def predict(model, features):\n    return model.predict(features)", ["predict"]),
            ("predict(model, preprocess(raw))", None),
        ]
    )


def test_script_cells_become_cells_steps(make_notebook: Callable[..., Path]) -> None:
    plan = serving_plan(read_notebook(script_notebook(make_notebook)))
    assert isinstance(plan.preprocess, CellsStep)
    assert set(plan.preprocess.reads) == {"raw", "COLUMNS"}
    assert plan.preprocess.binds == ("features",)
    assert isinstance(plan.predict, CellsStep)
    assert plan.predict.ends_with_expression and plan.predict.result is None
    assert set(plan.predict.reads) == {"model", "features"}
    assert plan.monitor == NoStep()
    assert plan.globals == () and plan.bindings is None


def test_function_cells_become_function_steps(make_notebook: Callable[..., Path]) -> None:
    plan = serving_plan(read_notebook(function_notebook(make_notebook)))
    assert isinstance(plan.preprocess, FunctionStep)
    assert plan.preprocess.params == ("df",)
    assert isinstance(plan.predict, FunctionStep)
    assert plan.predict.params == ("model", "features")
    # What preprocess reads as module globals, restored from state.pkl by the loader.
    assert plan.globals == ("COLUMNS", "scale")
    assert plan.calls["predict"] == ("model", "preprocess(raw)")


def test_plan_json_round_trips_through_json_text(make_notebook: Callable[..., Path]) -> None:
    plan = serving_plan(read_notebook(script_notebook(make_notebook)))
    completed = ServingPlan(
        preprocess=plan.preprocess,
        predict=plan.predict,
        calls=plan.calls,
        bindings=Bindings(
            features="features", raw_input="raw", preprocess_output="features", state=("COLUMNS",)
        ),
    )
    assert ServingPlan.from_json(json.loads(json.dumps(completed.to_json()))) == completed


def test_the_card_form_leaves_out_the_notebooks_code(make_notebook: Callable[..., Path]) -> None:
    plan = serving_plan(read_notebook(function_notebook(make_notebook)))
    card = plan.to_json(source=False)
    text = json.dumps(card)
    assert "def preprocess" not in text and "labels" not in text and "calls" not in text
    assert card["preprocess"] == {"kind": "function", "cells": [3], "params": ["df"]}
    read_back = ServingPlan.from_json(card)
    assert isinstance(read_back.predict, FunctionStep) and read_back.predict.code == ""


def _valid() -> dict[str, Any]:
    return ServingPlan(
        preprocess=NoStep(),
        predict=FunctionStep(cells=(5,), params=("model", "features")),
        bindings=Bindings(features="features", predict_args=(("model", "predict.model"),)),
    ).to_json()


def _edited(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(_valid())
    change(data)
    return data


BROKEN = {
    "an older nb2prod's plan (no schema version)": _edited(lambda d: d.pop("schema_version")),
    "a newer plan version": _edited(lambda d: d.update(schema_version=99)),
    "not an object": ["preprocess", "predict"],
    "no predict step": _edited(lambda d: d.pop("predict")),
    "predict of kind none": _edited(lambda d: d.update(predict={"kind": "none"})),
    "an unknown kind": _edited(lambda d: d["preprocess"].update(kind="lambda")),
    "cells without reads": _edited(
        lambda d: d.update(
            predict={"kind": "cells", "cells": [1], "binds": [], "ends_with_expression": True}
        )
    ),
    "cell numbers as text": _edited(lambda d: d["predict"].update(cells=["5"])),
    "bindings without features": _edited(lambda d: d["bindings"].pop("features")),
    "predict_args as a list": _edited(lambda d: d["bindings"].update(predict_args=["model"])),
    "globals as a string": _edited(lambda d: d.update(globals="scaler")),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_plan_is_a_plan_error_that_says_to_rebuild(case: str) -> None:
    with pytest.raises(PlanError, match="rebuild the build directory"):
        ServingPlan.from_json(BROKEN[case])
    assert issubclass(PlanError, ValueError)


def test_script_functions_say_where_each_argument_comes_from(
    make_notebook: Callable[..., Path],
) -> None:
    spec = read_notebook(script_notebook(make_notebook))
    code = generate_code(spec, serving_plan(spec)).serving_body
    assert "def run_preprocess_cells(*, COLUMNS: Any, raw: Any) -> dict[str, Any]:" in code
    assert "raw: the request rows (a DataFrame)" in code
    # COLUMNS is a list literal, so it can't be the request; the load cell is cell 2.
    assert "COLUMNS: saved state from model/state.pkl (bound at training by cell 2 [load])" in code
    assert "features: the preprocess step's output for the request rows" in code
    assert "model: saved state from model/state.pkl (bound at training by cell 4 [train])" in code


def test_function_globals_say_the_loader_restores_them(
    make_notebook: Callable[..., Path],
) -> None:
    spec = read_notebook(function_notebook(make_notebook))
    code = generate_code(spec, serving_plan(spec))
    assert "nb2prod_runtime.loader sets each one from model/state.pkl" in code.serving_body
    assert "COLUMNS: Any = None  # bound at training by cell 2 [load]" in code.serving_body
    assert "scale: Any = None  # bound at training by cell 4 [train]" in code.serving_body
    assert "`model`: what the notebook passed to predict()" in code.serving_body
