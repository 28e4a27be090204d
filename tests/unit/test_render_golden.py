"""Golden files of the rendered build context, plus checks that the rendered code is real code.

``pytest tests/unit/test_render_golden.py --update-golden`` rewrites ``tests/golden/<name>/``
from the current rendering; review the diff before committing it. A golden file only shows that
the output did not change; the compile and ruff tests below (and the end-to-end tests) show it
works.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, EXAMPLES_DIR, GOLDEN_DIR, run_cli

import nb2prod
from nb2prod import pipeline
from nb2prod.errors import OutputExistsError

#: Copied verbatim from the package, not rendered: the package's own tests cover it.
SKIPPED_DIRS = {"nb2prod_runtime", "__pycache__", ".ruff_cache", ".pytest_cache"}
REQUIREMENTS = re.compile(r"^requirements.*\.txt$")
#: Every golden file carries this suffix, so that no tool treats the snapshots as live files:
#: pytest would collect the rendered tests/ folder, ruff would lint the .py files and pick up the
#: rendered ruff.toml as a nested config.
GOLDEN_SUFFIX = ".golden"


def _golden_name(relative: str) -> str:
    return relative + GOLDEN_SUFFIX


def _rendered_name(golden_relative: str) -> str:
    return golden_relative.removesuffix(GOLDEN_SUFFIX)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each example rendered once with ``nb2prod generate`` into ``<tmp>/<name>``."""
    root = tmp_path_factory.mktemp("rendered")
    out: dict[str, Path] = {}
    for name in EXAMPLES:
        result = run_cli("generate", str(EXAMPLES_DIR / f"{name}.ipynb"), "-o", str(root / name))
        assert result.returncode == 0, result.stderr
        out[name] = root / name
    return out


def _normalize(relative: str, text: str) -> str:
    """Take out what depends on where and when the rendering ran, not on what nb2prod does."""
    if REQUIREMENTS.match(Path(relative).name):
        # Pins come from the environment; the set of distributions is what nb2prod decides.
        names = [
            re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-")
            for line in text.splitlines()
            if line.strip() and not line.startswith("#")
        ]
        return "\n".join(names) + "\n"
    if relative == "build.json":
        record = json.loads(text)
        for key in ("notebook", "notebook_dir", "notebook_dir_relative"):
            if key in record:
                record[key] = f"<{key}>"
        # Which files the build recorded is nb2prod's decision; their hashes follow the pins.
        record["files"] = sorted(record.get("files", {}))
        text = json.dumps(record, indent=2) + "\n"
    text = text.replace(str(EXAMPLES_DIR), "<EXAMPLES_DIR>")
    text = text.replace(nb2prod.__version__, "<NB2PROD_VERSION>")
    text = re.sub(r"revision=\"[0-9a-f]*\"", 'revision="<GIT_COMMIT>"', text)
    text = re.sub(r"python:\d+\.\d+", "python:<X.Y>", text)
    return text


def _text_files(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or SKIPPED_DIRS & set(relative.parts):
            continue
        files[relative.as_posix()] = _normalize(relative.as_posix(), path.read_text())
    return files


@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_context_matches_golden_files(
    name: str, rendered: dict[str, Path], update_golden: bool
) -> None:
    got = _text_files(rendered[name])
    golden = GOLDEN_DIR / name
    if update_golden:
        shutil.rmtree(golden, ignore_errors=True)
        for relative, text in got.items():
            (golden / _golden_name(relative)).parent.mkdir(parents=True, exist_ok=True)
            (golden / _golden_name(relative)).write_text(text)
    assert golden.is_dir(), f"no golden files for {name}: run pytest with --update-golden"
    expected = {
        _rendered_name(path.relative_to(golden).as_posix()): path.read_text()
        for path in sorted(golden.rglob("*"))
        if path.is_file()
    }
    assert sorted(got) == sorted(expected), "the set of rendered files changed"
    for relative, text in expected.items():
        assert got[relative] == text, (
            f"{name}/{relative} differs from tests/golden; if the change is intended, "
            "rerun with --update-golden and review the diff"
        )


@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_python_compiles(name: str, rendered: dict[str, Path]) -> None:
    for file in ("train.py", "model_code.py", "serving.py"):
        source = (rendered[name] / file).read_text()
        compile(source, str(rendered[name] / file), "exec")


@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_serving_code_passes_ruff(name: str, rendered: dict[str, Path]) -> None:
    files = [str(rendered[name] / f) for f in ("model_code.py", "serving.py")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            # The build directory's own lint settings (nb2prod_runtime is first-party there).
            "--config",
            str(rendered[name] / "ruff.toml"),
            "--select",
            "E,F,W,I",
            "--line-length",
            "100",
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_rendered_files_name_the_notebook_and_nb2prod_version(
    name: str, rendered: dict[str, Path]
) -> None:
    for file in ("train.py", "model_code.py", "serving.py"):
        head = "\n".join((rendered[name] / file).read_text().splitlines()[:5])
        assert f"{name}.ipynb" in head, (file, head)
        assert nb2prod.__version__ in head, (file, head)


# --- overwrite protection ---------------------------------------------------------------------

NOTEBOOK = EXAMPLES_DIR / "iris_function.ipynb"


def test_generate_refuses_a_directory_nb2prod_did_not_write(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    user_file = target / "notes.txt"
    user_file.write_text("mine")
    result = run_cli("generate", str(NOTEBOOK), "-o", str(target))
    assert result.returncode == 4, result.stderr
    assert result.stderr.count("Error:") == 1
    assert "never deletes files it did not write" in result.stderr
    assert "Traceback" not in result.stderr
    assert user_file.read_text() == "mine"
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging leftovers


def test_generate_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("mine")
    with pytest.raises(OutputExistsError):
        pipeline.generate(NOTEBOOK, target)
    assert target.read_text() == "mine"


def test_generate_never_replaces_a_directory_it_did_not_write(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not written by this nb2prod"):
        pipeline.generate(NOTEBOOK, target)
    with pytest.raises(OutputExistsError, match="not written by this nb2prod"):
        pipeline.generate(NOTEBOOK, target, force=True)
    assert (target / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_regenerating_a_directory_nb2prod_wrote_needs_no_force(tmp_path: Path) -> None:
    target = tmp_path / "out"
    pipeline.generate(NOTEBOOK, target)
    # A file an older layout wrote (and recorded, with its hash) is not carried over.
    (target / "stale.txt").write_text("left over from an older layout")
    record = json.loads((target / "build.json").read_text())
    record["files"]["stale.txt"] = hashlib.sha256(b"left over from an older layout").hexdigest()
    (target / "build.json").write_text(json.dumps(record))
    pipeline.generate(NOTEBOOK, target)
    assert (target / "train.py").is_file()
    assert not (target / "stale.txt").exists()  # replaced as a whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_empty_existing_directory_is_used(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    pipeline.generate(NOTEBOOK, target)
    assert (target / "train.py").is_file()


def test_output_defaults_to_build_slash_notebook_stem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    context = pipeline.generate(NOTEBOOK)
    assert context.path == tmp_path / "build" / "iris_function"
    assert (tmp_path / "build" / "iris_function" / "train.py").is_file()
