"""Kubernetes manifests for DIR in ``DIR/k8s/``, and applying them to the current cluster.

The Deployment honours the same container contract as Cloud Run (PORT 8080,
``/readyz`` and ``/healthz``) under the restricted Pod Security Standard, with a
Service, a CPU-based HPA and a PodDisruptionBudget beside it. ``--kserve`` adds a
KServe ``InferenceService`` (custom predictor) in ``k8s/kserve/``, kept apart so
``kubectl apply -f k8s/`` does not run the model twice. ``--input``/``--output`` add
``k8s/job.yaml``, an Indexed Job that scores files in batch (kubernetes_job). ``--apply``
server-side applies the manifests with the official client against the current kubeconfig.
Needs the ``kubernetes`` extra; without it, importing this module raises
MissingExtraError, which names the extra to install.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..builddir import BuildDir
from ..errors import ConfigError, DeployError, MissingExtraError
from ..models import KubernetesManifests, KubernetesOptions
from ..naming import dns_label, kubernetes_label_value
from ..runtime.card import ModelCard
from .kubernetes_job import batch_notes, batch_plan, describe, indexed_job

try:
    import urllib3.exceptions
    import yaml
    from kubernetes import config as kube_config
    from kubernetes import dynamic
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
except ImportError as err:
    raise MissingExtraError("kubernetes", "deploying to Kubernetes", err) from err

PORT = 8080
RUN_AS_USER = 10001
#: The service drains in-flight requests for about 8 s after SIGTERM; the margin
#: covers endpoint removal racing the signal and uvicorn's own exit.
GRACEFUL_SHUTDOWN_SECONDS = 8
TERMINATION_GRACE_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 7
DRIFT_WEBHOOK_ENV = "NB2PROD_DRIFT_WEBHOOK"
FIELD_MANAGER = "nb2prod"
JOB_FILE = "job.yaml"  # with --input: the Indexed Job that scores files in batch
#: The restricted Pod Security Standard, for the service's pods and the batch Job's alike.
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108
TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}


class _NoAliasDumper(yaml.SafeDumper):  # type: ignore[misc]
    """Writes shared dicts (labels, metadata) out in full instead of as YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def deploy(options: KubernetesOptions) -> KubernetesManifests:
    """Write ``DIR/k8s/`` and, with ``options.apply``, apply it to the current cluster.

    Raises ConfigError for unusable options or a DIR without a model card or
    image; DeployError when there is no usable kubeconfig, the cluster cannot be
    reached, or it rejects a manifest.
    """
    result = write_manifests(options)
    if not options.apply:
        return result
    documents = [_load(path) for path in result.files]
    if options.kserve:  # the InferenceService replaces the plain Deployment
        documents = [doc for doc in documents if doc["kind"] == "InferenceService"]
    applied = apply_manifests(documents, namespace=options.namespace, context=options.context)
    return KubernetesManifests(result.directory, result.files, result.image, applied, result.notes)


def write_manifests(options: KubernetesOptions) -> KubernetesManifests:
    """Render every manifest and swap ``DIR/k8s/`` into place in one step."""
    build_dir = Path(options.build_dir)
    card = BuildDir(build_dir).card()
    image, notes = deployable_image(build_dir)
    documents = build_manifests(options, card, image)
    if options.min_replicas < 2:
        notes += ("With one replica the PodDisruptionBudget (minAvailable: 1) blocks drains.",)
    plan = batch_plan(options)
    if plan is not None:
        notes += batch_notes(options, plan)
    target = BuildDir(build_dir).k8s_dir
    staging = Path(tempfile.mkdtemp(prefix=".k8s.", dir=build_dir))
    try:
        files = []
        header = f"# Written by nb2prod for {card.name} {card.model_version}.\n"
        for relative, document in documents.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            text = yaml.dump(document, Dumper=_NoAliasDumper, sort_keys=False)
            run = describe(options.batch) if relative == JOB_FILE and options.batch else ""
            path.write_text(header + run + text, encoding="utf-8")
            files.append(target / relative)
        staging.chmod(0o755)
        if target.exists():
            old = target.rename(build_dir / f".k8s.old.{staging.name}")
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return KubernetesManifests(directory=target, files=tuple(files), image=image, notes=notes)


def build_manifests(
    options: KubernetesOptions, card: ModelCard, image: str
) -> dict[str, dict[str, Any]]:
    """The manifests by file name relative to ``k8s/``."""
    _check(options)
    name = options.name or dns_label(card.name)
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ConfigError(f"{name!r} is not a Kubernetes resource name (a DNS-1035 label)")
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}
    labels = {
        **selector,
        "app.kubernetes.io/version": kubernetes_label_value(card.model_version),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "nb2prod",
    }
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if options.namespace:
        metadata["namespace"] = options.namespace
    pod = _pod_spec(options, image)
    documents = {
        "deployment.yaml": _deployment(metadata, selector, pod),
        "service.yaml": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        },
        "hpa.yaml": _autoscaler(options, metadata),
        "pdb.yaml": {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata,
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}},
        },
    }
    if options.kserve:
        documents["kserve/inferenceservice.yaml"] = _inference_service(options, metadata, pod)
    plan = batch_plan(options)
    if plan is not None:
        base = ({"securityContext": CONTAINER_SECURITY, "volumeMounts": [TMP_MOUNT]}, pod)
        documents[JOB_FILE] = indexed_job(options, plan, metadata, image, base)
    return documents


def _deployment(
    metadata: dict[str, Any], selector: dict[str, str], pod: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        # No spec.replicas: the HPA owns the count, and re-applying must not reset it.
        "spec": {
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 5,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": {"labels": metadata["labels"]}, "spec": pod},
        },
    }


def _autoscaler(options: KubernetesOptions, metadata: dict[str, Any]) -> dict[str, Any]:
    target = {"type": "Utilization", "averageUtilization": options.target_cpu_utilization}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": metadata["name"],
            },
            "minReplicas": options.min_replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def _inference_service(
    options: KubernetesOptions, metadata: dict[str, Any], pod: dict[str, Any]
) -> dict[str, Any]:
    """KServe's custom predictor: the same pod, its container renamed as KServe requires."""
    predictor = {
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        **{key: value for key, value in pod.items() if key != "containers"},
        "containers": [{**pod["containers"][0], "name": "kserve-container"}],
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


def _pod_spec(options: KubernetesOptions, image: str) -> dict[str, Any]:
    env = {"PORT": str(PORT), **options.env}
    if options.drift_webhook:
        env[DRIFT_WEBHOOK_ENV] = options.drift_webhook
    probe = {"port": "http"}
    container = {
        "name": "model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory},
            "limits": {"cpu": options.cpu, "memory": options.memory},
        },
        # 2 s x 60: up to two minutes to load the model before liveness checks start.
        "startupProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": 2,
            "timeoutSeconds": 1,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "securityContext": CONTAINER_SECURITY,
        # The root filesystem is read-only; /tmp (and Prometheus' multiprocess files
        # under it) need somewhere writable.
        "volumeMounts": [TMP_MOUNT],
    }
    return {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": [TMP_VOLUME],
    }


def _check(options: KubernetesOptions) -> None:
    problems = []
    if not 1 <= options.min_replicas <= options.max_replicas:
        problems.append("need 1 <= min replicas <= max replicas")
    if not 1 <= options.target_cpu_utilization <= 100:
        problems.append("target CPU utilisation must be a percentage")
    for quantity in (options.cpu, options.cpu_request, options.memory):
        if not re.fullmatch(r"\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?", quantity):
            problems.append(f"{quantity!r} is not a Kubernetes quantity")
    for key in options.env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            problems.append(f"--env {key}: not a valid environment variable name")
    if problems:
        raise ConfigError("; ".join(problems))


def apply_manifests(
    documents: list[dict[str, Any]], *, namespace: str | None = None, context: str | None = None
) -> tuple[str, ...]:
    """Server-side apply ``documents`` with the current (or named) kubeconfig context."""
    try:
        api_client = kube_config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
        contexts, active = kube_config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError, TypeError) as err:
        raise DeployError(
            f"no usable kubeconfig: {err}",
            hint="Point KUBECONFIG at your cluster's kubeconfig, or pick a context with "
            "kubectl config use-context NAME.",
        ) from err
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    default_namespace = namespace or (chosen or {}).get("context", {}).get("namespace", "default")
    applied = []
    try:
        client = dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
        for document in documents:
            kind, name = document["kind"], document["metadata"]["name"]
            target_namespace = document["metadata"].get("namespace", default_namespace)
            try:
                resource = client.resources.get(api_version=document["apiVersion"], kind=kind)
            except ResourceNotFoundError as err:
                raise DeployError(
                    f"the cluster has no {kind} ({document['apiVersion']}) resource",
                    hint="Install KServe first." if kind == "InferenceService" else None,
                ) from err
            client.server_side_apply(  # type: ignore[no-untyped-call]
                resource,
                body=document,
                name=name,
                namespace=target_namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
            applied.append(f"{kind}/{target_namespace}/{name}")
    except ApiException as err:
        raise DeployError(f"the cluster rejected {_api_message(err)}") from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise DeployError(f"cannot reach the cluster: {err}") from err
    return tuple(applied)


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def deployable_image(build_dir: Path) -> tuple[str, tuple[str, ...]]:
    """The pushed image by digest; else the local tag, with a note on loading it."""
    layout = BuildDir(build_dir)
    push, stale = layout.current_push()
    if push and not stale:
        return push.image, ()
    tag = layout.require_image().tags[0]
    return tag, (
        f"The image is not pushed; the manifests use the local tag {tag}. Push it "
        "(nb2prod push DIR --registry R) or load it into the cluster (kind load docker-image).",
    )


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document
