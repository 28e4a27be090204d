"""The manifests in DIR/k8s/ against the official schemas (kubernetes-validate) and the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fake_build import BUILT_IMAGE_ID, write_built_dir, write_push_record

from nb2prod.deploy import kubernetes as k8s
from nb2prod.errors import ConfigError, DeployError
from nb2prod.models import KubernetesOptions

K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
DIGEST_IMAGE = "registry.example.com/models/iris_classifier@sha256:" + "ab" * 32


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    return write_built_dir(tmp_path / "iris_classifier")


def pushed(build_dir: Path) -> Path:
    write_push_record(build_dir, DIGEST_IMAGE, BUILT_IMAGE_ID)
    return build_dir


def documents(build_dir: Path, **changes: Any) -> dict[str, dict[str, Any]]:
    result = k8s.write_manifests(KubernetesOptions(build_dir, kserve=True, **changes))
    return {
        str(path.relative_to(result.directory)): yaml.safe_load(path.read_text())
        for path in result.files
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_kubernetes_validate(build_dir: Path, version: str) -> None:
    docs = documents(pushed(build_dir), namespace="ml", env={"LOG_LEVEL": "info"})
    assert set(docs) == {
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "kserve/inferenceservice.yaml",
    }
    for name, doc in docs.items():
        if doc["kind"] == "InferenceService":
            # A CRD: kubernetes-validate has no schema for it (the CLI only warns).
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"]["namespace"] == "ml", name


def test_deployment_honours_the_contract_under_restricted_security(build_dir: Path) -> None:
    deployment = documents(pushed(build_dir), drift_webhook="https://hooks/x")["deployment.yaml"]
    pod = deployment["spec"]["template"]["spec"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    container = pod["containers"][0]
    assert container["image"] == DIGEST_IMAGE
    assert {"name": "PORT", "value": "8080"} in container["env"]
    assert {"name": "NB2PROD_DRIFT_WEBHOOK", "value": "https://hooks/x"} in container["env"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
    # ~8 s graceful shutdown plus a margin, below Kubernetes' 30 s default.
    assert 8 < pod["terminationGracePeriodSeconds"] < 30
    assert pod["automountServiceAccountToken"] is False


def test_service_hpa_pdb_and_inference_service(build_dir: Path) -> None:
    docs = documents(build_dir, min_replicas=3, max_replicas=7, target_cpu_utilization=60)
    selector = docs["deployment.yaml"]["spec"]["selector"]["matchLabels"]
    assert docs["service.yaml"]["spec"]["selector"] == selector
    assert docs["service.yaml"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = docs["hpa.yaml"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "iris-classifier"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 7)
    assert hpa["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    pdb = docs["pdb.yaml"]["spec"]
    assert pdb == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    isvc = docs["kserve/inferenceservice.yaml"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert predictor["containers"][0]["name"] == "kserve-container"
    assert predictor["containers"][0]["image"] == "iris_classifier:3f2a9c1b0d7e"
    assert predictor["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    labels = docs["deployment.yaml"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "3f2a9c1b0d7e"
    assert "version" not in " ".join(selector)  # selectors are immutable; versions change


def test_unpushed_image_uses_the_local_tag_with_a_note(build_dir: Path) -> None:
    result = k8s.write_manifests(KubernetesOptions(build_dir))
    assert result.image == "iris_classifier:3f2a9c1b0d7e"
    assert any("not pushed" in note for note in result.notes)


def test_manifests_are_plain_yaml_and_replaced_whole(build_dir: Path) -> None:
    k8s.write_manifests(KubernetesOptions(build_dir, kserve=True))
    result = k8s.write_manifests(KubernetesOptions(build_dir))
    assert sorted(p.name for p in result.directory.rglob("*.yaml")) == [
        "deployment.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "service.yaml",
    ]
    assert not [p for p in build_dir.iterdir() if p.name.startswith(".k8s")]
    for path in result.files:
        text = path.read_text()
        assert text.startswith("# Written by nb2prod for iris_classifier 3f2a9c1b0d7e.")
        assert "&id" not in text and "*id" not in text  # no YAML aliases


def test_unusable_options(build_dir: Path) -> None:
    with pytest.raises(ConfigError, match="min replicas"):
        k8s.write_manifests(KubernetesOptions(build_dir, min_replicas=0))
    with pytest.raises(ConfigError, match="quantity"):
        k8s.write_manifests(KubernetesOptions(build_dir, memory="lots"))
    with pytest.raises(ConfigError, match="DNS-1035"):
        k8s.write_manifests(KubernetesOptions(build_dir, name="Bad_Name"))


def test_apply_without_kubeconfig_is_a_deploy_error(
    build_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing" / "config"))
    with pytest.raises(DeployError) as caught:
        k8s.deploy(KubernetesOptions(build_dir, apply=True))
    assert "kubeconfig" in caught.value.message
    assert "KUBECONFIG" in (caught.value.hint or "")
    assert (build_dir / "k8s" / "deployment.yaml").is_file()  # written before applying


class _Resources:
    def get(self, api_version: str, kind: str) -> str:
        return f"{api_version}/{kind}"


class _DynamicClient:
    applied: list[tuple[str, str, str | None, str]] = []

    def __init__(self, api_client: Any) -> None:
        self.resources = _Resources()

    def server_side_apply(self, resource: str, **kwargs: Any) -> None:
        self.applied.append(
            (resource, kwargs["name"], kwargs["namespace"], kwargs["field_manager"])
        )
        assert kwargs["body"]["metadata"]["name"] == kwargs["name"]


def test_apply_server_side_applies_in_the_context_namespace(
    build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s.kube_config, "new_client_from_config", lambda context=None: object())
    monkeypatch.setattr(
        k8s.kube_config,
        "list_kube_config_contexts",
        lambda: ([], {"name": "dev", "context": {"namespace": "ml"}}),
    )
    monkeypatch.setattr(k8s.dynamic, "DynamicClient", _DynamicClient)
    _DynamicClient.applied = []

    result = k8s.deploy(KubernetesOptions(build_dir, apply=True))

    assert result.applied == (
        "Deployment/ml/iris-classifier",
        "Service/ml/iris-classifier",
        "HorizontalPodAutoscaler/ml/iris-classifier",
        "PodDisruptionBudget/ml/iris-classifier",
    )
    assert {entry[3] for entry in _DynamicClient.applied} == {"nb2prod"}

    _DynamicClient.applied = []
    result = k8s.deploy(KubernetesOptions(build_dir, apply=True, kserve=True, namespace="prod"))
    assert result.applied == ("InferenceService/prod/iris-classifier",)
