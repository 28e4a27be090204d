"""`nb2prod batch` with gs:// inputs and outputs, against a local GCS emulator.

The emulator (the ``gcp-storage-emulator`` package) serves the GCS JSON API; the real gcsfs
client is pointed at it by STORAGE_EMULATOR_HOST, in the runs and in the tests alike.
Expected predictions come from the notebook run in Jupyter (reference.py), as in
test_batch.py, whose fixtures these tests reuse.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import reference
from helpers import assert_same_predictions, example_notebook, run_cli_process
from test_batch import NAME, ROWS, with_ids

pytest.importorskip("gcsfs", reason="gcsfs is in the test extras (nb2prod[gcs])")
pytest.importorskip("gcp_storage_emulator", reason="gcp-storage-emulator is in the test extras")

BUCKET = "nb2prod-tests"


@pytest.fixture(scope="module")
def built(built_examples: Callable[[str], Path]) -> Path:
    return built_examples(NAME)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return reference.example_rows(NAME, ROWS)


@pytest.fixture(scope="module")
def expected(rows: list[dict[str, Any]]) -> list[Any]:
    return reference.reference_predictions(example_notebook(NAME), rows)


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """A GCS emulator on a free loopback port, for the whole module: its URL."""
    from gcp_storage_emulator.server import create_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(emulator: str) -> Any:
    """The real gcsfs client on the emulator, no listing cache (the runs change the bucket)."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(
        endpoint_url=emulator, token="anon", skip_instance_cache=True, use_listings_cache=False
    )


@pytest.fixture
def env(emulator: str, tmp_path: Path) -> dict[str, str]:
    """The runs' environment: gcsfs on the emulator, staging in a folder the test inspects."""
    (tmp_path / "tmp").mkdir()
    return {
        **os.environ,
        "STORAGE_EMULATOR_HOST": emulator,
        # gcsfs would ask the Storage Control API (which the emulator lacks) for the layout.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "TMPDIR": str(tmp_path / "tmp"),
    }


@pytest.fixture
def prefix(tmp_path: Path) -> str:
    """A folder of the bucket for this test only."""
    return f"{BUCKET}/{tmp_path.name}"


def put(gcs: Any, frame: pd.DataFrame, path: str) -> None:
    with gcs.open(path, "wb") as handle:
        if path.endswith(".parquet"):
            frame.to_parquet(handle, index=False)
        else:
            handle.write(frame.to_csv(index=False).encode())


def read(gcs: Any, path: str) -> pd.DataFrame:
    with gcs.open(path, "rb") as handle:
        return pd.read_parquet(handle) if path.endswith(".parquet") else pd.read_csv(handle)


def batch(*args: str | Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli_process("batch", *args, cwd=cwd, env=env, timeout=600)


def objects(gcs: Any, prefix: str) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in gcs.find(prefix))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_objects_score_like_the_notebook_and_come_back_as_objects(
    fmt: str,
    built: Path,
    rows: list[dict[str, Any]],
    expected: list[Any],
    gcs: Any,
    env: dict[str, str],
    prefix: str,
    tmp_path: Path,
) -> None:
    frame = with_ids(rows)
    put(gcs, frame, f"{prefix}/in/rows.{fmt}")
    source, output = f"gs://{prefix}/in/rows.{fmt}", f"gs://{prefix}/out/scored.{fmt}"
    result = batch(
        built, source, "-o", output, "--keep", "id", "--chunk-rows", "7", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    scored = read(gcs, f"{prefix}/out/scored.{fmt}")
    assert list(scored.columns) == ["id", "prediction"]
    assert list(scored["id"]) == list(frame["id"])
    assert_same_predictions(expected, [float(v) for v in scored["prediction"]])
    card = json.loads((built / "model" / "model_card.json").read_text())
    sidecar = json.loads(gcs.cat(f"{prefix}/out/scored.{fmt}.nb2prod.json"))
    assert sidecar["model_version"] == card["model_version"]
    assert sidecar["rows_in"] == sidecar["rows_scored"] == ROWS
    assert sidecar["inputs"] == [source]
    assert objects(gcs, f"{prefix}/out") == [f"scored.{fmt}", f"scored.{fmt}.nb2prod.json"]
    assert list((tmp_path / "tmp").iterdir()) == []  # the local staging is gone


def test_a_folder_prefix_and_a_glob_score_their_objects_in_name_order(
    built: Path,
    rows: list[dict[str, Any]],
    expected: list[Any],
    gcs: Any,
    env: dict[str, str],
    prefix: str,
    tmp_path: Path,
) -> None:
    frame = with_ids(rows).astype({"age": object})
    frame.loc[12, "age"] = "forty"  # one bad row: its reject goes to a gs:// rejects object
    for part, start in (("b", 15), ("a", 0), ("c", 30)):  # uploaded out of name order
        put(gcs, frame.iloc[start : start + 15], f"{prefix}/in/part-{part}.csv")
    gcs.pipe(f"{prefix}/in/README.txt", b"not rows")  # no known extension: skipped
    result = batch(
        built, f"gs://{prefix}/in/", "-o", f"gs://{prefix}/out/all.parquet", "--keep", "id",
        "--rejects", f"gs://{prefix}/out/bad.csv", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "39 of 40 rows" in result.stdout and "1 rejected" in result.stdout
    scored = read(gcs, f"{prefix}/out/all.parquet")
    kept = [i for i in range(ROWS) if i != 12]
    assert list(scored["id"]) == [f"p{i:04d}" for i in kept]
    assert_same_predictions([expected[i] for i in kept], list(scored["prediction"]))
    rejects = read(gcs, f"{prefix}/out/bad.csv")
    assert list(rejects["id"]) == ["p0012"] and "'forty' is not a number" in rejects["reason"][0]
    assert rejects["file"][0] == f"gs://{prefix}/in/part-a.csv" and rejects["row"][0] == 13

    globbed = batch(
        built, f"gs://{prefix}/in/part-[ab].csv", "-o", f"gs://{prefix}/out/ab.csv",
        "--keep", "id", "--json", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert globbed.returncode == 0, globbed.stderr
    summary = json.loads(globbed.stdout)
    assert summary["inputs"] == [f"gs://{prefix}/in/part-a.csv", f"gs://{prefix}/in/part-b.csv"]
    assert list(read(gcs, f"{prefix}/out/ab.csv")["id"]) == [f"p{i:04d}" for i in kept[:29]]


def test_a_missing_object_is_one_clear_error(
    built: Path, gcs: Any, env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    missing = f"gs://{prefix}/in/nothing-here.csv"
    result = batch(built, missing, "-o", f"gs://{prefix}/out/x.csv", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {missing}: no such object or folder"]
    assert "Traceback" not in result.stderr
    assert not gcs.exists(f"{prefix}/out")


def test_existing_objects_are_replaced_only_when_ours_and_with_force(
    built: Path, rows: list[dict[str, Any]], gcs: Any, env: dict[str, str], prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    put(gcs, with_ids(rows), f"{prefix}/in.csv")
    source = f"gs://{prefix}/in.csv"
    gcs.pipe(f"{prefix}/report.csv", b"my own work\n")
    for extra in ((), ("--force",)):
        result = batch(
            built, source, "-o", f"gs://{prefix}/report.csv", *extra, env=env, cwd=tmp_path
        )
        assert result.returncode == 2 and "nb2prod batch did not write it" in result.stderr
        assert gcs.cat(f"{prefix}/report.csv") == b"my own work\n"
    ours = f"gs://{prefix}/scored.csv"
    assert batch(built, source, "-o", ours, env=env, cwd=tmp_path).returncode == 0
    again = batch(built, source, "-o", ours, env=env, cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert batch(built, source, "-o", ours, "--force", env=env, cwd=tmp_path).returncode == 0


def _limited_file_size() -> None:
    """The kernel refuses writes past 40 kB (EFBIG), as a full disk refuses them."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.parametrize("how", ["a full staging disk", "SIGTERM"])
def test_a_failed_or_interrupted_run_leaves_no_object_under_the_output_name(
    how: str, built: Path, rows: list[dict[str, Any]], gcs: Any, env: dict[str, str],
    prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    put(gcs, pd.concat([with_ids(rows)] * 2500), f"{prefix}/in/big.csv")  # 100,000 rows
    command = [sys.executable, "-m", "nb2prod", "batch", str(built), f"gs://{prefix}/in/big.csv"]
    command += ["-o", f"gs://{prefix}/out/scored.csv", "--keep", "id", "--chunk-rows", "500"]
    if how == "SIGTERM":
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not any((tmp_path / "tmp").rglob("scored.csv")):  # staging has begun
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 143, stderr
        assert "nothing was written under" in stderr
    else:
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True,
            preexec_fn=_limited_file_size, timeout=600,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        stderr = result.stderr
        assert "the disk is full" in stderr
    assert "Traceback" not in stderr
    assert not gcs.exists(f"{prefix}/out")  # no output, no rejects, no sidecar
    assert list((tmp_path / "tmp").iterdir()) == []


def test_cloud_run_tasks_each_score_their_share_of_a_bucket_folder(
    built: Path, rows: list[dict[str, Any]], gcs: Any, env: dict[str, str], prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    frame = with_ids(rows)
    for part in range(3):
        put(gcs, frame.iloc[part::3], f"{prefix}/in/part-{part}.csv")

    def task(index: int) -> subprocess.CompletedProcess[str]:
        task_env = {**env, "PYTHONPATH": str(built)}
        task_env |= {"CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": "2"}
        command = [sys.executable, "-m", "nb2prod_runtime.batch", f"gs://{prefix}/in"]
        command += ["-o", f"gs://{prefix}/out/scored.csv", "--keep", "id"]
        return subprocess.run(command, cwd=tmp_path, env=task_env, capture_output=True, text=True)

    first, second = task(0), task(1)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    ids = [set(read(gcs, f"{prefix}/out/scored-0000{i}-of-00002.csv")["id"]) for i in (0, 1)]
    assert ids[0] == set(frame.iloc[0::3]["id"]) | set(frame.iloc[2::3]["id"])
    assert ids[1] == set(frame.iloc[1::3]["id"])
    retried = task(1)  # a retry replaces its own output (it wrote it), and only that
    assert retried.returncode == 0, retried.stderr


def test_without_gcsfs_a_url_is_one_error_naming_the_extra(
    built: Path, env: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    """The serving image has no gcsfs: a gs:// argument there must say what to install."""
    blocked = (
        "import runpy, sys; sys.modules['gcsfs'] = None; "  # None in sys.modules: ImportError
        "runpy.run_module('nb2prod_runtime.batch', run_name='__main__')"
    )
    command = [sys.executable, "-c", blocked, f"gs://{prefix}/in.csv", "-o", "out.csv"]
    result = subprocess.run(
        command, cwd=tmp_path, env={**env, "PYTHONPATH": str(built)}, capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert len(errors) == 2 and "pip install 'nb2prod[gcs]'" in errors[1], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
