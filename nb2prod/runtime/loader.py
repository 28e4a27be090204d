"""Loads a trained model directory and calls the notebook's serving code the way the card says.

The serving plan (``card.serving``, typed in plan.py, JSON shape in docs/build-context.md)
says how; :class:`Predictor` resolves it once at load time so that a prediction is two
plain function calls. It also finds the classifier the predict step calls, for the class
probabilities the prediction log records off the request path (probabilities.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pandas as pd

from . import frozen
from .card import CARD_FILE, GOLDEN_FILE, STATE_FILE, CardError, ModelCard, read_card, read_golden
from .notebook_path import RAW_INPUTS_KEY, RECORDING_KEY
from .plan import Bindings, CellsStep, FunctionStep, NoStep, ServingPlan, Step
from .probabilities import ClassProbabilities, find_classifier
from .raw_inputs import RawInput, bind
from .schema import FrameBuilder, predictions_to_list

__all__ = ["ModelLoadError", "Predictor", "load_card"]


class ModelLoadError(RuntimeError):
    """Raised when a model directory is missing, unreadable or inconsistent with its card."""


def load_card(model_dir: Path | str) -> ModelCard:
    """The validated model card (cheap: no model state is loaded); ModelLoadError otherwise."""
    try:
        return read_card(model_dir)
    except CardError as err:
        raise ModelLoadError(str(err)) from err


def _serving_plan(card: ModelCard, model_dir: Path) -> tuple[ServingPlan, Bindings]:
    """The card's serving plan, completed by training; ModelLoadError when it is not usable."""
    where = model_dir / CARD_FILE
    plan = card.serving
    if plan.bindings is None:
        raise ModelLoadError(
            f"{where}: the serving plan was never completed by a training run; rebuild the "
            "model with nb2prod build"
        )
    return plan, plan.bindings


def _pick(state: Mapping[str, Any], names: Sequence[str], where: str) -> dict[str, Any]:
    missing = [name for name in names if name not in state]
    if missing:
        raise ModelLoadError(f"{where} needs {missing}, which state.pkl does not hold")
    return {name: state[name] for name in names}


class Predictor:
    """The trained model, ready to predict: card + state + the build's ``model_code`` module.

    Loading sets the plan's ``globals`` as globals of ``model_code`` (function-style code
    reads fitted objects as module globals; model_code.py declares them as placeholders).
    """

    def __init__(self, model_dir: Path | str, model_code: ModuleType) -> None:
        model_dir = Path(model_dir)
        self._card = load_card(model_dir)
        plan, bindings = _serving_plan(self._card, model_dir)
        state_path = model_dir / STATE_FILE
        try:
            with state_path.open("rb") as handle:
                state: dict[str, Any] = cloudpickle.load(handle)
        except Exception as err:  # unpickling can raise anything (missing module, bad file)
            raise ModelLoadError(f"cannot load the model state {state_path}: {err}") from err
        self._state = state
        self._model_dir = model_dir
        # What the predict step reads from the state: where its classifier is (probabilities).
        self._predict_reads: dict[str, Any] = _pick(state, plan.globals, "model_code")
        # The sites in model_code call the frozen module it imported (nb2prod_runtime.frozen in
        # a build directory, which is another module object than this package's when nb2prod
        # itself serves the build): replay through that one.
        self._frozen: ModuleType = getattr(model_code, "nb2prod_frozen", frozen)
        self._recording = self._frozen.Recording.from_state(state.get(RECORDING_KEY))
        raw_inputs = [RawInput.from_state(raw) for raw in state.get(RAW_INPUTS_KEY) or ()]
        self._raw_names = {raw.name for raw in raw_inputs}
        self._bind = (lambda frame: bind(raw_inputs, frame)) if raw_inputs else None
        for name, value in _pick(state, plan.globals, "model_code").items():
            setattr(model_code, name, value)
        self._preprocess = self._plan_preprocess(plan.preprocess, bindings, model_code)
        self._predict = self._plan_predict(plan.predict, bindings, model_code)
        self.frames = FrameBuilder(self.schema)
        self._probabilities = self._find_probabilities()

    def _plan_preprocess(
        self, step: Step, bindings: Bindings, code: ModuleType
    ) -> Callable[[pd.DataFrame], Any]:
        binder = self._bind
        match step:
            case NoStep():
                if binder is None:
                    return lambda frame: frame
                name = bindings.features if bindings.features in self._raw_names else ""
                return lambda frame: binder(frame).get(name, frame)
            case FunctionStep():
                preprocess: Callable[[pd.DataFrame], Any] = code.preprocess
                if binder is None:
                    return preprocess
                return lambda frame: preprocess(binder(frame).get("", frame))
            case CellsStep(reads=reads):
                run = code.run_preprocess_cells
                raw_input, output = bindings.raw_input, bindings.preprocess_output
                if raw_input is None or output is None:
                    raise ModelLoadError(
                        "the model card's serving plan names no raw input or output for the "
                        "preprocess cells; rebuild the model with nb2prod build"
                    )
                raw_names = self._raw_names or {raw_input}
                names = [n for n in reads if n not in raw_names]
                bound = _pick(self._state, names, "preprocess")
                requested = [n for n in reads if n in raw_names]

                columns = list(bindings.feature_columns)

                def run_cells(frame: pd.DataFrame) -> Any:
                    if binder is None:
                        result = run(**bound, **{raw_input: frame})[output]
                    else:
                        rows = binder(frame)
                        result = run(**bound, **{n: rows[n] for n in requested})[output]
                    return result[columns] if columns else result

                return run_cells
        raise ModelLoadError(f"unknown preprocess step {step!r} in the model card")

    def _plan_predict(
        self, step: FunctionStep | CellsStep, bindings: Bindings, code: ModuleType
    ) -> Callable[[Any], Any]:
        features = bindings.features
        if isinstance(step, FunctionStep):
            predict = code.predict
            args = dict(bindings.predict_args)
            state = _pick(self._state, list(args.values()), "predict()")
            bound = {param: state[name] for param, name in args.items() if param != features}
            self._predict_reads.update({args[param]: value for param, value in bound.items()})
        else:
            predict = code.run_predict_cells
            reads = [name for name in step.reads if name != features]
            bound = _pick(self._state, reads, "the predict cells")
            self._predict_reads.update(bound)

        def call(feats: Any) -> Any:
            return predict(**bound, **{features: feats})

        return call

    @property
    def card(self) -> ModelCard:
        """The model card (``model_card.json``)."""
        return self._card

    @property
    def model_version(self) -> str:
        """The content-derived model version from the card."""
        return self._card.model_version

    @property
    def schema(self) -> dict[str, Any]:
        """The card's ``input_schema``."""
        return self._card.input_schema

    def predict_frame(self, frame: pd.DataFrame) -> list[Any]:
        """Preprocess and predict a raw input frame; return JSON-ready predictions.

        Fits and statistics the serving code computes over its rows replay what the training
        run recorded (nb2prod_runtime.frozen), one replay per call.
        """
        with self._frozen.replaying(self._recording):
            predictions = predictions_to_list(self._predict(self._preprocess(frame)))
        if len(predictions) != len(frame):
            # Rows the notebook's preprocessing drops (df.dropna(), an outlier filter) would
            # shift every answer after them onto the wrong row: refuse instead (a 422).
            raise ValueError(
                f"the notebook's serving code returned {len(predictions)} predictions for "
                f"{len(frame)} rows: its preprocessing drops or adds rows (a filter such as "
                "dropna()); send only rows it keeps, or one row per request"
            )
        return predictions

    def predict_records(self, records: list[dict[str, Any]]) -> list[Any]:
        """Predict JSON records (``{column: value}``), e.g. the card's golden rows."""
        return self.predict_frame(self.frames.from_records(records))

    @property
    def has_probabilities(self) -> bool:
        """Whether :meth:`probabilities` may answer: a classifier was found, not turned off."""
        return self._probabilities is not None and not self._probabilities.off_reason

    def probabilities(
        self, frame: pd.DataFrame, predictions: Sequence[Any] | None = None
    ) -> tuple[list[Any], list[list[float]]] | None:
        """``(classes, probabilities per row)`` for a raw input frame, or None when the model
        has none or they are not verified to be the served model's (see probabilities.py).

        A second preprocess and a ``predict_proba`` call: for the prediction log's writer
        thread, never the request path. ``predictions`` (what was served for these rows)
        checks them further; the first call checks the golden rows when they are there.
        """
        if self._probabilities is None:
            return None
        return self._probabilities.compute(frame, predictions)

    def _find_probabilities(self) -> ClassProbabilities | None:
        found = find_classifier(self._predict_reads)
        if found is None:
            return None
        name, estimator = found

        def features(frame: pd.DataFrame) -> Any:
            with self._frozen.replaying(self._recording):
                return self._preprocess(frame)

        def predict_step(features: Any) -> Any:
            with self._frozen.replaying(self._recording):
                return self._predict(features)

        def golden() -> tuple[pd.DataFrame, list[Any]] | None:
            if not (self._model_dir / GOLDEN_FILE).is_file():
                return None  # an image: training rows stay out of it
            rows = read_golden(self._model_dir).rows
            return self.frames.from_records(rows), self.predict_records(rows)

        return ClassProbabilities(name, estimator, features, predict_step, golden)
