"""NotebookSpec -> requirements: exact pins for what the notebook's included code imports.

Resolved once per ``check``/``generate``/``build`` from the environment nb2prod runs in
(the notebook ran there too), and passed to the renderer; the serving image installs
the subset marked ``serving``. The images are CPU images: a library with a CPU-only
build on PyPI is pinned as that build, and no ``nvidia-*`` GPU library is ever pinned.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import sys
from collections.abc import Iterable
from dataclasses import replace

from ..errors import ConfigError
from ..models import SERVING_ROLES, TRAINING_ROLES, NotebookSpec, Requirement
from .names import names_read
from .pip_hints import requirement_name

#: What every generated service imports, pinned from this environment.
SERVING_STACK = (
    "fastapi",
    "uvicorn",
    "pydantic",
    "prometheus-client",
    "numpy",
    "pandas",
    "scipy",
    "cloudpickle",
)
#: Libraries whose PyPI wheel pulls CUDA libraries (nvidia-*) on Linux -> the CPU-only
#: build of the same version, and the first version that build was published for.
CPU_BUILDS = {"xgboost": ("xgboost-cpu", (2, 1))}
#: Libraries with CPU wheels only on their own index: the notice says where (README too).
CPU_INDEX = {"torch": "https://download.pytorch.org/whl/cpu"}
#: Import names whose PyPI distribution is named otherwise: what to install before the import
#: is installed (once it is, importlib.metadata says which distribution provides it). Any
#: other import name (lightgbm, xgboost, catboost, ...) is its distribution's name.
INSTALL_NAMES = {
    "Bio": "biopython",
    "Crypto": "pycryptodome",
    "Levenshtein": "python-Levenshtein",
    "OpenSSL": "pyOpenSSL",
    "PIL": "Pillow",
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python-headless",  # headless: the images have no display libraries
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "PyMuPDF",
    "git": "GitPython",
    "jwt": "PyJWT",
    "pptx": "python-pptx",
    "sentence_transformers": "sentence-transformers",
    "serial": "pyserial",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "PyYAML",
    "zmq": "pyzmq",
}
#: Other distributions that provide the same import: a notebook's `!pip install` of one of
#: these is its hint for that import too.
ALSO_INSTALLED_AS = {
    "cv2": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
}


def resolve_requirements(
    spec: NotebookSpec, notices: list[str] | None = None
) -> tuple[Requirement, ...]:
    """Exact pins for what the included code imports, plus the serving stack.

    What was changed for a CPU image is said in ``notices``.
    """
    installed = importlib.metadata.packages_distributions()
    training_modules = _modules_used(spec, TRAINING_ROLES)
    serving_modules = _modules_used(spec, SERVING_ROLES)
    local = local_modules(spec)
    found: dict[str, Requirement] = {}

    def add(dist: str, reason: str, serving: bool) -> None:
        key = dist.lower().replace("_", "-")
        old = found.get(key)
        found[key] = Requirement(
            distribution=dist,
            version=_version(dist),
            reason=old.reason if old else reason,
            serving=serving or bool(old and old.serving),
        )

    for module in sorted(training_modules | serving_modules):
        if module in sys.stdlib_module_names or module in local or module == "__future__":
            continue
        dists = installed.get(module)
        if not dists:
            raise ConfigError(
                f"the notebook imports `{module}`, which is not installed where nb2prod runs",
                hint=f"Install it (pip install {install_name(module, spec.pip_hints)}) "
                "so nb2prod can pin its version.",
            )
        for dist in dict.fromkeys(dists):
            add(dist, f"import {module}", module in serving_modules)
    for dist in SERVING_STACK:
        add(dist, "serving stack", True)
    pins = cpu_only(found.values(), [] if notices is None else notices)
    return tuple(sorted(pins, key=lambda r: r.distribution.lower()))


def install_name(module: str, pip_hints: Iterable[str]) -> str:
    """What to ``pip install`` for an import that is not installed.

    The notebook's own ``!pip install`` line for it wins (it may pin a version); then the
    distribution the import name is known to come from; then the import name itself.
    """
    distribution = INSTALL_NAMES.get(module, module)
    others = ALSO_INSTALLED_AS.get(module, ())
    names = {requirement_name(name) for name in (module, distribution, *others)}
    return next((h for h in pip_hints if requirement_name(h) in names), distribution)


def cpu_only(pins: Iterable[Requirement], notices: list[str]) -> list[Requirement]:
    """The pins for a CPU image: CPU builds where PyPI has them, no ``nvidia-*`` library."""
    pins = list(pins)
    names = {pin.distribution.lower().replace("_", "-") for pin in pins}
    kept = []
    for pin in pins:
        name = pin.distribution.lower().replace("_", "-")
        if name.startswith("nvidia-"):
            notices.append(
                f"{pin.distribution} is a CUDA library: left out of the CPU image's requirements"
            )
            continue
        cpu_build, since = CPU_BUILDS.get(name, ("", (0, 0)))
        if cpu_build in names:  # both installed: the CPU build is pinned already
            continue
        if cpu_build and _release(pin.version) >= since:
            notices.append(
                f"{pin.distribution}=={pin.version} is pinned as {cpu_build}=={pin.version}, "
                "its CPU-only build: the same library without the CUDA libraries"
            )
            pin = replace(pin, distribution=cpu_build, reason=f"{pin.reason} (CPU build)")
        elif name in CPU_INDEX and "+cpu" not in (pin.version or ""):
            notices.append(
                f"{pin.distribution} from PyPI brings CUDA libraries (nvidia-*) into the "
                f"image; install its CPU wheels from {CPU_INDEX[name]} (see the README)"
            )
        kept.append(pin)
    return kept


def _release(version: str | None) -> tuple[int, ...]:
    """(major, minor) of a version string; (0, 0) when it has none."""
    parts = []
    for part in (version or "").split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits) if digits else 0)
    return tuple(parts) or (0, 0)


def local_modules(spec: NotebookSpec) -> set[str]:
    """Modules the notebook imports from its own folder (``import utils``): copied, not pinned."""
    folder = spec.path.parent
    return {
        b.module
        for b in spec.imports
        if (folder / f"{b.module}.py").is_file() or (folder / b.module / "__init__.py").is_file()
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _modules_used(spec: NotebookSpec, roles: tuple[str, ...]) -> set[str]:
    used = names_read(spec.cells_with_roles(roles))
    star = {b.module for b in spec.imports if b.name == "*"}
    return {b.module for b in spec.imports if b.name in used} | star
