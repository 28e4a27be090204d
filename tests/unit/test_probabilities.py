"""Which classifier's probabilities the prediction log records, and when it records none.

A real scikit-learn classifier (logistic regression on iris) behind predict steps written the
ways notebooks write them: the model's own labels, labels mapped to names, features changed
before the call, probabilities returned as the prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from nb2prod.runtime.probabilities import ClassProbabilities, find_classifier

NAMES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(X, y), X, y


def _probabilities(
    model: LogisticRegression, step: Callable[[Any], Any], golden: Any = None
) -> ClassProbabilities:
    return ClassProbabilities("model", model, lambda frame: frame, step, lambda: golden)


def test_one_classifier_is_found_among_the_objects_predict_reads(fitted: Any) -> None:
    model, X, y = fitted
    assert find_classifier({"model": model, "names": NAMES, "threshold": 0.5}) == (
        "model",
        model,
    )
    assert find_classifier({"model": model, "same": model}) is not None  # one object
    tree = DecisionTreeClassifier().fit(X, y)
    assert find_classifier({"model": model, "tree": tree}) is None  # which one? none
    assert find_classifier({"cls": LogisticRegression, "names": NAMES}) is None  # not fitted
    assert find_classifier({"unfitted": LogisticRegression()}) is None  # no classes_


def test_the_models_own_labels_give_its_probabilities(fitted: Any) -> None:
    model, X, _ = fitted
    check = _probabilities(model, lambda features: model.predict(features))
    rows = X[[0, 60, 120]]
    answer = check.compute(rows, model.predict(rows).tolist())
    assert answer is not None
    classes, probabilities = answer
    assert classes == [0, 1, 2]
    np.testing.assert_allclose(probabilities, model.predict_proba(rows), atol=1e-12)
    # Without the served predictions, the mapping learnt so far is used.
    assert check.compute(X[[1]]) is not None


def test_mapped_labels_name_the_classes_once_every_class_was_seen(fitted: Any) -> None:
    model, X, _ = fitted
    check = _probabilities(model, lambda features: NAMES[model.predict(features)])
    first = X[[0, 120]]  # setosa and virginica only: versicolor's name is not known yet
    assert check.compute(first, NAMES[model.predict(first)].tolist()) is None
    assert not check.off_reason
    rows = X[[0, 60, 120]]
    answer = check.compute(rows, NAMES[model.predict(rows)].tolist())
    assert answer is not None and answer[0] == NAMES.tolist()


def test_golden_rows_check_before_the_first_request(fitted: Any) -> None:
    model, X, _ = fitted
    golden_rows = X[::10]
    golden = (golden_rows, NAMES[model.predict(golden_rows)].tolist())
    check = _probabilities(model, lambda features: NAMES[model.predict(features)], golden)
    answer = check.compute(X[[5]])  # no predictions given: the golden rows named the classes
    assert answer is not None and answer[0] == NAMES.tolist()


def test_features_changed_before_the_call_turn_probabilities_off(fitted: Any) -> None:
    model, X, _ = fitted
    check = _probabilities(model, lambda features: model.predict(features * 1.5))
    rows = X[[0, 60, 120]]
    assert check.compute(rows, model.predict(rows * 1.5).tolist()) is None
    assert "changes the features" in check.off_reason
    assert check.compute(rows, model.predict(rows).tolist()) is None  # for good


def test_a_contradicting_row_turns_probabilities_off(fitted: Any) -> None:
    model, X, _ = fitted
    check = _probabilities(model, lambda features: model.predict(features))
    rows = X[[0, 60]]
    assert check.compute(rows, model.predict(rows).tolist()) is not None
    # The served answer differs from the most likely class (e.g. a custom threshold).
    assert check.compute(X[[1]], [2]) is None
    assert check.off_reason


def test_predictions_that_are_probabilities_get_nothing_more(fitted: Any) -> None:
    model, X, _ = fitted
    check = _probabilities(model, model.predict_proba)  # predict is never called
    rows = X[[0, 60]]
    assert check.compute(rows, model.predict_proba(rows).tolist()) is None
    assert check.off_reason


def test_a_predict_step_that_fails_when_checked_never_gets_unchecked_probabilities(
    fitted: Any,
) -> None:
    # The step changes the features, which the one-time check would catch; its replay fails
    # the first time, and a later drain must not take the check as done.
    model, X, _ = fitted
    calls = [0]

    def step(features: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a replay that fails once")
        return model.predict(features * 1.5)

    check = _probabilities(model, step)
    rows = X[[0, 60, 120]]
    assert check.compute(rows, model.predict(rows * 1.5).tolist()) is None
    assert "failed when replayed" in check.off_reason
    assert check.compute(rows, model.predict(rows).tolist()) is None
