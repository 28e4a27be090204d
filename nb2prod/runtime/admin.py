"""Optional bearer-token protection of the endpoints that are not for prediction clients.

With ``NB2PROD_ADMIN_TOKEN`` set, ``/metadata``, ``/monitoring/*`` and ``/feedback`` answer 401
unless the request carries ``Authorization: Bearer <that token>``. ``/predict``, the probes and
``/metrics`` stay open (Prometheus scrapes and probes carry no token). This is a second line:
the primary protection on Cloud Run is IAM (no ``allUsers`` invoker), on Kubernetes the network.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

__all__ = ["ADMIN_TOKEN_ENV", "admin_guard"]

ADMIN_TOKEN_ENV = "NB2PROD_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token

AdminGuard = Callable[[Request], Awaitable[None]]


def admin_guard(token: str | None = None) -> AdminGuard:
    """A FastAPI dependency checking the bearer token (``$NB2PROD_ADMIN_TOKEN`` by default).

    Without a token configured it lets every request through.
    """
    expected = (token if token is not None else os.environ.get(ADMIN_TOKEN_ENV, "")).encode()

    async def require_admin(request: Request) -> None:
        if not expected:
            return
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected):
            raise HTTPException(
                401,
                f"this endpoint needs Authorization: Bearer <{ADMIN_TOKEN_ENV}>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin
