"""The command line: click only. Flags become an options record and one call to ``pipeline``.

``group``              the ``nb2prod`` group and the flags and helpers commands share
``notebook_commands``  check, generate, build, serve
``ship_commands``      push, deploy, promote, rollback, monitor
``batch_commands``     batch: score files with a built directory
``gate_commands``      compare: the champion/challenger gate on two builds' metrics
``ci_commands``        ci init: the retraining workflow (build, compare, canary, promote --gate)
``quality_commands``   quality: per model version quality and fairness of logged predictions
``track_commands``     track (and build's --mlflow): log a build to MLflow
``deploy_options``     which deploy option belongs to which target
``exit``               ``main()``: the single place errors become exit codes
"""

from __future__ import annotations

from . import (  # noqa: F401 - they register the commands
    batch_commands,
    ci_commands,
    gate_commands,
    notebook_commands,
    quality_commands,
    ship_commands,
    track_commands,
)
from .exit import main
from .group import cli

__all__ = ["cli", "main"]
