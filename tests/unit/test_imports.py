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

#: Shared by every stage: plain records, the exception tree, the name analysis helper, and
#: reading/writing the JSON records stages leave in a build directory, and finding the engine.
SHARED = {
    "nb2prod",
    "nb2prod.models",
    "nb2prod.errors",
    "nb2prod.names",
    "nb2prod.records",
    "nb2prod.dockerhost",
}
#: Not stages: the package entry points that string the stages together.
ORCHESTRATION = {"nb2prod.pipeline", "nb2prod.cli", "nb2prod.__main__", "nb2prod.__init__"}
#: The stages the design names; any other top-level module is a stage too (found below).
NAMED_STAGES = [
    "nb2prod.notebook",
    "nb2prod.render",
    "nb2prod.trainer",
    "nb2prod.verify",
    "nb2prod.output",
]
STAGES = sorted(
    set(NAMED_STAGES)
    | {
        f"nb2prod.{path.stem}"
        for path in PACKAGE_DIR.glob("*.py")
        if f"nb2prod.{path.stem}" not in SHARED | ORCHESTRATION
    }
)
MODULES = [*STAGES, "nb2prod.models", "nb2prod.errors"]

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
    other_stages = sorted(m for m in loaded - {module} if m in STAGES or m in ORCHESTRATION)
    assert other_stages == [], f"{module} pulls in {other_stages}"


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
    assert importers == ["cli.py"]


def test_the_runtime_imports_nothing_from_nb2prod() -> None:
    """nb2prod_runtime is copied into every build context, where nb2prod is not installed."""
    offenders = []
    for path in (PACKAGE_DIR / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and node.level > 1:
                names = ["nb2prod (relative, above the runtime package)"]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "nb2prod"]
    assert offenders == []
