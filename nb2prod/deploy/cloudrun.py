"""Deploy DIR's pushed image to Cloud Run through the Admin API v2, and move its traffic.

One ``run_v2.Service`` is built from DIR and the options; it is sent with
``UpdateServiceRequest(allow_missing=True)`` (create or update) and also written as
the equivalent Knative ``DIR/service.yaml`` for ``gcloud run services replace``.
Revision names are derived from the revision's content, so the same build and
settings always name the same revision and a canary can be routed to by name in
the same request that creates it. ``DIR/.nb2prod/deploy.json`` remembers where
the service is, the canary and the traffic before the deploy, for promote and
rollback.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
from concurrent import futures
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import google.auth
import requests
import yaml
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import run_v2
from google.protobuf import duration_pb2, field_mask_pb2, json_format

from ..builddir import read_json, read_optional, write_text_atomically
from ..errors import ConfigError, DeployError
from ..models import CloudRunDeployment, CloudRunOptions, TrafficOptions, TrafficSplit
from ..naming import dns_label, google_label_value

PORT = 8080
CANARY_TAG = "canary"
DRIFT_WEBHOOK_ENV = "NB2PROD_DRIFT_WEBHOOK"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ADC_HINT = (
    "Run: gcloud auth application-default login "
    "(or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file)"
)
_RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_SERVICE_ID = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_MAX_SERVICE_ID = 49  # the API's limit
_DEFAULT_SERVICE_ID = 40  # leaves room for the "canary" tag: tag + service <= 46
_MAX_TAGGED = 46
_NOT_PUSHED = "<digest pinned at push time>"
_PREVIOUS = "<the revision serving now>"
#: Fields Cloud Run fills in; cleared before a read-modify-write of traffic.
_OUTPUT_ONLY = (
    "uid", "generation", "create_time", "update_time", "delete_time", "expire_time",
    "creator", "last_modifier", "observed_generation", "terminal_condition", "conditions",
    "latest_ready_revision", "latest_created_revision", "traffic_statuses", "uri", "urls",
    "satisfies_pzs", "reconciling",
)  # fmt: skip
_ROLES = {
    "iam.serviceaccounts.actas": "roles/iam.serviceAccountUser on the runtime service account",
    "run.services.setiampolicy": "roles/run.admin",
}


@dataclass(frozen=True)
class ServiceLocation:
    """Where a service lives: project, region and service id."""

    project: str
    region: str
    service: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/R``."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def name(self) -> str:
        """The service's resource name."""
        return f"{self.parent}/services/{self.service}"


# -- settings -----------------------------------------------------------------------------


def gcloud_config(environ: dict[str, str] | None = None) -> configparser.ConfigParser:
    """gcloud's active configuration file, read as INI (never by running gcloud)."""
    env = os.environ if environ is None else environ
    base = Path(env["CLOUDSDK_CONFIG"]) if env.get("CLOUDSDK_CONFIG") else None
    if base is None:
        appdata = env.get("APPDATA") if os.name == "nt" else None
        base = Path(appdata) / "gcloud" if appdata else Path.home() / ".config" / "gcloud"
    active = env.get("CLOUDSDK_ACTIVE_CONFIG_NAME", "")
    if not active and (base / "active_config").is_file():
        active = (base / "active_config").read_text(encoding="utf-8").strip()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(base / "configurations" / f"config_{active or 'default'}", encoding="utf-8")
    return parser


def resolve_location(
    project: str | None, region: str | None, service: str | None, model_name: str
) -> ServiceLocation:
    """Project, region and service id from the arguments, the environment, then gcloud."""
    config: configparser.ConfigParser | None = None

    def from_gcloud(section: str, key: str) -> str | None:
        nonlocal config
        config = config or gcloud_config()
        return config.get(section, key, fallback=None)

    project = (
        project
        or os.environ.get("GOOGLE_CLOUD_PROJECT")
        or os.environ.get("CLOUDSDK_CORE_PROJECT")
        or from_gcloud("core", "project")
    )
    region = region or os.environ.get("CLOUDSDK_RUN_REGION") or from_gcloud("run", "region")
    if not project:
        raise ConfigError(
            "no Google Cloud project given",
            hint="Pass --project, set GOOGLE_CLOUD_PROJECT, or run: gcloud config set project P",
        )
    if not region:
        raise ConfigError(
            "no Cloud Run region given",
            hint="Pass --region, set CLOUDSDK_RUN_REGION, or run: gcloud config set run/region R",
        )
    if service is None:
        service = service_id_for(model_name)
    elif len(service) > _MAX_SERVICE_ID or not _SERVICE_ID.fullmatch(service):
        raise ConfigError(
            f"--service {service!r} is not a Cloud Run service name",
            hint="Use lowercase letters, digits and '-', start with a letter, at most 49 chars.",
        )
    return ServiceLocation(project, region, service)


def service_id_for(name: str) -> str:
    """A model name fitted to Cloud Run's service naming rules."""
    return dns_label(name, _DEFAULT_SERVICE_ID)


def _check(options: CloudRunOptions) -> None:
    problems = []
    if not 1 <= options.concurrency <= 1000:
        problems.append("--concurrency must be between 1 and 1000")
    cpu = _cpu_value(options.cpu)
    if cpu is None:
        problems.append(f"--cpu {options.cpu!r} is not a CPU amount (e.g. 1, 2, 0.5, 500m)")
    elif cpu < 1 and options.concurrency > 1:
        problems.append("Cloud Run needs --concurrency 1 with less than one CPU")
    if not re.fullmatch(r"\d+(Mi|Gi|M|G)", options.memory):
        problems.append(f"--memory {options.memory!r} is not a memory amount (e.g. 512Mi, 2Gi)")
    if not 0 <= options.min_instances <= options.max_instances or options.max_instances < 1:
        problems.append("need 0 <= --min-instances <= --max-instances and --max-instances >= 1")
    if not 1 <= options.timeout_seconds <= 3600:
        problems.append("--timeout must be between 1 and 3600 seconds")
    if options.canary is not None and not 1 <= options.canary <= 99:
        problems.append("--canary must be a percentage between 1 and 99")
    for name in options.env:
        if name in _RESERVED_ENV or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"--env {name}: not a name Cloud Run accepts (reserved or invalid)")
    if problems:
        raise ConfigError("; ".join(problems))


def _cpu_value(cpu: str) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", cpu)
    if not match:
        return None
    return float(match.group(1)) / (1000 if match.group(2) else 1)


# -- the service --------------------------------------------------------------------------


def build_service(
    options: CloudRunOptions,
    location: ServiceLocation,
    image: str,
    card: dict[str, Any],
    traffic: tuple[TrafficSplit, ...] = (TrafficSplit(None, 100),),
) -> run_v2.Service:
    """The Service for DIR: container contract, resources, scaling, labels and traffic."""
    env = dict(options.env)
    if options.drift_webhook:
        env[DRIFT_WEBHOOK_ENV] = options.drift_webhook
    labels = {
        "managed-by": "nb2prod",
        "nb2prod-model": google_label_value(str(card["name"])),
        "nb2prod-model-version": google_label_value(str(card["model_version"])),
    }
    container = run_v2.Container(
        image=image,
        ports=[run_v2.ContainerPort(name="http1", container_port=PORT)],
        env=[run_v2.EnvVar(name=key, value=value) for key, value in sorted(env.items())],
        # cpu_idle is a plain proto3 bool: False is expressed by leaving it out, which
        # the API reads as "CPU always allocated" once resources are set.
        resources=run_v2.ResourceRequirements(
            limits={"cpu": options.cpu, "memory": options.memory},
            cpu_idle=options.cpu_idle,
            startup_cpu_boost=options.startup_cpu_boost,
        ),
        # 2 s x 120 = the 240 s the default TCP startup probe would allow.
        startup_probe=run_v2.Probe(
            http_get=run_v2.HTTPGetAction(path="/readyz"),
            period_seconds=2,
            timeout_seconds=1,
            failure_threshold=120,
        ),
        liveness_probe=run_v2.Probe(
            http_get=run_v2.HTTPGetAction(path="/healthz"),
            period_seconds=10,
            timeout_seconds=2,
            failure_threshold=3,
        ),
    )
    template = run_v2.RevisionTemplate(
        labels=labels,
        scaling=run_v2.RevisionScaling(
            min_instance_count=options.min_instances, max_instance_count=options.max_instances
        ),
        timeout=duration_pb2.Duration(seconds=options.timeout_seconds),
        service_account=options.service_account or "",
        containers=[container],
        max_instance_request_concurrency=options.concurrency,
    )
    content = json_format.MessageToJson(run_v2.RevisionTemplate.pb(template), sort_keys=True)
    version = re.sub(r"[^a-z0-9]", "", str(card["model_version"]).lower())[:6] or "model"
    fingerprint = hashlib.sha256(content.encode()).hexdigest()[:6]
    template.revision = f"{location.service}-{version}-{fingerprint}"
    return run_v2.Service(
        name=location.name,
        labels=labels,
        client="nb2prod",
        client_version=_nb2prod_version(),
        template=template,
        traffic=traffic_targets(traffic),
    )


def traffic_targets(traffic: tuple[TrafficSplit, ...]) -> list[run_v2.TrafficTarget]:
    """The API's traffic targets: by revision name, or the latest ready revision."""
    return [
        run_v2.TrafficTarget(
            type_=_REVISION if split.revision else _LATEST,
            revision=split.revision or "",
            percent=split.percent,
            tag=split.tag,
        )
        for split in traffic
    ]


def request_body(service: run_v2.Service) -> dict[str, Any]:
    """The JSON body the REST client sends for ``service`` (the name goes in the URL)."""
    body: dict[str, Any] = json.loads(
        json_format.MessageToJson(run_v2.Service.pb(service), use_integers_for_enums=True)
    )
    body.pop("name", None)
    return body


def knative_service(service: run_v2.Service, region: str) -> dict[str, Any]:
    """The same service as a Knative ``serving.knative.dev/v1`` Service (service.yaml)."""
    template = service.template
    container = template.containers[0]
    resources = container.resources
    knative_container: dict[str, Any] = {
        "image": container.image,
        "ports": [{"name": "http1", "containerPort": PORT}],
        "env": [{"name": env.name, "value": env.value} for env in container.env],
        "resources": {"limits": dict(resources.limits)},
        "startupProbe": _knative_probe(container.startup_probe),
        "livenessProbe": _knative_probe(container.liveness_probe),
    }
    if not knative_container["env"]:
        del knative_container["env"]
    spec: dict[str, Any] = {
        "containerConcurrency": template.max_instance_request_concurrency,
        "timeoutSeconds": template.timeout.seconds,
        "containers": [knative_container],
    }
    if template.service_account:
        spec["serviceAccountName"] = template.service_account
    annotations = {
        "autoscaling.knative.dev/minScale": str(template.scaling.min_instance_count),
        "autoscaling.knative.dev/maxScale": str(template.scaling.max_instance_count),
        "run.googleapis.com/cpu-throttling": str(resources.cpu_idle).lower(),
        "run.googleapis.com/startup-cpu-boost": str(resources.startup_cpu_boost).lower(),
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": service.name.rsplit("/", 1)[-1],
            "labels": {**service.labels, "cloud.googleapis.com/location": region},
        },
        "spec": {
            "template": {
                "metadata": {
                    "name": template.revision,
                    "labels": dict(template.labels),
                    "annotations": annotations,
                },
                "spec": spec,
            },
            "traffic": knative_traffic(_splits(service.traffic)),
        },
    }


def knative_traffic(traffic: tuple[TrafficSplit, ...]) -> list[dict[str, Any]]:
    """Traffic targets in Knative's shape."""
    targets = []
    for split in traffic:
        target: dict[str, Any] = (
            {"revisionName": split.revision} if split.revision else {"latestRevision": True}
        )
        target["percent"] = split.percent
        if split.tag:
            target["tag"] = split.tag
        targets.append(target)
    return targets


def _knative_probe(probe: run_v2.Probe) -> dict[str, Any]:
    return {
        "httpGet": {"path": probe.http_get.path, "port": PORT},
        "periodSeconds": probe.period_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
    }


def _splits(targets: Any) -> tuple[TrafficSplit, ...]:
    return tuple(
        TrafficSplit(
            target.revision if target.type_ == _REVISION else None, target.percent, target.tag
        )
        for target in targets
    )


# -- the API ------------------------------------------------------------------------------


def make_client(
    endpoint: str | None = None, credentials: Credentials | None = None
) -> run_v2.ServicesClient:
    """A REST ServicesClient: Google's endpoint and ADC unless told otherwise.

    A plain-HTTP endpoint (a local fake) gets anonymous credentials. Raises
    DeployError when no credentials are found.
    """
    if credentials is None:
        if endpoint and endpoint.startswith("http://"):
            credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
        else:
            try:
                credentials, _ = google.auth.default(scopes=list(SCOPES))
            except auth_exceptions.DefaultCredentialsError as err:
                raise DeployError("no Google Cloud credentials found", hint=ADC_HINT) from err
    return run_v2.ServicesClient(
        credentials=credentials,
        transport="rest",
        client_options=ClientOptions(api_endpoint=endpoint),
    )


def _get(client: run_v2.ServicesClient, location: ServiceLocation) -> run_v2.Service | None:
    try:
        return client.get_service(name=location.name)
    except api_exceptions.NotFound:
        return None  # a missing project or region shows itself on the update
    except (api_exceptions.GoogleAPICallError, *_TRANSPORT_ERRORS) as err:
        raise _api_error(err, location) from err


def _send(
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
        raise _api_error(err, location) from err
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


_TRANSPORT_ERRORS = (auth_exceptions.GoogleAuthError, requests.RequestException)


def _api_error(err: Exception, location: ServiceLocation) -> DeployError:
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
    if isinstance(err, api_exceptions.NotFound):
        return DeployError(
            f"project {location.project!r} or region {location.region!r} was not found: {message}",
            hint="Check --project and --region; `gcloud run regions list` shows the regions.",
        )
    return DeployError(f"Cloud Run rejected the request for {location.service}: {message}")


def _denied_permission(err: api_exceptions.GoogleAPICallError) -> str:
    for detail in err.details or []:
        metadata_ = detail.get("metadata", {}) if isinstance(detail, dict) else {}
        if metadata_.get("permission"):
            return str(metadata_["permission"])
    match = re.search(r"[Pp]ermission '?([a-zA-Z]+\.[a-zA-Z]+\.[a-zA-Z]+)'?", err.message or "")
    return match.group(1) if match else ""


# -- deploy, promote, rollback ------------------------------------------------------------


def deploy(options: CloudRunOptions) -> CloudRunDeployment:
    """Create or update the Cloud Run service for DIR (or show what would be sent).

    Raises ConfigError for unusable options, a missing card or an image not pushed
    yet; DeployError when credentials are missing, access is denied, the project or
    region does not exist, or the new revision does not become ready.
    """
    build_dir = Path(options.build_dir)
    _check(options)
    card = read_json(build_dir / "model" / "model_card.json", "python train.py")
    location = resolve_location(options.project, options.region, options.service, card["name"])
    if options.canary is not None and len(location.service) + len(CANARY_TAG) > _MAX_TAGGED:
        raise ConfigError(
            f"service name {location.service!r} is too long for a canary tag URL",
            hint=f"Use a --service of at most {_MAX_TAGGED - len(CANARY_TAG)} characters.",
        )
    image, notes = _deployable_image(build_dir, card, options.dry_run)
    revision = build_service(options, location, image, card).template.revision
    client = None if options.dry_run else make_client(options.endpoint)
    current = _get(client, location) if client else None
    baseline = _serving(current) if current else ()
    if options.canary is None:
        traffic: tuple[TrafficSplit, ...] = (TrafficSplit(None, 100),)
    elif options.dry_run:
        traffic = (TrafficSplit(revision, options.canary, CANARY_TAG),)
        traffic += (TrafficSplit(_PREVIOUS, 100 - options.canary),)
        notes += ("The canary's share comes out of the revision(s) serving at deploy time.",)
    else:
        traffic = canary_traffic(baseline, revision, options.canary, location.service)
    service = build_service(options, location, image, card, traffic)
    service_yaml = _write_yaml(
        build_dir / "service.yaml", knative_service(service, location.region)
    )
    result = CloudRunDeployment(
        project=location.project,
        region=location.region,
        service=location.service,
        revision=revision,
        image=image,
        traffic=traffic,
        service_yaml=service_yaml,
        dry_run=options.dry_run,
        notes=notes,
    )
    if client is None:
        return replace(result, request=render_request(service, options.endpoint))
    deployed = _send(client, service, location, options.wait_seconds, allow_missing=True)
    state = {
        "target": "cloudrun",
        **asdict(location),
        "revision": revision,
        "image": image,
        "url": deployed.uri,
        "traffic": [asdict(split) for split in traffic],
        "canary": {"revision": revision, "percent": options.canary} if options.canary else None,
        "baseline": [asdict(split) for split in baseline] or None,
    }
    _write_state(build_dir, state)
    return replace(result, url=deployed.uri)


def promote(options: TrafficOptions) -> CloudRunDeployment:
    """Send all traffic to the canary revision (or, without a canary, the latest one)."""
    state = _read_state(Path(options.build_dir))
    canary = state.get("canary")
    revision = canary["revision"] if canary else None
    return _move_traffic(options, state, (TrafficSplit(revision, 100),))


def rollback(options: TrafficOptions) -> CloudRunDeployment:
    """Restore the traffic split the service had before nb2prod's last deploy."""
    state = _read_state(Path(options.build_dir))
    if not state.get("baseline"):
        raise DeployError(
            f"nothing to roll back to: {state['service']} had no serving revision before "
            "the last deploy",
            hint="Deploy an earlier build directory instead.",
        )
    return _move_traffic(options, state, tuple(TrafficSplit(**s) for s in state["baseline"]))


def _move_traffic(
    options: TrafficOptions, state: dict[str, Any], traffic: tuple[TrafficSplit, ...]
) -> CloudRunDeployment:
    build_dir = Path(options.build_dir)
    location = ServiceLocation(state["project"], state["region"], state["service"])
    client = make_client(options.endpoint)
    current = _get(client, location)
    if current is None:
        raise DeployError(f"service {location.name} does not exist (any more)")
    # Read-modify-write with the etag, and a mask so only traffic changes.
    service = run_v2.Service(current)
    for field_name in _OUTPUT_ONLY:
        run_v2.Service.pb(service).ClearField(field_name)
    service.traffic = traffic_targets(traffic)
    deployed = _send(
        client,
        service,
        location,
        options.wait_seconds,
        allow_missing=False,
        update_mask=("traffic",),
    )
    service_yaml = build_dir / "service.yaml"
    if service_yaml.is_file():
        knative = yaml.safe_load(service_yaml.read_text(encoding="utf-8"))
        knative["spec"]["traffic"] = knative_traffic(traffic)
        _write_yaml(service_yaml, knative)
    top = max(traffic, key=lambda split: split.percent)
    state.update(traffic=[asdict(split) for split in traffic], canary=None, url=deployed.uri)
    state["revision"] = top.revision or _short(deployed.latest_ready_revision)
    _write_state(build_dir, state)
    return CloudRunDeployment(
        project=location.project,
        region=location.region,
        service=location.service,
        revision=state["revision"],
        image=str(state.get("image", "")),
        traffic=traffic,
        service_yaml=service_yaml,
        url=deployed.uri,
    )


def canary_traffic(
    baseline: tuple[TrafficSplit, ...], revision: str, percent: int, service: str
) -> tuple[TrafficSplit, ...]:
    """``percent`` to the new revision, the rest split as before (by revision name)."""
    if not any(split.percent for split in baseline):
        raise ConfigError(
            f"{service} has no serving revision to split traffic with",
            hint="Deploy once without --canary first.",
        )
    for split in baseline:
        if split.tag == CANARY_TAG and split.percent:
            raise DeployError(
                f"a canary ({split.revision}) already receives {split.percent}% of {service}",
                hint="Run nb2prod promote DIR or nb2prod rollback DIR first.",
            )
        if split.revision == revision and split.percent:
            raise ConfigError(f"{revision} already serves {service}: nothing new to canary")
    kept = [split for split in baseline if split.tag != CANARY_TAG]
    remaining = 100 - percent
    shares = [split.percent * remaining // 100 for split in kept]
    largest = max(range(len(kept)), key=lambda i: kept[i].percent)
    shares[largest] += remaining - sum(shares)
    rest = tuple(replace(split, percent=share) for split, share in zip(kept, shares, strict=True))
    return (TrafficSplit(revision, percent, CANARY_TAG), *rest)


def _serving(service: run_v2.Service) -> tuple[TrafficSplit, ...]:
    """The service's actual traffic, with "latest" resolved to a revision name."""
    latest = _short(service.latest_ready_revision)
    splits = []
    for status in service.traffic_statuses:
        revision = status.revision or latest
        if revision and (status.percent or status.tag):
            splits.append(TrafficSplit(revision, status.percent, status.tag))
    return tuple(splits)


def render_request(service: run_v2.Service, endpoint: str | None) -> str:
    """The exact request deploy would send: method and URL as comments, body as YAML."""
    host = endpoint or "https://run.googleapis.com"
    header = (
        f"# PATCH {host}/v2/{service.name}?allowMissing=true\n"
        "# (creates the service when missing, then waits for the operation)\n"
    )
    return header + str(yaml.safe_dump(request_body(service), sort_keys=False))


def _deployable_image(
    build_dir: Path, card: dict[str, Any], dry_run: bool
) -> tuple[str, tuple[str, ...]]:
    """The pushed image by digest; a placeholder with a note on a dry run before a push."""
    push = read_optional(build_dir / ".nb2prod" / "push.json")
    built = read_optional(build_dir / ".nb2prod" / "image.json")
    stale = bool(push and built and push.get("image_id") not in ("", None, built.get("image_id")))
    if push and not stale:
        return str(push["image"]), ()
    why = "was rebuilt after its last push" if stale else "has not been pushed yet"
    if dry_run:
        image = f"REGISTRY/{card['name']}@{_NOT_PUSHED}"
        return image, (f"The image {why}: the digest will be pinned at push time.",)
    raise ConfigError(
        f"the image in {build_dir} {why}; Cloud Run deploys by digest only",
        hint=f"Run: nb2prod push {build_dir} --registry REGION-docker.pkg.dev/PROJECT/REPO "
        "(or pass --registry to deploy)",
    )


def _short(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]


def _nb2prod_version() -> str:
    try:
        return str(metadata.version("nb2prod"))
    except metadata.PackageNotFoundError:
        return "0"


# -- files --------------------------------------------------------------------------------


def _read_state(build_dir: Path) -> dict[str, Any]:
    state = read_json(build_dir / ".nb2prod" / "deploy.json", "nb2prod deploy --target cloudrun")
    if state.get("target") != "cloudrun":
        raise ConfigError(f"{build_dir} was not deployed to Cloud Run by nb2prod")
    return state


def _write_state(build_dir: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    write_text_atomically(build_dir / ".nb2prod" / "deploy.json", text)


def _write_yaml(path: Path, document: dict[str, Any]) -> Path:
    header = "# Written by nb2prod. Apply with: gcloud run services replace service.yaml\n"
    write_text_atomically(path, header + yaml.safe_dump(document, sort_keys=False))
    return path
