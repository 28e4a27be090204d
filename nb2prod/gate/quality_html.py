"""The quality report as one self-contained HTML page: the thing a reviewer opens.

:func:`render_html` turns the report that ``nb2prod quality --json`` prints into one page:
the sources and row counts, the verdict with its thresholds, the notes, and per model
version the metrics with their confidence intervals, the fairness groups and the drift per
feature. The plots (quality_html_plots.py) are inline SVG, and nothing on the page is
fetched when it opens (no script, stylesheet, font or image from the network), so the file
can be attached to a CI run or mailed as it is.

Every text that comes from the user's data (model versions, group values, column names,
notes) goes through the template's autoescaping. The report is read defensively: optional
parts may be null or missing and numbers may be null or NaN; the page still renders.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..errors import ConfigError
from .quality_html_plots import (
    Figures,
    dict_of,
    group_label,
    list_of,
    main_metric,
    number,
    require_matplotlib,
    text_of,
    version_name,
)

__all__ = ["SIGNATURE", "render_html", "write_html"]

#: In the head of every page written here: how ``nb2prod quality --html`` tells its own earlier
#: report (which it replaces) from any other file (which it never touches).
SIGNATURE = '<meta name="generator" content="nb2prod quality">'

#: Shown for a null, NaN or missing number.
MISSING = "n/a"

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nb2prod quality">
<title>Quality report: {{ task }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #1a7f37; font-weight: bold; } .fail { color: #cf222e; font-weight: bold; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
section.version { border-top: 2px solid #ddd; margin-top: 2em; }
</style>
</head>
<body>
<header>
<h1>Quality report</h1>
<p class="generated">Generated at {{ generated_at }}</p>
<table id="sources">
{% for label, value in sources %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<table id="rows">
{% for label, value in rows %}<tr><th>{{ label }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}</table>
</header>
<section id="verdict">
<h2>Verdict: <span class="{{ verdict_class }}">{{ verdict }}</span></h2>
{% if thresholds %}<table id="thresholds">
<tr><th>Threshold</th><th>Model version</th><th>Limit</th><th>Value</th><th>Result</th></tr>
{% for t in thresholds %}<tr><td>{{ t.name }}</td><td>{{ t.version }}</td>
<td class="num">{{ t.limit }}</td><td class="num">{{ t.value }}</td>
<td class="{{ t.css }}">{{ t.result }}</td></tr>
{% endfor %}</table>
{% else %}<p>No thresholds were set.</p>{% endif %}
</section>
{% if notes %}<section id="notes"><h2>Notes</h2><ul>
{% for note in notes %}<li>{{ note }}</li>
{% endfor %}</ul></section>{% endif %}
<section id="overview">
<h2>Model versions</h2>
{% if not versions %}<p>The report holds no model version.</p>{% endif %}
{% for figure in overview %}<figure>{{ figure.svg }}
<figcaption>{{ figure.caption }}</figcaption></figure>
{% endfor %}{% for sentence in parity %}<p class="parity">{{ sentence }}</p>
{% endfor %}</section>
{% for v in versions %}<section class="version">
<h2>Model version {{ v.name }}</h2>
<table class="facts">
{% for label, value in v.facts %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h3>Metrics</h3>
{% if v.metrics %}<table class="metrics">
<tr><th>Metric</th><th>Value</th><th>95% CI low</th><th>95% CI high</th></tr>
{% for m in v.metrics %}<tr><td>{{ m.name }}</td><td class="num">{{ m.value }}</td>
<td class="num">{{ m.low }}</td><td class="num">{{ m.high }}</td></tr>
{% endfor %}</table>{% else %}<p>No metric could be computed.</p>{% endif %}
<h3>Fairness</h3>
{% if v.fairness %}<p>By {{ v.fairness.by }}. {{ v.fairness.sentence }}</p>
<table class="fairness">
<tr><th>Group</th><th>Rows</th>
{% for name in v.fairness.names %}<th>{{ name }}</th>{% endfor %}</tr>
{% for g in v.fairness.groups %}<tr><td>{{ g.label }}</td><td class="num">{{ g.rows }}</td>
{% for value in g.cells %}<td class="num">{{ value }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% else %}<p>No fairness segments (run with <code>--by COLUMN</code>).</p>{% endif %}
<h3>Drift</h3>
{% if v.drift %}<p>Reference: {{ v.drift.reference }}. {{ v.drift.sentence }}</p>
{% if v.drift.svg %}<figure>{{ v.drift.svg }}
<figcaption>Drift statistic per feature</figcaption></figure>{% endif %}
<table class="drift">
<tr><th>Feature</th><th>Test</th><th>Statistic</th><th>p-value</th><th>Drifted</th></tr>
{% for f in v.drift.features %}<tr><td>{{ f.name }}</td><td>{{ f.test }}</td>
<td class="num">{{ f.statistic }}</td><td class="num">{{ f.p_value }}</td>
<td class="{{ f.css }}">{{ f.drifted }}</td></tr>
{% endfor %}</table>{% else %}<p>No drift statistics (no training reference).</p>{% endif %}
</section>
{% endfor %}</body>
</html>
"""

_ENVIRONMENT = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
)


def write_html(report: dict[str, Any], path: Path, *, generated_at: datetime | None = None) -> None:
    """Write the report's page to ``path`` at once: a reader never finds it half written.

    The page goes to a temporary file in the same folder first and is renamed over ``path``
    (a rename within one file system is atomic), so a failed render leaves any earlier
    report as it was.
    """
    page = render_html(report, generated_at=generated_at).encode("utf-8")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as err:
        raise ConfigError(
            f"cannot write the HTML report to {path}: {err}", hint="choose a writable path"
        ) from err
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(page)
        # mkstemp makes the file private; a report is for reading, as any other output is.
        Path(temporary).chmod(0o644)
        Path(temporary).replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise ConfigError(
            f"cannot write the HTML report to {path}: {err}", hint="choose a writable path"
        ) from err
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


def render_html(report: dict[str, Any], *, generated_at: datetime | None = None) -> str:
    """The report as one self-contained HTML page; the same report and time give the same bytes.

    ``generated_at`` (default: now) is the page's only timestamp of its own.
    """
    require_matplotlib()
    when = generated_at or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    versions = [v for v in list_of(report.get("versions")) if isinstance(v, dict)]
    metric = main_metric(report.get("task"), versions)
    figures = Figures(metric)
    context = {
        "task": text_of(report.get("task")),
        "generated_at": when.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "sources": [
            ("Predictions", text_of(report.get("predictions"))),
            ("Labels", text_of(report.get("labels"))),
            ("Key", text_of(report.get("key"))),
            ("Task", text_of(report.get("task"))),
            *_positive_label(report),
        ],
        "rows": _row_counts(dict_of(report.get("rows"))),
        **_verdict(report),
        "notes": [text_of(note) for note in list_of(report.get("notes"))],
        "overview": [
            {"svg": _trusted(svg), "caption": caption}
            for svg, caption in figures.overview(versions)
        ],
        "parity": [s for s in (_parity_sentence(v) for v in versions) if s],
        "versions": [_version(v, figures) for v in versions],
    }
    return _ENVIRONMENT.from_string(_TEMPLATE).render(context)


def _trusted(svg: str) -> Markup:
    # matplotlib's SVG writer escapes the names it draws (they appear only as glyph
    # outlines and an escaped comment), so the SVG goes into the page as it is.
    return Markup(svg)  # noqa: S704


def _positive_label(report: dict[str, Any]) -> list[tuple[str, str]]:
    # A binary classifier's precision and recall are about this class.
    if report.get("positive_label") is None:
        return []
    return [("Positive label", text_of(report["positive_label"]))]


def _row_counts(rows: dict[str, Any]) -> list[tuple[str, str]]:
    labels = {
        "logged": "Predictions logged",
        "labelled": "Labels",
        "joined": "Joined rows",
        "unmatched_labels": "Labels with no prediction",
        "unmatched_predictions": "Predictions with no label",
    }
    return [(label, _count(rows.get(name))) for name, label in labels.items()]


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    passed = report.get("passed")
    thresholds = []
    for threshold in list_of(report.get("thresholds")):
        threshold = dict_of(threshold)
        ok = threshold.get("passed")
        thresholds.append(
            {
                "name": text_of(threshold.get("name")),
                "version": text_of(threshold.get("model_version")),
                "limit": _metric(threshold.get("limit")),
                "value": _metric(threshold.get("value")),
                "result": "pass" if ok is True else "FAIL" if ok is False else MISSING,
                "css": "pass" if ok is True else "fail" if ok is False else "",
            }
        )
    return {
        "verdict": "PASSED" if passed is True else "FAILED" if passed is False else MISSING,
        "verdict_class": "pass" if passed is True else "fail" if passed is False else "",
        "thresholds": thresholds,
    }


def _version(version: dict[str, Any], figures: Figures) -> dict[str, Any]:
    revisions = [text_of(r) for r in list_of(version.get("revisions"))]
    metrics = dict_of(version.get("metrics"))
    return {
        "name": version_name(version),
        "facts": [
            ("Revisions", ", ".join(revisions) or MISSING),
            ("Rows", _count(version.get("rows"))),
            ("First prediction", text_of(version.get("first")) or MISSING),
            ("Last prediction", text_of(version.get("last")) or MISSING),
            *([("Time bucket", text_of(version["bucket"]))] if version.get("bucket") else []),
        ],
        "metrics": [
            {
                "name": text_of(name),
                "value": _metric(dict_of(ci).get("value")),
                "low": _metric(dict_of(ci).get("low")),
                "high": _metric(dict_of(ci).get("high")),
            }
            for name, ci in metrics.items()
        ],
        "fairness": _fairness(version),
        "drift": _drift(version, figures),
    }


def _fairness(version: dict[str, Any]) -> dict[str, Any] | None:
    fairness = version.get("fairness")
    if not isinstance(fairness, dict):
        return None
    groups = [dict_of(g) for g in list_of(fairness.get("groups"))]
    names = list(dict.fromkeys(n for g in groups for n in dict_of(g.get("metrics"))))
    return {
        "by": ", ".join(text_of(c) for c in list_of(fairness.get("by"))) or MISSING,
        "sentence": _parity_numbers(fairness),
        "names": names,
        "groups": [
            {
                "label": group_label(g),
                "rows": _count(g.get("rows")),
                "cells": [_metric(dict_of(g.get("metrics")).get(n)) for n in names],
            }
            for g in groups
        ],
    }


def _parity_numbers(fairness: dict[str, Any]) -> str:
    return (
        f"Demographic parity difference {_metric(fairness.get('demographic_parity_difference'))}, "
        f"equalized odds difference {_metric(fairness.get('equalized_odds_difference'))}."
    )


def _parity_sentence(version: dict[str, Any]) -> str:
    fairness = version.get("fairness")
    if not isinstance(fairness, dict):
        return ""
    return f"Model version {version_name(version)}: {_parity_numbers(fairness)}"


def _drift(version: dict[str, Any], figures: Figures) -> dict[str, Any] | None:
    drift = version.get("drift")
    if not isinstance(drift, dict):
        return None
    features = [dict_of(f) for f in list_of(drift.get("features"))]
    drifted = [text_of(f.get("name")) for f in features if f.get("drifted") is True]
    if drifted:
        sentence = f"Drifted: {', '.join(drifted)}."
    else:
        sentence = "No feature drifted." if features else "No feature was tested."
    svg = figures.drift(version_name(version), features)
    return {
        "reference": text_of(drift.get("reference")) or MISSING,
        "sentence": sentence,
        "svg": _trusted(svg) if svg else "",
        "features": [
            {
                "name": text_of(f.get("name")),
                "test": text_of(f.get("test")),
                "statistic": _metric(f.get("statistic")),
                "p_value": _number_text(f.get("p_value"), ".3g"),
                "drifted": "yes" if f.get("drifted") is True else "no",
                "css": "fail" if f.get("drifted") is True else "",
            }
            for f in features
        ],
    }


def _number_text(value: Any, spec: str) -> str:
    parsed = number(value)
    if parsed is None:
        return MISSING
    if math.isinf(parsed):
        return "inf" if parsed > 0 else "-inf"
    return format(parsed, spec)


def _metric(value: Any) -> str:
    return _number_text(value, ".4f")


def _count(value: Any) -> str:
    parsed = number(value)
    return MISSING if parsed is None or math.isinf(parsed) else str(int(parsed))
