"""Loads a trained model directory and calls the notebook's serving code the way the card says.

The call plan (``card["serving"]``) is described in docs/build-context.md; :class:`Predictor`
resolves it once at load time so that a prediction is two plain function calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pandas as pd

from .schema import FrameBuilder, predictions_to_list

__all__ = ["CARD_FILE", "STATE_FILE", "ModelLoadError", "Predictor", "read_card"]

CARD_FILE = "model_card.json"
STATE_FILE = "state.pkl"


class ModelLoadError(RuntimeError):
    """Raised when a model directory is missing, unreadable or inconsistent with its card."""


def read_card(model_dir: Path | str) -> dict[str, Any]:
    """Read ``model_dir/model_card.json`` (cheap: no model state is loaded)."""
    path = Path(model_dir) / CARD_FILE
    try:
        card: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read the model card {path}: {err}") from err
    return card


def _pick(state: Mapping[str, Any], names: Sequence[str], where: str) -> dict[str, Any]:
    missing = [name for name in names if name not in state]
    if missing:
        raise ModelLoadError(f"{where} needs {missing}, which state.pkl does not hold")
    return {name: state[name] for name in names}


class Predictor:
    """The trained model, ready to predict: card + state + the build's ``model_code`` module.

    Loading sets the names in ``card["serving"]["globals"]`` as globals of ``model_code``
    (function-style code reads fitted objects as module globals).
    """

    def __init__(self, model_dir: Path | str, model_code: ModuleType) -> None:
        model_dir = Path(model_dir)
        self._card = read_card(model_dir)
        state_path = model_dir / STATE_FILE
        try:
            with state_path.open("rb") as handle:
                state: dict[str, Any] = cloudpickle.load(handle)
        except Exception as err:  # unpickling can raise anything (missing module, bad file)
            raise ModelLoadError(f"cannot load the model state {state_path}: {err}") from err
        self._state = state
        serving = self._card["serving"]
        for name, value in _pick(state, serving.get("globals", []), "model_code").items():
            setattr(model_code, name, value)
        self._preprocess = self._plan_preprocess(serving["preprocess"], model_code)
        self._predict = self._plan_predict(serving["predict"], model_code)
        self.frames = FrameBuilder(self.schema)

    def _plan_preprocess(
        self, plan: Mapping[str, Any], code: ModuleType
    ) -> Callable[[pd.DataFrame], Any]:
        kind = plan["kind"]
        if kind == "none":
            return lambda frame: frame
        if kind == "function":
            preprocess: Callable[[pd.DataFrame], Any] = code.preprocess
            return preprocess
        if kind == "cells":
            run = code.run_preprocess_cells
            raw_input, output = plan["raw_input"], plan["output"]
            reads = [name for name in plan.get("reads", []) if name != raw_input]
            bound = _pick(self._state, reads, "the preprocess cells")

            def run_cells(frame: pd.DataFrame) -> Any:
                return run(**bound, **{raw_input: frame})[output]

            return run_cells
        raise ModelLoadError(f"unknown preprocess kind {kind!r} in the model card")

    def _plan_predict(self, plan: Mapping[str, Any], code: ModuleType) -> Callable[[Any], Any]:
        kind, features = plan["kind"], plan["features"]
        if kind == "function":
            predict = code.predict
            args = plan.get("args", {})
            state = _pick(self._state, list(args.values()), "predict()")
            bound = {param: state[name] for param, name in args.items() if param != features}
        elif kind == "cells":
            predict = code.run_predict_cells
            reads = [name for name in plan.get("reads", []) if name != features]
            bound = _pick(self._state, reads, "the predict cells")
        else:
            raise ModelLoadError(f"unknown predict kind {kind!r} in the model card")

        def call(feats: Any) -> Any:
            return predict(**bound, **{features: feats})

        return call

    @property
    def card(self) -> dict[str, Any]:
        """The model card (``model_card.json``)."""
        return self._card

    @property
    def model_version(self) -> str:
        """The content-derived model version from the card."""
        return str(self._card["model_version"])

    @property
    def schema(self) -> dict[str, Any]:
        """The card's ``input_schema``."""
        schema: dict[str, Any] = self._card["input_schema"]
        return schema

    def predict_frame(self, frame: pd.DataFrame) -> list[Any]:
        """Preprocess and predict a raw input frame; return JSON-ready predictions."""
        return predictions_to_list(self._predict(self._preprocess(frame)))

    def predict_records(self, records: list[dict[str, Any]]) -> list[Any]:
        """Predict JSON records (``{column: value}``), e.g. the card's golden rows."""
        return self.predict_frame(self.frames.from_records(records))
