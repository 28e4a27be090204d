"""Atomic output directories: a build dir appears complete, or not at all.

Everything is written into a staging directory beside the target and renamed
into place at the end (copier's cleanup_on_error, done by rename). A target
that nb2prod did not write is never replaced without ``force``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..builddir import BuildDir
from ..errors import OutputExistsError


def check_replaceable(target: Path, force: bool) -> None:
    """Refuse early when ``target`` holds files nb2prod did not write."""
    if not target.exists() or force:
        return
    if target.is_file():
        raise OutputExistsError(
            f"{target} is a file, not a build directory", hint="Choose another -o DIR."
        )
    if any(target.iterdir()) and not BuildDir(target).build_record_path.is_file():
        raise OutputExistsError(
            f"{target} exists and was not written by nb2prod; refusing to overwrite it",
            hint="Choose another -o DIR, or pass --force to replace it.",
        )


@contextmanager
def staged_directory(target: Path, force: bool) -> Iterator[Path]:
    """Yield a fresh path to fill; on success it replaces ``target``, on failure it vanishes."""
    target = target.resolve()
    check_replaceable(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    # A sibling of target, with target's name: relative paths baked into generated
    # files (the notebook's folder) stay right after the rename.
    staging = holder / target.name
    try:
        yield staging
        if not staging.is_dir():
            return
        old = holder / ".previous"
        if target.exists():
            target.rename(old)
        staging.rename(target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
