"""``nb2prod_prediction_log_pending_rows``: how far the prediction log runs behind.

Rows count as pending from the moment a request queues them until the writer has written or
dropped them, including while the sink is still writing their drain (a gauge that went to 0 as
soon as the queue was taken would tell a test or an operator the log had caught up while the
rows were in no file yet).
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
from fake_build import make_card
from prometheus_client import CollectorRegistry

from nb2prod.runtime.prediction_log import PredictionLog
from nb2prod.runtime.prediction_log_settings import PredictionLogSettings

COLUMNS = ["a", "b"]


class _GatedSink:
    """A sink whose write waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.writing.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        self.records.append(record)

    def flush(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def _sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_rows_are_pending_until_the_sink_has_written_them() -> None:
    card = make_card(
        input_schema={
            "columns": [{"name": c, "kind": "number", "dtype": "float64"} for c in COLUMNS],
            "ignored_columns": [],
        }
    )
    registry = CollectorRegistry()
    sink = _GatedSink()
    log = PredictionLog(PredictionLogSettings(max_queued_rows=4), sink, card, registry)
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})

    assert _sample(registry, "nb2prod_prediction_log_pending_rows") == 0
    log.after_predict(frame, ["x", "y", "z"], "first")
    log.after_predict(frame, ["x", "y", "z"], "second")  # 6 rows > 4: dropped, not pending
    assert _sample(registry, "nb2prod_prediction_log_pending_rows") == 3
    assert _sample(registry, "nb2prod_prediction_log_dropped_total") == 3

    log.start()
    try:
        assert sink.writing.wait(timeout=30)
        # The writer has taken the queue and is inside the sink: the rows are still pending.
        assert _sample(registry, "nb2prod_prediction_log_pending_rows") == 3
        assert _sample(registry, "nb2prod_prediction_log_rows_total") == 0
    finally:
        sink.gate.set()
        log.stop()
    assert _sample(registry, "nb2prod_prediction_log_pending_rows") == 0
    assert _sample(registry, "nb2prod_prediction_log_rows_total") == 3
    assert [r["request_id"] for r in sink.records] == ["first"]


def _number_card() -> Any:
    return make_card(
        input_schema={
            "columns": [{"name": c, "kind": "number", "dtype": "float64"} for c in COLUMNS],
            "ignored_columns": [],
        }
    )


def test_stop_with_a_stuck_sink_counts_what_it_never_wrote() -> None:
    registry = CollectorRegistry()
    sink = _GatedSink()
    log = PredictionLog(PredictionLogSettings(), sink, _number_card(), registry)
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    log.after_predict(frame, ["x", "y"], "taken")
    log.start()
    try:
        assert sink.writing.wait(timeout=30)  # the writer is stuck inside the sink
        log.after_predict(frame, ["x", "y"], "queued")
        log.stop(timeout=0.05)
        # The queued request will never be written: dropped, not pending for ever.
        assert _sample(registry, "nb2prod_prediction_log_dropped_total") == 2
        assert _sample(registry, "nb2prod_prediction_log_pending_rows") == 2  # the taken rows
        log.after_predict(frame, ["x", "y"], "late")  # after shutdown: dropped too
        assert _sample(registry, "nb2prod_prediction_log_dropped_total") == 4
    finally:
        sink.gate.set()
    assert log._thread is not None
    log._thread.join(timeout=30)
    assert [r["request_id"] for r in sink.records] == ["taken"]
    assert _sample(registry, "nb2prod_prediction_log_rows_total") == 2
    assert _sample(registry, "nb2prod_prediction_log_pending_rows") == 0


def test_a_long_sensitive_text_is_cut_before_it_is_queued() -> None:
    card = make_card(
        input_schema={
            "columns": [
                {"name": "note", "kind": "text", "dtype": "object"},
                {"name": "secret", "kind": "text", "dtype": "object"},
            ],
            "ignored_columns": [],
        }
    )
    settings = PredictionLogSettings(sensitive=frozenset({"secret"}))
    log = PredictionLog(settings, _GatedSink(), card, CollectorRegistry())
    frame = pd.DataFrame({"note": ["n" * 10], "secret": ["s" * 5_000_000]})
    log.after_predict(frame, [1], "r")
    (item,) = log._pending
    assert len(item.values[0, 1]) <= 1024  # not 5 MB held until the writer runs
