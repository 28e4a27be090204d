"""Deploy DIR's pushed image to Cloud Run through the Admin API v2, and move its traffic.

One ``run_v2.Service`` is built from DIR and the options; it is sent with
``UpdateServiceRequest(allow_missing=True)`` (create or update) and also written as
the equivalent Knative ``DIR/service.yaml`` for ``gcloud run services replace``.

    settings  project, region and service id; which settings Cloud Run accepts
    service   the run_v2.Service message and its Knative form (service.yaml)
    api       the REST client, the update and its long-running operation, errors
    traffic   canary split, promote, rollback, and DIR/.nb2prod/deploy.json
    rollout   deploy(): the steps above in order

Needs the ``cloudrun`` extra (google-cloud-run); without it, importing this package
raises MissingExtraError, which names the extra to install.
"""

from __future__ import annotations

from ...errors import MissingExtraError

try:
    import yaml  # noqa: F401
    from google.cloud import run_v2  # noqa: F401
except ImportError as err:
    raise MissingExtraError("cloudrun", "deploying to Cloud Run", err) from err

from .api import make_client
from .rollout import deploy
from .service import build_service, knative_service, nb2prod_version, render_request
from .settings import ServiceLocation, resolve_location, service_id_for
from .traffic import canary_traffic, promote, rollback

__all__ = [
    "ServiceLocation",
    "build_service",
    "canary_traffic",
    "deploy",
    "knative_service",
    "make_client",
    "nb2prod_version",
    "promote",
    "render_request",
    "resolve_location",
    "rollback",
    "service_id_for",
]
