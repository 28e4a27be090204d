"""`nb2prod batch`: files scored as POST /predict scores them, nothing lost, nothing half-written.

Expected predictions come from the notebook itself, run in a Jupyter kernel (reference.py);
the service's answers come from a real uvicorn server. Faults are real: a corrupt line, a
missing column, a file-size limit that makes the disk refuse writes, SIGTERM and SIGINT.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import reference
from helpers import (
    ServeProcess,
    assert_same_predictions,
    example_notebook,
    run_cli_process,
    write_notebook,
)

NAME = "diabetes_regression"  # numbers and a nullable text column (`sex`), a regression
ROWS = 40


@pytest.fixture(scope="module")
def built(built_examples: Callable[[str], Path]) -> Path:
    return built_examples(NAME)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return reference.example_rows(NAME, ROWS)


@pytest.fixture(scope="module")
def expected(rows: list[dict[str, Any]]) -> list[Any]:
    return reference.reference_predictions(example_notebook(NAME), rows)


def with_ids(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", [f"p{i:04d}" for i in range(len(frame))])
    return frame


def batch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli_process("batch", *args, cwd=cwd, timeout=600)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_batch_predicts_what_the_notebook_and_the_service_predict(
    fmt: str,
    built: Path,
    rows: list[dict[str, Any]],
    expected: list[Any],
    tmp_path: Path,
) -> None:
    frame = with_ids(rows)
    source = tmp_path / f"rows.{fmt}"
    {
        "csv": lambda: frame.to_csv(source, index=False),
        "jsonl": lambda: frame.to_json(source, orient="records", lines=True),
        "parquet": lambda: frame.to_parquet(source, index=False),
    }[fmt]()
    output = tmp_path / "scores" / "today" / f"scored.{fmt}"  # folders made as needed
    result = batch(built, source, "-o", output, "--keep", "id", "--chunk-rows", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scored = {
        "csv": pd.read_csv,
        "jsonl": lambda p: pd.read_json(p, lines=True),
        "parquet": pd.read_parquet,
    }[fmt](output)
    assert list(scored.columns) == ["id", "prediction"]
    assert list(scored["id"]) == list(frame["id"])  # input order, ids kept
    assert_same_predictions(expected, [float(v) for v in scored["prediction"]])

    server = ServeProcess(built, tmp_path / "serve.log")
    try:
        served = httpx.post(f"{server.url}/predict", json={"instances": rows}, timeout=30).json()
    finally:
        server.close()
    assert_same_predictions(served["predictions"], [float(v) for v in scored["prediction"]])

    card = json.loads((built / "model" / "model_card.json").read_text())
    sidecar = json.loads(Path(f"{output}.nb2prod.json").read_text())
    assert sidecar["model_version"] == card["model_version"]
    assert sidecar["rows_in"] == sidecar["rows_scored"] == ROWS and sidecar["rows_rejected"] == 0
    if fmt == "parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_schema(output).metadata
        assert metadata[b"nb2prod.model_version"].decode() == card["model_version"]
    assert sorted(p.name for p in output.parent.iterdir()) == sorted(
        [output.name, f"{output.name}.nb2prod.json"]
    )  # no reject, no rejects file, nothing left over


def test_bad_rows_are_rejected_with_their_row_and_reason_and_the_run_goes_on(
    built: Path, rows: list[dict[str, Any]], expected: list[Any], tmp_path: Path
) -> None:
    frame = with_ids(rows)
    frame.to_csv(tmp_path / "clean.csv", index=False)
    lines = (tmp_path / "clean.csv").read_text().splitlines()
    header = lines[0].split(",")
    age, bmi = header.index("age"), header.index("bmi")

    def edit(row: int, column: int, value: str) -> None:
        fields = lines[row].split(",")
        fields[column] = value
        lines[row] = ",".join(fields)

    edit(3, age, "forty")  # data row 3: not a number
    lines[11] += ",surplus"  # data row 11: a corrupt line in the middle of the file
    edit(20, bmi, "")  # data row 20: a required value missing
    (tmp_path / "dirty.csv").write_text("\n".join(lines) + "\n")

    result = batch(
        built, "dirty.csv", "-o", "out.csv", "--keep", "id", "--chunk-rows", "8", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "37 of 40 rows" in result.stdout and "3 rejected" in result.stdout
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert list(rejects["row"]) == [3, 11, 20]
    reasons = list(rejects["reason"])
    assert "`age`" in reasons[0] and "'forty' is not a number" in reasons[0]
    assert "malformed line" in reasons[1] and "saw 12" in reasons[1]
    assert "`bmi`" in reasons[2] and "required" in reasons[2]
    assert list(rejects["id"][[0, 2]]) == ["p0002", "p0019"]  # the --keep ids of rejected rows

    scored = pd.read_csv(tmp_path / "out.csv")
    kept = [i for i in range(ROWS) if i + 1 not in (3, 11, 20)]
    assert list(scored["id"]) == [f"p{i:04d}" for i in kept]
    assert_same_predictions([expected[i] for i in kept], list(scored["prediction"]))
    sidecar = json.loads((tmp_path / "out.csv.nb2prod.json").read_text())
    assert sidecar["rows_in"] == ROWS == sidecar["rows_scored"] + sidecar["rows_rejected"]


def test_a_missing_column_is_one_error_before_any_scoring(built: Path, tmp_path: Path) -> None:
    pd.DataFrame({"age": [50.0], "bmi": [25.0]}).to_csv(tmp_path / "few.csv", index=False)
    result = batch(built, "few.csv", "-o", "out.csv", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "missing column(s)" in errors[0] and "'bp'" in errors[0]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.csv"]


def test_outputs_it_did_not_write_are_never_replaced(
    built: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    with_ids(rows).to_csv(tmp_path / "in.csv", index=False)
    mine = tmp_path / "report.csv"
    mine.write_text("my own work\n")
    for extra in ((), ("--force",)):
        result = batch(built, "in.csv", "-o", mine, *extra, cwd=tmp_path)
        assert result.returncode == 2 and "nb2prod batch did not write it" in result.stderr
        assert mine.read_text() == "my own work\n"
    assert batch(built, "in.csv", "-o", "out.csv", cwd=tmp_path).returncode == 0
    again = batch(built, "in.csv", "-o", "out.csv", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert batch(built, "in.csv", "-o", "out.csv", "--force", cwd=tmp_path).returncode == 0


def test_a_full_disk_leaves_nothing_under_the_output_name(
    built: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A file-size limit makes the kernel refuse the writes (EFBIG), as a full disk does."""
    pd.concat([with_ids(rows)] * 50).to_csv(tmp_path / "in.csv", index=False)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    command = [sys.executable, "-m", "nb2prod", "batch", built, "in.csv", "-o", "out.csv"]
    command += ["--keep", "id", "--chunk-rows", "100"]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, preexec_fn=limited, timeout=600
    )
    assert result.returncode == 1, result.stderr
    assert "the disk is full" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("how", ["SIGTERM to nb2prod batch", "SIGINT to the runtime"])
def test_an_interrupted_run_leaves_nothing_half_written(
    how: str, built: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    pd.concat([with_ids(rows)] * 5000).to_csv(tmp_path / "big.csv", index=False)  # 200,000 rows
    args = ["big.csv", "-o", "out.parquet", "--keep", "id", "--chunk-rows", "500"]
    if how.startswith("SIGTERM"):
        command = [sys.executable, "-m", "nb2prod", "batch", str(built), *args]
        env, sig, code = os.environ, signal.SIGTERM, 143
    else:
        command = [sys.executable, "-m", "nb2prod_runtime.batch", *args]
        env = {**os.environ, "PYTHONPATH": str(built)}
        sig, code = signal.SIGINT, 130
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.parquet.nb2prod-partial") for p in tmp_path.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # well into the file
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv"]


def test_cloud_run_job_tasks_each_score_their_own_share(
    built: Path, rows: list[dict[str, Any]], tmp_path: Path
) -> None:
    """CLOUD_RUN_TASK_INDEX/COUNT split the input files; a retried task replaces only its own."""
    frame = with_ids(rows)
    (tmp_path / "in").mkdir()
    for part in range(3):
        frame.iloc[part::3].to_csv(tmp_path / "in" / f"part-{part}.csv", index=False)

    def task(index: int) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(built)}
        env |= {"CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": "2"}
        command = [sys.executable, "-m", "nb2prod_runtime.batch", "in", "-o", "out/scored.csv"]
        return subprocess.run(
            [*command, "--keep", "id"], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    (tmp_path / "out").mkdir()
    assert task(0).returncode == 0 and task(1).returncode == 0
    first = pd.read_csv(tmp_path / "out" / "scored-00000-of-00002.csv")
    second = pd.read_csv(tmp_path / "out" / "scored-00001-of-00002.csv")
    assert set(first["id"]) == set(frame.iloc[0::3]["id"]) | set(frame.iloc[2::3]["id"])
    assert set(second["id"]) == set(frame.iloc[1::3]["id"])
    before = (tmp_path / "out" / "scored-00000-of-00002.csv").stat().st_mtime_ns
    retried = task(1)
    assert retried.returncode == 0, retried.stderr
    assert (tmp_path / "out" / "scored-00000-of-00002.csv").stat().st_mtime_ns == before


def test_a_corrupt_json_line_is_a_rejected_row(
    built: Path, rows: list[dict[str, Any]], expected: list[Any], tmp_path: Path
) -> None:
    lines = [json.dumps(row) for row in with_ids(rows).to_dict(orient="records")]
    lines[4] = lines[4][:25]  # a line cut off mid-object
    lines[9] = "[1, 2, 3]"  # JSON, but not a row
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    result = batch(built, "in.jsonl", "-o", "out.jsonl", "--keep", "id", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rejects = pd.read_csv(tmp_path / "out.rejects.csv")
    assert list(rejects["row"]) == [5, 10]  # line numbers
    assert all(reason.startswith("malformed line") for reason in rejects["reason"])
    scored = pd.read_json(tmp_path / "out.jsonl", lines=True)
    kept = [i for i in range(ROWS) if i not in (4, 9)]
    assert_same_predictions([expected[i] for i in kept], list(scored["prediction"]))


EXAMPLES = ["iris_function", "wine_script", "diabetes_regression"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_scores_like_the_notebook_in_chunks_of_one_and_many(
    name: str, built_examples: Callable[[str], Path], tmp_path: Path
) -> None:
    """Chunks of one row are one-row requests: preprocessing that computes over its input
    rows would differ there first."""
    root = tmp_path
    build = built_examples(name)
    rows = reference.example_rows(name, 25)
    expected = reference.reference_predictions(example_notebook(name), rows)
    pd.DataFrame(rows).to_csv(root / "in.csv", index=False)
    for chunk in ("1", "10"):
        result = batch(build, "in.csv", "-o", f"out-{chunk}.jsonl", "--chunk-rows", chunk, cwd=root)
        assert result.returncode == 0, result.stderr
        scored = [
            json.loads(line) for line in (root / f"out-{chunk}.jsonl").read_text().splitlines()
        ]
        assert_same_predictions(expected, [row["prediction"] for row in scored])


def test_json_summary_stays_clean_when_the_notebook_prints(tmp_path: Path) -> None:
    """Preprocess cells print as notebooks do; --json on stdout must still parse (for CI)."""
    notebook = write_notebook(
        tmp_path / "talky.ipynb",
        [
            ("import pandas as pd\nfrom sklearn.linear_model import LinearRegression", None),
            ("df = pd.DataFrame({'x': [float(i) for i in range(30)]})\ndf['y'] = 2 * df['x']",
             ["load"]),
            ("print('shape before', df.shape)\nX = df[['x']] * 1.0", ["preprocess"]),
            ("model = LinearRegression().fit(X, df['y'])", ["train"]),
            ("predictions = model.predict(X)", ["predict"]),
        ],
    )  # fmt: skip
    built = run_cli_process("build", notebook, "--no-docker", "-q", "-o", "out", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "in.csv", index=False)
    result = batch("out", "in.csv", "-o", "scored.csv", "--json", "--chunk-rows", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows_scored"] == 3
    assert "shape before" in result.stderr  # the notebook's output is kept, on stderr
    assert_same_predictions(
        [2.0, 4.0, 6.0], list(pd.read_csv(tmp_path / "scored.csv")["prediction"])
    )


def test_parquet_output_widens_a_keep_column_the_first_chunks_left_empty_or_integer(
    built: Path, rows: list[dict[str, Any]], expected: list[Any], tmp_path: Path
) -> None:
    """Parquet fixes its schema at the first chunk; later chunks may type what it left null
    (text from row 11) or hold fractions where it held integers (from row 21)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = with_ids(rows)
    notes = [None] * 10 + [f"n{i}" for i in range(10, ROWS)]
    frame["note"] = notes
    frame["score"] = [str(i) for i in range(20)] + [f"{i}.5" for i in range(20, ROWS)]
    frame.to_csv(tmp_path / "in.csv", index=False)
    result = batch(
        built, "in.csv", "-o", "out.parquet", "--keep", "id,note,score", "--chunk-rows", "10",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "out.parquet")
    note = table.schema.field("note").type
    assert pa.types.is_string(note) or pa.types.is_large_string(note)  # (pandas 3: large)
    assert table.schema.field("score").type == pa.float64()
    assert table.column("note").to_pylist() == notes
    assert table.column("score").to_pylist() == [float(v) for v in frame["score"]]
    assert_same_predictions(expected, table.column("prediction").to_pylist())
    card = json.loads((built / "model" / "model_card.json").read_text())
    assert table.schema.metadata[b"nb2prod.model_version"].decode() == card["model_version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv", "out.parquet", "out.parquet.nb2prod.json"
    ]  # fmt: skip


COMMIT_SIGNALLED = """
import os, signal, sys
from nb2prod_runtime import batch, batch_run

commit = batch_run.commit

def signalled(staged, where):
    if str(where).endswith(".nb2prod.json"):  # the first commit step: SIGTERM lands now
        os.kill(os.getpid(), signal.SIGTERM)
    commit(staged, where)

batch_run.commit = signalled
sys.exit(batch.main(sys.argv[1:]))
"""


def test_a_signal_during_the_commit_waits_for_it_and_says_the_output_was_written(
    built: Path, rows: list[dict[str, Any]], expected: list[Any], tmp_path: Path
) -> None:
    with_ids(rows).to_csv(tmp_path / "in.csv", index=False)
    command = [sys.executable, "-c", COMMIT_SIGNALLED, "in.csv", "-o", "out.csv", "--keep", "id"]
    result = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(built)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 143, result.stderr
    assert "out.csv was written in full" in result.stderr and "Traceback" not in result.stderr
    assert_same_predictions(expected, list(pd.read_csv(tmp_path / "out.csv")["prediction"]))
    assert json.loads((tmp_path / "out.csv.nb2prod.json").read_text())["rows_scored"] == ROWS
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.csv",
        "out.csv",
        "out.csv.nb2prod.json",
    ]
