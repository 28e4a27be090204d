"""Stages are independent: each imports ``models``, ``errors`` and its own libraries, never
another stage. Checked in a fresh interpreter per module, as click's tests/test_imports.py does.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "nb2prod"

#: Shared by every stage: plain records, the exception tree, the build-directory model, the
#: Docker engine interface, naming rules, and the serving runtime (a library vendored into
#: every build directory).
SHARED_MODULES = {
    "nb2prod",
    "nb2prod.models",
    "nb2prod.errors",
    "nb2prod.builddir",
    "nb2prod.engine",
    "nb2prod.naming",
    "nb2prod.ownership",
}
#: Not stages: the package entry points that string the stages together.
ORCHESTRATION = {"nb2prod.pipeline", "nb2prod.cli", "nb2prod.__main__"}  # and nb2prod.cli.*
#: The stage subpackages, in the order a build meets them.
SUBPACKAGES = ("build", "train", "ship", "deploy", "gate", "track", "ci")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


STAGES = sorted(
    _module_name(path) for sub in SUBPACKAGES for path in (PACKAGE_DIR / sub).rglob("*.py")
)
SHARED = sorted(m for m in SHARED_MODULES if (PACKAGE_DIR / f"{m[8:]}.py").is_file())
MODULES = [*STAGES, *SHARED]


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else None


def _allowed(importer: str, imported: str) -> bool:
    """A stage may import its own subpackage, the shared modules and the runtime."""
    if imported in SHARED_MODULES or imported.startswith("nb2prod.runtime"):
        return True
    return _subpackage(imported) is not None and _subpackage(imported) == _subpackage(importer)


PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps({
    "nb2prod": sorted(m for m in sys.modules if m == "nb2prod" or m.startswith("nb2prod.")),
    "click": "click" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, dict[str, object]]:
    """For each module: the nb2prod modules and whether click got loaded, importing it alone."""

    def probe(module: str) -> tuple[str, dict[str, object]]:
        result = subprocess.run(
            [sys.executable, "-c", PROBE, module],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"import {module} failed:\n{result.stderr}"
        return module, json.loads(result.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(probe, MODULES))


@pytest.mark.parametrize("module", STAGES)
def test_a_stage_imports_no_other_stage(
    module: str, imported: dict[str, dict[str, object]]
) -> None:
    loaded = set(imported[module]["nb2prod"])  # type: ignore[arg-type]
    others = sorted(m for m in loaded - {module} if not _allowed(module, m))
    assert others == [], f"{module} pulls in {others}"


@pytest.mark.parametrize("module", SHARED)
def test_shared_modules_import_no_stage(
    module: str, imported: dict[str, dict[str, object]]
) -> None:
    loaded = set(imported[module]["nb2prod"])  # type: ignore[arg-type]
    stages = sorted(m for m in loaded if _subpackage(m) or m in ORCHESTRATION)
    assert stages == [], f"{module} pulls in {stages}"


@pytest.mark.parametrize("module", ["nb2prod.models", "nb2prod.errors"])
def test_records_and_errors_import_nothing_from_nb2prod(
    module: str, imported: dict[str, dict[str, object]]
) -> None:
    assert imported[module]["nb2prod"] == ["nb2prod", module]


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_stage_does_not_load_click(
    module: str, imported: dict[str, dict[str, object]]
) -> None:
    assert imported[module]["click"] is False


def _imports_click(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "click" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "click":
            return True
    return False


def test_only_the_cli_imports_click() -> None:
    importers = sorted(
        path.relative_to(PACKAGE_DIR).as_posix()
        for path in PACKAGE_DIR.rglob("*.py")
        if _imports_click(path)
    )
    assert importers and all(name.startswith("cli/") for name in importers), importers


def test_the_runtime_imports_nothing_from_nb2prod() -> None:
    """nb2prod_runtime is copied into every build context, where nb2prod is not installed."""
    offenders = []
    for path in (PACKAGE_DIR / "runtime").rglob("*.py"):
        depth = len(path.relative_to(PACKAGE_DIR / "runtime").parts)  # levels up to runtime/
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and node.level > depth:
                names = ["nb2prod (relative, above the runtime package)"]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "nb2prod"]
    assert offenders == []
