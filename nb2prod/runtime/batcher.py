"""Adaptive micro-batching: concurrent ``/predict`` requests share one preprocess and predict.

A scikit-learn ``predict`` call costs nearly the same for 1 row as for 64 (a 100-tree forest:
5.65 ms and 5.37 ms), so a service that calls it once per request spends its time repeating
that fixed cost under concurrency. :class:`Batcher` joins the rows of the requests waiting
at that moment into one frame, predicts once on the event loop, and gives each request
exactly its own predictions, in order.

- **No wait at concurrency 1.** A request that finds nothing else queued is predicted on the
  next turn of the event loop, as it would be without batching.
- **A short wait only under load, and only as long as it pays.** After a batch of ``n``
  requests, the next batch waits until about as many are queued: the clients just answered
  are about to send their next request. It waits at most as long as the last batch took to
  predict (capped by ``NB2PROD_BATCH_MAX_WAIT_MS``): predicting the first arrival alone
  would hold the others that long anyway, so the wait never costs more than it saves. A
  wait that expires lowers the target to what arrived, so the wait fades with the load.
- **Bounded.** At most ``max_rows`` rows (``NB2PROD_BATCH_MAX_ROWS``) per batch; a larger
  request is not batched.
- **Isolated.** When the joined batch raises, its requests are predicted one by one, so each
  gets its own answer or its own error: one poisoned request never fails the others.

Only builds whose skew guard proved batch invariance (the card's ``batching`` verdict) are
batched: :func:`batching_mode` reads ``NB2PROD_BATCHING`` (``auto``, ``on``, ``off``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MAX_WAIT_MS",
    "BatchAwareHook",
    "Batcher",
    "BatchingError",
    "BatchingMode",
    "batching_mode",
]

logger = logging.getLogger("nb2prod.service")

DEFAULT_MAX_ROWS = 64
DEFAULT_MAX_WAIT_MS = 10.0
MODE_ENV = "NB2PROD_BATCHING"
MAX_ROWS_ENV = "NB2PROD_BATCH_MAX_ROWS"
MAX_WAIT_ENV = "NB2PROD_BATCH_MAX_WAIT_MS"

Rows = Sequence[Sequence[Any]]
#: ``predict_many([(rows, request_id), ...])`` -> the predictions of each request, in order.
PredictMany = Callable[[list[tuple[Rows, str]]], list[list[Any]]]


#: ``(request_id, start, end)``: one request's rows in a micro-batch's frame.
Span = tuple[str, int, int]


@dataclass(frozen=True)
class BatchAwareHook:
    """An after_predict hook that also takes a whole micro-batch in one call.

    Called as ``hook(frame, predictions, request_id)`` for one request, like any hook; for
    requests predicted together the app calls ``hook.batch(frame, predictions, spans)``
    once instead of slicing the frame for each request (a slice costs ~50 us, a request at
    concurrency 32 about 200 us in all).
    """

    each: Callable[[Any, list[Any], str], None]
    batch: Callable[[Any, list[Any], Sequence[Span]], None]

    def __call__(self, frame: Any, predictions: list[Any], request_id: str) -> None:
        self.each(frame, predictions, request_id)


class BatchingError(RuntimeError):
    """The batching settings can't be used (``NB2PROD_BATCHING=on`` for a batch-dependent
    build, or a setting that isn't a number): the service refuses to start."""


@dataclass(frozen=True)
class BatchingMode:
    """Whether the service batches, its limits, and why (for the startup log)."""

    enabled: bool
    reason: str
    max_rows: int = DEFAULT_MAX_ROWS
    max_wait_seconds: float = DEFAULT_MAX_WAIT_MS / 1000


def batching_mode(verdict: dict[str, Any], environ: dict[str, str] | None = None) -> BatchingMode:
    """The batching settings from ``NB2PROD_BATCHING`` and the card's ``batching`` verdict.

    ``auto`` (the default) batches a build whose skew guard proved that a row's answer does
    not depend on its batch; ``on`` insists and is refused for any other build; ``off`` never
    batches.
    """
    env = os.environ if environ is None else environ
    mode = env.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "on", "off"):
        raise BatchingError(f"{MODE_ENV}={mode!r}: use auto, on or off")
    max_rows = _number(env, MAX_ROWS_ENV, DEFAULT_MAX_ROWS, int, minimum=1)
    max_wait_ms = _number(env, MAX_WAIT_ENV, DEFAULT_MAX_WAIT_MS, float, minimum=0)
    limits = {"max_rows": int(max_rows), "max_wait_seconds": float(max_wait_ms) / 1000}
    if mode == "off":
        return BatchingMode(False, f"{MODE_ENV}=off", **limits)
    if verdict.get("batch_invariant") is True:
        checked = verdict.get("rows_checked", "the sample")
        return BatchingMode(
            True, f"the build proved batch invariance on {checked} sample rows", **limits
        )
    why = verdict.get("reason") or "the model card has no batch-invariance verdict (rebuild it)"
    if mode == "on":
        raise BatchingError(
            f"{MODE_ENV}=on, but this build can't be batched safely: {why}. Unset it "
            "(auto batches only builds that passed the check) or rebuild without "
            "--batch-dependent"
        )
    return BatchingMode(False, why, **limits)


def _number(
    env: dict[str, str] | os._Environ[str],
    name: str,
    default: float,
    kind: type[int] | type[float],
    minimum: float,
) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BatchingError(f"{name}={text!r} is not a number") from None
    if value < minimum:
        raise BatchingError(f"{name}={text!r}: must be at least {minimum:g}")
    return value


@dataclass
class _Pending:
    rows: Rows
    request_id: str
    future: asyncio.Future[list[Any]] = field(repr=False)


class Batcher:
    """Joins the rows of concurrent requests into one prediction (see the module docstring).

    ``predict_many`` predicts several requests' rows at once and returns each request's
    predictions; it runs on the event loop, so a batch holds it for one prediction's time,
    as an unbatched request of the same rows would. ``observe(rows, requests)`` records each
    batch's size (a Prometheus histogram).
    """

    def __init__(
        self,
        predict_many: PredictMany,
        mode: BatchingMode,
        observe: Callable[[int, int], None] = lambda rows, requests: None,
    ) -> None:
        self._predict_many = predict_many
        self.max_rows = mode.max_rows
        self.max_wait = mode.max_wait_seconds
        self._observe = observe
        self._queue: list[_Pending] = []
        self._queued_rows = 0
        self._target = 1  # requests the next batch waits for: the last batch's size
        self._cost = 0.0  # seconds the last batch took to predict: the longest wait that pays
        self._flush_handle: asyncio.Handle | None = None

    def accepts(self, rows: Rows) -> bool:
        """Whether a request of ``rows`` is batched (a large one is predicted on its own)."""
        return 0 < len(rows) <= self.max_rows

    async def predict(self, rows: Rows, request_id: str) -> list[Any]:
        """``rows``' predictions, computed in a batch with whatever else is queued."""
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, request_id, loop.create_future())
        self._queue.append(pending)
        self._queued_rows += len(rows)
        if len(self._queue) >= self._target or self._queued_rows >= self.max_rows:
            self._schedule(loop, 0.0)
        else:
            self._schedule(loop, self._wait())
        return await pending.future

    def _wait(self) -> float:
        """How long a batch short of its target may wait: the last batch's predict time,
        capped by ``max_wait``."""
        return min(self.max_wait, self._cost)

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """Flush after ``delay`` seconds (0: on the next turn, after the requests already
        woken have queued), replacing a later flush."""
        if self._flush_handle is not None:
            if delay > 0:
                return  # a flush is already on its way, no later than this one
            if not isinstance(self._flush_handle, asyncio.TimerHandle):
                return
            self._flush_handle.cancel()
        if delay > 0:
            self._flush_handle = loop.call_later(delay, self._flush)
        else:
            self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Predict one batch from the head of the queue, and schedule the rest."""
        self._flush_handle = None
        batch, rows = [], 0
        while self._queue and (not batch or rows + len(self._queue[0].rows) <= self.max_rows):
            pending = self._queue.pop(0)
            batch.append(pending)
            rows += len(pending.rows)
        self._queued_rows -= rows
        live = [p for p in batch if not p.future.done()]  # a client that left is skipped
        # The next batch waits for about as many requests as this one held; a timed-out
        # wait (fewer came) lowers the target at once, so the wait fades with the load.
        self._target = max(1, len(batch))
        if live:
            self._run(live)
        if self._queue:
            loop = asyncio.get_running_loop()
            full = len(self._queue) >= self._target or self._queued_rows >= self.max_rows
            self._schedule(loop, 0.0 if full else self._wait())

    def _run(self, batch: list[_Pending]) -> None:
        """Predict ``batch`` at once; on an error, each request alone, so only its culprit
        fails."""
        started = time.perf_counter()
        try:
            results = self._predict_many([(p.rows, p.request_id) for p in batch])
            self._cost = time.perf_counter() - started
        except Exception as err:  # handed to the request's handler, which answers as unbatched
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(err)
                return
            logger.warning(
                "a batch of %d requests failed (%s: %s); predicting them one by one",
                len(batch),
                type(err).__name__,
                err,
            )
            for pending in batch:
                self._run([pending])
            return
        self._observe(sum(len(p.rows) for p in batch), len(batch))
        for pending, predictions in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(predictions)
