"""``deploy --target kubernetes --input ... --output ...``: k8s/job.yaml, an Indexed Job that
scores files in batch, against the official schemas (kubernetes-validate) and the contract the
batch runtime reads (JOB_COMPLETION_INDEX, NB2PROD_TASK_COUNT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fake_build import BUILT_IMAGE_ID, write_built_dir, write_push_record
from helpers import run_cli

from nb2prod.deploy import kubernetes as k8s
from nb2prod.errors import ConfigError
from nb2prod.models import BatchJobSpec, KubernetesOptions

K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DIGEST_IMAGE = "registry.example.com/models/iris_classifier@sha256:" + "ab" * 32
IN, OUT = "gs://nb2prod-in/rows/", "gs://nb2prod-out/scores/scored.csv"


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    directory = write_built_dir(tmp_path / "iris_classifier")
    write_push_record(directory, DIGEST_IMAGE, BUILT_IMAGE_ID)
    return directory


def job_and_service(build_dir: Path, **changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    batch = BatchJobSpec(**{"input": IN, "output": OUT, "tasks": 3, **changes.pop("batch", {})})
    result = k8s.write_manifests(KubernetesOptions(build_dir, batch=batch, **changes))
    docs = {path.name: yaml.safe_load(path.read_text()) for path in result.files}
    return docs["job.yaml"], docs["service.yaml"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("storage", ["gcs", "claim"])
def test_the_job_passes_kubernetes_validate(build_dir: Path, version: str, storage: str) -> None:
    if storage == "gcs":
        job, _ = job_and_service(build_dir, namespace="ml")
    else:
        batch = {"input": "in/", "output": "out/scored.csv"}
        job, _ = job_and_service(build_dir, namespace="ml", batch=batch, claim="scoring-data")
    kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["namespace"] == "ml"


def test_an_indexed_job_runs_the_batch_runtime_on_each_index(build_dir: Path) -> None:
    job, service = job_and_service(
        build_dir,
        env={"LOG_LEVEL": "info"},
        batch={"parallelism": 2, "max_retries": 1, "task_timeout_seconds": 900, "keep": ("id",)},
    )
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (3, 2, 1)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # backoffLimitPerIndex requires it
    assert pod["activeDeadlineSeconds"] == 900  # per pod, as a Cloud Run task's timeout
    [container] = pod["containers"]
    assert container["image"] == DIGEST_IMAGE
    assert container["command"] == ["python", "-m", "nb2prod_runtime.batch"]
    assert container["args"] == [
        *("/gcs/nb2prod-in/rows/", "-o", "/gcs/nb2prod-out/scores/scored.csv", "--force"),
        *("--keep", "id"),
    ]
    # The pod knows its index (JOB_COMPLETION_INDEX, set by Kubernetes); the count comes from us.
    assert container["env"] == [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "NB2PROD_TASK_COUNT", "value": "3"},
    ]
    assert "ports" not in container and "livenessProbe" not in container
    # The restricted security of the service's pods: non-root, read-only root, /tmp writable.
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert pod["automountServiceAccountToken"] is False
    # The Service (and the PDB) select the serving pods only, never the batch ones.
    selector = service["spec"]["selector"]
    labels = spec["template"]["metadata"]["labels"]
    assert not all(labels.get(key) == value for key, value in selector.items())
    assert job["metadata"]["name"] == "iris-classifier-batch"


def test_buckets_are_gcs_fuse_csi_volumes_read_only_when_only_read(build_dir: Path) -> None:
    job, _ = job_and_service(build_dir)
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
    pod = template["spec"]
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}},
        {
            "name": "gcs-nb2prod-in",
            "csi": {
                "driver": "gcsfuse.csi.storage.gke.io",
                "readOnly": True,
                "volumeAttributes": {"bucketName": "nb2prod-in", "mountOptions": "implicit-dirs"},
            },
        },
        {
            "name": "gcs-nb2prod-out",
            "csi": {
                "driver": "gcsfuse.csi.storage.gke.io",
                "readOnly": False,
                "volumeAttributes": {"bucketName": "nb2prod-out", "mountOptions": "implicit-dirs"},
            },
        },
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "gcs-nb2prod-in", "mountPath": "/gcs/nb2prod-in", "readOnly": True},
        {"name": "gcs-nb2prod-out", "mountPath": "/gcs/nb2prod-out", "readOnly": False},
    ]


def test_other_paths_are_on_the_claim_at_data(build_dir: Path) -> None:
    batch = {"input": "incoming/", "output": "/data/scored/out.csv", "tasks": 2}
    job, _ = job_and_service(build_dir, batch=batch, claim="scoring-data")
    pod = job["spec"]["template"]["spec"]
    assert "annotations" not in job["spec"]["template"]["metadata"]
    assert pod["containers"][0]["args"][:3] == ["/data/incoming/", "-o", "/data/scored/out.csv"]
    assert pod["volumes"][-1] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "scoring-data"},
    }
    assert pod["containers"][0]["volumeMounts"][-1] == {"name": "data", "mountPath": "/data"}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"batch": {"input": "rows.csv"}}, "Job's pods can't see this machine's disk"),
        ({"claim": "scoring-data"}, "--claim scoring-data is not used"),
        ({"batch": {"input": "/etc/rows/"}, "claim": "c"}, "relative to it, or under /data"),
        ({"batch": {"input": "../rows/"}, "claim": "c"}, "leaves the claim"),
        ({"batch": {"tasks": 0}}, "--tasks"),
        ({"batch": {"output": "gs://nb2prod-out/scores"}}, "must name the output file"),
    ],
)
def test_unusable_batch_settings(build_dir: Path, changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        job_and_service(build_dir, **changes)
    assert not (build_dir / "k8s").exists()


def test_a_claim_without_a_job_is_refused(build_dir: Path) -> None:
    with pytest.raises(ConfigError, match="--claim is for the batch Job"):
        k8s.write_manifests(KubernetesOptions(build_dir, claim="scoring-data"))


def test_the_cli_writes_job_yaml_beside_the_service_manifests(build_dir: Path) -> None:
    result = run_cli(
        "deploy", build_dir, "--target", "kubernetes", "--input", IN, "--output", OUT,
        "--tasks", "4", "--keep", "id",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_yaml = build_dir / "k8s" / "job.yaml"
    assert f"batch job: {job_yaml} (4 indexed pod(s))" in result.stdout
    assert "Workload Identity" in result.stderr  # what the buckets need on GKE
    assert sorted(p.name for p in (build_dir / "k8s").iterdir()) == [
        "deployment.yaml", "hpa.yaml", "job.yaml", "pdb.yaml", "service.yaml",
    ]  # fmt: skip
    text = job_yaml.read_text()
    assert "# Run it (again): kubectl replace --force -f job.yaml" in text
    assert yaml.safe_load(text)["spec"]["completions"] == 4


def test_batch_flags_without_input_are_refused(build_dir: Path) -> None:
    result = run_cli("deploy", build_dir, "--target", "kubernetes", "--tasks", "4")
    assert result.returncode == 2
    assert result.error_lines == ["Error: a batch job needs --input and --output"]
    assert not (build_dir / "k8s").exists()
