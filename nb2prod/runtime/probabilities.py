"""Class probabilities for the prediction log, from the classifier the predict step calls.

The request path never pays for them: the prediction log's writer thread asks for the rows of
everything it drains in one batched call (:meth:`Predictor.probabilities
<nb2prod_runtime.loader.Predictor.probabilities>`), which preprocesses them again, replaying
the training run's fits, and calls the classifier's ``predict_proba``.

Which classifier: among the objects the predict step reads from the model state, the one with
a callable ``predict_proba`` and a ``classes_`` attribute; none, or several, means no
probabilities. Whether its probabilities are the served model's: a predict step may do more
than ``model.predict(features)``. It may map labels (``target_names[model.predict(X)]``),
which is fine, or change the features first (``model.predict(X * 2)``, another scaler), in
which case ``predict_proba`` of the preprocessed rows would be wrong. Two checks:

- on the first rows checked, the predict step runs once more with the classifier's ``predict``
  watched: it must be given exactly the preprocessed features (the same object or the same
  values), else probabilities are off for good;
- each row's most likely class is checked against what the service predicted for that row.
  The class -> prediction mapping must be a one-to-one function: the identity, or a
  relabelling such as index -> species name (the logged ``classes`` are then in the
  predictions' vocabulary, ``["setosa", ...]``, so that they compare with the labels users
  send). It is learnt first on the build's golden rows when ``model/golden.json`` is there
  (a build directory; the image leaves training rows out), then from the logged traffic:
  until every class has been seen, a relabelling cannot be named and those records go without
  probabilities (a mapping that is the identity so far names the classes as they are). One
  row that contradicts the mapping turns probabilities off for good, with one WARNING.

Both checks run in the writer thread, the first once: on the golden rows in a build
directory; in an image, which holds no training rows, on the first drained requests.

Predictions that are already probabilities (a predict step returning ``predict_proba``) are
lists, not labels: nothing to add, so the check turns this off too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .schema import predictions_to_list

__all__ = ["ClassProbabilities", "find_classifier"]

logger = logging.getLogger("nb2prod.prediction_log")


def find_classifier(objects: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The one object with a callable ``predict_proba`` and a ``classes_``: (name, object)."""
    found: dict[int, tuple[str, Any]] = {}
    for name, value in objects.items():
        if isinstance(value, type):
            continue
        try:
            usable = callable(getattr(value, "predict_proba", None)) and hasattr(value, "classes_")
        except Exception:  # a property that raises on an odd object: not a classifier
            usable = False
        if usable:
            found.setdefault(id(value), (name, value))  # one object under two names is one
    return next(iter(found.values())) if len(found) == 1 else None


class ClassProbabilities:
    """``predict_proba`` of the served classifier, checked against the served predictions.

    ``features`` turns a raw frame into what the predict step is given (the preprocess step,
    replayed); ``predict_step`` runs the predict step on features (replayed); ``golden`` loads
    ``(frame, predictions)`` for a first check, or None. Thread-safe; meant for the
    prediction log's writer thread.
    """

    def __init__(
        self,
        name: str,
        estimator: Any,
        features: Callable[[Any], Any],
        predict_step: Callable[[Any], Any],
        golden: Callable[[], tuple[Any, list[Any]] | None],
    ) -> None:
        self.name = name
        self._estimator = estimator
        self._features = features
        self._predict_step: Callable[[Any], Any] | None = predict_step
        self._golden: Callable[[], tuple[Any, list[Any]] | None] | None = golden
        self._classes: list[Any] = predictions_to_list(np.asarray(estimator.classes_))
        self._mapping: dict[Hashable, Any] = {}
        self._reverse: dict[Hashable, Hashable] = {}
        self.off_reason = ""
        self._lock = threading.Lock()

    def compute(
        self, frame: Any, predictions: Sequence[Any] | None = None
    ) -> tuple[list[Any], list[list[float]]] | None:
        """``(classes, one list of probabilities per row)`` for a raw frame, or None.

        With ``predictions`` (what the service answered for these rows) the rows also check
        and extend the class mapping; without, only an already established mapping is used.
        """
        with self._lock:
            if self._golden is not None:
                self._check_golden()
            if self.off_reason:
                return None
            features = self._features(frame)
            if self._predict_step is not None and not self._watch(features):
                return None
            proba = np.asarray(self._estimator.predict_proba(features), dtype=float)
            if proba.ndim != 2 or proba.shape != (len(frame), len(self._classes)):
                self._turn_off(f"predict_proba returned shape {proba.shape}")
                return None
            if predictions is not None and not self._learn(proba, predictions):
                return None
            classes = self._named()
            if classes is None:
                return None
            return classes, proba.tolist()

    def _check_golden(self) -> None:
        load, self._golden = self._golden, None
        assert load is not None
        try:
            golden = load()
        except Exception as err:  # a golden set that cannot be replayed: learn from traffic
            logger.warning("probabilities: the golden rows could not be checked: %s", err)
            return
        if golden is None:
            return
        frame, predictions = golden
        try:
            features = self._features(frame)
            if not self._watch(features):
                return
            proba = np.asarray(self._estimator.predict_proba(features), dtype=float)
        except Exception as err:
            self._turn_off(f"predict_proba failed on the golden rows: {err}")
            return
        self._learn(proba, predictions)

    def _watch(self, features: Any) -> bool:
        """Run the predict step once, watching what the classifier's ``predict`` is given:
        exactly ``features``, or the probabilities are off (the step changes the features)."""
        step, self._predict_step = self._predict_step, None
        assert step is not None
        given: list[Any] = []
        original = self._estimator.predict
        me = threading.get_ident()

        def watched(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == me:  # requests served meanwhile are not watched
                given.append(args[0] if args else kwargs.get("X"))
            return original(*args, **kwargs)

        try:
            self._estimator.predict = watched
        except Exception:  # an object that refuses attributes: cannot be checked
            self._turn_off("its predict method cannot be watched")
            return False
        try:
            step(features)
        except Exception as err:
            # The check happens once: a step that fails when replayed leaves it undone, and
            # unchecked probabilities are never logged. (The type only: the message may quote
            # the rows' values.)
            self._turn_off(
                f"the predict step failed when replayed to check it ({type(err).__name__})"
            )
            return False
        finally:
            try:
                del self._estimator.predict
            except AttributeError:
                self._estimator.predict = original
        if not given:
            self._turn_off("the predict step does not call its predict method")
            return False
        if not all(_same(seen, features) for seen in given):
            self._turn_off(
                "the predict step changes the features before calling the classifier; its "
                "probabilities would not be the served model's"
            )
            return False
        return True

    def _learn(self, proba: np.ndarray, predictions: Sequence[Any]) -> bool:
        """Check each row's most likely class against its prediction; extend the mapping."""
        likely = [self._classes[i] for i in proba.argmax(axis=1).tolist()]
        for label, predicted in zip(likely, predictions, strict=True):
            if isinstance(predicted, (list, dict)) or predicted is None:
                self._turn_off("the predictions are not class labels")
                return False
            known = self._mapping.get(label, _UNSET)
            source = self._reverse.get(predicted, _UNSET)
            if (known is not _UNSET and known != predicted) or (
                source is not _UNSET and source != label
            ):
                self._turn_off(
                    f"a row predicted {predicted!r} has {label!r} as its most likely class, "
                    f"which elsewhere gives {known if known is not _UNSET else source!r}: the "
                    "predict step does more than call the classifier on the features"
                )
                return False
            self._mapping[label] = predicted
            self._reverse[predicted] = label
        return True

    def _named(self) -> list[Any] | None:
        """The classes in the predictions' vocabulary, or None while that is unknown."""
        if all(label in self._mapping for label in self._classes):
            return [self._mapping[label] for label in self._classes]
        if self._mapping and all(label == seen for label, seen in self._mapping.items()):
            return list(self._classes)
        return None

    def _turn_off(self, reason: str) -> None:
        self.off_reason = reason
        logger.warning("probabilities of %s are not logged: %s", self.name, reason)


def _same(seen: Any, features: Any) -> bool:
    """Whether the classifier was given ``features`` (the object, or the same values)."""
    if seen is features:
        return True
    try:
        left, right = np.asarray(seen), np.asarray(features)
        if left.shape != right.shape:
            return False
        if left.dtype.kind in "fc" and right.dtype.kind in "fc":
            return bool(np.array_equal(left, right, equal_nan=True))
        return bool(np.array_equal(left, right))
    except Exception:  # values that do not compare as arrays
        return False


class _Unset:
    pass


_UNSET: Any = _Unset()
