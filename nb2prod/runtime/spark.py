"""Score Spark DataFrames with a build: the notebook's code on each partition (``mapInPandas``).

    from nb2prod_runtime.spark import predict_udf   # or nb2prod.runtime.spark on a host

    score = predict_udf(spark, "build/churn")
    scored = score(customers)  # every input column, then prediction and nb2prod_error

The build directory is shipped once with ``SparkContext.addFile`` (as MLflow's
``spark_udf`` ships a model); each Python worker loads the model from it once and scores
its partitions in Arrow batches with what ``nb2prod batch`` and ``POST /predict`` use: the
card's input schema and validation, the Predictor. A row that fails validation or that the
model code refuses gets a null prediction and the reason in ``nb2prod_error``; the job goes
on. Streaming DataFrames (Structured Streaming) work the same way.
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["ERROR_COLUMN", "predict_udf"]

#: The column holding why a row was not scored (null when it was).
ERROR_COLUMN = "nb2prod_error"

_LOADED: dict[str, Any] = {}  # per Python worker: model version -> what _load loaded
_SHIPPED: dict[int, set[str]] = {}  # on the driver: per SparkContext, the builds added


def _spark_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    return "string"


def _prediction_fields(golden: list[Any]) -> list[tuple[str, str]]:
    """The output columns and their Spark types, from the golden predictions' JSON values."""
    first = golden[0] if golden else ""
    if isinstance(first, list):
        kinds = [_spark_type(v) for v in first]
        return [(f"prediction_{i}", kind) for i, kind in enumerate(kinds)]
    kinds = {_spark_type(v) for v in golden}
    kind = (
        "double" if kinds == {"bigint", "double"} else kinds.pop() if len(kinds) == 1 else "string"
    )
    return [("prediction", kind)]


def predict_udf(spark: Any, build_dir: str | Path) -> Callable[[Any], Any]:
    """A function scoring a Spark DataFrame that holds the model's input columns.

    It returns the DataFrame with every input column, then the prediction column(s) and
    ``nb2prod_error``. Nothing runs until Spark runs the plan.
    """
    build = Path(build_dir).resolve()
    card = json.loads((build / "model" / "model_card.json").read_text())
    golden = json.loads((build / "model" / "golden.json").read_text())["predictions"]
    version = str(card["model_version"])
    fields = _prediction_fields(golden)
    name = f"nb2prod-{version}"  # SparkFiles names by folder name: two "build/" must not clash
    shipped = _SHIPPED.setdefault(id(spark.sparkContext), set())
    if name not in shipped:
        copy = Path(tempfile.mkdtemp(prefix="nb2prod-spark-")) / name
        shutil.copytree(build, copy, ignore=shutil.ignore_patterns(".nb2prod", "__pycache__"))
        spark.sparkContext.addFile(str(copy), recursive=True)
        atexit.register(shutil.rmtree, copy.parent, ignore_errors=True)
        shipped.add(name)

    def score(frame: Any) -> Any:
        schema = ", ".join(
            [f"`{f.name}` {f.dataType.simpleString()}" for f in frame.schema.fields]
            + [f"`{column}` {kind}" for column, kind in fields]
            + [f"`{ERROR_COLUMN}` string"]
        )
        columns = [f.name for f in frame.schema.fields]

        def partitions(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            loaded = _load(name, version)
            for batch in batches:
                yield _score(loaded, batch, columns, fields)

        return frame.mapInPandas(partitions, schema)

    return score


def _load(name: str, version: str) -> tuple[Any, Any, Any]:
    """The shipped build's Predictor, Validator and ``batch_rows`` module, once per worker."""
    if version not in _LOADED:
        import importlib
        import importlib.util

        from pyspark import SparkFiles

        directory = Path(SparkFiles.get(name))
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))  # its nb2prod_runtime, for model_code's imports
        # Each build's model_code under its own name: two models in one worker stay apart.
        spec = importlib.util.spec_from_file_location(
            f"model_code_{version}", directory / "model_code.py"
        )
        assert spec is not None and spec.loader is not None
        model_code = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(model_code)
        rows = importlib.import_module("nb2prod_runtime.batch_rows")
        loader = importlib.import_module("nb2prod_runtime.loader")
        predictor = loader.Predictor(directory / "model", model_code)
        _LOADED[version] = (predictor, rows.Validator(predictor.schema), rows)
    loaded: tuple[Any, Any, Any] = _LOADED[version]
    return loaded


def _score(
    loaded: tuple[Any, Any, Any],
    batch: pd.DataFrame,
    columns: list[str],
    fields: list[tuple[str, str]],
) -> pd.DataFrame:
    predictor, validator, rows = loaded
    batch = batch.reset_index(drop=True)
    scored = rows.score_rows(predictor, validator, batch)
    errors: list[str | None] = [None] * len(batch)
    for index, reason in scored.rejected:
        errors[index] = reason
    values: list[Any] = [None] * len(batch)
    for index, prediction in zip(scored.rows, scored.predictions, strict=True):
        values[int(index)] = prediction
    out = batch[columns].copy()
    if len(fields) == 1:
        out[fields[0][0]] = _column(values, fields[0][1])
    else:
        for i, (column, kind) in enumerate(fields):
            out[column] = _column([None if v is None else v[i] for v in values], kind)
    out[ERROR_COLUMN] = pd.Series(errors, dtype=object)
    return out


def _column(values: list[Any], kind: str) -> Any:
    dtype = {"bigint": "Int64", "double": "Float64", "boolean": "boolean"}.get(kind)
    return pd.array(values, dtype=dtype) if dtype else pd.Series(values, dtype=object)
