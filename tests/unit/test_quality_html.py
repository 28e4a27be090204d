"""The HTML quality report: one self-contained page, escaped, deterministic, written atomically.

The reports here are built by hand in the shape ``nb2prod quality --json`` prints, and the
page is read back with html.parser: its tables' cells, its SVG plots, its links and ids.
Expected cells are the hand-built numbers formatted as the page shows numbers (four
decimals for metrics and statistics, three significant digits for p-values, "n/a" when a
number is missing).
"""

from __future__ import annotations

import html
import json
import math
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from nb2prod.errors import ConfigError, MissingExtraError
from nb2prod.gate import quality_html
from nb2prod.gate.quality_html import render_html, write_html

WHEN = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)
#: Markup, a comment's end, and a mathtext expression matplotlib would fail to typeset.
EVIL_VERSION = 'v2"><script>alert(1)</script>--><script>alert(2)</script>$\\nosuch{x}$'
EVIL_GROUP = "<img src=x onerror=alert(3)>"
EVIL_COLUMN = "<b>segment</b>"


class Page(HTMLParser):
    """The parts of a page the tests look at: tags, tables by id or class, text by tag."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[tuple[str, list[list[str]]]] = []  # (id or class, rows of cells)
        self.texts: dict[str, list[str]] = {}  # tag -> texts of each such element
        self.comments: list[str] = []
        self._open: list[str] = []
        self._cell: list[str] | None = None
        self._captured: list[tuple[str, list[str]]] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self.tables.append((attributes.get("id") or attributes.get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        if tag in ("h1", "h2", "h3", "p", "li", "figcaption", "title"):
            self._captured.append((tag, []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        if self._captured and self._captured[-1][0] == tag:
            name, parts = self._captured.pop()
            self.texts.setdefault(name, []).append(" ".join("".join(parts).split()))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, parts in self._captured:
            parts.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)

    def table(self, name: str, index: int = 0) -> list[list[str]]:
        return [rows for table, rows in self.tables if table == name][index]

    def attributes(self) -> list[tuple[str, str, str]]:
        return [(tag, k, v or "") for tag, attrs in self.tags for k, v in attrs.items()]


def interval(value: float, half: float = 0.05) -> dict[str, float]:
    return {"value": value, "low": value - half, "high": value + half}


def buckets(metric: str, values: list[float]) -> list[dict[str, Any]]:
    return [
        {
            "start": f"2026-11-30T{10 + i:02d}:00:00+00:00",
            "end": f"2026-11-30T{10 + i:02d}:59:59+00:00",
            "rows": 25,
            "metrics": {metric: value},
        }
        for i, value in enumerate(values)
    ]


def classification_version(name: str, accuracy: float, by: str = "sex") -> dict[str, Any]:
    return {
        "model_version": name,
        "revisions": [f"svc-{len(name)}"],
        "rows": 100,
        "first": "2026-11-30T10:00:00+00:00",
        "last": "2026-11-30T13:59:00+00:00",
        "metrics": {
            "accuracy": interval(accuracy),
            "precision": interval(accuracy - 0.02),
            "recall": interval(accuracy + 0.01),
            "f1": interval(accuracy - 0.01),
        },
        "over_time": buckets("accuracy", [accuracy - 0.01, accuracy, accuracy + 0.01, accuracy]),
        "fairness": {
            "by": [by],
            "groups": [
                {"group": {by: "f"}, "rows": 40, "metrics": {"accuracy": accuracy - 0.1}},
                {"group": {by: "m"}, "rows": 60, "metrics": {"accuracy": accuracy + 0.05}},
            ],
            "demographic_parity_difference": 0.125,
            "equalized_odds_difference": 0.25,
        },
        "drift": {
            "reference": "training frame",
            "drifted": True,
            "features": [
                {
                    "name": "age",
                    "test": "ks",
                    "statistic": 0.31,
                    "p_value": 0.0000123,
                    "drifted": True,
                },
                {
                    "name": "income",
                    "test": "ks",
                    "statistic": 0.05,
                    "p_value": 0.61,
                    "drifted": False,
                },
                {
                    "name": "city",
                    "test": "chi2",
                    "statistic": 3.5,
                    "p_value": None,
                    "drifted": False,
                },
            ],
        },
    }


def classification_report(second: str = "v2") -> dict[str, Any]:
    return {
        "predictions": "logs/",
        "labels": "labels.csv",
        "key": "request_id",
        "task": "classification",
        "rows": {
            "logged": 210,
            "labelled": 205,
            "joined": 200,
            "unmatched_labels": 5,
            "unmatched_predictions": 10,
        },
        "versions": [classification_version("v1", 0.8), classification_version(second, 0.875)],
        "thresholds": [
            {
                "name": "min_accuracy",
                "limit": 0.85,
                "model_version": "v1",
                "value": 0.8,
                "passed": False,
            },
            {
                "name": "min_accuracy",
                "limit": 0.85,
                "model_version": second,
                "value": 0.875,
                "passed": True,
            },
        ],
        "passed": False,
        "notes": ["roc_auc left out: the log holds no probabilities"],
    }


def regression_report() -> dict[str, Any]:
    return {
        "predictions": "gs://bucket/predictions/",
        "labels": "truth.parquet",
        "key": "house_id",
        "task": "regression",
        "rows": {
            "logged": 50,
            "labelled": 50,
            "joined": 50,
            "unmatched_labels": 0,
            "unmatched_predictions": 0,
        },
        "versions": [
            {
                "model_version": "2026.11.30-1",
                "revisions": ["houses-00001-abc"],
                "rows": 50,
                "first": "2026-11-30T10:00:00+00:00",
                "last": "2026-11-30T11:00:00+00:00",
                "metrics": {
                    "mae": interval(1234.5, 100.0),
                    "rmse": interval(1800.25, 150.0),
                    "r2": interval(0.71),
                },
                "over_time": buckets("mae", [1200.0, 1270.0]),
                "fairness": None,
                "drift": None,
            }
        ],
        "thresholds": [],
        "passed": True,
        "notes": [],
    }


def f4(value: float) -> str:
    return f"{value:.4f}"


def assert_self_contained(page: Page) -> None:
    """No script, no handler, nothing fetched, and every in-page reference resolves."""
    assert page.count("script") == 0
    assert page.count("link") == 0
    assert page.count("img") == 0
    assert page.count("iframe") == 0
    ids = [value for _, name, value in page.attributes() if name == "id"]
    assert len(ids) == len(set(ids)), "ids repeat across the inline SVGs"
    for tag, name, value in page.attributes():
        assert not name.startswith("on"), (tag, name, value)
        if name in ("src", "href", "xlink:href", "action", "srcset"):
            assert value.startswith("#"), (tag, name, value)
            assert value[1:] in ids, (tag, name, value)
        if name == "style" or "url(" in value:
            assert "http" not in value, (tag, name, value)


def test_classification_page_holds_every_part(tmp_path: Path) -> None:
    report = classification_report()
    path = tmp_path / "report.html"
    write_html(report, path, generated_at=WHEN)
    page = Page(path.read_text(encoding="utf-8"))

    assert_self_contained(page)
    # Over time, per version with its CI, per-group bars, and one drift plot per version.
    assert page.count("svg") == 5
    assert f"Generated at {WHEN.isoformat()}" in page.texts["p"]
    assert page.table("sources") == [
        ["Predictions", "logs/"],
        ["Labels", "labels.csv"],
        ["Key", "request_id"],
        ["Task", "classification"],
    ]
    assert [row[1] for row in page.table("rows")] == ["210", "205", "200", "5", "10"]
    assert "Verdict: FAILED" in page.texts["h2"]
    assert page.table("thresholds")[1:] == [
        ["min_accuracy", "v1", f4(0.85), f4(0.8), "FAIL"],
        ["min_accuracy", "v2", f4(0.85), f4(0.875), "pass"],
    ]
    assert "roc_auc left out: the log holds no probabilities" in page.texts["li"]

    assert ["Model version v1", "Model version v2"] == [
        h for h in page.texts["h2"] if h.startswith("Model version ")
    ]
    metrics = page.table("metrics", 1)
    assert metrics[0] == ["Metric", "Value", "95% CI low", "95% CI high"]
    assert metrics[1] == ["accuracy", f4(0.875), f4(0.825), f4(0.925)]
    assert [row[0] for row in metrics[1:]] == ["accuracy", "precision", "recall", "f1"]

    fairness = page.table("fairness")
    assert fairness == [
        ["Group", "Rows", "accuracy"],
        ["sex=f", "40", f4(0.8 - 0.1)],
        ["sex=m", "60", f4(0.8 + 0.05)],
    ]
    parity = [p for p in page.texts["p"] if "parity" in p]
    assert any("v1" in p and f4(0.125) in p and f4(0.25) in p for p in parity)

    drift = page.table("drift")
    assert drift[1:] == [
        ["age", "ks", f4(0.31), "1.23e-05", "yes"],
        ["income", "ks", f4(0.05), "0.61", "no"],
        ["city", "chi2", f4(3.5), "n/a", "no"],
    ]
    assert any(p.endswith("Drifted: age.") for p in page.texts["p"])
    captions = page.texts["figcaption"]
    assert "accuracy per model version over time (UTC)" in captions
    assert "accuracy per group and model version (fairness)" in captions


def test_user_text_comes_out_escaped() -> None:
    report = classification_report(second=EVIL_VERSION)
    report["versions"][1] = classification_version(EVIL_VERSION, 0.875, by=EVIL_COLUMN)
    report["versions"][1]["fairness"]["groups"][0]["group"] = {EVIL_COLUMN: EVIL_GROUP}
    report["notes"].append("<script>alert(4)</script>")
    source = render_html(report, generated_at=WHEN)
    page = Page(source)

    assert_self_contained(page)
    assert "<script" not in source.lower()
    assert "<img" not in source.lower()
    assert "<b>" not in source
    # The texts are all there, as text: the parser reads them back unchanged.
    assert f"Model version {EVIL_VERSION}" in page.texts["h2"]
    assert "<script>alert(4)</script>" in page.texts["li"]
    assert f"{EVIL_COLUMN}={EVIL_GROUP}" in [row[0] for row in page.table("fairness", 1)]
    assert EVIL_VERSION in [row[1] for row in page.table("thresholds")]
    # Each plot that names the version drew it as text, not as mathtext (where the unknown
    # command fails); matplotlib leaves the text in an escaped comment, "--" split apart.
    assert page.count("svg") == 5
    drawn = EVIL_VERSION.replace("--", "- -")
    assert sum(drawn in html.unescape(c) for c in page.comments) >= 3


def test_regression_page_without_fairness_or_drift() -> None:
    page = Page(render_html(regression_report(), generated_at=WHEN))

    assert_self_contained(page)
    assert page.count("svg") == 2  # MAE over time, MAE per version with its CI
    assert "Verdict: PASSED" in page.texts["h2"]
    assert "No thresholds were set." in page.texts["p"]
    assert page.table("metrics")[1:] == [
        ["mae", f4(1234.5), f4(1134.5), f4(1334.5)],
        ["rmse", f4(1800.25), f4(1650.25), f4(1950.25)],
        ["r2", f4(0.71), f4(0.66), f4(0.76)],
    ]
    assert "No fairness segments (run with --by COLUMN)." in page.texts["p"]
    assert "No drift statistics (no training reference)." in page.texts["p"]
    assert "mae per model version over time (UTC)" in page.texts["figcaption"]
    assert not [t for t, _ in page.tables if t in ("fairness", "drift")]


def test_edge_cases_render_with_what_there_is() -> None:
    report = regression_report()
    version = report["versions"][0]
    version.update(
        rows=1,
        revisions=[],
        first=None,
        metrics={"mae": {"value": 3.0, "low": None, "high": None}, "r2": interval(math.nan)},
        over_time=buckets("mae", [3.0]),  # one time bucket
        drift={
            "reference": None,
            "drifted": False,
            "features": [
                {
                    "name": "x",
                    "test": "psi",
                    "statistic": math.inf,
                    "p_value": math.nan,
                    "drifted": False,
                },
            ],
        },
    )
    empty = {
        "model_version": None,
        "rows": 0,
        "metrics": {},
        "over_time": [],
        "fairness": {"by": ["g"], "groups": []},
    }
    report["versions"].append(empty)
    report["rows"] = None
    report.pop("passed")
    page = Page(render_html(report, generated_at=WHEN))

    assert_self_contained(page)
    # The single bucket still makes an over-time plot; the CI plot has the one version with
    # a value; an infinite statistic draws no drift bar.
    assert page.count("svg") == 2
    assert "Verdict: n/a" in page.texts["h2"]
    assert [row[1] for row in page.table("rows")] == ["n/a"] * 5
    assert page.table("metrics")[1:] == [
        ["mae", f4(3.0), "n/a", "n/a"],
        ["r2", "n/a", "n/a", "n/a"],
    ]
    facts = dict(map(tuple, page.table("facts")))  # type: ignore[arg-type]
    assert facts == {
        "Revisions": "n/a",
        "Rows": "1",
        "First prediction": "n/a",
        "Last prediction": "2026-11-30T11:00:00+00:00",
    }
    assert page.table("drift")[1:] == [["x", "psi", "inf", "n/a", "no"]]
    assert "Model version (no version)" in page.texts["h2"]
    assert "No metric could be computed." in page.texts["p"]
    assert page.table("fairness") == [["Group", "Rows"]]


@pytest.mark.parametrize(
    "report",
    [
        {},
        {"task": "classification", "versions": []},
        {"versions": [{}], "thresholds": [{}], "notes": [None, 3]},
        {"task": "other", "versions": [{"model_version": "a", "metrics": {"loss": interval(0.3)}}]},
    ],
)
def test_sparse_reports_still_render(report: dict[str, Any]) -> None:
    page = Page(render_html(report, generated_at=WHEN))
    assert_self_contained(page)
    assert "Quality report" in page.texts["h1"]


def test_same_report_same_bytes() -> None:
    first = render_html(classification_report(), generated_at=WHEN)
    second = render_html(classification_report(), generated_at=WHEN)
    later = render_html(
        classification_report(), generated_at=datetime(2027, 1, 1, tzinfo=timezone.utc)
    )
    assert first == second
    differing = [
        (a, b) for a, b in zip(first.splitlines(), later.splitlines(), strict=True) if a != b
    ]
    assert differing == [
        (
            f'<p class="generated">Generated at {WHEN.isoformat()}</p>',
            '<p class="generated">Generated at 2027-01-01T00:00:00+00:00</p>',
        )
    ]


def test_rendering_leaves_matplotlib_settings_alone() -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    render_html(classification_report(), generated_at=WHEN)
    assert dict(matplotlib.rcParams) == before
    assert (
        "matplotlib.pyplot" not in sys.modules
        or before["backend"] == matplotlib.rcParams["backend"]
    )


def test_write_replaces_the_old_report_at_once(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.html"
    write_html(regression_report(), path, generated_at=WHEN)
    first = path.read_bytes()
    write_html(classification_report(), path, generated_at=WHEN)
    assert path.read_bytes() != first
    assert Page(path.read_text(encoding="utf-8")).count("svg") == 5
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.html"
    path.write_text("old report", encoding="utf-8")

    def fail(self: Path, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(ConfigError, match="No space left"):
        write_html(classification_report(), path, generated_at=WHEN)
    assert path.read_text(encoding="utf-8") == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_failed_render_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(quality_html, "render_html", broken)
    with pytest.raises(RuntimeError):
        quality_html.write_html(regression_report(), tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_names_the_quality_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingExtraError) as caught:
        render_html(regression_report(), generated_at=WHEN)
    assert caught.value.extra == "quality"
    assert "nb2prod[quality]" in str(caught.value.hint)


def _logged_traffic(folder: Path) -> tuple[Path, Path, dict[str, list[tuple[str, int, int]]]]:
    """A prediction log and its labels; per version the (group, prediction, label) it served.

    v1 predicts ``x > 0`` right for 6 of 8 rows, v2 for 3 of 6, over two hours.
    """
    rows = {
        "v1": [(1.0, "A", 1), (2.0, "A", 1), (-1.0, "A", 0), (-2.0, "A", 1),
               (3.0, "B", 1), (-3.0, "B", 0), (4.0, "B", 0), (-4.0, "B", 0)],
        "v2": [(1.0, "A", 0), (2.0, "A", 1), (-1.0, "B", 1), (-2.0, "B", 0),
               (3.0, "A", 1), (-3.0, "B", 1)],
    }  # fmt: skip
    records, labels, served = [], ["request_id,label"], {}
    for version, items in rows.items():
        served[version] = []
        for i, (x, group, label) in enumerate(items):
            request_id = f"{version}-{i}"
            prediction = int(x > 0)
            records.append({
                "request_id": request_id,
                "timestamp": f"2026-11-30T{10 + i % 2}:{10 + i:02d}:00+00:00",
                "model_version": version,
                "revision": f"svc-{version}",
                "sample_rate": 1.0,
                "rows": 1,
                "row_offset": 0,
                "inputs": [{"x": x, "group": group}],
                "predictions": [prediction],
            })  # fmt: skip
            labels.append(f"{request_id},{label}")
            served[version].append((group, prediction, label))
    log = folder / "predictions.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    truth = folder / "labels.csv"
    truth.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return log, truth, served


def _accuracy(items: list[tuple[str, int, int]]) -> float:
    return sum(p == y for _, p, y in items) / len(items)


def _assert_page_shows(page: Page, served: dict[str, list[tuple[str, int, int]]]) -> None:
    assert_self_contained(page)
    for index, (version, items) in enumerate(served.items()):
        assert f"Model version {version}" in page.texts["h2"]
        accuracy = page.table("metrics", index)[1]
        assert accuracy[:2] == ["accuracy", f4(_accuracy(items))]
        groups = {row[0]: row for row in page.table("fairness", index)[1:]}
        for group in ("A", "B"):
            mine = [item for item in items if item[0] == group]
            assert groups[f"group={group}"][1] == str(len(mine))
            assert f4(_accuracy(mine)) in groups[f"group={group}"]
    # Over time, with CIs, per-group bars; no drift without a build directory.
    assert page.count("svg") == 3


def test_the_real_report_renders(tmp_path: Path) -> None:
    pytest.importorskip("fairlearn")
    from nb2prod.gate.quality import QualityOptions, quality_report

    log, truth, served = _logged_traffic(tmp_path)
    report = quality_report(QualityOptions(predictions=str(log), labels=str(truth), by=("group",)))
    path = tmp_path / "report.html"
    write_html(json.loads(json.dumps(report)), path, generated_at=WHEN)
    _assert_page_shows(Page(path.read_text(encoding="utf-8")), served)


def test_nb2prod_quality_html_writes_the_page(tmp_path: Path) -> None:
    pytest.importorskip("fairlearn")
    from helpers import run_cli

    log, truth, served = _logged_traffic(tmp_path)
    path = tmp_path / "reports" / "quality.html"
    common = ("quality", "--predictions", log, "--labels", truth, "--by", "group")
    result = run_cli(*common, "--html", path)
    assert result.returncode == 0, result.stderr
    page = Page(path.read_text(encoding="utf-8"))
    _assert_page_shows(page, served)
    assert "Verdict: PASSED" in page.texts["h2"]

    # Run again with a threshold v2 misses: the earlier report is replaced, and the page says
    # which version failed even though the command exits 17.
    result = run_cli(*common, "--html", path, "--min-accuracy", "0.6")
    assert result.returncode == 17, result.stderr
    page = Page(path.read_text(encoding="utf-8"))
    assert "Verdict: FAILED" in page.texts["h2"]
    assert page.table("thresholds")[1:] == [
        ["min_accuracy", "v1", f4(0.6), f4(_accuracy(served["v1"])), "pass"],
        ["min_accuracy", "v2", f4(0.6), f4(_accuracy(served["v2"])), "FAIL"],
    ]
    assert [p.name for p in path.parent.iterdir()] == ["quality.html"]
