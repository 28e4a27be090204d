"""``nb2prod batch``'s prediction log: the service's records (prediction_log.py) for scored rows.

On only when a destination is given, ``--prediction-log DIR|URL`` or ``NB2PROD_PREDICTION_LOG``:
the batch's stdout is its summary (``--json`` for CI), so the service's default stdout sink
would corrupt it. ``NB2PROD_PREDICTION_LOG_SAMPLE`` and the sensitive columns (the card's and
``NB2PROD_SENSITIVE_COLUMNS``) apply as in the service.

Each chunk's scored rows are logged in blocks of :data:`BLOCK_ROWS` (sampled per block, as the
service samples per request), one record a block with ``request_id``
``batch-<run id>-<chunk>-<block>``; the run id is in the summary and the sidecar. A record's
``inputs`` also hold the row's ``--keep`` columns (ids), so ``nb2prod quality --key ID`` joins
batch predictions with their labels. Records are written in this thread after each chunk: a
batch has no request to keep fast, so rows wait for the sink instead of being dropped.
Records are written as rows are scored, so a run that fails later leaves the records of what
it scored, under a run id that no sidecar names.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
from prometheus_client import CollectorRegistry

from .batch_files import BatchError
from .loader import Predictor
from .prediction_log import PredictionLog, PredictionLogError, PredictionLogSettings
from .prediction_log_sinks import ENV_SINK, FileSink, Sink

__all__ = ["BLOCK_ROWS", "BatchLog", "open_batch_log", "run_id"]

#: Rows in one record (and one sampling draw): small enough for a reader to load one, large
#: enough that a million-row run is a thousand records, not a million.
BLOCK_ROWS = 1000


def run_id(env: Mapping[str, str]) -> str:
    """This run's id: the Cloud Run Job execution, task and attempt when there is one, else
    the start time (UTC) and a random suffix, so two runs' request ids never meet (a retried
    task is another run: the failed attempt's records stay under an id no sidecar names)."""
    execution = env.get("CLOUD_RUN_EXECUTION", "").strip()
    if execution:
        task = env.get("CLOUD_RUN_TASK_INDEX", "").strip() or "0"
        attempt = env.get("CLOUD_RUN_TASK_ATTEMPT", "").strip() or "0"
        return f"{execution}-{task}-{attempt}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


class _WithKept:
    """A sink that adds each row's ``--keep`` values to its record's ``inputs``."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.kept: dict[str, list[dict[str, Any]]] = {}  # request_id -> one dict per row

    def write(self, record: dict[str, Any]) -> None:
        extra = self.kept.pop(record["request_id"], None)
        if extra:
            inputs = [{**row, **more} for row, more in zip(record["inputs"], extra, strict=True)]
            record = {**record, "inputs": inputs}
        self.sink.write(record)

    def flush(self) -> None:
        self.sink.flush()

    def tick(self) -> None:
        self.sink.tick()

    def close(self) -> None:
        self.sink.close()


class BatchLog:
    """The prediction log of one ``nb2prod batch`` run (see the module docstring)."""

    def __init__(
        self, log: PredictionLog, sink: _WithKept, registry: CollectorRegistry, keep: Sequence[str]
    ) -> None:
        self._log, self._sink, self._registry = log, sink, registry
        self._keep = list(keep)
        self.run_id = run_id(os.environ)
        self.destination = log.settings.destination
        self._chunks = 0

    def chunk(self, request: pd.DataFrame, predictions: list[Any], kept: pd.DataFrame) -> None:
        """Log one chunk's scored rows: ``request`` as the service builds a request's frame,
        their predictions, and their ``--keep`` columns (same order)."""
        self._chunks += 1
        spans = [
            (f"batch-{self.run_id}-{self._chunks:05d}-{start // BLOCK_ROWS:04d}", start, end)
            for start in range(0, len(request), BLOCK_ROWS)
            for end in [min(start + BLOCK_ROWS, len(request))]
        ]
        if not spans:
            return
        if self._keep:
            rows = _plain_records(kept[self._keep])
            self._sink.kept = {rid: rows[start:end] for rid, start, end in spans}
        self._log.after_predict_batch(request, predictions, spans)
        self._log.drain()
        self._sink.kept = {}  # the blocks sampling left out
        try:
            self._sink.tick()  # publish a file older than the rotation age
        except Exception as err:  # the sink's errors are counted, never fatal, as in the service
            print(f"nb2prod-batch: the prediction log could not rotate: {err}", file=sys.stderr)

    def close(self) -> None:
        """Publish the open file (also after a failed run: its records stay, see above)."""
        self._log.stop()

    def summary(self) -> dict[str, Any]:
        """What the sidecar records: where, which run, how many rows were logged and dropped."""
        get = self._registry.get_sample_value
        return {
            "destination": self.destination,
            "run_id": self.run_id,
            "sample_rate": self._log.settings.sample,
            "rows_logged": int(get("nb2prod_prediction_log_rows_total") or 0),
            "rows_dropped": int(get("nb2prod_prediction_log_dropped_total") or 0),
        }


def _plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as JSON-ready dicts: null for missing, text for what JSON has no type
    for (a timestamp), plain numbers."""

    def plain(value: Any) -> Any:
        if value is None or value is pd.NaT or value is pd.NA:
            return None
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, (str, int, bool)):
            return value
        return str(value)

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def open_batch_log(
    predictor: Predictor,
    destination: str | None,
    keep: Sequence[str],
    chunk_rows: int,
    env: Mapping[str, str] | None = None,
) -> BatchLog | None:
    """The run's log, or None when no destination is set or the sample rate is 0; a
    BatchError (exit 2) for a bad setting, before any row is scored."""
    env = dict(os.environ if env is None else env)
    where = (destination or env.get(ENV_SINK, "")).strip()
    if not where:
        return None
    env[ENV_SINK] = where
    card = predictor.card
    try:
        settings = PredictionLogSettings.from_env(env, card.sensitive_columns)
        if settings.sample == 0.0:
            return None
        sink = _WithKept(FileSink(where, settings.rotate_bytes, settings.rotate_seconds))
    except PredictionLogError as err:
        raise BatchError(f"the prediction log: {err}") from err
    # A whole chunk is queued, then written before the next: the queue never drops here.
    settings = replace(settings, max_queued_rows=max(chunk_rows, settings.max_queued_rows))
    inputs = {str(column["name"]) for column in card.input_schema["columns"]}
    logged_keep = [k for k in keep if k not in inputs and k not in settings.sensitive]
    registry = CollectorRegistry()
    log = PredictionLog(settings, sink, card, registry, lambda: predictor)
    return BatchLog(log, sink, registry, logged_keep)
