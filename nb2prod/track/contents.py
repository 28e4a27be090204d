"""What a build directory becomes in an MLflow run: parameters, metrics, tags and files.

Everything here is read from the build directory (the model card and the files beside it),
never from the notebook or the build's memory, so ``nb2prod track DIR`` logs exactly what
``nb2prod build --mlflow`` logs. No MLflow import: these are plain values the client sends.

What the run holds:

- parameters: the notebook's parameters as built (``-p`` overrides included), one MLflow
  param each, as ``str(value)`` (what ``mlflow.log_params`` does);
- metrics: every finite number in the card's ``metrics`` (what the evaluate cells bound);
- tags: the model version, the notebook's path and sha256, the training data's sha256, the
  nb2prod version, and MLflow's own source tags;
- artifacts: ``model_card.json`` at the top, and the build directory under ``build/``.

The build directory is what serves, so it goes whole, with two exceptions: compiled caches,
and, when the card marks input columns as sensitive (never logged anywhere), the golden set
(``model/golden.json``, raw training rows) and the training log (``.nb2prod/train.log``, what
the notebook printed while training: often ``df.head()``). Parameters that look
like secrets never reach a build directory (the build refuses them), so none reaches MLflow.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import quote

from ..builddir import BuildDir
from ..naming import mlflow_model_name
from ..runtime.card import ModelCard

__all__ = ["BUILD_ARTIFACT", "RunContents", "run_contents", "staged_build_copy"]

#: The artifact folder that holds the build directory (the registered version's source).
BUILD_ARTIFACT = "build"
#: MLflow's limits on a param's value and a tag's value (characters).
_PARAM_VALUE_MAX = 6000
_TAG_VALUE_MAX = 5000
#: Never worth storing: Python's caches.
_CACHES = ("__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")


@dataclass(frozen=True)
class RunContents:
    """The values one MLflow run gets for one build directory."""

    name: str  # the notebook's name: the default experiment and the registered model
    registered_model: str  # ``name`` in the characters MLflow accepts
    model_version: str  # nb2prod's content-derived model version
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    card_path: Path
    build_dir: Path
    left_out: tuple[str, ...]  # build-dir files not logged, relative, with why in a notice


def run_contents(build_dir: Path) -> RunContents:
    """What to log for ``build_dir``; ConfigError when it holds no usable model card."""
    records = BuildDir(build_dir)
    card = records.card()
    sensitive = list(getattr(card, "sensitive_columns", None) or ())
    # Files that may hold raw training rows, sensitive columns included.
    raw_rows = (records.golden_path, records.record("train.log"))
    return RunContents(
        name=card.name,
        registered_model=mlflow_model_name(card.name),
        model_version=card.model_version,
        run_name=f"{card.name}-{card.model_version}",
        params={_clip(k, 250): _clip(str(v), _PARAM_VALUE_MAX) for k, v in card.parameters.items()},
        metrics=finite_metrics(card.metrics),
        tags=_tags(card),
        card_path=records.card_path,
        build_dir=records.root,
        left_out=tuple(
            path.relative_to(records.root).as_posix()
            for path in raw_rows
            if sensitive and path.is_file()
        ),
    )


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The card's metrics MLflow can hold: finite numbers (a bool is not a metric)."""
    return {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def _tags(card: ModelCard) -> dict[str, str]:
    notebook = card.notebook
    tags = {
        "nb2prod.model_version": card.model_version,
        "nb2prod.name": card.name,
        "nb2prod.version": card.nb2prod_version,
        "nb2prod.notebook": str(notebook.get("path", "")),
        "nb2prod.notebook_sha256": str(notebook.get("sha256", "")),
        "nb2prod.data_sha256": str(card.data_fingerprint.get("sha256", "")),
        "nb2prod.trained_in": card.trained_in,
        "nb2prod.trained_at": card.trained_at,
        # MLflow's UI shows these as the run's source.
        "mlflow.source.name": str(notebook.get("path", "")),
        "mlflow.source.type": "NOTEBOOK",
    }
    return {key: _clip(value, _TAG_VALUE_MAX) for key, value in tags.items() if value}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def staged_build_copy(contents: RunContents) -> Iterator[Path]:
    """A temporary copy of the build directory holding exactly the files to log.

    A copy, so the upload sees one consistent tree (and no cache or left-out file) however
    long it takes; build directories are small (code, card, state, records).
    """
    left_out = {contents.build_dir / name for name in contents.left_out}

    def ignore(folder: str, names: list[str]) -> set[str]:
        ignored = set(shutil.ignore_patterns(*_CACHES)(folder, names))
        return ignored | {n for n in names if Path(folder, n) in left_out}

    with TemporaryDirectory(prefix="nb2prod-mlflow-") as tmp:
        copy = Path(tmp) / BUILD_ARTIFACT
        shutil.copytree(contents.build_dir, copy, ignore=ignore, symlinks=False)
        yield copy


def records_path(build_dir: Path) -> Path:
    """``.nb2prod/mlflow.json``: where the last successful tracking run is recorded."""
    return BuildDir(build_dir).record("mlflow.json")


#: ``scheme://USERINFO@``: up to the last ``@`` before a query, so a password holding an
#: unencoded ``@`` or ``/`` is masked whole.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^?#]*)@")


def redact(uri: str) -> str:
    """``uri`` as it may be shown: ``user:***@`` for a password, ``***@`` for a lone token."""
    match = _USERINFO.match(uri)
    if match is None:
        return uri
    user, colon, _ = match["userinfo"].partition(":")
    masked = f"{user}:***" if colon and user and "/" not in user else "***"
    return f"{match['scheme']}{masked}@{uri[match.end() :]}"


def scrub(text: str, uri: str) -> str:
    """``text`` (an error message) with the secret of ``uri`` masked wherever it appears:
    the URI itself, its user info and its password, as typed or percent-encoded."""
    text = text.replace(uri, redact(uri))
    match = _USERINFO.match(uri)
    if match is None:
        return text
    userinfo = match["userinfo"]
    _, colon, password = userinfo.partition(":")
    secrets = {userinfo, quote(userinfo, safe=":"), password, quote(password, safe="")}
    # A secret of a few characters would mask unrelated text; the user info never is one.
    for secret in sorted((s for s in secrets if s == userinfo or len(s) >= 4), key=len)[::-1]:
        text = text.replace(secret, "***")
    return text
