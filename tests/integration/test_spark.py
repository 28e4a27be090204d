"""`predict_udf`: a Spark DataFrame scored by the notebook's own code, in real Spark (local[2]).

Every row is compared with the notebook run in Jupyter (reference.py) and with
`nb2prod batch` on the same rows; a bad row becomes an `nb2prod_error`, not a failed job;
a streaming DataFrame (the file source) scores the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import reference
from helpers import assert_same_predictions, example_notebook, run_cli_process

from nb2prod.runtime.spark import ERROR_COLUMN, predict_udf

pyspark = pytest.importorskip("pyspark", reason="pyspark is in the test extras")
# PySpark 4.x warns on pandas 3 (and calls pandas with a deprecated keyword) at every
# toPandas(); the columns used here convert exactly.
pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

NAME = "diabetes_regression"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # loopback only, no hostname lookup

    session = (
        SparkSession.builder.master("local[2]")
        .appName("nb2prod-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "16")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def built(built_examples: Callable[[str], Path]) -> Path:
    return built_examples(NAME)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    frame = pd.DataFrame(reference.example_rows(NAME, 40))
    frame.insert(0, "id", range(len(frame)))
    return frame


def test_spark_scores_every_row_like_the_notebook_and_nb2prod_batch(
    spark: Any, built: Path, rows: pd.DataFrame, tmp_path: Path
) -> None:
    records = rows.drop(columns="id").to_dict(orient="records")
    expected = reference.reference_predictions(example_notebook(NAME), records)
    dirty = rows.astype({"age": object})
    dirty.loc[5, "age"] = "forty"  # fails validation: an error column, not a failed job
    scored = predict_udf(spark, built)(spark.createDataFrame(dirty.astype({"age": str})))
    result = scored.toPandas().sort_values("id").reset_index(drop=True)

    assert list(result.columns) == [*rows.columns, "prediction", ERROR_COLUMN]
    assert "'forty' is not a number" in result.loc[5, ERROR_COLUMN]
    assert pd.isna(result.loc[5, "prediction"])
    good = result.drop(index=5)
    assert good[ERROR_COLUMN].isna().all()
    assert_same_predictions(
        [expected[i] for i in good.index], [float(v) for v in good["prediction"]]
    )

    rows.to_csv(tmp_path / "in.csv", index=False)
    batch = run_cli_process("batch", built, "in.csv", "-o", "out.csv", "--keep", "id", cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    from_batch = pd.read_csv(tmp_path / "out.csv")
    assert list(from_batch["prediction"][good.index]) == [float(v) for v in good["prediction"]]


def test_a_streaming_dataframe_scores_the_same(
    spark: Any, built: Path, rows: pd.DataFrame, tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    rows.iloc[:20].to_csv(incoming / "a.csv", index=False)
    rows.iloc[20:].to_csv(incoming / "b.csv", index=False)
    static = spark.createDataFrame(rows)
    stream = spark.readStream.schema(static.schema).option("header", "true").csv(str(incoming))
    query = (
        predict_udf(spark, built)(stream)
        .writeStream.format("memory")
        .queryName("scored_stream")
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(timeout=180)
    streamed = spark.sql("select * from scored_stream").toPandas().sort_values("id")
    batch = predict_udf(spark, built)(static).toPandas().sort_values("id")
    assert len(streamed) == len(rows) and streamed[ERROR_COLUMN].isna().all()
    assert list(streamed["prediction"]) == list(batch["prediction"])
    card = json.loads((built / "model" / "model_card.json").read_text())
    assert card["output"]["kind"] == "number"


@pytest.mark.parametrize("name", ["iris_function", "wine_script"])
def test_the_other_examples_score_like_the_notebook(
    name: str, spark: Any, built_examples: Callable[[str], Path]
) -> None:
    out = built_examples(name)
    rows = reference.example_rows(name, 20)
    expected = reference.reference_predictions(example_notebook(name), rows)
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", range(len(frame)))
    result = predict_udf(spark, out)(spark.createDataFrame(frame)).toPandas().sort_values("id")
    assert result[ERROR_COLUMN].isna().all()
    got = [v.item() if hasattr(v, "item") else v for v in result["prediction"]]
    assert_same_predictions(expected, got)
