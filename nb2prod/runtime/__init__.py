"""The serving runtime of an nb2prod build: schema, model loader, FastAPI app, logs and metrics.

This package is copied verbatim into every build directory as ``nb2prod_runtime/``, so it uses
relative imports only and depends on nothing from nb2prod itself: only the standard library,
FastAPI/Starlette, pydantic, prometheus_client, numpy, pandas and cloudpickle.
"""

from __future__ import annotations

__all__ = ["app", "loader", "logs", "metrics", "schema"]
