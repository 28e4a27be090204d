"""The request batcher's own rules, on a real event loop: who is joined, who waits, how long,
and who fails. (The service with a real model, HTTP and 32 clients is in
tests/integration/test_micro_batching.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from nb2prod.runtime.batcher import Batcher, BatchingError, BatchingMode, batching_mode

PROVED = {"batch_invariant": True, "rows_checked": 8}
DEPENDENT = {"batch_invariant": False, "reason": "a row's answer depends on the other rows"}


def test_auto_batches_only_a_build_that_proved_batch_invariance() -> None:
    assert batching_mode(PROVED, {}).enabled
    off = batching_mode(DEPENDENT, {})
    assert not off.enabled and off.reason == DEPENDENT["reason"]
    unknown = batching_mode({}, {"NB2PROD_BATCHING": "auto"})
    assert not unknown.enabled and "rebuild" in unknown.reason


def test_on_is_refused_for_a_build_that_cannot_be_batched_and_off_always_wins() -> None:
    with pytest.raises(BatchingError, match="NB2PROD_BATCHING=on, but .* depends on the other"):
        batching_mode(DEPENDENT, {"NB2PROD_BATCHING": "on"})
    assert batching_mode(PROVED, {"NB2PROD_BATCHING": "on"}).enabled
    assert not batching_mode(PROVED, {"NB2PROD_BATCHING": "OFF"}).enabled


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NB2PROD_BATCHING": "sometimes"}, "use auto, on or off"),
        ({"NB2PROD_BATCH_MAX_ROWS": "many"}, "is not a number"),
        ({"NB2PROD_BATCH_MAX_ROWS": "0"}, "must be at least 1"),
        ({"NB2PROD_BATCH_MAX_WAIT_MS": "-1"}, "must be at least 0"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(BatchingError, match=message):
        batching_mode(PROVED, env)


def test_limits_come_from_the_environment() -> None:
    mode = batching_mode(PROVED, {"NB2PROD_BATCH_MAX_ROWS": "8", "NB2PROD_BATCH_MAX_WAIT_MS": "5"})
    assert (mode.max_rows, mode.max_wait_seconds) == (8, 0.005)


class Recorder:
    """predict_many that answers each row with its sum and records every call."""

    def __init__(self, poison: Any = None, seconds: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.poison = poison
        self.seconds = seconds  # what one prediction costs

    def __call__(self, requests: list[tuple[Any, str]]) -> list[list[Any]]:
        self.calls.append([request_id for _, request_id in requests])
        time.sleep(self.seconds)
        if any(self.poison in row for rows, _ in requests for row in rows):
            raise ValueError("poisoned row")
        return [[sum(row) for row in rows] for rows, _ in requests]


def batcher(recorder: Recorder, max_rows: int = 64, max_wait_ms: float = 50.0) -> Batcher:
    return Batcher(recorder, BatchingMode(True, "test", max_rows, max_wait_ms / 1000))


def test_requests_queued_together_share_one_prediction_and_get_their_own_rows() -> None:
    recorder = Recorder()
    subject = batcher(recorder)

    async def run() -> list[list[Any]]:
        bodies = [[[i, 1]] if i % 3 else [[i, 1], [i, 2]] for i in range(10)]
        return await asyncio.gather(
            *(subject.predict(body, f"r{i}") for i, body in enumerate(bodies))
        )

    answers = asyncio.run(run())
    assert answers == [[i + 1] if i % 3 else [i + 1, i + 2] for i in range(10)]
    assert recorder.calls == [[f"r{i}" for i in range(10)]]


def test_a_lone_request_is_not_kept_waiting() -> None:
    recorder = Recorder()
    subject = batcher(recorder, max_wait_ms=500)

    async def run() -> float:
        started = time.perf_counter()
        await subject.predict([[1, 2]], "alone")
        return time.perf_counter() - started

    assert asyncio.run(run()) < 0.1  # far below the 500 ms it may wait under load


def test_after_a_busy_batch_the_next_waits_as_long_as_a_prediction_then_stops_waiting() -> None:
    recorder = Recorder(seconds=0.1)
    subject = batcher(recorder, max_wait_ms=1000)

    async def run() -> tuple[float, float]:
        await asyncio.gather(*(subject.predict([[i]], f"a{i}") for i in range(4)))
        started = time.perf_counter()
        await subject.predict([[9]], "late")  # expected 4, only 1 comes: waits, then goes
        waited = time.perf_counter() - started
        started = time.perf_counter()
        await subject.predict([[9]], "next")  # the target fell to 1: no wait
        return waited, time.perf_counter() - started

    waited, then = asyncio.run(run())
    # The late one waited about one prediction (100 ms, not the 1 s cap), then took its own.
    assert 0.18 < waited < 0.6
    assert then < 0.17
    assert recorder.calls == [["a0", "a1", "a2", "a3"], ["late"], ["next"]]


def test_the_wait_is_capped_by_max_wait() -> None:
    recorder = Recorder(seconds=0.2)
    subject = batcher(recorder, max_wait_ms=20)

    async def run() -> float:
        await asyncio.gather(*(subject.predict([[i]], f"a{i}") for i in range(2)))
        started = time.perf_counter()
        await subject.predict([[9]], "late")
        return time.perf_counter() - started

    assert asyncio.run(run()) < 0.2 + 0.1  # its own 200 ms and at most 20 ms of waiting


def test_a_batch_never_exceeds_max_rows() -> None:
    recorder = Recorder()
    subject = batcher(recorder, max_rows=4)

    async def run() -> list[list[Any]]:
        return await asyncio.gather(*(subject.predict([[i], [i]], f"r{i}") for i in range(5)))

    assert asyncio.run(run()) == [[i, i] for i in range(5)]
    assert [len(call) for call in recorder.calls] == [2, 2, 1]


def test_a_poisoned_request_fails_alone() -> None:
    recorder = Recorder(poison=-1)
    subject = batcher(recorder)

    async def run() -> list[Any]:
        return await asyncio.gather(
            *(subject.predict([[-1 if i == 3 else i]], f"r{i}") for i in range(6)),
            return_exceptions=True,
        )

    answers = asyncio.run(run())
    assert isinstance(answers[3], ValueError)
    assert [a for i, a in enumerate(answers) if i != 3] == [[0], [1], [2], [4], [5]]
    assert recorder.calls[0] == [f"r{i}" for i in range(6)]  # first together, then one by one
    assert recorder.calls[1:] == [[f"r{i}"] for i in range(6)]


def test_a_request_whose_client_left_is_not_predicted() -> None:
    recorder = Recorder()
    subject = batcher(recorder)

    async def run() -> list[Any]:
        gone = asyncio.ensure_future(subject.predict([[5]], "gone"))
        stays = asyncio.ensure_future(subject.predict([[6]], "stays"))
        await asyncio.sleep(0)  # both queued
        gone.cancel()
        return [await stays]

    assert asyncio.run(run()) == [[6]]
    assert recorder.calls == [["stays"]]
