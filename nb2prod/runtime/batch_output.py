"""Batch outputs: the files a run writes (the scored rows, the rejects, the sidecar) are staged
as local files and committed only when every input row is accounted for, all or none.

On a local disk a file is staged beside its target and renamed into place; for a URL it is
staged in a local temporary folder and uploaded (an object store shows an object only once
its upload completes). The sidecar is committed first and the output last: an output never
appears without the sidecar that marks it as nb2prod's, and the output appearing is the
commit. SIGINT and SIGTERM wait while a commit runs, so the message can say truthfully
whether the output was written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd

from .batch_files import (
    EXIT_INPUT,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_WRITE,
    BatchError,
    Where,
    filesystem,
    is_url,
    name_of,
    partial_path,
    require_parquet,
    sidecar_path,
)

__all__ = [
    "Interrupted",
    "Writer",
    "commit",
    "exists",
    "on_signal",
    "raise_pending",
    "refuse_to_overwrite",
    "remove",
    "signal_pending",
    "signals_deferred",
    "staged_path",
    "staging_folder",
    "uninterrupted",
]


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop, remove what was half-written, exit 130 or 143."""

    def __init__(self, code: int, committed: bool = False) -> None:
        super().__init__(code)
        self.code = code
        #: True when the signal came during the commit, which was let finish.
        self.committed = committed


_pending: list[int] = []  # exit codes of signals that came while they were deferred
_deferring = 0  # how many signals_deferred() blocks are open


def on_signal(signum: int, frame: FrameType | None) -> None:
    """The run's SIGINT/SIGTERM handler: raise Interrupted, or record it while deferred."""
    # A second signal must not cut short the cleanup the first one starts.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
    if _deferring:
        _pending.append(code)
        return
    raise Interrupted(code)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM are recorded, not raised, while the block runs (see raise_pending).

    A flag the handler reads, not ``signal.pthread_sigmask``: Python runs handlers in the
    main thread whichever thread the kernel chose, and gcsfs and Spark work in threads of
    their own that a mask set in the main thread doesn't cover.
    """
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def signal_pending() -> bool:
    return bool(_pending)


def raise_pending(committed: bool = False) -> None:
    """Raise Interrupted for a signal that came while signals were deferred."""
    if _pending:
        raise Interrupted(_pending[0], committed=committed)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Signals wait until the block (the commit) ends, then raise Interrupted(committed=True)."""
    with signals_deferred():
        yield
    raise_pending(committed=True)


# --- where files go ---------------------------------------------------------------------------


def exists(where: Where) -> bool:
    if isinstance(where, Path):
        return where.exists()
    fs, path = filesystem(where)
    try:
        return bool(fs.exists(path))
    except Exception as err:  # the store's own: credentials, permissions, the network
        raise BatchError(f"{where}: can't check whether it exists: {err}") from err


def _first_line(where: Where) -> str:
    try:
        if isinstance(where, Path):
            with where.open(encoding="utf-8") as handle:
                return handle.readline()
        fs, path = filesystem(where)
        with fs.open(path, "rb") as handle:
            return handle.readline(4096).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def refuse_to_overwrite(where: Where, force: bool, rejects: bool = False) -> None:
    """An existing file is replaced only with --force, and only when nb2prod batch wrote it."""
    if not exists(where):
        return
    # The sidecar marks an output as ours; a rejects file is ours by its header.
    ours = exists(sidecar_path(where)) or (
        rejects and _first_line(where).startswith("file,row,reason")
    )
    if force and ours:
        return
    raise BatchError(
        f"{where} exists" + ("" if ours else " and nb2prod batch did not write it"),
        code=EXIT_INPUT,
        hint="Choose another output path (-o/--rejects)"
        + (", or pass --force to replace it." if ours else "; nb2prod never overwrites it."),
    )


@contextlib.contextmanager
def staging_folder(*targets: Where) -> Iterator[Path | None]:
    """A local temporary folder to stage URL targets in (None when all are local paths)."""
    if not any(is_url(t) for t in targets):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="nb2prod-batch-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def staged_path(where: Where, staging: Path | None) -> Path:
    """Where ``where`` is written until its commit: beside it on a local disk (so the rename
    is atomic), in the staging folder for a URL."""
    if isinstance(where, Path):
        # A new folder for the output is made, as a bucket mounted in a Cloud Run Job needs:
        # a prefix there exists only once an object is under it.
        where.parent.mkdir(parents=True, exist_ok=True)
        return partial_path(where)
    assert staging is not None, "a URL target needs a staging folder"
    return staging / name_of(where)


def commit(staged: Path, where: Where) -> None:
    """Put the finished ``staged`` file under its final name: a rename, or an upload."""
    if isinstance(where, Path):
        staged.replace(where)
        return
    fs, path = filesystem(where)
    try:
        fs.put_file(str(staged), path)
    except OSError:
        raise
    except Exception as err:  # the store's own errors (HTTP, credentials)
        raise BatchError(f"uploading {where} failed: {err}", code=EXIT_WRITE) from err
    staged.unlink()


def remove(where: Where) -> None:
    """Best effort: a file an unfinished commit put in place."""
    with contextlib.suppress(Exception):
        if isinstance(where, Path):
            where.unlink(missing_ok=True)
        else:
            fs, path = filesystem(where)
            fs.rm_file(path)


# --- writing ----------------------------------------------------------------------------------


class Writer:
    """Appends frames to ``path`` in ``fmt``; the caller commits it.

    Parquet fixes a file's schema when it opens, but a chunk can type a column the chunks
    before it left all null (or hold 1.5 where they held integers). The writer then starts
    a new part with the widened schema, and ``close`` rewrites the parts into one file,
    row group by row group.
    """

    def __init__(self, path: Path, fmt: str, metadata: dict[str, str]) -> None:
        self.path, self.fmt, self.metadata = path, fmt, metadata
        self.handle: Any = None
        self.parquet: Any = None
        self.parts: list[Path] = []  # Parquet parts, the open one last
        self.wrote_header = False

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return  # (an empty frame may lack the columns a vector prediction spreads into)
        if self.fmt == "parquet":
            self._write_parquet(frame)
            return
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8", newline="")
        if self.fmt == "csv":
            frame.to_csv(self.handle, header=not self.wrote_header, index=False)
            self.wrote_header = True
        else:
            text = frame.to_json(orient="records", lines=True, date_format="iso")
            self.handle.write(text if text.endswith("\n") else text + "\n")

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        table = _arrow_table(frame)
        if self.parquet is None:
            self._open_part(table.schema.with_metadata(self._bytes(self.metadata)))
        elif not table.schema.equals(self.parquet.schema, check_metadata=False):
            try:
                table = table.cast(self.parquet.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                self.parquet.close()
                self._open_part(_widened(self.parquet.schema, table.schema))
        self.parquet.write_table(table.cast(self.parquet.schema))

    def _open_part(self, schema: Any) -> None:
        self.parts.append(self.path.with_name(f"{self.path.name}.{len(self.parts)}"))
        self.parquet = require_parquet().ParquetWriter(self.parts[-1], schema)

    @staticmethod
    def _bytes(metadata: dict[str, str]) -> dict[bytes, bytes]:
        return {k.encode(): v.encode() for k, v in metadata.items()}

    def close(self, columns: Sequence[str]) -> None:
        """Finish the file (an empty run still gets a header or an empty table), and fsync."""
        if self.fmt == "parquet":
            if self.parquet is None:
                empty = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
                import pyarrow as pa

                table = pa.Table.from_pandas(empty, preserve_index=False)
                self._open_part(table.schema.with_metadata(self._bytes(self.metadata)))
                self.parquet.write_table(table)
            self.parquet.close()
            self._join_parts()
            with self.path.open("rb+") as handle:
                os.fsync(handle.fileno())
            return
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8", newline="")
            if self.fmt == "csv":
                self.handle.write(",".join(columns) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def _join_parts(self) -> None:
        parquet = require_parquet()
        if len(self.parts) == 1:
            self.parts.pop().replace(self.path)
            return
        schema = self.parquet.schema  # the widest: each part widened the one before
        with parquet.ParquetWriter(self.path, schema) as joined:
            for part in self.parts:
                for batch in parquet.ParquetFile(part).iter_batches():
                    joined.write_batch(batch.cast(schema))
                part.unlink()
        self.parts = []

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self.parquet is not None:
                self.parquet.close()
        with contextlib.suppress(Exception):
            if self.handle is not None:
                self.handle.close()
        for path in [*self.parts, self.path]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _arrow_table(frame: pd.DataFrame) -> Any:
    """The frame as Arrow, an all-null column as Arrow's null type (which any type widens)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for index, column in enumerate(table.columns):
        if column.null_count == len(column) and column.type != pa.null():
            table = table.set_column(index, table.field(index).name, pa.nulls(len(column)))
    return table


def _widened(schema: Any, other: Any) -> Any:
    """A schema holding both: null becomes the other's type, integers become floats."""
    import pyarrow as pa

    try:
        wide = pa.unify_schemas([schema, other], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise BatchError(
            f"an output column changed type between chunks, which Parquet can't hold: {err}",
            hint="Write CSV or JSON Lines (-o out.csv), or make the --keep column's type "
            "the same in every row.",
        ) from err
    return wide.with_metadata(schema.metadata)
