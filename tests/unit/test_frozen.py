"""Record at training, replay at serving: nb2prod_runtime.frozen on real pandas and scikit-learn.

Each test runs code the way the generated train.py and model_code.py run it (the same calls
the build's rewrite produces), first recording on training rows, then replaying on request
rows. Expected values come from pandas/scikit-learn applied to the training rows directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import LabelEncoder, StandardScaler

from nb2prod.runtime import frozen

TRAIN = pd.DataFrame(
    {
        "age": [22.0, np.nan, 38.0, 26.0, np.nan, 35.0],
        "town": ["a", "b", "a", "c", "b", "a"],
        "fare": [7.25, 71.3, 8.05, 53.1, 8.46, 51.9],
    }
)
REQUEST = pd.DataFrame({"age": [np.nan], "town": ["c"], "fare": [500.0]})


@pytest.fixture(autouse=True)
def _no_recording_left() -> Iterator[None]:
    yield
    frozen.stop_recording()


def impute(df: pd.DataFrame) -> pd.DataFrame:
    """``df["age"] = df["age"].fillna(df["age"].median())`` as the build rewrites it."""
    df = df.copy()
    df["age"] = df["age"].fillna(frozen.stat(1, lambda: df["age"], "median"))
    return df


def record(function, *frames: pd.DataFrame) -> frozen.Recording:  # type: ignore[no-untyped-def]
    frozen.start_recording()
    for frame in frames:
        function(frame)
    recording, _ = frozen.stop_recording()
    return recording


def test_a_statistic_is_the_training_value_at_serving() -> None:
    recording = record(impute, TRAIN)
    with frozen.replaying(recording):
        served = impute(REQUEST)
    assert served["age"].iloc[0] == TRAIN["age"].median()


def test_outside_a_replay_the_code_runs_as_written() -> None:
    assert np.isnan(impute(REQUEST)["age"].iloc[0])  # the median of one missing value


def test_occurrences_replay_in_order_one_value_per_run_of_the_site() -> None:
    other = TRAIN.assign(age=TRAIN["age"] + 100)
    recording = record(impute, TRAIN, other)  # like `for dataset in [train_df, test_df]`
    with frozen.replaying(recording):
        first, second = impute(REQUEST), impute(REQUEST)
    assert first["age"].iloc[0] == TRAIN["age"].median()
    assert second["age"].iloc[0] == other["age"].median()
    with frozen.replaying(recording), pytest.raises(frozen.ReplayError, match="2 times"):
        impute(REQUEST), impute(REQUEST), impute(REQUEST)


def encode(df: pd.DataFrame) -> pd.DataFrame:
    """``for col in cols: df[col] = LabelEncoder().fit_transform(df[col])``, rewritten."""
    df = df.copy()
    for col in ["town"]:
        df[col] = frozen.fit(2, LabelEncoder(), "fit_transform", df[col])
    return df


def test_a_fit_in_a_loop_replays_the_encoder_fitted_at_training() -> None:
    recording = record(encode, TRAIN)
    with frozen.replaying(recording):
        served = encode(REQUEST)
    expected = LabelEncoder().fit(TRAIN["town"]).transform(["c"])[0]
    assert served["town"].iloc[0] == expected == 2


def test_a_fresh_receiver_takes_the_fitted_state_so_later_transforms_work() -> None:
    def scale(df: pd.DataFrame) -> np.ndarray:
        scaler = StandardScaler()
        frozen.fit(3, scaler, "fit", df[["fare"]])
        return scaler.transform(df[["fare"]])

    recording = record(scale, TRAIN)
    with frozen.replaying(recording):
        served = scale(REQUEST)
    expected = StandardScaler().fit(TRAIN[["fare"]]).transform(REQUEST[["fare"]])
    np.testing.assert_allclose(served, expected)


def test_a_refit_object_is_recorded_as_it_was_at_each_site() -> None:
    encoder = LabelEncoder()

    def reuse(df: pd.DataFrame) -> list[int]:
        first = frozen.fit(4, encoder, "fit_transform", df["town"])
        second = frozen.fit(5, encoder, "fit_transform", df["age"].fillna(0).astype(int))
        return [int(first[0]), int(second[0])]

    recording = record(reuse, TRAIN)
    with frozen.replaying(recording):
        served = reuse(TRAIN.iloc[[3]])
    assert served == [2, 2]  # "c" among a, b, c; 26 among 0, 22, 26, 35, 38


def test_dummy_columns_are_the_training_columns() -> None:
    def dummies(df: pd.DataFrame) -> pd.DataFrame:
        return frozen.dummies(6, pd.get_dummies, df[["town"]], drop_first=True)

    recording = record(dummies, TRAIN)
    with frozen.replaying(recording):
        served = dummies(REQUEST)
    expected = pd.get_dummies(TRAIN[["town"]], drop_first=True)
    assert list(served.columns) == list(expected.columns) == ["town_b", "town_c"]
    assert served.dtypes.tolist() == expected.dtypes.tolist()
    assert served.iloc[0].tolist() == [False, True]


def test_quantile_bins_keep_the_training_edges_and_clip_beyond_them() -> None:
    def band(df: pd.DataFrame) -> pd.Series:
        return frozen.bins(7, pd.qcut, df["fare"], 4, labels=False)

    recording = record(band, TRAIN)
    with frozen.replaying(recording):
        served = band(pd.DataFrame({"fare": [8.0, 500.0, 1.0]}))
    assert served.tolist() == [0, 3, 0]


def test_a_statistic_of_a_string_or_inside_apply_runs_live() -> None:
    def words(df: pd.DataFrame) -> pd.Series:
        counted = df["town"].apply(lambda t: frozen.stat(8, lambda: t, "count", "a"))
        return counted + frozen.stat(9, lambda: df["fare"], "count") * 0

    recording = record(words, TRAIN)
    assert 8 in recording.live and 9 not in recording.live
    with frozen.replaying(recording):
        assert words(REQUEST).tolist() == [0]


def test_a_row_wise_helper_applied_per_row_runs_live() -> None:
    def total(row: pd.Series) -> float:
        return float(frozen.stat(10, lambda: row[["age", "fare"]], "sum"))

    recording = record(lambda df: df.apply(total, axis=1), TRAIN)
    assert recording.live == {10}
    with frozen.replaying(recording):
        assert REQUEST.apply(total, axis=1).tolist() == [500.0]


def test_the_target_is_none_at_serving() -> None:
    labels = pd.Series([0, 1])
    frozen.start_recording()
    assert frozen.target(11, lambda: labels) is labels
    recording, _ = frozen.stop_recording()
    with frozen.replaying(recording):
        assert frozen.target(11, lambda: labels) is None


def test_the_recording_round_trips_as_plain_data() -> None:
    recording = record(impute, TRAIN)
    state = recording.to_state()
    assert frozen.Recording.from_state(state).values == recording.values
    assert recording.describe(1) == (1, f"{TRAIN['age'].median():.4g}")


def test_a_column_wise_apply_is_recorded_only_when_it_reduces_each_column() -> None:
    def spread(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        ranges = frozen.stat(12, lambda: df[["age", "fare"]], "apply", lambda c: c.max() - c.min())
        upper = frozen.stat(13, lambda: df["town"], "apply", str.upper)
        return ranges, upper

    recording = record(spread, TRAIN)
    assert 13 in recording.live and 12 not in recording.live
    with frozen.replaying(recording):
        ranges, upper = spread(REQUEST)
    assert ranges.tolist() == [16.0, TRAIN["fare"].max() - TRAIN["fare"].min()]
    assert upper.tolist() == ["C"]


def test_a_group_statistic_gives_each_row_its_groups_training_value() -> None:
    def fill(df: pd.DataFrame) -> pd.Series:
        return df["age"].fillna(frozen.group_stat(14, df.groupby("town")["age"], "median"))

    recording = record(fill, TRAIN)
    request = pd.DataFrame({"town": ["a", "c", "z"], "age": [np.nan, np.nan, np.nan]})
    with frozen.replaying(recording):
        served = fill(request)
    medians = TRAIN.groupby("town")["age"].median()
    assert served.iloc[:2].tolist() == [medians["a"], medians["c"]] == [35.0, 26.0]
    assert np.isnan(served.iloc[2])  # a group training never saw
