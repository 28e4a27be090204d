"""``nb2prod ci init``: write the retraining workflow from ``templates/ci/<provider>/``.

The file starts with a header naming nb2prod and the sha256 of the rest, so a later run knows
whether it wrote the file and whether anyone edited it since: a file without the header (the
user's own workflow) is never overwritten, not even with ``--force``; an edited one only with
``--force``, after a copy of it is kept beside it as ``NAME.edited-<time>`` (a name GitHub does
not run). An unedited one is simply rewritten.

The template uses ``<< name >>`` for nb2prod's values, because ``${{ ... }}`` is GitHub's.
"""

from __future__ import annotations

import hashlib
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


def init(options: CiOptions) -> CiWorkflow:
    """Render the provider's workflow and write it where ``options`` say, never over a user's
    file; ConfigError for an unknown provider or no notebook, OutputExistsError when refused."""
    if options.provider not in TEMPLATE:
        raise ConfigError(f"--provider {options.provider} is not one of {', '.join(TEMPLATE)}")
    root = Path(options.root)
    output = Path(options.output) if options.output else root / DEFAULT_OUTPUT[options.provider]
    notebook = options.notebook or find_notebook(root)
    body = render(options.provider, notebook=notebook, champion_dir=options.champion_dir,
                  schedule=options.schedule, canary=options.canary,
                  wait_minutes=options.wait_minutes)  # fmt: skip
    text = with_header(body)
    kept = check_output(output, text, options.force)
    write_text_atomically(output, text)
    return CiWorkflow(path=output, notebook=notebook, edited_copy=kept)


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
    return environment.get_template(TEMPLATE[provider]).render(version=__version__, **values)


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
    kept = output.with_name(f"{output.name}.edited-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copy2(output, kept)
    return kept


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
