"""The quality report's plots as inline SVG, and the readers of the report's values they share.

Plots are drawn by matplotlib (the ``quality`` extra, imported only when a page is rendered)
on a bare ``Figure`` with the Agg canvas: no pyplot, so no global figure state and no GUI
backend. Each SVG comes out byte for byte the same for the same report: a fixed hash salt,
no date or creator metadata, and ids renamed with the figure's number on the page, because
several SVGs inline in one HTML document share one id space (matplotlib names glyph paths
after the font, so two plots would otherwise both define ``DejaVuSans-30``).

Text from the user's data reaches the SVG only as glyph outlines and as an XML comment,
which matplotlib escapes; the template escapes everything else on the page.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..errors import MissingExtraError

__all__ = [
    "Figures",
    "dict_of",
    "group_label",
    "list_of",
    "main_metric",
    "number",
    "require_matplotlib",
    "text_of",
    "version_name",
]

#: The metric the plots follow for each task: the one a reviewer reads first.
MAIN_METRICS = {"classification": "accuracy", "regression": "mae"}

_RC = {
    "svg.hashsalt": "nb2prod-quality-report",
    "svg.fonttype": "path",  # glyphs as outlines: the page needs no font from anywhere
    "text.parse_math": False,  # a "$" in a version or group name is text, not mathtext
    "text.usetex": False,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "timezone": "UTC",
}
#: No Date (the page would change on each render) and no links to matplotlib or Dublin Core.
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_DRIFTED, _STEADY = "#cf222e", "#8c959f"
_ID = re.compile(r'\bid="([^"]+)"')
_REFERENCE = re.compile(r'(href="#|url\(#)([^")]+)')


def require_matplotlib() -> Any:
    """matplotlib, or MissingExtraError naming the extra that brings it."""
    try:
        import matplotlib  # noqa: PLC0415 - an extra: imported only when a page is rendered
    except ImportError as err:
        raise MissingExtraError("quality", "the HTML quality report", err) from err
    return matplotlib


class Figures:
    """Draws a page's plots for one main metric, numbering them so their SVG ids stay apart."""

    def __init__(self, metric: str | None) -> None:
        self.metric = metric
        self._drawn = 0

    def overview(self, versions: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """The plots across versions, as (svg, caption): over time, with CIs, per group."""
        if self.metric is None:
            return []
        colours = {version_name(v): f"C{i % 10}" for i, v in enumerate(versions)}
        plots = []
        series = _over_time(versions, self.metric)
        if series:
            metric = self.metric
            svg = self._svg(7.0, 3.2, lambda axes: _draw_over_time(axes, metric, series, colours))
            plots.append((svg, f"{self.metric} per model version over time (UTC)"))
        points = _intervals(versions, self.metric)
        if points:
            svg = self._svg(
                7.0, 3.0, lambda axes: _draw_intervals(axes, self.metric, points, colours)
            )
            plots.append(
                (svg, f"{self.metric} per model version, with its 95% confidence interval")
            )
        groups = _group_bars(versions, self.metric)
        if groups is not None:
            name, labels, bars = groups
            svg = self._svg(7.0, 3.4, lambda axes: _draw_groups(axes, name, labels, bars, colours))
            plots.append((svg, f"{name} per group and model version (fairness)"))
        return plots

    def drift(self, version: str, features: list[dict[str, Any]]) -> str:
        """A bar per feature with its drift statistic, drifted ones marked; "" with none to draw."""
        bars = []
        for feature in features:
            statistic = number(feature.get("statistic"))
            if statistic is not None and math.isfinite(statistic):
                label = f"{text_of(feature.get('name'))} ({text_of(feature.get('test'))})"
                bars.append((label, statistic, feature.get("drifted") is True))
        if not bars:
            return ""
        height = min(40.0, max(2.0, 0.3 * len(bars) + 1.2))
        return self._svg(7.0, height, lambda axes: _draw_drift(axes, version, bars))

    def _svg(self, width: float, height: float, draw: Callable[[Any], None]) -> str:
        matplotlib = require_matplotlib()
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415

        buffer = io.StringIO()
        with matplotlib.rc_context(_RC), warnings.catch_warnings():
            # Layout and missing-glyph warnings (a long or exotic name) are no reason to
            # lose the page; the plot is drawn as well as it can be.
            warnings.simplefilter("ignore", UserWarning)
            figure = Figure(figsize=(width, height), layout="constrained")
            FigureCanvasAgg(figure)
            draw(figure.add_subplot())
            figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
        self._drawn += 1
        return _scoped(buffer.getvalue(), f"fig{self._drawn}-")


def _scoped(svg: str, prefix: str) -> str:
    """The SVG element alone (no XML prologue), its ids and references to them prefixed."""
    svg = svg[svg.index("<svg") :]
    ids = set(_ID.findall(svg))
    svg = _ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', svg)
    return _REFERENCE.sub(
        lambda m: m.group(1) + (prefix if m.group(2) in ids else "") + m.group(2), svg
    )


def _over_time(
    versions: list[dict[str, Any]], metric: str
) -> list[tuple[str, list[datetime], list[float]]]:
    """Per version, the metric at the middle of each time bucket that has it, in time order."""
    series = []
    for version in versions:
        points = []
        for bucket in list_of(version.get("over_time")):
            bucket = dict_of(bucket)
            value = number(dict_of(bucket.get("metrics")).get(metric))
            when = _middle(bucket.get("start"), bucket.get("end"))
            if value is not None and math.isfinite(value) and when is not None:
                points.append((when, value))
        if points:
            points.sort()
            series.append((version_name(version), [p[0] for p in points], [p[1] for p in points]))
    return series


def _draw_over_time(
    axes: Any,
    metric: str,
    series: list[tuple[str, list[datetime], list[float]]],
    colours: dict[str, str],
) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: PLC0415

    for name, times, values in series:
        axes.plot(times, values, marker="o", color=colours[name], label=_legend(name))
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.set_ylabel(metric)
    axes.legend(title="model version", fontsize="small")


def _intervals(
    versions: list[dict[str, Any]], metric: str
) -> list[tuple[str, float, float, float]]:
    """Per version with the metric: (name, value, distance down to low, distance up to high)."""
    points = []
    for version in versions:
        ci = dict_of(dict_of(version.get("metrics")).get(metric))
        value = number(ci.get("value"))
        if value is None or not math.isfinite(value):
            continue
        low, high = number(ci.get("low")), number(ci.get("high"))
        # An interval that does not hold its value (or has no end) draws no whisker that way.
        down = value - low if low is not None and math.isfinite(low) and low <= value else 0.0
        up = high - value if high is not None and math.isfinite(high) and high >= value else 0.0
        points.append((version_name(version), value, down, up))
    return points


def _draw_intervals(
    axes: Any, metric: str, points: list[tuple[str, float, float, float]], colours: dict[str, str]
) -> None:
    for x, (name, value, down, up) in enumerate(points):
        axes.errorbar([x], [value], yerr=[[down], [up]], fmt="o", capsize=4, color=colours[name])
    axes.set_xticks(range(len(points)), [text_of(p[0]) for p in points])
    axes.set_xlim(-0.5, len(points) - 0.5)
    axes.set_ylabel(metric)
    _tilt_if_crowded(axes, len(points))


def _group_bars(
    versions: list[dict[str, Any]], metric: str
) -> tuple[str, list[str], list[tuple[str, list[float | None]]]] | None:
    """The per-group bars: (metric, group labels, per version its value per group), or None."""
    fair = [
        (v, [dict_of(g) for g in list_of(dict_of(v.get("fairness")).get("groups"))])
        for v in versions
    ]
    fair = [(v, groups) for v, groups in fair if groups]
    if not fair:
        return None
    names = [n for _, groups in fair for g in groups for n in dict_of(g.get("metrics"))]
    name = metric if metric in names or not names else names[0]
    labels = list(dict.fromkeys(group_label(g) for _, groups in fair for g in groups))
    bars = []
    for version, groups in fair:
        values = {group_label(g): number(dict_of(g.get("metrics")).get(name)) for g in groups}
        bars.append((version_name(version), [values.get(label) for label in labels]))
    if all(v is None or not math.isfinite(v) for _, values in bars for v in values):
        return None
    return name, labels, bars


def _draw_groups(
    axes: Any,
    name: str,
    labels: list[str],
    bars: list[tuple[str, list[float | None]]],
    colours: dict[str, str],
) -> None:
    width = 0.8 / len(bars)
    for i, (version, values) in enumerate(bars):
        drawn = [(x, v) for x, v in enumerate(values) if v is not None and math.isfinite(v)]
        axes.bar(
            [x - 0.4 + width * (i + 0.5) for x, _ in drawn],
            [v for _, v in drawn],
            width,
            color=colours[version],
            label=_legend(version),
        )
    axes.set_xticks(range(len(labels)), labels)
    axes.set_ylabel(name)
    axes.legend(title="model version", fontsize="small")
    _tilt_if_crowded(axes, len(labels))


def _draw_drift(axes: Any, version: str, bars: list[tuple[str, float, bool]]) -> None:
    from matplotlib.patches import Patch  # noqa: PLC0415

    positions = range(len(bars))
    axes.barh(
        positions,
        [b[1] for b in bars],
        color=[_DRIFTED if b[2] else _STEADY for b in bars],
    )
    axes.set_yticks(positions, [b[0] for b in bars])
    axes.invert_yaxis()  # the first feature on top, as in the table below
    axes.set_xlabel("statistic")
    axes.set_title(f"model version {version}", fontsize="medium")
    axes.legend(
        handles=[Patch(color=_DRIFTED, label="drifted"), Patch(color=_STEADY, label="not drifted")],
        fontsize="small",
    )


def _tilt_if_crowded(axes: Any, ticks: int) -> None:
    if ticks > 4:
        axes.tick_params(axis="x", labelrotation=30)


def _legend(name: str) -> str:
    # matplotlib leaves labels that start with "_" out of a legend; a space keeps them in.
    return f" {name}" if name.startswith("_") else name


def _middle(start: Any, end: Any) -> datetime | None:
    """The middle of a bucket, as naive UTC; either end alone when the other is unreadable."""
    begin, finish = _when(start), _when(end)
    if begin is not None and finish is not None:
        return begin + (finish - begin) / 2
    return begin or finish


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def main_metric(task: Any, versions: list[dict[str, Any]]) -> str | None:
    """The task's main metric (accuracy, mae) when the report has it, else its first metric."""
    names = [n for v in versions for n in dict_of(v.get("metrics"))]
    names += [
        n
        for v in versions
        for b in list_of(v.get("over_time"))
        for n in dict_of(dict_of(b).get("metrics"))
    ]
    preferred = MAIN_METRICS.get(task) if isinstance(task, str) else None
    if preferred in names:
        return preferred
    return text_of(names[0]) if names else preferred


def version_name(version: dict[str, Any]) -> str:
    """The model version's name as the page shows it."""
    return text_of(version.get("model_version")) or "(no version)"


def group_label(group: dict[str, Any]) -> str:
    """A fairness group as ``col=value, col=value``."""
    values = dict_of(group.get("group"))
    return ", ".join(f"{text_of(c)}={text_of(v, '(missing)')}" for c, v in values.items()) or "n/a"


def number(value: Any) -> float | None:
    """A report's number as a float; None for null, NaN, booleans and anything not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def text_of(value: Any, missing: str = "") -> str:
    if value is None:
        return missing
    return value if isinstance(value, str) else str(value)


def dict_of(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
