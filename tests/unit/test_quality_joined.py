"""The joined-rows API: prediction logs as the service writes them (through its own sinks),
labels as CSV and Parquet, and clear refusals for inputs that cannot be joined."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from nb2prod.errors import ConfigError, Nb2ProdError
from nb2prod.gate.joined import join
from nb2prod.gate.log_reader import load_labels, load_predictions
from nb2prod.runtime.prediction_log_sinks import FileSink, StdoutSink


def _record(
    request_id: str, rows: list[tuple[float, str]], version: str = "v1", **extra: Any
) -> dict[str, Any]:
    """A record in the runtime's shape: inputs x and group, a prediction per row."""
    return {
        "request_id": request_id,
        "timestamp": "2026-11-30T10:00:00.000001+00:00",
        "model_version": version,
        "revision": f"svc-{version}",
        "sample_rate": 1.0,
        "rows": len(rows),
        "row_offset": 0,
        "inputs": [{"x": x, "group": g} for x, g in rows],
        "predictions": [int(x > 0) for x, _ in rows],
        **extra,
    }


RECORDS = [
    _record("a", [(1.0, "A")]),
    _record("b", [(-1.0, "B")], version="v2"),
    _record("m", [(2.0, "A"), (-2.0, "B"), (3.0, "B")]),
]


def _folder(path: Path, records: list[dict[str, Any]]) -> Path:
    """The records as the service's file sink publishes them, two files plus a staging one."""
    sink = FileSink(str(path), rotate_bytes=1, rotate_seconds=300.0)  # one file per record
    for record in records:
        sink.write(record)
    sink.close()
    (path / ".predictions-still-writing.jsonl.tmp").write_text("{half a rec", encoding="utf-8")
    return path


def test_folder_of_jsonl_gives_one_row_per_predicted_row(tmp_path: Path) -> None:
    frame = load_predictions(str(_folder(tmp_path / "log", RECORDS)))
    assert len(list((tmp_path / "log").glob("predictions-*.jsonl"))) == 3
    assert list(frame.columns[:8]) == [
        "request_id",
        "row",
        "timestamp",
        "model_version",
        "revision",
        "prediction",
        "probabilities",
        "classes",
    ]
    assert set(frame.columns[8:]) == {"x", "group"}
    assert len(frame) == 5
    multi = frame[frame["request_id"] == "m"].sort_values("row")
    assert multi["row"].tolist() == [0, 1, 2]
    assert multi["x"].tolist() == [2.0, -2.0, 3.0]
    assert multi["prediction"].tolist() == [1, 0, 1]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame.set_index("request_id").loc["b", "model_version"] == "v2"
    assert frame["probabilities"].isna().all()


def test_row_offset_of_a_split_record_numbers_rows_within_the_request(tmp_path: Path) -> None:
    first = {**_record("big", [(1.0, "A"), (2.0, "A")]), "rows": 2}
    second = {**_record("big", [(-3.0, "B")]), "row_offset": 2}
    path = tmp_path / "split.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (first, second)), encoding="utf-8")
    frame = load_predictions(str(path)).sort_values("row")
    assert frame["row"].tolist() == [0, 1, 2]
    assert frame["x"].tolist() == [1.0, 2.0, -3.0]


def test_stdout_capture_mixed_with_other_log_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = StdoutSink()
    for record in RECORDS:
        sink.write(record)
    sink.flush()
    entries = capsys.readouterr().out.splitlines()
    capture = [
        "INFO:     Started server process [4242]",
        '{"severity": "INFO", "message": "GET /healthz 200"}',
        entries[0],
        'INFO:     127.0.0.1:50000 - "POST /predict HTTP/1.1" 200 OK',
        *entries[1:],
        "",
    ]
    path = tmp_path / "stdout.log"
    path.write_text("\n".join(capture), encoding="utf-8")
    frame = load_predictions(str(path))
    assert sorted(frame["request_id"]) == ["a", "b", "m", "m", "m"]


def test_cloud_logging_export_with_json_payload(tmp_path: Path) -> None:
    entries = [
        {"labels": {"nb2prod_log": "predictions"}, "jsonPayload": record} for record in RECORDS
    ]
    entries.append({"labels": {"other": "x"}, "jsonPayload": {"message": "hello"}})
    path = tmp_path / "export.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    assert len(load_predictions(str(path))) == 5


def test_parquet_of_records(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame.from_records(RECORDS).to_parquet(path)
    frame = load_predictions(str(path))
    assert len(frame) == 5
    assert sorted(frame["x"]) == [-2.0, -1.0, 1.0, 2.0, 3.0]


def test_probabilities_and_classes_per_row(tmp_path: Path) -> None:
    record = _record(
        "p",
        [(1.0, "A"), (-1.0, "B")],
        probabilities=[[0.2, 0.8], [0.9, 0.1]],
        classes=[0, 1],
    )
    keyed = _record("q", [(1.0, "A")], probabilities=[{"no": 0.3, "yes": 0.7}])
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(keyed) + "\n", encoding="utf-8")
    frame = load_predictions(str(path)).set_index(["request_id", "row"])
    assert frame.loc[("p", 1), "probabilities"] == [0.9, 0.1]
    assert frame.loc[("p", 1), "classes"] == [0, 1]
    assert frame.loc[("q", 0), "classes"] == ["no", "yes"]
    assert frame.loc[("q", 0), "probabilities"] == [0.3, 0.7]


def test_labels_csv_and_parquet_join_on_request_and_row(tmp_path: Path) -> None:
    predictions = load_predictions(str(_folder(tmp_path / "log", RECORDS)))
    labels = pd.DataFrame(
        {
            "request_id": ["a", "b", "m", "m", "zzz"],
            "row": [0, 0, 0, 2, 0],
            "label": [1, 1, 1, 0, 1],
            "note": ["", "", "", "", "unmatched"],
        }
    )
    labels.to_csv(tmp_path / "labels.csv", index=False)
    labels.to_parquet(tmp_path / "labels.parquet")
    for name in ("labels.csv", "labels.parquet"):
        loaded = load_labels(str(tmp_path / name), "request_id")
        assert list(loaded.columns) == ["request_id", "row", "label"]
        joined = join(predictions, loaded, "request_id")
        assert joined.counts == {
            "logged": 5,
            "labelled": 5,
            "joined": 4,
            "unmatched_labels": 1,
            "unmatched_predictions": 1,
        }
        got = joined.frame.set_index(["request_id", "row"])
        assert got.loc[("m", 2), "label"] == 0
        assert got.loc[("m", 2), "x"] == 3.0
        assert ("m", 1) not in got.index


def test_labels_without_row_join_one_row_requests_and_refuse_multi_row(tmp_path: Path) -> None:
    predictions = load_predictions(str(_folder(tmp_path / "log", RECORDS)))
    (tmp_path / "one.csv").write_text("request_id,label\na,1\nb,0\n", encoding="utf-8")
    joined = join(predictions, load_labels(str(tmp_path / "one.csv"), "request_id"), "request_id")
    assert sorted(joined.frame["request_id"]) == ["a", "b"]
    assert joined.counts["unmatched_predictions"] == 3
    (tmp_path / "multi.csv").write_text("request_id,label\na,1\nm,0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"request_id=m, 3 rows.*no 'row' column") as info:
        join(predictions, load_labels(str(tmp_path / "multi.csv"), "request_id"), "request_id")
    assert "row" in (info.value.hint or "")


def test_join_on_an_input_column_many_predictions_one_label(tmp_path: Path) -> None:
    predictions = load_predictions(str(_folder(tmp_path / "log", RECORDS)))
    # CSV reads 2 as an int, the log has 2.0: one key.
    (tmp_path / "by_x.csv").write_text("x,label\n2,1\n-1,0\n99,1\n", encoding="utf-8")
    joined = join(predictions, load_labels(str(tmp_path / "by_x.csv"), "x"), "x")
    assert sorted(joined.frame["x"]) == [-1.0, 2.0]
    assert joined.counts["unmatched_labels"] == 1


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    log = _folder(tmp_path / "log", RECORDS)
    predictions = load_predictions(str(log))
    (tmp_path / "nolabel.csv").write_text("request_id,truth\na,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"nolabel.csv have no 'label' column"):
        load_labels(str(tmp_path / "nolabel.csv"), "request_id")
    (tmp_path / "nokey.csv").write_text("id,label\na,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no 'request_id' column"):
        load_labels(str(tmp_path / "nokey.csv"), "request_id")
    with pytest.raises(ConfigError, match=r"--key 'customer' is not a column"):
        join(predictions, load_labels(str(tmp_path / "nokey.csv"), "id"), "customer")
    (tmp_path / "dup.csv").write_text("request_id,label\na,1\na,0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="labelled more than once"):
        join(predictions, load_labels(str(tmp_path / "dup.csv"), "request_id"), "request_id")

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no prediction log files"):
        load_predictions(str(tmp_path / "empty"))
    (tmp_path / "other.log").write_text("INFO: nothing here\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no prediction records found"):
        load_predictions(str(tmp_path / "other.log"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_predictions(str(tmp_path / "missing"))

    broken = log / "predictions-broken.jsonl"
    broken.write_text(json.dumps(RECORDS[0]) + "\n" + '{"request_id": "c", "inp\n')
    with pytest.raises(ConfigError, match=r"predictions-broken.jsonl, line 2") as info:
        load_predictions(str(log))
    assert isinstance(info.value, Nb2ProdError) and info.value.hint
    cut = tmp_path / "cut.log"
    cut.write_text('INFO start\n{"labels": {"nb2prod_log": "predictions"}, "reque\n')
    with pytest.raises(ConfigError, match=r"cut.log, line 2"):
        load_predictions(str(cut))


def test_bigquery_sink_shape_in_parquet(tmp_path: Path) -> None:
    """A log sink's BigQuery table (exported to Parquet): the record sits in jsonPayload, the
    marker in the labels column, beside other services' entries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "logName": "projects/p/logs/run.googleapis.com%2Fstdout",
            "labels": {"nb2prod_log": "predictions"},
            "jsonPayload": {k: v for k, v in record.items() if k != "sample_rate"},
        }
        for record in RECORDS
    ]
    rows.append({"logName": "x", "labels": {"nb2prod_log": None}, "jsonPayload": {"message": "hi"}})
    path = tmp_path / "sink.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    frame = load_predictions(str(path))
    assert sorted(frame["request_id"]) == ["a", "b", "m", "m", "m"]
    assert frame.set_index(["request_id", "row"]).loc[("m", 1), "group"] == "B"


def test_bigquery_without_the_extra_names_it() -> None:
    pytest.importorskip("pyarrow")
    try:
        import pandas_gbq  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pandas-gbq is installed here")
    from nb2prod.errors import MissingExtraError

    with pytest.raises(MissingExtraError) as info:
        load_predictions("bq://my-project.logs.stdout")
    assert info.value.hint == "pip install 'nb2prod[bigquery]'"
    with pytest.raises(ConfigError, match="is not bq://project.dataset.table"):
        load_labels("bq://just-a-table", "request_id")


def test_an_input_named_label_does_not_hide_the_label(tmp_path: Path) -> None:
    """A request that carries a column called label (the batch file had the target in it) is
    logged as input.label; the joined label is the ground truth's."""
    record = _record("a", [(1.0, "A")])
    record["inputs"] = [{"x": 1.0, "label": "from the request"}]
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    (tmp_path / "labels.csv").write_text("request_id,label\na,1\n", encoding="utf-8")
    joined = join(
        load_predictions(str(path)), load_labels(str(tmp_path / "labels.csv"), "request_id"),
        "request_id",
    )  # fmt: skip
    assert joined.frame.loc[0, "label"] == 1
    assert joined.frame.loc[0, "input.label"] == "from the request"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"predictions": 1, "inputs": {"x": 1}}, "inputs or predictions that are not lists"),
        ({"probabilities": [], "classes": [0, 1]}, "probabilities that do not match"),
        ({"inputs": [[1.0, "A"]]}, r"input rows that are not \{column: value\} objects"),
        ({"row_offset": "x"}, "a row_offset that is not a whole number"),
        ({"timestamp": "yesterday"}, "the timestamp 'yesterday', not an ISO 8601 time"),
    ],
)
def test_a_damaged_record_is_a_clear_error(
    tmp_path: Path, damage: dict[str, Any], message: str
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({**_record("a", [(1.0, "A")]), **damage}) + "\n", "utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_predictions(str(path))
    assert "log.jsonl" in info.value.message and "'a'" in info.value.message


def test_files_that_are_not_text_are_read_as_parquet_or_refused(tmp_path: Path) -> None:
    """A Parquet file without the .parquet suffix is read by its magic bytes; any other
    binary file is a clear error, not a decoding traceback."""
    renamed = tmp_path / "predictions-export"
    pd.DataFrame.from_records(RECORDS).to_parquet(renamed)
    assert len(load_predictions(str(renamed))) == 5
    binary = tmp_path / "predictions.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x01 not text")
    with pytest.raises(ConfigError, match="is neither text .* nor Parquet"):
        load_predictions(str(binary))


def test_a_cloud_logging_entry_keeps_its_time_when_the_payload_lost_it(tmp_path: Path) -> None:
    """Cloud Logging may move a payload's timestamp to the entry: the entry's is used."""
    record = {k: v for k, v in _record("a", [(1.0, "A")]).items() if k != "timestamp"}
    entry = {
        "timestamp": "2026-11-30T10:00:05.5Z",
        "labels": {"nb2prod_log": "predictions"},
        "jsonPayload": record,
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps([entry]), encoding="utf-8")
    frame = load_predictions(str(path))
    assert frame.loc[0, "timestamp"] == pd.Timestamp("2026-11-30T10:00:05.5Z")
