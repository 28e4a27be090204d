"""Experiment tracking: a finished build directory logged to MLflow, its model registered.

``contents``    what a build directory becomes in a run (parameters, metrics, tags, files)
``mlflow_run``  the MLflow client calls: the run, its artifacts, the registered version

MLflow is an optional extra (``nb2prod[mlflow]``) and never part of the serving image:
nothing here is imported by the runtime, and ``mlflow`` is imported only when tracking runs.
"""

from __future__ import annotations

from .mlflow_run import REGISTRY_TAG, check_tracking_uri, require_mlflow, track

__all__ = ["REGISTRY_TAG", "check_tracking_uri", "require_mlflow", "track"]
