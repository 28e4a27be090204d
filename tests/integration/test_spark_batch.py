"""`nb2prod batch --engine spark`: a real Spark job (local[2]) reads, scores and writes.

Every row is compared with the notebook run in Jupyter (reference.py) and with the pandas
engine on the same file; rejects are counted; an interrupted job leaves nothing under the
output name. Each run starts its own JVM, so the runs here are few and each checks much.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import reference
from helpers import assert_same_predictions, example_notebook, run_cli_process
from test_batch import NAME, ROWS, with_ids

pytest.importorskip("pyspark", reason="pyspark is in the test extras")

SPARK = ("--engine", "spark", "--master", "local[2]")


@pytest.fixture(scope="module")
def built(built_examples: Callable[[str], Path]) -> Path:
    return built_examples(NAME)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return reference.example_rows(NAME, ROWS)


@pytest.fixture(scope="module")
def expected(rows: list[dict[str, Any]]) -> list[Any]:
    return reference.reference_predictions(example_notebook(NAME), rows)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir()
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "TMPDIR": str(tmp_path / "tmp")}


def batch(*args: str | Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli_process("batch", *args, cwd=cwd, env=env, timeout=600)


def read_parts(directory: Path, fmt: str) -> pd.DataFrame:
    """A Spark output directory's part files, in part order (which is input order)."""
    parts = sorted(directory.glob(f"part-*.{'json' if fmt == 'jsonl' else fmt}"))
    assert parts, sorted(p.name for p in directory.iterdir())
    read = {
        "csv": pd.read_csv,
        "parquet": pd.read_parquet,
        "jsonl": lambda p: pd.read_json(p, lines=True),
    }[fmt]
    return pd.concat([read(p) for p in parts], ignore_index=True)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "nb2prod-" in p.name)


def test_spark_scores_like_the_notebook_and_the_pandas_engine_and_counts_rejects(
    built: Path, rows: list[dict[str, Any]], expected: list[Any], env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    frame = with_ids(rows).astype({"age": object})
    frame.loc[6, "age"] = "forty"  # fails validation: a reject, not a failed job
    frame.to_csv(tmp_path / "in.csv", index=False)
    result = batch(
        built, "in.csv", "-o", "scored.csv", "--keep", "id", "--rejects", "bad", "--json",
        *SPARK, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows_in"], summary["rows_scored"], summary["rows_rejected"]) == (40, 39, 1)
    assert summary["reasons"] == {"`age`": 1}

    scored = read_parts(tmp_path / "scored.csv", "csv")
    kept = [i for i in range(ROWS) if i != 6]
    assert list(scored.columns) == ["id", "prediction"]
    assert list(scored["id"]) == [f"p{i:04d}" for i in kept]  # input order
    assert_same_predictions([expected[i] for i in kept], list(scored["prediction"]))
    card = json.loads((built / "model" / "model_card.json").read_text())
    record = json.loads((tmp_path / "scored.csv" / "_nb2prod.json").read_text())
    assert record["model_version"] == card["model_version"] and record["rows_scored"] == 39

    rejects = read_parts(tmp_path / "bad", "csv")
    assert list(rejects["id"]) == ["p0006"]
    assert "'forty' is not a number" in rejects["nb2prod_error"][0]
    assert rejects["file"][0].endswith("/in.csv")

    pandas_engine = batch(
        built, "in.csv", "-o", "pandas.csv", "--keep", "id", env=env, cwd=tmp_path
    )
    assert pandas_engine.returncode == 0, pandas_engine.stderr
    assert list(pd.read_csv(tmp_path / "pandas.csv")["prediction"]) == list(scored["prediction"])
    assert leftovers(tmp_path) == [] and list((tmp_path / "tmp").iterdir()) == []

    again = batch(built, "in.csv", "-o", "scored.csv", *SPARK, env=env, cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr  # ours: only with --force


def test_parquet_and_json_lines_in_and_out(
    built: Path, rows: list[dict[str, Any]], expected: list[Any], env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Parquet in small Arrow batches; a JSON line that isn't an object is counted."""
    frame = with_ids(rows)
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    lines = [json.dumps(row) for row in frame.to_dict(orient="records")]
    lines[9] = lines[9][:20]  # cut off mid-object
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "scored.jsonl").mkdir()  # not ours: refused, even with --force
    refused = batch(
        built, "in.jsonl", "-o", "scored.jsonl", "--force", *SPARK, env=env, cwd=tmp_path
    )
    assert refused.returncode == 2 and "did not write it" in refused.stderr
    (tmp_path / "scored.jsonl").rmdir()

    for fmt in ("parquet", "jsonl"):
        result = batch(
            built, f"in.{fmt}", "-o", f"scored.{fmt}", "--keep", "id", "--chunk-rows", "7",
            "--json", *SPARK, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        kept = [i for i in range(ROWS) if fmt == "parquet" or i != 9]
        assert summary["rows_scored"] == len(kept) and summary["rows_in"] == ROWS
        if fmt == "jsonl":
            assert summary["reasons"] == {"malformed line": 1}
        scored = read_parts(tmp_path / f"scored.{fmt}", fmt)
        assert list(scored["id"]) == [f"p{i:04d}" for i in kept]
        assert_same_predictions([expected[i] for i in kept], list(scored["prediction"]))


def test_clear_errors_before_spark_starts(
    built: Path, rows: list[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    with_ids(rows).to_csv(tmp_path / "ok.csv", index=False)
    pd.DataFrame({"age": [50.0], "bmi": [25.0]}).to_csv(tmp_path / "few.csv", index=False)
    missing = batch(built, "few.csv", "-o", "out.csv", *SPARK, env=env, cwd=tmp_path)
    assert (
        missing.returncode == 2
        and "missing column(s)" in missing.stderr
        and "'bp'" in missing.stderr
    )

    no_java = {**env, "PATH": str(Path(sys.executable).parent)}  # the venv, no java on it
    no_java.pop("JAVA_HOME", None)
    assert shutil.which("java", path=no_java["PATH"]) is None
    java = batch(built, "ok.csv", "-o", "out.csv", *SPARK, env=no_java, cwd=tmp_path)
    assert java.returncode == 2 and "needs Java" in java.stderr, java.stderr

    blocked = (
        "import runpy, sys; sys.modules['pyspark'] = None; "  # None in sys.modules: ImportError
        "runpy.run_module('nb2prod_runtime.batch', run_name='__main__')"
    )
    command = [sys.executable, "-c", blocked, "ok.csv", "-o", "out.csv", "--engine", "spark"]
    no_spark = subprocess.run(
        command, cwd=tmp_path, env={**env, "PYTHONPATH": str(built)}, capture_output=True,
        text=True,
    )  # fmt: skip
    assert no_spark.returncode == 2 and "pip install 'nb2prod[spark]'" in no_spark.stderr
    for result in (missing, java, no_spark):
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.csv", "ok.csv", "tmp"]


def test_a_terminated_spark_run_leaves_nothing_under_the_output_name(
    built: Path, rows: list[dict[str, Any]], env: dict[str, str], tmp_path: Path
) -> None:
    pd.concat([with_ids(rows)] * 5000).to_csv(tmp_path / "big.csv", index=False)  # 200,000 rows
    command = [sys.executable, "-m", "nb2prod", "batch", str(built), "big.csv", "-o", "out.csv"]
    process = subprocess.Popen(
        [*command, "--keep", "id", *SPARK], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    # predict_udf copies the build to ship it: the job is about to score.
    while not any(p.name.startswith("nb2prod-spark-") for p in (tmp_path / "tmp").iterdir()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    assert "nothing was written under out.csv" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv", "tmp"]
