"""The ``run_v2.Service`` for a build directory, and the same service as Knative YAML.

One message is built from DIR's card, image and the options. Its revision name is
derived from the revision's content, so the same build and settings always name the
same revision and a canary can be routed to by name in the request that creates it.
``service.yaml`` is that message in Knative's shape, for ``gcloud run services
replace`` and for review in a pull request.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from google.cloud import run_v2
from google.protobuf import duration_pb2, json_format

from ...builddir import write_text_atomically
from ...models import CloudRunOptions, TrafficSplit
from ...naming import google_label_value
from ...runtime.card import ModelCard
from .settings import ServiceLocation

PORT = 8080
DRIFT_WEBHOOK_ENV = "NB2PROD_DRIFT_WEBHOOK"
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
_REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION


def build_service(
    options: CloudRunOptions,
    location: ServiceLocation,
    image: str,
    card: ModelCard,
    traffic: tuple[TrafficSplit, ...] = (TrafficSplit(None, 100),),
) -> run_v2.Service:
    """The Service for DIR: container contract, resources, scaling, labels and traffic."""
    labels = {
        "managed-by": "nb2prod",
        "nb2prod-model": google_label_value(card.name),
        "nb2prod-model-version": google_label_value(card.model_version),
    }
    template = run_v2.RevisionTemplate(
        labels=labels,
        scaling=run_v2.RevisionScaling(
            min_instance_count=options.min_instances, max_instance_count=options.max_instances
        ),
        timeout=duration_pb2.Duration(seconds=options.timeout_seconds),
        service_account=options.service_account or "",
        containers=[_container(options, image)],
        max_instance_request_concurrency=options.concurrency,
    )
    content = json_format.MessageToJson(run_v2.RevisionTemplate.pb(template), sort_keys=True)
    version = re.sub(r"[^a-z0-9]", "", card.model_version.lower())[:6] or "model"
    fingerprint = hashlib.sha256(content.encode()).hexdigest()[:6]
    template.revision = f"{location.service}-{version}-{fingerprint}"
    return run_v2.Service(
        name=location.name,
        labels=labels,
        client="nb2prod",
        client_version=nb2prod_version(),
        template=template,
        traffic=traffic_targets(traffic),
    )


def _container(options: CloudRunOptions, image: str) -> run_v2.Container:
    """The container contract: port, environment, resources and probes."""
    env = dict(options.env)
    if options.drift_webhook:
        env[DRIFT_WEBHOOK_ENV] = options.drift_webhook
    return run_v2.Container(
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


def traffic_splits(targets: Any) -> tuple[TrafficSplit, ...]:
    """The API's traffic targets back as TrafficSplit records."""
    return tuple(
        TrafficSplit(
            target.revision if target.type_ == _REVISION else None, target.percent, target.tag
        )
        for target in targets
    )


def request_body(service: run_v2.Service) -> dict[str, Any]:
    """The JSON body the REST client sends for ``service`` (the name goes in the URL)."""
    body: dict[str, Any] = json.loads(
        json_format.MessageToJson(run_v2.Service.pb(service), use_integers_for_enums=True)
    )
    body.pop("name", None)
    return body


def render_request(service: run_v2.Service, endpoint: str | None) -> str:
    """The exact request deploy would send: method and URL as comments, body as YAML."""
    host = endpoint or "https://run.googleapis.com"
    header = (
        f"# PATCH {host}/v2/{service.name}?allowMissing=true\n"
        "# (creates the service when missing, then waits for the operation)\n"
    )
    return header + str(yaml.safe_dump(request_body(service), sort_keys=False))


def knative_service(service: run_v2.Service, region: str) -> dict[str, Any]:
    """The same service as a Knative ``serving.knative.dev/v1`` Service (service.yaml)."""
    template = service.template
    resources = template.containers[0].resources
    spec: dict[str, Any] = {
        "containerConcurrency": template.max_instance_request_concurrency,
        "timeoutSeconds": template.timeout.seconds,
        "containers": [_knative_container(template.containers[0])],
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
            "traffic": knative_traffic(traffic_splits(service.traffic)),
        },
    }


def _knative_container(container: run_v2.Container) -> dict[str, Any]:
    knative: dict[str, Any] = {
        "image": container.image,
        "ports": [{"name": "http1", "containerPort": PORT}],
        "env": [{"name": env.name, "value": env.value} for env in container.env],
        "resources": {"limits": dict(container.resources.limits)},
        "startupProbe": _knative_probe(container.startup_probe),
        "livenessProbe": _knative_probe(container.liveness_probe),
    }
    if not knative["env"]:
        del knative["env"]
    return knative


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


def write_service_yaml(path: Path, document: dict[str, Any]) -> Path:
    """Write a Knative service document with a header saying how to apply it."""
    header = "# Written by nb2prod. Apply with: gcloud run services replace service.yaml\n"
    write_text_atomically(path, header + yaml.safe_dump(document, sort_keys=False))
    return path


def read_service_yaml(path: Path) -> dict[str, Any] | None:
    """The Knative document in ``path``, or None when there is none."""
    if not path.is_file():
        return None
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def nb2prod_version() -> str:
    """The installed nb2prod version, sent as the service's ``client_version``."""
    try:
        return str(metadata.version("nb2prod"))
    except metadata.PackageNotFoundError:
        return "0"
