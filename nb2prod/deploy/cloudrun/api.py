"""Talking to the Cloud Run Admin API v2: the clients, the calls, waiting, what errors mean.

Every failure the API or the transport reports becomes a DeployError that names
what to do: log in, grant a role, enable the API, or check the project and region.
"""

from __future__ import annotations

import re
from concurrent import futures

import google.auth
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import run_v2
from google.protobuf import field_mask_pb2

from ...errors import DeployError
from .settings import JobLocation, ServiceLocation

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ADC_HINT = (
    "Run: gcloud auth application-default login "
    "(or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file)"
)
_ROLES = {
    "iam.serviceaccounts.actas": "roles/iam.serviceAccountUser on the runtime service account",
    "run.services.setiampolicy": "roles/run.admin",
}
_TRANSPORT_ERRORS = (auth_exceptions.GoogleAuthError, requests.RequestException)


def make_client(
    endpoint: str | None = None, credentials: Credentials | None = None
) -> run_v2.ServicesClient:
    """A REST ServicesClient: Google's endpoint and ADC unless told otherwise.

    A plain-HTTP endpoint (a local fake) gets anonymous credentials. Raises
    DeployError when no credentials are found.
    """
    return run_v2.ServicesClient(
        credentials=credentials or _credentials(endpoint),
        transport="rest",
        client_options=ClientOptions(api_endpoint=endpoint),
    )


def make_job_clients(
    endpoint: str | None = None, credentials: Credentials | None = None
) -> tuple[run_v2.JobsClient, run_v2.ExecutionsClient]:
    """REST clients for jobs and their executions, found as :func:`make_client` finds its own."""
    credentials = credentials or _credentials(endpoint)
    options = ClientOptions(api_endpoint=endpoint)
    return (
        run_v2.JobsClient(credentials=credentials, transport="rest", client_options=options),
        run_v2.ExecutionsClient(credentials=credentials, transport="rest", client_options=options),
    )


def _credentials(endpoint: str | None) -> Credentials:
    """Anonymous for a plain-HTTP endpoint (a local fake), else Application Default Credentials."""
    if endpoint and endpoint.startswith("http://"):
        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    try:
        credentials, _ = google.auth.default(scopes=list(SCOPES))
    except auth_exceptions.DefaultCredentialsError as err:
        raise DeployError("no Google Cloud credentials found", hint=ADC_HINT) from err
    return credentials


def get_service(client: run_v2.ServicesClient, location: ServiceLocation) -> run_v2.Service | None:
    """The service as Cloud Run has it now, or None when there is none yet."""
    try:
        return client.get_service(name=location.name)
    except api_exceptions.NotFound:
        return None  # a missing project or region shows itself on the update
    except (api_exceptions.GoogleAPICallError, *_TRANSPORT_ERRORS) as err:
        raise api_error(err, location) from err


def send(
    client: run_v2.ServicesClient,
    service: run_v2.Service,
    location: ServiceLocation,
    wait_seconds: float,
    *,
    allow_missing: bool,
    update_mask: tuple[str, ...] = (),
) -> run_v2.Service:
    """Send the update, wait for its operation and insist the revision became ready."""
    request = run_v2.UpdateServiceRequest(service=service, allow_missing=allow_missing)
    if update_mask:
        request.update_mask = field_mask_pb2.FieldMask(paths=list(update_mask))
    try:
        operation = client.update_service(request=request)
    except (api_exceptions.GoogleAPICallError, *_TRANSPORT_ERRORS) as err:
        raise api_error(err, location) from err
    revision = service.template.revision or "the new revision"
    logs = f"gcloud run services logs read {location.service} --region {location.region}"
    try:
        result: run_v2.Service = operation.result(timeout=wait_seconds)  # type: ignore[no-untyped-call]
    except futures.TimeoutError as err:
        raise DeployError(
            f"{location.service}: the operation was not done after {wait_seconds:.0f} s",
            hint=f"Watch it: gcloud run services describe {location.service} "
            f"--region {location.region}",
        ) from err
    except api_exceptions.GoogleAPICallError as err:
        raise DeployError(
            f"revision {revision} did not become ready: {err.message}",
            hint=f"The previous revision keeps serving. Logs: {logs}",
        ) from err
    condition = result.terminal_condition
    if condition.state != run_v2.Condition.State.CONDITION_SUCCEEDED:
        details = [condition.message] + [
            c.message for c in result.conditions if c.message and c.message != condition.message
        ]
        raise DeployError(
            f"revision {revision} did not become ready: " + " ".join(filter(None, details)),
            hint=f"The previous revision keeps serving. Logs: {logs}",
        )
    return result


def send_job(
    client: run_v2.JobsClient, job: run_v2.Job, location: JobLocation, wait_seconds: float
) -> run_v2.Job:
    """Create or update the job (``allow_missing``), wait for it, and insist it became ready."""
    request = run_v2.UpdateJobRequest(job=job, allow_missing=True)
    try:
        operation = client.update_job(request=request)
        result: run_v2.Job = operation.result(timeout=wait_seconds)  # type: ignore[no-untyped-call]
    except futures.TimeoutError as err:
        raise DeployError(
            f"{location.what}: the operation was not done after {wait_seconds:.0f} s",
            hint=f"Watch it: gcloud run jobs describe {location.job} --region {location.region}",
        ) from err
    except (api_exceptions.GoogleAPICallError, *_TRANSPORT_ERRORS) as err:
        raise api_error(err, location) from err
    condition = result.terminal_condition
    if condition.state == run_v2.Condition.State.CONDITION_FAILED:
        raise DeployError(f"{location.what} was not accepted: {condition.message}")
    return result


def run_job(client: run_v2.JobsClient, location: JobLocation) -> str:
    """Start an execution of the job; its resource name."""
    try:
        operation = client.run_job(request=run_v2.RunJobRequest(name=location.name))
    except (api_exceptions.GoogleAPICallError, *_TRANSPORT_ERRORS) as err:
        raise api_error(err, location) from err
    execution: run_v2.Execution = operation.metadata
    if not execution or not execution.name:
        raise DeployError(f"Cloud Run started {location.what} without naming its execution")
    return str(execution.name)


def get_execution(
    client: run_v2.ExecutionsClient, name: str, location: JobLocation
) -> run_v2.Execution:
    """The execution as Cloud Run has it now."""
    try:
        return client.get_execution(name=name)
    except (api_exceptions.GoogleAPICallError, *_TRANSPORT_ERRORS) as err:
        raise api_error(err, location) from err


def api_error(err: Exception, location: ServiceLocation | JobLocation) -> DeployError:
    """A DeployError that names the missing permission, project or region."""
    if isinstance(err, auth_exceptions.DefaultCredentialsError | auth_exceptions.RefreshError):
        return DeployError(f"Google Cloud credentials are not usable: {err}", hint=ADC_HINT)
    if isinstance(err, auth_exceptions.GoogleAuthError | requests.RequestException):
        return DeployError(f"cannot reach the Cloud Run API: {err}")
    assert isinstance(err, api_exceptions.GoogleAPICallError)
    message = err.message or str(err)
    if isinstance(err, api_exceptions.Unauthenticated):
        return DeployError(f"Cloud Run did not accept the credentials: {message}", hint=ADC_HINT)
    if isinstance(err, api_exceptions.PermissionDenied | api_exceptions.Forbidden):
        return _denied(err, message, location)
    if isinstance(err, api_exceptions.NotFound):
        return DeployError(
            f"project {location.project!r} or region {location.region!r} was not found: {message}",
            hint="Check --project and --region; `gcloud run regions list` shows the regions.",
        )
    return DeployError(f"Cloud Run rejected the request for {location.what}: {message}")


def _denied(
    err: api_exceptions.GoogleAPICallError, message: str, location: ServiceLocation | JobLocation
) -> DeployError:
    """A 403: either the API is off in the project, or a permission is missing."""
    if err.reason == "SERVICE_DISABLED" or "has not been used" in message:
        return DeployError(
            f"the Cloud Run Admin API is not enabled in {location.project}: {message}",
            hint=f"Run: gcloud services enable run.googleapis.com --project {location.project}",
        )
    permission = _denied_permission(err)
    role = _ROLES.get(permission.lower(), "roles/run.developer")
    return DeployError(
        f"permission denied: {permission or 'a Cloud Run permission'} is missing on "
        f"{location.parent}: {message}",
        hint=f"Grant {role} to the deploying account, e.g. gcloud projects "
        f"add-iam-policy-binding {location.project} --member=user:YOU@example.com "
        f"--role={role.split()[0]}",
    )


def _denied_permission(err: api_exceptions.GoogleAPICallError) -> str:
    for detail in err.details or []:
        metadata_ = detail.get("metadata", {}) if isinstance(detail, dict) else {}
        if metadata_.get("permission"):
            return str(metadata_["permission"])
    match = re.search(r"[Pp]ermission '?([a-zA-Z]+\.[a-zA-Z]+\.[a-zA-Z]+)'?", err.message or "")
    return match.group(1) if match else ""
