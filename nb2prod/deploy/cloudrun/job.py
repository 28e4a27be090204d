"""The ``run_v2.Job`` that scores files in batch with DIR's image, and the same job as YAML.

The job runs the service's image by digest with the batch runtime as its command (the
image's CMD is the server): ``task_count`` tasks, each scoring its share of the input
files into its own output. Each Cloud Storage bucket the job reads or writes is a
Cloud Storage volume at ``/gcs/BUCKET``, read-only when the job only reads it.
``job.yaml`` is the same job as a ``run.googleapis.com/v1`` Job, for ``gcloud run jobs
replace`` and for review in a pull request.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from google.cloud import run_v2
from google.protobuf import duration_pb2, json_format

from ...builddir import write_text_atomically
from ...models import BatchJobSpec, CloudRunJobOptions
from ...naming import google_label_value
from ...runtime.card import ModelCard
from ..batch_job import MOUNT_OPTIONS, RUNTIME_COMMAND, BatchPlan
from .service import nb2prod_version
from .settings import JobLocation

_GEN2 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
#: The CSI driver Cloud Run's v1 API names Cloud Storage volumes by.
GCS_DRIVER = "gcsfuse.run.googleapis.com"


def build_job(
    options: CloudRunJobOptions,
    spec: BatchJobSpec,
    plan: BatchPlan,
    location: JobLocation,
    image: str,
    card: ModelCard,
) -> run_v2.Job:
    """The Job for DIR: task count and retries, the batch command, buckets as volumes."""
    labels = {
        "managed-by": "nb2prod",
        "nb2prod-model": google_label_value(card.name),
        "nb2prod-model-version": google_label_value(card.model_version),
    }
    container = run_v2.Container(
        image=image,
        command=list(RUNTIME_COMMAND),
        args=list(plan.args),
        env=[run_v2.EnvVar(name=key, value=value) for key, value in sorted(options.env.items())],
        resources=run_v2.ResourceRequirements(
            limits={"cpu": options.cpu, "memory": options.memory}
        ),
        volume_mounts=[
            run_v2.VolumeMount(name=mount.volume, mount_path=mount.path) for mount in plan.buckets
        ],
    )
    volumes = [
        run_v2.Volume(
            name=mount.volume,
            gcs=run_v2.GCSVolumeSource(
                bucket=mount.bucket, read_only=mount.read_only, mount_options=list(MOUNT_OPTIONS)
            ),
        )
        for mount in plan.buckets
    ]
    task = run_v2.TaskTemplate(
        containers=[container],
        volumes=volumes,
        max_retries=spec.max_retries,
        timeout=duration_pb2.Duration(seconds=spec.task_timeout_seconds),
        service_account=options.service_account or "",
        # Cloud Storage volumes need the second generation environment (jobs' default anyway).
        execution_environment=_GEN2,
    )
    return run_v2.Job(
        name=location.name,
        labels=labels,
        client="nb2prod",
        client_version=nb2prod_version(),
        template=run_v2.ExecutionTemplate(
            labels=labels,
            task_count=spec.tasks,
            parallelism=spec.parallelism,
            template=task,
        ),
    )


def request_body(job: run_v2.Job) -> dict[str, Any]:
    """The JSON body the REST client sends for ``job`` (the name goes in the URL)."""
    body: dict[str, Any] = json.loads(
        json_format.MessageToJson(run_v2.Job.pb(job), use_integers_for_enums=True)
    )
    body.pop("name", None)
    return body


def render_requests(job: run_v2.Job, endpoint: str | None, execute: bool) -> str:
    """The exact requests deploy would send: methods and URLs as comments, bodies as YAML."""
    host = endpoint or "https://run.googleapis.com"
    text = (
        f"# PATCH {host}/v2/{job.name}?allowMissing=true\n"
        "# (creates the job when missing, then waits for the operation)\n"
        + str(yaml.safe_dump(request_body(job), sort_keys=False))
    )
    if execute:
        text += (
            f"# POST {host}/v2/{job.name}:run\n"
            "# (starts an execution, then reads it until its tasks are done)\n{}\n"
        )
    return text


def knative_job(job: run_v2.Job, region: str) -> dict[str, Any]:
    """The same job as a Cloud Run ``run.googleapis.com/v1`` Job (job.yaml)."""
    execution = job.template
    task = execution.template
    task_spec: dict[str, Any] = {
        "containers": [_knative_container(task.containers[0])],
        "volumes": [_knative_volume(volume) for volume in task.volumes],
        "maxRetries": task.max_retries,
        "timeoutSeconds": task.timeout.seconds,
    }
    if not task_spec["volumes"]:
        del task_spec["volumes"]
    if task.service_account:
        task_spec["serviceAccountName"] = task.service_account
    execution_spec: dict[str, Any] = {"taskCount": execution.task_count}
    if execution.parallelism:
        execution_spec["parallelism"] = execution.parallelism
    execution_spec["template"] = {"spec": task_spec}
    return {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {
            "name": job.name.rsplit("/", 1)[-1],
            # Sorted: protobuf maps have no order, and job.yaml should not change between runs.
            "labels": {**dict(sorted(job.labels.items())), "cloud.googleapis.com/location": region},
        },
        "spec": {
            "template": {
                "metadata": {
                    "labels": dict(sorted(execution.labels.items())),
                    "annotations": {"run.googleapis.com/execution-environment": "gen2"},
                },
                "spec": execution_spec,
            }
        },
    }


def _knative_container(container: run_v2.Container) -> dict[str, Any]:
    knative: dict[str, Any] = {
        "image": container.image,
        "command": list(container.command),
        "args": list(container.args),
        "env": [{"name": env.name, "value": env.value} for env in container.env],
        "resources": {"limits": dict(container.resources.limits)},
        "volumeMounts": [
            {"name": mount.name, "mountPath": mount.mount_path} for mount in container.volume_mounts
        ],
    }
    return {key: value for key, value in knative.items() if value}


def _knative_volume(volume: run_v2.Volume) -> dict[str, Any]:
    attributes = {"bucketName": volume.gcs.bucket}
    if volume.gcs.mount_options:
        attributes["mountOptions"] = ",".join(volume.gcs.mount_options)
    return {
        "name": volume.name,
        "csi": {
            "driver": GCS_DRIVER,
            "readOnly": volume.gcs.read_only,
            "volumeAttributes": attributes,
        },
    }


def write_job_yaml(path: Path, document: dict[str, Any]) -> Path:
    """Write a Cloud Run Job document with a header saying how to apply and run it."""
    name = document["metadata"]["name"]
    region = document["metadata"]["labels"]["cloud.googleapis.com/location"]
    header = (
        "# Written by nb2prod. Apply with: gcloud run jobs replace job.yaml\n"
        f"# Run with: gcloud run jobs execute {name} --region {region} --wait\n"
    )
    write_text_atomically(path, header + yaml.safe_dump(document, sort_keys=False))
    return path
