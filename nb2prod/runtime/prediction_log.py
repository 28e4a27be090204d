"""The prediction log: every (sampled) prediction recorded once, off the request path.

An ``after_predict`` hook (see app.py) puts each sampled request's rows on a bounded queue, in
O(1) for all-number inputs; a background thread turns them into one JSON record per request:
``request_id``, ``timestamp``, ``model_version``, ``revision`` (``K_REVISION`` on Cloud Run),
``sample_rate``, ``rows``, ``inputs`` (one object per row, as validated, before preprocessing)
and ``predictions`` (what ``/predict`` answered).

Classifiers' records also carry ``classes`` and ``probabilities`` (one list per row, in the
order of ``classes``), computed by the writer thread, never on the request path: the thread
drains the queue every :data:`DRAIN_SECONDS` (less often for a model whose probabilities are
costly: :data:`PROBABILITY_TIME_SHARE`) and asks the predictor for the probabilities of every
drained row in one batched call (``Predictor.probabilities``, which also checks that they are
the served model's: probabilities.py). A request without them (a regressor, a model they are
not verified for, a cut long text, a failing call) is logged without them, never dropped.

Sinks (``NB2PROD_PREDICTION_LOG``):
- unset: one JSON line per request on stdout in Cloud Logging's shape, labelled
  ``nb2prod_log: predictions`` so that a log sink routes them to BigQuery with a plain filter;
- a folder or an fsspec URL (``gs://...``): JSON Lines files, written under a hidden temporary
  name and published as ``predictions-<opened, UTC>-<pid>-<n>.jsonl`` when rotated (by size or
  age) or at shutdown, so a reader never sees a half-written file.

A full queue drops the request's rows and counts them (``nb2prod_prediction_log_dropped_total``):
logging never blocks or fails a request. Rows count as written (``..._rows_total``) only once
their drain is flushed to the sink; a failed write or flush counts them as dropped, and logs
the first failure with its traceback, then a count at most once a minute. Sensitive columns
(the card's ``sensitive_columns`` and ``NB2PROD_SENSITIVE_COLUMNS``) are never written.

Settings are read in prediction_log_settings.py; what a queued request holds and the record
made of it are prediction_records.py's; the sinks are prediction_log_sinks.py. This module is
the hook, the bounded queue and the writer thread (they share one lock), and paces the drains.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge

from .batcher import BatchAwareHook
from .card import ModelCard
from .loader import Predictor
from .prediction_log_settings import ENV_SAMPLE, PredictionLogSettings
from .prediction_log_sinks import (
    LOG_LABEL,
    FailureReport,
    FileSink,
    PredictionLogError,
    Sink,
    SinkFlushError,
    StdoutSink,
)
from .prediction_records import PendingRequest, RecordBuilder

__all__ = [
    "LOG_LABEL",
    "PredictionLog",
    "PredictionLogError",
    "PredictionLogSettings",
    "install_prediction_log",
]

logger = logging.getLogger("nb2prod.prediction_log")

#: How long shutdown waits for the writer to drain the queue: Cloud Run kills 10 s after SIGTERM.
STOP_TIMEOUT_SECONDS = 5.0

#: The writer drains the queue at most this often: requests never wake it (no notify on the
#: request path), and the probabilities of a drain's rows are one batched model call. The
#: queue is bounded in rows, so a longer wait never means more memory.
DRAIN_SECONDS = 0.2
#: A model whose probabilities are costly (a forest: about the cost of a request, whatever the
#: rows) is drained less often, so that computing them takes at most this share of the time
#: (of one core), waiting at most MAX_DRAIN_SECONDS (records stay at most that late). A
#: notebook whose preprocessing takes 40 ms a call needs the full 5 s to stay near 1%.
PROBABILITY_TIME_SHARE = 0.005
MAX_DRAIN_SECONDS = 5.0


class PredictionLog:
    """The after_predict hook, its bounded queue and the writer thread that drains it."""

    def __init__(
        self,
        settings: PredictionLogSettings,
        sink: Sink,
        card: ModelCard,
        registry: CollectorRegistry,
        predictor: Callable[[], Predictor | None] | None = None,
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._records = RecordBuilder(settings, card)
        # The loaded predictor (loaded after the log is installed), for probabilities.
        self._predictor = predictor
        self._failures = FailureReport(logger)
        self._interval = DRAIN_SECONDS
        self._pending: deque[PendingRequest] = deque()
        self._queued_rows = 0
        self._writing_rows = 0  # the rows of the drain being written (the writer's own)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._closed = False  # stop() has returned: nothing will write what is queued now
        self._thread: threading.Thread | None = None
        self.rows = Counter(
            "nb2prod_prediction_log_rows",
            "Predicted rows written to the prediction log.",
            registry=registry,
        )
        self.dropped = Counter(
            "nb2prod_prediction_log_dropped",
            "Predicted rows not logged: the queue was full or the sink failed.",
            registry=registry,
        )
        # Rows accepted and not yet written nor dropped: how far the log runs behind.
        self.pending = Gauge(
            "nb2prod_prediction_log_pending_rows",
            "Predicted rows queued for the prediction log and not yet written or dropped.",
            registry=registry,
        )
        self.pending.set_function(lambda: self._queued_rows + self._writing_rows)

    # -- the request path ------------------------------------------------------------------
    def after_predict(self, frame: pd.DataFrame, predictions: list[Any], request_id: str) -> None:
        """Sample, then queue the request's values; never blocks (a full queue drops)."""
        self.after_predict_batch(frame, predictions, ((request_id, 0, len(frame)),))

    def after_predict_batch(
        self, frame: pd.DataFrame, predictions: list[Any], spans: Sequence[tuple[str, int, int]]
    ) -> None:
        """:meth:`after_predict` for requests predicted together (micro-batching): the frame
        is read once, and each request is sampled and queued with its own rows and id.
        ``spans`` are ``(request_id, start, end)`` row ranges of ``frame``."""
        sample = self.settings.sample
        kept = [span for span in spans if sample >= 1.0 or random.random() < sample]  # noqa: S311
        if not kept:
            return
        if self._closed or self._queued_rows >= self.settings.max_queued_rows:
            # Full (a slow sink) or stopped: drop before copying the frame (read without the
            # lock; the exact check is below).
            self.dropped.inc(sum(end - start for _, start, end in kept))
            return
        values = self._records.queued_values(frame)
        now = time.time()
        dropped = 0
        with self._lock:
            for request_id, start, end in kept:
                rows = end - start
                if self._closed or self._queued_rows + rows > self.settings.max_queued_rows:
                    dropped += rows
                    continue
                item = PendingRequest(values[start:end], predictions[start:end], request_id, now)
                self._pending.append(item)
                self._queued_rows += rows
        if dropped:
            self.dropped.inc(dropped)

    # -- the writer thread -----------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread (the app's lifespan startup)."""
        self._thread = threading.Thread(
            target=self._run, name="nb2prod-prediction-log", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Drain the queue, then publish the open file (the app's lifespan shutdown).

        Never raises: rows a writer stuck in its sink never took count as dropped (as does
        a request that comes later), and a file that cannot be published is logged with where
        it stays.
        """
        with self._lock:
            self._stopping = True
            self._wake.notify()
        stuck = False
        if self._thread is None:
            self.drain()  # no writer thread (nb2prod batch): write what is queued here
        else:
            self._thread.join(timeout)
            stuck = self._thread.is_alive()
        with self._lock:
            self._closed = True
            left, self._queued_rows = self._queued_rows, 0
            self._pending = deque()
        if left:
            self.dropped.inc(left)
        if stuck:
            # Closing the sink from here would race with the writer still inside it.
            logger.warning(
                "the prediction log writer did not finish in %g s; %d queued row(s) dropped",
                timeout,
                left,
            )
            return
        try:
            self._sink.close()
        except Exception as err:  # (nb2prod batch prints it: one line, no traceback)
            logger.error("the prediction log could not publish its last file: %s", err)

    def drain(self) -> None:
        """Write what is queued, in the caller's thread: ``nb2prod batch`` (batch_log.py) runs
        no writer thread, as it has no request to keep fast and must not drop rows."""
        with self._lock:
            batch, self._pending = list(self._pending), deque()
            self._queued_rows = 0
        self._write(batch)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._stopping:
                    self._wake.wait(timeout=self._interval)  # only stop() wakes it early
                # A swap, so that requests never wait for a copy of a long queue.
                taken, self._pending = self._pending, deque()
                self._writing_rows, self._queued_rows = self._queued_rows, 0
                stopping = self._stopping
            batch = list(taken)
            try:
                self._write(batch)
            except Exception:  # a bug here must not end the thread (the queue would fill)
                self._failures.report("the prediction log could not write a drain")
                self.dropped.inc(self._writing_rows)
            finally:
                self._writing_rows = 0
            try:
                self._sink.tick()
            except Exception:
                self._failures.report("the prediction log could not rotate its file")
            if stopping and not batch:
                return

    def _write(self, batch: list[PendingRequest]) -> None:
        """Write a drain's records; its rows count as written once flushed, else as dropped."""
        predictor = self._predictor() if self._predictor is not None else None
        probabilities, spent = self._records.probabilities(batch, predictor)
        if spent is not None:
            wait = min(MAX_DRAIN_SECONDS, spent / PROBABILITY_TIME_SHARE)
            self._interval = max(DRAIN_SECONDS, wait)
        inputs = self._records.inputs(batch)
        written = failed = 0
        for item, rows_in, proba in zip(batch, inputs, probabilities, strict=True):
            rows = len(item.values)
            try:
                self._sink.write(self._records.record(item, rows_in, proba))
            except Exception:
                self._failures.report("a prediction log record could not be written")
                failed += rows
                continue
            written += rows
        if batch:
            try:
                self._sink.flush()
            except Exception as err:
                # A file sink knows which rows it lost; for another, none of the drain is sure.
                lost = min(written, err.rows) if isinstance(err, SinkFlushError) else written
                self._failures.report("the prediction log could not be flushed")
                written -= lost
                failed += lost
        if failed:
            self.dropped.inc(failed)
        if written:
            self.rows.inc(written)
        self._failures.summarize()


def install_prediction_log(
    app: FastAPI, card: ModelCard, env: Mapping[str, str] | None = None
) -> PredictionLog | None:
    """Hook the prediction log into ``/predict`` (and /pubsub, which shares the hooks).

    Sets ``app.state.prediction_log`` (None when the sample rate is 0); the lifespan starts and
    stops it. A bad setting stops the service from starting, with one ERROR line naming it.
    """
    app.state.prediction_log = None
    try:
        settings = PredictionLogSettings.from_env(
            env, getattr(card, "sensitive_columns", None) or ()
        )
        if settings.sample == 0.0:
            logger.info("prediction log off (%s=0)", ENV_SAMPLE)
            return None
        sink: Sink = (
            FileSink(settings.destination, settings.rotate_bytes, settings.rotate_seconds)
            if settings.destination
            else StdoutSink()
        )
    except PredictionLogError as err:
        logger.error("refusing to start: %s", err)
        raise
    schema = card.input_schema
    names = {str(column["name"]) for column in schema["columns"]}
    names |= {str(name) for name in schema.get("ignored_columns") or ()}  # taken, never logged
    unknown = sorted(settings.sensitive - names)
    if unknown:
        logger.warning("sensitive columns %s are not input columns of this model", unknown)
    log = PredictionLog(
        settings, sink, card, app.state.metrics.registry, lambda: app.state.predictor
    )
    app.state.after_predict.append(BatchAwareHook(log.after_predict, log.after_predict_batch))
    app.state.prediction_log = log
    logger.info(
        "prediction log: %s of requests to %s%s",
        f"{settings.sample:.0%}",
        settings.destination or "stdout",
        f", without {sorted(settings.sensitive)}" if settings.sensitive else "",
    )
    return log
