"""The command line: click only. Flags become an options record and one call to ``pipeline``.

``group``              the ``nb2prod`` group and the flags and helpers commands share
``notebook_commands``  check, generate, build, serve
``ship_commands``      push, deploy, promote, rollback, monitor
``batch_commands``     batch: score files with a built directory
``gate_commands``      compare: the champion/challenger gate on two builds' metrics
``deploy_options``     which deploy option belongs to which target
``exit``               ``main()``: the single place errors become exit codes
"""

from __future__ import annotations

from . import batch_commands, gate_commands, notebook_commands, ship_commands  # noqa: F401 - they register the commands
from .exit import main
from .group import cli

__all__ = ["cli", "main"]
