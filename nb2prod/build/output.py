"""Atomic, safe output directories: a build dir appears complete or not at all, and nothing
the user wrote is ever deleted or overwritten.

Everything is written into a staging directory beside the target and renamed into
place only at the end (copier's cleanup_on_error, done by rename). Before that, the
target is checked:
- it must not be, or contain, the notebook or any file the notebook reads;
- an existing target must be a directory nb2prod wrote: its ``build.json`` lists every
  file the build wrote with its sha256, and any other file (a user's notes, data) makes
  nb2prod refuse, even with ``force``;
- a generated file edited since the build is refused without ``force``; with it, the
  edited files are kept in ``<target>.edited-<time>/`` beside the target before it is
  replaced.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..builddir import BUILD_RECORD, RECORDS_DIR, BuildDir
from ..errors import ConfigError, Nb2ProdError, OutputExistsError
from ..models import NotebookSpec
from ..ownership import is_alive, owner_token

#: Files deploy writes into a build dir after the build; each starts with this header.
_DEPLOY_OUTPUTS = ("service.yaml", "job.yaml", "k8s/")
_DEPLOY_HEADER = b"# Written by nb2prod"
_LISTED = 5  # how many offending files a message names
#: In a staging holder: the owner token of the run that made it.
_OWNER_FILE = ".owner"
#: Caches that tools (Python, pytest, ruff) write into any folder they run in: not the
#: user's work, so neither recorded nor protected.
_CACHES = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"})


def notebook_inputs(spec: NotebookSpec) -> tuple[Path, ...]:
    """The notebook and every existing file or folder its code names by a string literal."""
    folder = spec.path.parent.resolve()
    notebook = spec.path.resolve()
    found: set[Path] = set()
    for cell in spec.cells:
        try:
            tree = ast.parse(cell.code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update(_existing_path(folder, node.value))
    return (notebook, *sorted(found - {notebook}))


def _existing_path(folder: Path, text: str) -> list[Path]:
    if not text or len(text) > 1000 or "\n" in text or "\0" in text:
        return []
    try:
        candidate = (folder / text).resolve()
        return [candidate] if candidate.exists() else []
    except (OSError, ValueError):
        return []


def check_target(target: Path, force: bool, inputs: Iterable[Path] = ()) -> tuple[str, ...]:
    """Refuse a target that would lose the user's files; return the edited files to keep aside."""
    target = target.resolve()
    for path in inputs:
        if path == target or target in path.parents:
            raise OutputExistsError(
                f"the output directory {target} holds {path}, the notebook or a file it reads; "
                "nb2prod never writes over its own input",
                hint="Choose an output directory beside the notebook's folder, e.g. the "
                "default build/<notebook-stem>.",
            )
    if not target.exists():
        return ()
    if not target.is_dir():
        raise OutputExistsError(
            f"{target} is a file, not a build directory", hint="Choose another -o DIR."
        )
    if not any(target.iterdir()):
        return ()
    manifest = _manifest_of(target)
    foreign, edited = [], []
    for path in _files(target):
        relative = path.relative_to(target).as_posix()
        if relative in manifest:
            if path.is_symlink() or _sha256(path) != manifest[relative]:
                edited.append(relative)
        elif relative != BUILD_RECORD and not _stage_output(relative, path):
            foreign.append(relative)
    if foreign:
        raise OutputExistsError(
            f"{target} holds files nb2prod did not write ({_some(foreign)}); nb2prod never "
            "deletes them, not even with --force",
            hint="Move them out of the directory, or choose another -o DIR.",
        )
    if edited and not force:
        raise OutputExistsError(
            f"{target}: {_some(edited)} changed since nb2prod wrote them",
            hint="Pass --force to rebuild: the edited files are first copied to "
            f"{target.name}.edited-<time>/ beside it.",
        )
    return tuple(edited)


def _files(directory: Path) -> list[Path]:
    """Every file (and symlink) below ``directory``, tool caches left out, in a stable order."""
    return sorted(
        path
        for path in directory.rglob("*")
        if (path.is_file() or path.is_symlink())
        and not _CACHES & set(path.relative_to(directory).parts)
    )


def _manifest_of(target: Path) -> dict[str, str]:
    record = BuildDir(target).build_record_path
    try:
        files = json.loads(record.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        files = None
    if not isinstance(files, dict):
        raise OutputExistsError(
            f"{target} exists and was not written by this nb2prod (no file list in its "
            f"{BUILD_RECORD}); nb2prod never deletes files it did not write",
            hint="Choose another -o DIR, or empty the directory yourself.",
        )
    return {str(k): str(v) for k, v in files.items()}


def _stage_output(relative: str, path: Path) -> bool:
    """Records and logs of later stages (.nb2prod/), and deploy's own headed files."""
    if relative.startswith(f"{RECORDS_DIR}/"):
        return True
    if relative.startswith(_DEPLOY_OUTPUTS) and not path.is_symlink():
        with path.open("rb") as handle:
            return handle.read(len(_DEPLOY_HEADER)) == _DEPLOY_HEADER
    return False


def _some(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_files(directory: Path) -> None:
    """List every file the build wrote, with its sha256, in ``build.json``."""
    record = BuildDir(directory).build_record_path
    data = json.loads(record.read_text(encoding="utf-8"))
    data["files"] = {
        path.relative_to(directory).as_posix(): _sha256(path)
        for path in _files(directory)
        if path != record
        and not path.relative_to(directory).as_posix().startswith(f"{RECORDS_DIR}/")
    }
    record.write_text(json.dumps(data, indent=2, default=repr) + "\n", encoding="utf-8")


def _keep_edited(target: Path, edited: tuple[str, ...]) -> Path | None:
    if not edited:
        return None
    backup = target.with_name(f"{target.name}.edited-{time.strftime('%Y%m%d-%H%M%S')}")
    for relative in edited:
        destination = backup / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target / relative, destination, follow_symlinks=False)
    return backup


def _keep_logs(staging: Path, err: Nb2ProdError) -> None:
    """A failed build leaves no directory; its logs move to a temporary folder the error names."""
    records = BuildDir(staging).records_dir
    logs = sorted(records.glob("*.log")) if records.is_dir() else []
    if not logs:
        return
    kept = Path(tempfile.mkdtemp(prefix=f"nb2prod-{staging.name}-failed-"))
    for log in logs:
        shutil.copy2(log, kept / log.name)
    err.message = err.message.replace(str(records), str(kept))
    hint = (err.hint or "").replace(str(records), str(kept))
    err.hint = hint if str(kept) in hint else f"{hint} Logs: {kept}".strip()


def remove_abandoned_staging(target: Path) -> list[Path]:
    """Remove the staging holders beside ``target`` whose run died without cleaning up.

    Only holders whose owner (``.owner``) no longer runs are removed, and holders with no
    file left at all (the empty folder Docker recreates for a bind mount whose container
    started after its run cleaned up): a build running right now, or anything holding a
    file nb2prod cannot account for, is left alone.
    """
    removed = []
    for holder in target.parent.glob(f".{glob.escape(target.name)}.*"):
        owner = holder / _OWNER_FILE
        try:
            token = owner.read_text().strip() if owner.is_file() else ""
            empty = not token and holder.is_dir() and not any(_files(holder))
        except OSError:
            continue
        if (token and not is_alive(token)) or empty:
            shutil.rmtree(holder, ignore_errors=True)
            removed.append(holder)
    return removed


@contextmanager
def staged_directory(
    target: Path,
    force: bool,
    inputs: Iterable[Path] = (),
    notify: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Yield a fresh path to fill; on success it replaces ``target``, on failure it vanishes.

    On success, ``build.json`` gets the list of files written (if the filled directory
    has one), so that a later build can tell them from files a user added. ``notify``
    hears where edited files were kept.
    """
    target = target.resolve()
    edited = check_target(target, force, inputs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(target)
        holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        # Names this process, so that if it is killed outright the next run can clean up.
        (holder / _OWNER_FILE).write_text(owner_token() + "\n")
    except OSError as err:
        raise ConfigError(
            f"cannot write the build directory in {target.parent}: {err.strerror or err}",
            hint="Choose an -o DIR in a folder you can write to.",
        ) from err
    # A sibling of target, with target's name: relative paths baked into generated
    # files (the notebook's folder) stay right after the rename.
    staging = holder / target.name
    try:
        try:
            yield staging
        except Nb2ProdError as err:
            _keep_logs(staging, err)
            raise
        if not staging.is_dir():
            return
        if BuildDir(staging).build_record_path.is_file():
            record_files(staging)
        backup = _keep_edited(target, edited)
        if backup is not None and notify is not None:
            notify(f"notice: your edits to {_some(list(edited))} are kept in {backup}")
        if target.exists():
            target.rename(holder / ".previous")
        staging.rename(target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
