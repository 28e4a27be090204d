"""`!pip install ...` lines -> dependency hints: the requirements a notebook names itself.

A hint is a requirement as written (``xgboost==2.1.0``, ``pandas>=2``, ``shap[plots]``);
``-r FILE`` contributes the requirements in FILE, read relative to the notebook. Flags,
their values and paths (local wheels, source folders, URLs) are never hints: they name no
package nb2prod could pin or suggest.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

#: pip install options that take a value as the next word (``-i URL``, ``-t DIR``, ...).
_OPTIONS_WITH_VALUE = frozenset(
    {
        *("-c", "--constraint", "-e", "--editable", "-i", "--index-url", "--extra-index-url"),
        *("-f", "--find-links", "-t", "--target", "--prefix", "--root", "--src", "-C"),
        *("--upgrade-strategy", "--platform", "--python-version", "--implementation", "--abi"),
        *("--no-binary", "--only-binary", "--progress-bar", "--trusted-host", "--cache-dir"),
        *("--log", "--proxy", "--retries", "--timeout", "--exists-action", "--report"),
        *("--global-option", "--config-settings", "--python"),
    }
)
_REQUIREMENT_FILE = frozenset({"-r", "--requirement"})
#: A PyPI name, optional extras and an optional version specifier, e.g. ``shap[plots]>=0.45``.
_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[\w.,-]*\])?([<>=!~].*)?$"
)
_PATH_SUFFIXES = (".txt", ".whl", ".tar.gz", ".zip")


def pip_install_hints(arguments: str, folder: Path, notices: list[str]) -> list[str]:
    """The requirements one ``pip install ARGUMENTS`` line names (``-r`` files in ``folder``).

    A missing requirements file is said in ``notices``: the notebook still builds without it.
    """
    try:
        words = shlex.split(arguments, comments=True)
    except ValueError:  # an unbalanced quote: the words are still worth reading
        words = arguments.split()
    hints: list[str] = []
    words_left = iter(words)
    for word in words_left:
        if word in _REQUIREMENT_FILE or word.startswith("--requirement="):
            name = word.partition("=")[2] or next(words_left, "")
            hints.extend(_requirements_file(name, folder, notices))
        elif word.startswith("-r") and not word.startswith("--"):  # -rrequirements.txt
            hints.extend(_requirements_file(word[2:], folder, notices))
        elif word in _OPTIONS_WITH_VALUE:
            next(words_left, None)
        elif _is_requirement(word):
            hints.append(word)
    return hints


def _requirements_file(name: str, folder: Path, notices: list[str]) -> list[str]:
    """The requirements listed in a ``-r`` file: no comments, options, paths or markers."""
    path = folder / name
    if not name or not path.is_file():
        notices.append(
            f"`pip install -r {name}`: {path} is not there, "
            "so its packages are not dependency hints"
        )
        return []
    hints = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        # "pandas >= 2.0 ; python_version < '3.12'  --hash=... # why" -> "pandas>=2.0"
        line = re.split(r"(?:^|\s)#|(?:^|\s)-", line, maxsplit=1)[0]
        requirement = "".join(line.partition(";")[0].split())
        if _is_requirement(requirement):
            hints.append(requirement)
    return hints


def _is_requirement(word: str) -> bool:
    """Whether ``word`` names a package, and is not a flag, a path or a URL."""
    if word.startswith(("-", ".", "~")) or "/" in word or "\\" in word:
        return False
    if word.lower().endswith(_PATH_SUFFIXES):
        return False
    return _REQUIREMENT.match(word) is not None


def requirement_name(hint: str) -> str:
    """The normalized package name of a hint: ``Scikit_Learn[x]==1.5`` -> ``scikit-learn``."""
    name = re.split(r"[\[<>=!~;@\s]", hint, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()
