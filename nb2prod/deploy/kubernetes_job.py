"""An Indexed Kubernetes ``Job`` (``k8s/job.yaml``) that scores files in batch with DIR's image.

``completions`` pods, each with its ``JOB_COMPLETION_INDEX``, run the batch runtime in
place of the server; the manifest passes the count as ``NB2PROD_TASK_COUNT``, so each pod
scores every count-th input file into its own output, as a Cloud Run Job's tasks do. A
failed index is retried on its own (``backoffLimitPerIndex``) and the others go on.
``gs://`` buckets are GKE Cloud Storage FUSE CSI ephemeral volumes at ``/gcs/BUCKET``;
other paths are on a PersistentVolumeClaim (``--claim``) at ``/data``. The pods get the
same restricted security context, read-only root and ``/tmp`` as the service's.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..models import BatchJobSpec, KubernetesOptions
from .batch_job import CLAIM_ROOT, MOUNT_OPTIONS, RUNTIME_COMMAND, BatchPlan, plan_batch

TASK_COUNT_ENV = "NB2PROD_TASK_COUNT"
GCS_FUSE_DRIVER = "gcsfuse.csi.storage.gke.io"
#: A finished Job (and its pods' logs) stays a day; then the same manifest can run again.
FINISHED_TTL_SECONDS = 24 * 3600
_SUFFIX = "-batch"


def batch_plan(options: KubernetesOptions) -> BatchPlan | None:
    """The batch runtime's side of the Job, when --input asks for one."""
    if options.batch is None:
        if options.claim is not None:
            raise ConfigError("--claim is for the batch Job: it needs --input and --output")
        return None
    plan = plan_batch(options.batch, target="kubernetes", claim=options.claim)
    if options.claim is not None and not plan.uses_claim:
        raise ConfigError(
            f"--claim {options.claim} is not used: --input and --output are gs:// URLs",
            hint="Leave --claim out, or give paths on the claim (relative to it).",
        )
    return plan


def batch_notes(options: KubernetesOptions, plan: BatchPlan) -> tuple[str, ...]:
    """What the Job leaves to the cluster: bucket access, a claim several pods can share."""
    notes = list(plan.notes)
    if plan.buckets:
        notes.append(
            "gs:// paths need GKE's Cloud Storage FUSE CSI driver, and the pods' Kubernetes "
            "service account access to the buckets through Workload Identity "
            "(roles/storage.objectViewer to read, roles/storage.objectUser to write)."
        )
    if plan.uses_claim and options.batch is not None and options.batch.parallelism != 1:
        notes.append(
            f"--claim {options.claim}: pods on several nodes share it only if it is "
            "ReadWriteMany (or pass --parallelism 1)."
        )
    return tuple(notes)


def indexed_job(
    options: KubernetesOptions,
    plan: BatchPlan,
    metadata: dict[str, Any],
    image: str,
    base: tuple[dict[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """The Job. ``base`` is the restricted (container, pod) the service's pods start from."""
    spec = options.batch
    assert spec is not None
    container_base, pod_base = base
    name = metadata["name"][: 63 - len(_SUFFIX)].rstrip("-") + _SUFFIX
    # Its own instance label, so the service's Service and PDB never select its pods.
    labels = {
        **metadata["labels"],
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "batch-scoring",
    }
    env = {**options.env, TASK_COUNT_ENV: str(spec.tasks)}
    mounts, volumes = _storage(plan, options.claim)
    container = {
        "name": "batch",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(RUNTIME_COMMAND),
        "args": list(plan.args),
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory},
            "limits": {"cpu": options.cpu, "memory": options.memory},
        },
        **container_base,
        "volumeMounts": [*container_base["volumeMounts"], *mounts],
    }
    pod = {
        **pod_base,
        # backoffLimitPerIndex needs Never: a failed pod is replaced, not restarted in place.
        "restartPolicy": "Never",
        # Per pod, as Cloud Run's task timeout is per task.
        "activeDeadlineSeconds": spec.task_timeout_seconds,
        "containers": [container],
        "volumes": [*pod_base["volumes"], *volumes],
    }
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod}
    if plan.buckets:
        template["metadata"]["annotations"] = {"gke-gcsfuse/volumes": "true"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**metadata, "name": name, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.tasks,
            "parallelism": spec.parallelism or spec.tasks,
            "backoffLimitPerIndex": spec.max_retries,
            "ttlSecondsAfterFinished": FINISHED_TTL_SECONDS,
            "template": template,
        },
    }


def _storage(plan: BatchPlan, claim: str | None) -> tuple[list[Any], list[Any]]:
    """The container's mounts and the pod's volumes: each bucket, and the claim."""
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for bucket in plan.buckets:
        mounts.append(
            {"name": bucket.volume, "mountPath": bucket.path, "readOnly": bucket.read_only}
        )
        attributes = {"bucketName": bucket.bucket, "mountOptions": ",".join(MOUNT_OPTIONS)}
        volumes.append(
            {
                "name": bucket.volume,
                "csi": {
                    "driver": GCS_FUSE_DRIVER,
                    "readOnly": bucket.read_only,
                    "volumeAttributes": attributes,
                },
            }
        )
    if plan.uses_claim and claim is not None:
        mounts.append({"name": "data", "mountPath": str(CLAIM_ROOT)})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
    return mounts, volumes


def describe(spec: BatchJobSpec) -> str:
    """How the header of job.yaml says to run the Job (again)."""
    return (
        f"# {spec.tasks} indexed pod(s) score {spec.input} into {spec.output}.\n"
        "# Run it (again): kubectl replace --force -f job.yaml\n"
    )
