"""Drift of a model version's logged inputs against its training reference, as the service
measures it.

The statistics, thresholds and verdict rule are the serving runtime's own
(``runtime/monitoring/drift.py``: PSI plus a KS or chi-square test per column, Bonferroni
across columns, a column drifts by ``NB2PROD_DRIFT_RULE``, the dataset when at least
``NB2PROD_DRIFT_SHARE`` of its columns do), read from the same ``NB2PROD_DRIFT_*`` variables,
so ``nb2prod quality`` and ``GET /monitoring/drift`` agree on the same rows. The reference is
the profile in the model card of the build directory (``--build DIR``) whose
``model_version`` matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..builddir import BuildDir
from ..runtime.card import ModelCard
from ..runtime.monitoring.drift import compare, judge
from ..runtime.monitoring.monitor import MonitorSettings
from .log_reader import logged_name

__all__ = ["cards_by_version", "drift"]


def cards_by_version(builds: Sequence[Path]) -> dict[str, tuple[Path, ModelCard]]:
    """Each build directory's card, by its model version (ConfigError for a bad directory)."""
    found: dict[str, tuple[Path, ModelCard]] = {}
    for root in builds:
        card = BuildDir(Path(root)).card()
        found[card.model_version] = (Path(root), card)
    return found


def drift(
    frame: pd.DataFrame, reference: Path, card: ModelCard, notes: list[str]
) -> dict[str, Any]:
    """The report's ``drift`` entry: the logged rows in ``frame`` against ``card``'s reference
    profile (a note for each profiled column the log does not hold, e.g. a sensitive one)."""
    thresholds = MonitorSettings.from_env().thresholds
    profiles = (card.reference_profile or {}).get("columns") or {}
    results: dict[str, dict[str, Any]] = {}
    for name, profile in profiles.items():
        column = logged_name(name)  # an input named like a log column is kept as input.NAME
        if column not in frame.columns:
            notes.append(
                f"drift of {card.model_version}: column {name!r} is not in the log (sensitive "
                "columns are never logged), so it is not compared"
            )
            continue
        values = frame[column]
        if profile.get("kind") == "numeric":
            array = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
        else:
            array = values.to_numpy(object)
        result = compare(profile, array)
        if result is not None:
            results[name] = result
    tests = max(1, len(results))
    alpha = thresholds.p_value / tests if thresholds.bonferroni else thresholds.p_value
    window = len(frame)
    for result in results.values():
        judge(result, window, alpha, thresholds)
    drifted = [name for name, result in results.items() if result["drifted"]]
    share = len(drifted) / len(results) if results else 0.0
    if window < thresholds.min_rows:
        notes.append(
            f"drift of {card.model_version}: {window} logged rows, fewer than "
            f"NB2PROD_DRIFT_MIN_ROWS={thresholds.min_rows}, so no column is called drifted"
        )
    return {
        "reference": str(reference),
        "drifted": bool(window >= thresholds.min_rows and results and share >= thresholds.share),
        "share": share,
        "rows": window,
        "features": [
            {
                "name": name,
                "test": result["test"],
                "statistic": result["statistic"],
                "p_value": result["p_value"],
                "psi": result["psi"],
                "drifted": bool(result["drifted"]),
            }
            for name, result in results.items()
        ],
    }
