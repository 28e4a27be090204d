"""The prediction log's settings, records and file sink, in process (the service tests are in
tests/integration/test_prediction_log.py).

- Each NB2PROD_PREDICTION_LOG* variable is parsed or refused with a message naming it.
- Sensitive columns: the union of the card's and NB2PROD_SENSITIVE_COLUMNS.
- The file sink publishes complete files only, under sortable unique names, rotating by size;
  an fsspec URL (file://) goes through the same publish step; on a full disk it loses whole
  records (counted) and publishes no empty file; its failures are logged without flooding.
- Cells become JSON: NaN and NaT are null, times ISO 8601, numpy scalars plain numbers.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nb2prod.runtime.batch_log import run_id
from nb2prod.runtime.prediction_log_settings import PredictionLogSettings
from nb2prod.runtime.prediction_log_sinks import (
    MAX_ENTRY_BYTES,
    FailureReport,
    FileSink,
    PredictionLogError,
    SinkFlushError,
    StdoutSink,
)
from nb2prod.runtime.prediction_records import _plain, bounded_text


def test_defaults_log_every_request_to_stdout() -> None:
    settings = PredictionLogSettings.from_env({})
    assert settings.sample == 1.0
    assert settings.destination == ""
    assert settings.sensitive == frozenset()
    assert settings.max_queued_rows == 100_000


def test_settings_are_read_from_the_environment() -> None:
    settings = PredictionLogSettings.from_env(
        {
            "NB2PROD_PREDICTION_LOG_SAMPLE": " 0.25 ",
            "NB2PROD_PREDICTION_LOG": "/var/log/predictions",
            "NB2PROD_PREDICTION_LOG_QUEUE_ROWS": "10",
            "NB2PROD_PREDICTION_LOG_ROTATE_BYTES": "2048",
            "NB2PROD_PREDICTION_LOG_ROTATE_SECONDS": "1.5",
            "NB2PROD_SENSITIVE_COLUMNS": "ssn, email,,",
        },
        card_sensitive=["email", "phone"],
    )
    assert settings.sample == 0.25
    assert settings.destination == "/var/log/predictions"
    assert settings.max_queued_rows == 10
    assert settings.rotate_bytes == 2048
    assert settings.rotate_seconds == 1.5
    assert settings.sensitive == {"ssn", "email", "phone"}


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half", "nan", "inf"])
def test_a_sample_rate_outside_0_to_1_is_refused(value: str) -> None:
    with pytest.raises(PredictionLogError, match="NB2PROD_PREDICTION_LOG_SAMPLE"):
        PredictionLogSettings.from_env({"NB2PROD_PREDICTION_LOG_SAMPLE": value})


@pytest.mark.parametrize("value", ["0", "-5", "ten", "1.5"])
def test_a_queue_size_that_is_not_a_positive_integer_is_refused(value: str) -> None:
    with pytest.raises(PredictionLogError, match="NB2PROD_PREDICTION_LOG_QUEUE_ROWS"):
        PredictionLogSettings.from_env({"NB2PROD_PREDICTION_LOG_QUEUE_ROWS": value})


def test_the_edges_of_the_sample_rate_are_accepted() -> None:
    assert PredictionLogSettings.from_env({"NB2PROD_PREDICTION_LOG_SAMPLE": "0"}).sample == 0
    assert PredictionLogSettings.from_env({"NB2PROD_PREDICTION_LOG_SAMPLE": "1"}).sample == 1


def test_cells_become_plain_json() -> None:
    when = pd.Timestamp("2024-03-01 12:30:00", tz="UTC")
    cells = [np.float64(1.5), np.int64(3), math.nan, math.inf, None, pd.NaT, when, "x", True]
    assert _plain(cells) == [1.5, 3, None, None, None, None, "2024-03-01T12:30:00+00:00", "x", True]
    assert _plain(dt.date(2024, 1, 2)) == "2024-01-02"
    json.dumps(_plain(cells), allow_nan=False)  # strict JSON: no NaN token


def test_long_text_is_cut_with_its_length() -> None:
    assert bounded_text("short") == "short"
    cut = bounded_text("a" * 5_000_000)
    assert len(cut) <= 1024 and cut.endswith("...[5000000 chars]")


def _records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.open()]


def test_the_file_sink_publishes_complete_files_in_order(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "log"), rotate_bytes=200, rotate_seconds=3600)
    written = [{"request_id": f"r{i}", "rows": 1, "pad": "x" * 50} for i in range(10)]
    for record in written[:5]:
        sink.write(record)
    sink.flush()
    # Only finished files are visible; the one being written is hidden.
    visible = sorted(p.name for p in (tmp_path / "log").glob("*.jsonl"))
    hidden = [p.name for p in (tmp_path / "log").iterdir() if p.name.startswith(".")]
    assert len(visible) >= 1 and len(hidden) == 1 and hidden[0].endswith(".jsonl.tmp")
    for record in written[5:]:
        sink.write(record)
    sink.close()
    names = sorted(p.name for p in (tmp_path / "log").iterdir())
    pattern = rf"predictions-\d{{8}}T\d{{6}}\.\d{{6}}Z-{os.getpid()}-\d{{5}}\.jsonl"
    assert all(re.fullmatch(pattern, name) for name in names), names
    assert len(names) >= 3, names  # 10 records of ~80 bytes, rotated at 200 bytes
    assert _records(tmp_path / "log") == written  # name order is write order, none lost


def test_the_file_sink_rotates_by_age(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path), rotate_bytes=1 << 20, rotate_seconds=0.01)
    sink.write({"request_id": "a", "rows": 1})
    time.sleep(0.02)
    sink.tick()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert _records(tmp_path) == [{"request_id": "a", "rows": 1}]
    sink.close()  # nothing open: nothing more published
    assert len(list(tmp_path.glob("*.jsonl"))) == 1


def test_an_fsspec_url_is_uploaded_whole(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    target = tmp_path / "bucket" / "predictions"
    target.mkdir(parents=True)
    sink = FileSink(f"local://{target}", rotate_bytes=1 << 20, rotate_seconds=3600)
    sink.write({"request_id": "a", "rows": 1})
    assert list(target.iterdir()) == []  # staged elsewhere until published
    sink.close()
    assert _records(target) == [{"request_id": "a", "rows": 1}]


def test_an_unknown_url_scheme_is_refused_clearly(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(PredictionLogError, match="NB2PROD_PREDICTION_LOG=nosuch://x"):
        FileSink("nosuch://x", rotate_bytes=1, rotate_seconds=1)


class _FullDisk:
    """A staging file on a disk with ``room`` bytes: a write past it writes what fits, then
    fails with ENOSPC, as os.write does."""

    def __init__(self, real: io.RawIOBase, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data: memoryview) -> int:
        room = self.room - self.real.tell()
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data[:room])

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_full_disk_loses_whole_records_counted_and_publishes_no_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened, room = Path.open, [100]

    def tiny_disk(self: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = opened(self, mode, *args, **kwargs)
        return _FullDisk(handle, room[0]) if mode == "wb" else handle

    monkeypatch.setattr(Path, "open", tiny_disk)
    sink = FileSink(str(tmp_path), rotate_bytes=1 << 20, rotate_seconds=3600)
    records = [{"request_id": f"r{i}", "rows": 2, "pad": "x" * 20} for i in range(4)]  # ~50 B
    sink.write(records[0])
    sink.flush()  # fits
    for record in records[1:]:
        sink.write(record)
    with pytest.raises(SinkFlushError) as lost:
        sink.flush()  # the first fits in part only: all three are lost, none half-written
    assert lost.value.rows == 6
    sink.flush()  # nothing held, nothing lost since
    sink.close()
    assert _records(tmp_path) == records[:1]
    # A file that got no record on the full disk is discarded, not published empty.
    room[0] = 0  # the next file cannot take a byte
    sink.write(records[1])
    with pytest.raises(SinkFlushError):
        sink.flush()
    sink.close()
    assert [p.stat().st_size for p in tmp_path.iterdir()] == [len(json.dumps(records[0])) + 1]


def test_sink_failures_log_one_traceback_then_a_count_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    report = FailureReport(logging.getLogger("test.failures"), clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="test.failures"):
        for second in range(0, 150):  # one failure a second for 150 s
            now[0] = float(second)
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                report.report("the prediction log could not be flushed")
        report.summarize()
    lines = [r for r in caplog.records if r.name == "test.failures"]
    assert len(lines) == 3, [r.getMessage() for r in lines]  # first, at 60 s, at 120 s
    assert lines[0].exc_info is not None and all(r.exc_info is None for r in lines[1:])
    assert "failed 60 more time(s)" in lines[1].getMessage()
    assert "No space left on device" in lines[2].getMessage()


class _FlakyUploads:
    """An fsspec filesystem whose uploads fail while ``down`` is set."""

    def __init__(self, real: object) -> None:
        self.real, self.down, self.attempts = real, True, 0

    def put_file(self, local: str, remote: str) -> None:
        self.attempts += 1
        if self.down:
            raise OSError("503 Service Unavailable")
        self.real.put_file(local, remote)  # type: ignore[attr-defined]


def test_a_failed_upload_keeps_the_records_and_is_retried(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    target = tmp_path / "bucket"
    target.mkdir()
    sink = FileSink(f"local://{target}", rotate_bytes=1 << 20, rotate_seconds=0.01)
    flaky = _FlakyUploads(sink._fs)
    sink._fs = flaky
    sink.write({"request_id": "a", "rows": 1})
    sink.flush()  # the log now counts the row as written: it must reach the bucket
    time.sleep(0.02)
    sink.tick()  # rotates: the upload fails, the staged file is kept
    with pytest.raises(OSError, match="503"):
        sink.tick()  # the retry fails again: reported, still kept
    assert list(target.iterdir()) == []
    flaky.down = False
    sink.write({"request_id": "b", "rows": 1})
    sink.close()  # publishes the new file and retries the kept one
    assert sorted(r["request_id"] for r in _records(target)) == ["a", "b"]
    assert len(list(target.glob("*.jsonl"))) == 2


def test_an_upload_still_failing_at_close_says_where_the_records_stay(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    target = tmp_path / "bucket"
    target.mkdir()
    sink = FileSink(f"local://{target}", rotate_bytes=1 << 20, rotate_seconds=3600)
    sink._fs = _FlakyUploads(sink._fs)
    sink.write({"request_id": "a", "rows": 1})
    sink.flush()
    with pytest.raises(PredictionLogError, match="could not be published") as caught:
        sink.close()
    staging = sink._staging
    assert str(staging) in str(caught.value)
    assert [json.loads(f.read_text()) for f in staging.iterdir()] == [
        {"request_id": "a", "rows": 1}
    ]


def test_stdout_entries_are_split_by_bytes_not_characters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 4 rows of 30,000 four-byte characters: 120,000 characters, 480,000 bytes.
    text = "\U0001f600" * 30_000
    sink = StdoutSink()
    sink.write(
        {
            "request_id": "r",
            "timestamp": "2024-01-01T00:00:00+00:00",
            "rows": 4,
            "row_offset": 0,
            "inputs": [{"t": text}] * 4,
            "predictions": [0, 1, 2, 3],
        }
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1
    assert all(len(line.encode("utf-8")) <= MAX_ENTRY_BYTES for line in lines)
    entries = [json.loads(line) for line in lines]
    assert [p for e in entries for p in e["predictions"]] == [0, 1, 2, 3]
    offsets = [e["row_offset"] for e in entries]
    assert offsets == [sum(e["rows"] for e in entries[:i]) for i in range(len(entries))]


def test_a_retried_cloud_run_task_is_another_batch_run() -> None:
    # A failed attempt's records must not share request ids with the retry's.
    job = {"CLOUD_RUN_EXECUTION": "score-abc12", "CLOUD_RUN_TASK_INDEX": "3"}
    first = run_id({**job, "CLOUD_RUN_TASK_ATTEMPT": "0"})
    retry = run_id({**job, "CLOUD_RUN_TASK_ATTEMPT": "1"})
    assert first.startswith("score-abc12-3") and retry.startswith("score-abc12-3")
    assert first != retry
    assert run_id({}) != run_id({})  # outside a job: the start time and a random suffix
