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
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ENV_SINK", "LOG_LABEL", "FileSink", "PredictionLogError", "Sink", "StdoutSink"]

#: The Cloud Logging label every stdout record carries: filter on ``labels.nb2prod_log``.
LOG_LABEL = {"nb2prod_log": "predictions"}
ENV_SINK = "NB2PROD_PREDICTION_LOG"
#: Cloud Logging refuses entries over 256 KB: a larger request is split into several entries.
MAX_ENTRY_BYTES = 200_000
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
        if len(line) > MAX_ENTRY_BYTES and rows > 1:
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


class FileSink:
    """Rotating JSON Lines files in a folder or under an fsspec URL (``gs://bucket/dir``).

    Records go to a hidden staging file (beside the published ones for a folder, in a local
    temporary folder for a URL); a rotation or ``close`` renames (or uploads) it to its final
    name, so a published file is always complete.
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
        self._handle: Any = None
        self._name = ""
        self._opened = 0.0
        self._bytes = 0

    def _open(self) -> None:
        self._count += 1
        now = time.time()
        stamp = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self._name = f"predictions-{stamp}-{os.getpid()}-{self._count:05d}.jsonl"
        self._handle = (self._staging / f".{self._name}.tmp").open("w", encoding="utf-8")
        self._opened, self._bytes = now, 0

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self._open()
        line = _ENCODE(record) + "\n"
        self._handle.write(line)
        self._bytes += len(line)
        if self._bytes >= self._rotate_bytes:
            self._publish()

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()

    def tick(self) -> None:
        """Publish the open file once it is older than the rotation age."""
        if self._handle is not None and time.time() - self._opened >= self._rotate_seconds:
            self._publish()

    def close(self) -> None:
        if self._handle is not None:
            self._publish()

    def _publish(self) -> None:
        self._handle.close()
        self._handle = None
        staged = self._staging / f".{self._name}.tmp"
        if self._fs is None:
            staged.replace(self._staging / self._name)
            return
        try:
            # An object store shows an upload only once it is complete.
            self._fs.put_file(str(staged), f"{self._remote.rstrip('/')}/{self._name}")
        finally:
            staged.unlink(missing_ok=True)


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
