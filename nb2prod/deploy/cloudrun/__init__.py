"""Deploy DIR's pushed image to Cloud Run through the Admin API v2, and move its traffic;
or run it as a Cloud Run Job that scores files in batch.

One ``run_v2.Service`` is built from DIR and the options; it is sent with
``UpdateServiceRequest(allow_missing=True)`` (create or update) and also written as
the equivalent Knative ``DIR/service.yaml`` for ``gcloud run services replace``.

    settings    project, region and service (or job) id; which settings Cloud Run accepts
    service     the run_v2.Service message and its Knative form (service.yaml)
    api         the REST clients, the calls and their long-running operations, errors
    traffic     canary split, promote, rollback, and DIR/.nb2prod/deploy.json
    rollout     deploy(): the steps above in order
    pubsub      the gcloud commands that push a Pub/Sub topic to the service
    job         the run_v2.Job that scores files in batch, and its YAML form (job.yaml)
    job_deploy  deploy_job(): create or update the job, run it, wait for its tasks

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

from .api import make_client, make_job_clients
from .job import build_job, knative_job
from .job_deploy import deploy_job
from .rollout import deploy
from .service import build_service, knative_service, nb2prod_version, render_request
from .settings import (
    JobLocation,
    ServiceLocation,
    resolve_job_location,
    resolve_location,
    service_id_for,
)
from .traffic import canary_traffic, promote, rollback

__all__ = [
    "JobLocation",
    "ServiceLocation",
    "build_job",
    "build_service",
    "canary_traffic",
    "deploy",
    "deploy_job",
    "knative_job",
    "knative_service",
    "make_client",
    "make_job_clients",
    "nb2prod_version",
    "promote",
    "render_request",
    "resolve_job_location",
    "resolve_location",
    "rollback",
    "service_id_for",
]
