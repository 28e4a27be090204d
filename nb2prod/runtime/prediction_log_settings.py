"""The prediction log's settings, read from the ``NB2PROD_PREDICTION_LOG*`` variables.

See prediction_log.py for what the log records and where; this module only says how a
service (or ``nb2prod batch``) is told, and refuses a bad setting with a message naming it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .prediction_log_sinks import ENV_SINK, PredictionLogError

__all__ = ["ENV_SAMPLE", "ENV_SENSITIVE", "PredictionLogSettings"]

ENV_SAMPLE = "NB2PROD_PREDICTION_LOG_SAMPLE"
ENV_QUEUE_ROWS = "NB2PROD_PREDICTION_LOG_QUEUE_ROWS"
ENV_ROTATE_BYTES = "NB2PROD_PREDICTION_LOG_ROTATE_BYTES"
ENV_ROTATE_SECONDS = "NB2PROD_PREDICTION_LOG_ROTATE_SECONDS"
ENV_SENSITIVE = "NB2PROD_SENSITIVE_COLUMNS"


@dataclass(frozen=True)
class PredictionLogSettings:
    """What to log, where, and how much may wait in memory (see prediction_log.py)."""

    sample: float = 1.0
    destination: str = ""  # "" = stdout
    sensitive: frozenset[str] = frozenset()
    max_queued_rows: int = 100_000
    rotate_bytes: int = 64 * 1024 * 1024
    rotate_seconds: float = 300.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, card_sensitive: Sequence[str] = ()
    ) -> PredictionLogSettings:
        """Read the ``NB2PROD_PREDICTION_LOG*`` variables; PredictionLogError naming a bad one.

        Sensitive columns are the union of the card's and ``NB2PROD_SENSITIVE_COLUMNS``: a
        column either one marks is never logged.
        """
        env = os.environ if env is None else env
        defaults = cls()
        sample = _number(env, ENV_SAMPLE, defaults.sample, float)
        if not 0.0 <= sample <= 1.0:
            raise PredictionLogError(
                f"{ENV_SAMPLE}={env[ENV_SAMPLE].strip()} is not a fraction between 0 and 1 "
                "(1 logs every request, 0.1 one in ten, 0 none)"
            )
        named = {name.strip() for name in env.get(ENV_SENSITIVE, "").split(",")}
        return cls(
            sample=sample,
            destination=env.get(ENV_SINK, "").strip(),
            sensitive=frozenset((named | set(card_sensitive)) - {""}),
            max_queued_rows=_positive(env, ENV_QUEUE_ROWS, defaults.max_queued_rows, int),
            rotate_bytes=_positive(env, ENV_ROTATE_BYTES, defaults.rotate_bytes, int),
            rotate_seconds=_positive(env, ENV_ROTATE_SECONDS, defaults.rotate_seconds, float),
        )


def _number(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError as err:
        raise PredictionLogError(f"{name}={raw} is not a {kind.__name__}") from err
    if isinstance(value, float) and not math.isfinite(value):
        raise PredictionLogError(f"{name}={raw} is not a finite number")
    return value


def _positive(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    value = _number(env, name, default, kind)
    if value <= 0:
        raise PredictionLogError(f"{name}={env[name].strip()} must be greater than 0")
    return value
