"""NotebookSpec -> requirements: exact pins for what the notebook's included code imports.

Resolved once per ``check``/``generate``/``build`` from the environment nb2prod runs in
(the notebook ran there too), and passed to the renderer; the serving image installs
the subset marked ``serving``.
"""

from __future__ import annotations

import importlib.metadata
import sys

from ..errors import ConfigError
from ..models import SERVING_ROLES, TRAINING_ROLES, NotebookSpec, Requirement
from .names import names_read

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


def resolve_requirements(spec: NotebookSpec) -> tuple[Requirement, ...]:
    """Exact pins for what the included code imports, plus the serving stack."""
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
            hint = next((h for h in spec.pip_hints if h.lower().startswith(module.lower())), None)
            raise ConfigError(
                f"the notebook imports `{module}`, which is not installed where nb2prod runs",
                hint=f"Install it (pip install {hint or module}) so nb2prod can pin its version.",
            )
        for dist in dict.fromkeys(dists):
            add(dist, f"import {module}", module in serving_modules)
    for dist in SERVING_STACK:
        add(dist, "serving stack", True)
    return tuple(sorted(found.values(), key=lambda r: r.distribution.lower()))


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
