"""nb2prod: take a tagged Jupyter notebook to a tested production container."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
