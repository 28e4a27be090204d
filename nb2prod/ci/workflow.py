"""``nb2prod ci init``: write the retraining workflow from ``templates/ci/<provider>/``.

The file starts with a header naming nb2prod and the sha256 of the rest, so a later run knows
whether it wrote the file and whether anyone edited it since: a file without the header (the
user's own workflow) is never overwritten, not even with ``--force``; an edited one only with
``--force``, after a copy of it is kept beside it as ``NAME.edited-<time>`` (a name GitHub does
not run). An unedited one is simply rewritten.

The template uses ``<< name >>`` for nb2prod's values, because ``${{ ... }}`` is GitHub's.
Values a user typed reach the YAML only as double-quoted scalars (JSON strings are valid
YAML), and a GitHub expression's string literal with its quotes doubled: a notebook named
``Mike's model #2.ipynb`` must not end the literal, or start a YAML comment.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import jinja2

from .. import __version__
from ..builddir import write_text_atomically
from ..errors import ConfigError, OutputExistsError
from ..models import CiOptions, CiWorkflow

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # nb2prod/
#: Where each provider's workflow goes, relative to the repository root.
DEFAULT_OUTPUT = {"github": Path(".github/workflows/nb2prod-retrain.yml")}
TEMPLATE = {"github": "github/nb2prod-retrain.yml"}
_HEADER = "# Written by nb2prod ci init {version}; sha256 {digest} (of the lines below)."
_HEADER_PATTERN = re.compile(r"^# Written by nb2prod ci init \S+; sha256 ([0-9a-f]{64}) ")
#: Folders a notebook search skips: tools' caches and nb2prod's own build output.
_SKIPPED = frozenset({".ipynb_checkpoints", ".git", "build", "node_modules", ".venv", "venv"})
#: One cron field as GitHub's schedule takes them: numbers, names, ranges, steps, lists, *.
_CRON_FIELD = re.compile(r"[0-9A-Za-z*,/-]+")


def init(options: CiOptions) -> CiWorkflow:
    """Render the provider's workflow and write it where ``options`` say, never over a user's
    file; ConfigError for an unknown provider or no notebook, OutputExistsError when refused."""
    if options.provider not in TEMPLATE:
        raise ConfigError(f"--provider {options.provider} is not one of {', '.join(TEMPLATE)}")
    root = Path(options.root)
    output = Path(options.output) if options.output else root / DEFAULT_OUTPUT[options.provider]
    if options.notebook:
        notebook = repository_path(root, options.notebook, "--notebook")
        if not (root / notebook).is_file():
            raise ConfigError(
                f"--notebook {options.notebook}: no such notebook under {root}",
                hint="Pass the notebook's path relative to the repository root, and run "
                "nb2prod ci init from that root.",
            )
    else:
        notebook = find_notebook(root)
    champion_dir = repository_path(root, options.champion_dir, "--champion-dir")
    body = render(options.provider, notebook=notebook, champion_dir=champion_dir,
                  schedule=cron(options.schedule), canary=options.canary,
                  wait_minutes=options.wait_minutes)  # fmt: skip
    text = with_header(body)
    kept = check_output(output, text, options.force)
    try:
        write_text_atomically(output, text)
    except OSError as err:
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(output) else ""
        raise ConfigError(
            f"cannot write {output}: {err.strerror or err}{where}", hint="Choose another -o PATH."
        ) from err
    return CiWorkflow(path=output, notebook=notebook, edited_copy=kept)


def repository_root(start: Path) -> Path:
    """The git repository holding ``start`` (its top folder, with ``.git``), or ``start``
    itself outside one: a workflow written in a subfolder's ``.github/`` never runs."""
    for folder in (start, *start.parents):
        if (folder / ".git").exists():  # a folder, or a file in a worktree or submodule
            return folder
    return start


def repository_path(root: Path, value: str, flag: str) -> str:
    """``value`` as a POSIX path relative to ``root`` (the runner's checkout); ConfigError
    for a path outside it, or one the workflow's YAML and expressions cannot hold."""
    if not value.isprintable() or "{{" in value or "}}" in value:
        raise ConfigError(f"{flag} {value!r} holds characters a workflow cannot carry")
    path = Path(value)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            raise ConfigError(
                f"{flag} {value} is outside the repository root {root}",
                hint="The workflow runs in a checkout of the repository: pass a path in it, "
                "relative to its root.",
            ) from None
    text = path.as_posix()
    if text in ("", ".") or ".." in path.parts:
        raise ConfigError(
            f"{flag} {value} is not a path inside the repository",
            hint="Pass a path relative to the repository root, without '..'.",
        )
    return text


def cron(schedule: str) -> str:
    """``--schedule`` when it is five cron fields; ConfigError otherwise (GitHub would reject
    the whole workflow, and say so only on its Actions page)."""
    fields = schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(field) for field in fields):
        raise ConfigError(
            f"--schedule {schedule!r} is not a cron schedule of five fields",
            hint="Minute, hour, day of month, month, day of week, in UTC: e.g. '0 6 * * 1' "
            "(Mondays at 06:00).",
        )
    return " ".join(fields)


def render(provider: str, **values: object) -> str:
    """The workflow's text from the provider's template, nb2prod's version filled in."""
    environment = jinja2.Environment(  # noqa: S701 - YAML, not HTML: nothing to escape
        loader=jinja2.FileSystemLoader(template_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        variable_start_string="<<",
        variable_end_string=">>",
        block_start_string="<%",
        block_end_string="%>",
        comment_start_string="<#",
        comment_end_string="#>",
    )
    environment.filters["quoted"] = quoted
    environment.filters["or_default"] = or_default
    return environment.get_template(TEMPLATE[provider]).render(version=__version__, **values)


def quoted(value: str) -> str:
    """``value`` as a YAML double-quoted scalar."""
    return json.dumps(value, ensure_ascii=False)


def or_default(variable: str, default: str) -> str:
    """The YAML scalar ``${{ VARIABLE || 'DEFAULT' }}``: the repository variable, else
    ``default`` (a GitHub string literal doubles its single quotes)."""
    literal = default.replace("'", "''")
    return quoted(f"${{{{ {variable} || '{literal}' }}}}")


def template_dir() -> Path:
    """``templates/ci`` as shipped (in the wheel, or the source tree)."""
    for candidate in (PACKAGE_DIR / "templates" / "ci", PACKAGE_DIR.parent / "templates" / "ci"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("nb2prod's CI templates are missing from this installation; reinstall it")


def with_header(body: str) -> str:
    """``body`` under the header that marks it as nb2prod's and records its checksum."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    return _HEADER.format(version=__version__, digest=digest) + "\n" + body


def written_by_nb2prod(text: str) -> tuple[bool, bool]:
    """(nb2prod wrote it, and it is unedited since) for a file's text."""
    first, _, rest = text.partition("\n")
    match = _HEADER_PATTERN.match(first)
    if not match:
        return False, False
    return True, hashlib.sha256(rest.encode()).hexdigest() == match.group(1)


def check_output(output: Path, text: str, force: bool) -> Path | None:
    """Refuse to lose a user's file; with --force keep an edited copy. Returns that copy."""
    if not output.exists() and not output.is_symlink():
        return None
    if output.is_symlink() or not output.is_file():
        raise OutputExistsError(f"{output} exists and is not a plain file", hint="Choose -o PATH.")
    current = output.read_text(encoding="utf-8", errors="replace")
    ours, unedited = written_by_nb2prod(current)
    if not ours:
        raise OutputExistsError(
            f"{output} exists and nb2prod did not write it; nb2prod never overwrites it, not "
            "even with --force",
            hint="Choose another -o PATH, or move your workflow away first.",
        )
    if unedited or current == text:
        return None
    if not force:
        raise OutputExistsError(
            f"{output} was edited since nb2prod wrote it",
            hint="Keep your edits, or pass --force: the edited file is first copied to "
            f"{output.name}.edited-<time> beside it.",
        )
    return keep_copy(output)


def keep_copy(output: Path) -> Path:
    """Copy ``output`` to a new ``NAME.edited-<time>[-N]`` beside it, never over a file."""
    stem = f"{output.name}.edited-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(100):
        kept = output.with_name(stem if n == 0 else f"{stem}-{n}")
        try:
            with kept.open("xb") as target, output.open("rb") as source:
                shutil.copyfileobj(source, target)
        except FileExistsError:
            continue
        shutil.copystat(output, kept)
        return kept
    raise OutputExistsError(f"too many edited copies of {output} beside it", hint="Remove some.")


def find_notebook(root: Path) -> str:
    """The one notebook under ``root`` (relative, POSIX); ConfigError when none or several."""
    found = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*.ipynb")
        if not _SKIPPED & set(path.relative_to(root).parts[:-1])
    )
    if len(found) != 1:
        listed = ", ".join(found[:5]) or "none"
        raise ConfigError(
            f"cannot tell which notebook to retrain: {len(found)} found under {root} ({listed})",
            hint="Pass --notebook PATH (relative to the repository root).",
        )
    return found[0]
