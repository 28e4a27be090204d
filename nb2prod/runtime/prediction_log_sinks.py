"""The prediction log's sinks: Cloud Logging entries on stdout, or rotating JSON Lines files.

Written by the prediction log's writer thread only (prediction_log.py), never on the request
path. A record is a JSON object (see prediction_log.py; a classifier's carries ``classes`` and
``probabilities`` per row); a stdout entry too large for Cloud Logging is split by rows. A
file is written under a hidden temporary name and published (renamed, or uploaded for an
fsspec URL) complete, so a reader never sees half of one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ENV_SINK",
    "FailureReport",
    "LOG_LABEL",
    "FileSink",
    "PredictionLogError",
    "Sink",
    "SinkFlushError",
    "StdoutSink",
]

#: The Cloud Logging label every stdout record carries: filter on ``labels.nb2prod_log``.
LOG_LABEL = {"nb2prod_log": "predictions"}
ENV_SINK = "NB2PROD_PREDICTION_LOG"
#: Cloud Logging refuses entries over 256 KB: a larger request is split into several entries.
MAX_ENTRY_BYTES = 200_000
#: The file sink holds at most this many bytes of records in memory before writing them.
MAX_BUFFER_BYTES = 1 << 20
#: How often a file whose publish failed (an upload) is retried, its staged copy kept until then.
PUBLISH_RETRY_SECONDS = 30.0
#: One encoder for every record (json.dumps with options builds one per call); records are
#: trees the log builds, so the circular-reference check is skipped.
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


class PredictionLogError(ValueError):
    """Raised when a prediction-log setting is invalid or its sink cannot be used."""


class Sink(Protocol):
    """Where records go: written by the writer thread only."""

    def write(self, record: dict[str, Any]) -> None: ...
    def flush(self) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...


class StdoutSink:
    """One Cloud Logging structured entry per request on stdout (several for a large one)."""

    def write(self, record: dict[str, Any]) -> None:
        line = self._line(record)
        rows = record["rows"]
        if rows > 1 and _utf8_bytes(line) > MAX_ENTRY_BYTES:
            # Halves, each with its first row's offset in the request, until each fits.
            half = rows // 2
            for start, end in ((0, half), (half, rows)):
                self.write(
                    {
                        **record,
                        "row_offset": record["row_offset"] + start,
                        "rows": end - start,
                        "inputs": record["inputs"][start:end],
                        "predictions": record["predictions"][start:end],
                        **(
                            {"probabilities": record["probabilities"][start:end]}
                            if "probabilities" in record
                            else {}
                        ),
                    }
                )
            return
        # One write call per line, so lines of other threads' logs never land inside it.
        sys.stdout.write(line)

    @staticmethod
    def _line(record: dict[str, Any]) -> str:
        entry = {
            "severity": "INFO",
            "message": f"prediction log: {record['rows']} row(s)",
            "time": record["timestamp"],
            "logger": "nb2prod.predictions",
            "logging.googleapis.com/labels": LOG_LABEL,
            **record,
        }
        return _ENCODE(entry) + "\n"

    def flush(self) -> None:
        sys.stdout.flush()

    def tick(self) -> None:
        pass

    def close(self) -> None:
        sys.stdout.flush()


def _utf8_bytes(line: str) -> int:
    """The size of ``line`` on stdout: Cloud Logging's limit is in bytes, and a non-ASCII
    character takes up to four (the encoder keeps them as they are, ensure_ascii=False)."""
    return len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))


class SinkFlushError(OSError):
    """A flush lost records: ``rows`` of those written since the previous flush are in no file."""

    def __init__(self, rows: int, cause: BaseException) -> None:
        super().__init__(f"{rows} row(s) lost: {cause}")
        self.rows = rows


class FileSink:
    """Rotating JSON Lines files in a folder or under an fsspec URL (``gs://bucket/dir``).

    Records go to a hidden staging file (beside the published ones for a folder, in a local
    temporary folder for a URL); a rotation or ``close`` renames (or uploads) it to its final
    name, so a published file is always complete.

    Records are held in memory until :meth:`flush` (or a rotation, or :data:`MAX_BUFFER_BYTES`)
    writes them: a write that fails (a full disk) truncates the staging file back to its last
    whole record, and the next :meth:`flush` raises :class:`SinkFlushError` with the rows lost
    since the previous one, so the log counts as written only rows that are in a file. A file
    that holds no record is discarded, never published. A publish that fails (an unreachable
    bucket) keeps the staged file: :meth:`tick` retries it every :data:`PUBLISH_RETRY_SECONDS`
    and :meth:`close` once more, so rows already counted as written are not deleted.
    """

    def __init__(self, destination: str, rotate_bytes: int, rotate_seconds: float) -> None:
        self._rotate_bytes = rotate_bytes
        self._rotate_seconds = rotate_seconds
        self._fs: Any = None
        if "://" in destination and not destination.startswith("file://"):
            self._fs, self._remote = _filesystem(destination)
            self._staging = Path(tempfile.mkdtemp(prefix="nb2prod-predictions-"))
        else:
            self._staging = Path(destination.removeprefix("file://"))
            try:
                self._staging.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise PredictionLogError(f"{ENV_SINK}={destination}: {err}") from err
        self._count = 0
        self._name = ""  # the open file's published name; "" when none is open
        self._handle: Any = None  # its staging file, created at its first write to disk
        self._opened = 0.0
        self._bytes = 0  # the open file's bytes, on disk and buffered
        self._good = 0  # the staging file's bytes that are whole records
        self._buffer: list[bytes] = []
        self._buffered_rows = 0
        self._lost = 0  # rows lost since the last flush()
        self._error: BaseException | None = None
        # Closed staging files whose publish failed, oldest first: (staged, published name).
        self._unpublished: list[tuple[Path, str]] = []
        self._retry_at = 0.0  # time.monotonic() of the next retry

    def _open(self) -> None:
        self._count += 1
        now = time.time()
        stamp = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self._name = f"predictions-{stamp}-{os.getpid()}-{self._count:05d}.jsonl"
        self._opened, self._bytes, self._good = now, 0, 0

    def write(self, record: dict[str, Any]) -> None:
        if not self._name:
            self._open()
        line = (_ENCODE(record) + "\n").encode("utf-8")
        self._buffer.append(line)
        self._buffered_rows += int(record.get("rows", 1))
        self._bytes += len(line)
        if self._bytes >= self._rotate_bytes:
            self._publish()
        elif self._bytes - self._good >= MAX_BUFFER_BYTES:
            self._write_out()

    def flush(self) -> None:
        """Write the held records; SinkFlushError when rows since the last flush were lost."""
        self._write_out()
        lost, error = self._lost, self._error
        self._lost, self._error = 0, None
        if lost and error is not None:
            raise SinkFlushError(lost, error) from error

    def tick(self) -> None:
        """Publish the open file once it is older than the rotation age; retry the files
        whose publish failed (raising when it fails again)."""
        if self._unpublished and time.monotonic() >= self._retry_at:
            self._publish_staged()
        if self._name and time.time() - self._opened >= self._rotate_seconds:
            self._publish()  # a failure: kept, retried (and reported) by the next tick

    def close(self) -> None:
        """Publish the open file and any left from a failed publish; PredictionLogError
        naming where they stay when that still fails."""
        if self._name:
            self._publish()
        if self._unpublished:
            try:
                self._publish_staged()
            except Exception as err:
                raise PredictionLogError(
                    f"{len(self._unpublished)} prediction log file(s) could not be published "
                    f"({type(err).__name__}: {err}); they are kept in {self._staging}"
                ) from err

    def _write_out(self) -> None:
        """Append the held records to the staging file; on failure, cut it back to its last
        whole record and count the held rows as lost (a half line must never be published)."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        rows = self._buffered_rows
        self._buffer, self._buffered_rows = [], 0
        try:
            if self._handle is None:
                self._handle = (self._staging / f".{self._name}.tmp").open("wb", buffering=0)
            view = memoryview(data)
            while view:  # an unbuffered write may write part of it
                view = view[self._handle.write(view) :]
            self._good += len(data)
        except OSError as err:
            self._lost += rows
            self._error = err
            self._bytes = self._good
            if self._handle is not None:
                try:  # frees the space the half-written records took
                    self._handle.truncate(self._good)
                    self._handle.seek(self._good)
                except OSError:
                    pass  # the next write lands after the debris: reported as lost, not published

    def _publish(self) -> None:
        self._write_out()
        handle, name, good = self._handle, self._name, self._good
        self._handle, self._name = None, ""
        staged = self._staging / f".{name}.tmp"
        if handle is not None:
            handle.close()
        if not good:  # nothing reached the file (a full disk): never publish an empty one
            staged.unlink(missing_ok=True)
            return
        self._unpublished.append((staged, name))
        try:
            self._publish_staged()
        except Exception:
            # Kept for a retry: the next tick retries at once, and reports a second failure
            # (a write that rotated must not fail the record that filled the file).
            self._retry_at = 0.0

    def _publish_staged(self) -> None:
        """Publish the kept files, oldest first; on a failure keep it and the later ones."""
        while self._unpublished:
            staged, name = self._unpublished[0]
            try:
                if self._fs is None:
                    staged.replace(self._staging / name)
                else:
                    # An object store shows an upload only once it is complete; a retry after
                    # an upload whose unlink failed writes the same object again.
                    self._fs.put_file(str(staged), f"{self._remote.rstrip('/')}/{name}")
                    staged.unlink(missing_ok=True)
            except Exception:
                self._retry_at = time.monotonic() + PUBLISH_RETRY_SECONDS
                raise
            self._unpublished.pop(0)


#: After the first sink failure (logged with its traceback), at most one summary line this often:
#: a full disk fails every drain, and a traceback each would flood the service's own log.
FAILURE_SUMMARY_SECONDS = 60.0


class FailureReport:
    """The writer's sink failures, logged without flooding: the first with its traceback, then
    a count at most every :data:`FAILURE_SUMMARY_SECONDS` (writer thread only)."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._clock = clock
        self._seen = False
        self._since = 0  # failures since the last line
        self._last_message = ""
        self._logged = 0.0

    def report(self, message: str) -> None:
        """Call in an ``except`` block: log it (first time) or count it."""
        if not self._seen:
            self._seen, self._logged = True, self._clock()
            self._log.exception(
                "%s (later failures: a count every %g s)", message, FAILURE_SUMMARY_SECONDS
            )
            return
        self._since += 1
        self._last_message = f"{message}: {sys.exc_info()[1]}"
        self.summarize()

    def summarize(self) -> None:
        """Log the count of failures since the last line, if the interval has passed."""
        now = self._clock()
        if self._since and now - self._logged >= FAILURE_SUMMARY_SECONDS:
            self._log.error(
                "the prediction log failed %d more time(s) in the last %.0f s (last: %s)",
                self._since,
                now - self._logged,
                self._last_message,
            )
            self._since, self._logged = 0, now


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url``; PredictionLogError when fsspec or its backend is
    missing (the serving image installs neither unless asked)."""
    try:
        import fsspec  # only URL destinations need it
    except ImportError as err:
        raise PredictionLogError(
            f"{ENV_SINK}={url}: URLs are written through fsspec, which is not installed; "
            "add fsspec (and gcsfs for gs://) to the serving requirements, or log to a folder"
        ) from err
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise PredictionLogError(f"{ENV_SINK}={url}: {err}") from err
