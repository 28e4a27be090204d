"""nb2prod: take a tagged Jupyter notebook to a tested production container."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build", "check", "generate"]


def __getattr__(name: str) -> Any:
    """``nb2prod.build(...)`` and friends, imported on first use (the CLI stays fast)."""
    if name in ("build", "check", "generate"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'nb2prod' has no attribute {name!r}")
