"""Cloud Run deploys against a local fake of the Admin API v2 (see tests/fake_cloudrun.py).

The client is the real ``google-cloud-run`` REST client, pointed at the fake through
``client_options``; the tests assert the exact bodies it sends.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import google.auth
import pytest
import yaml
from fake_build import make_card, write_image_record
from fake_cloudrun import (  # noqa: F401 - fixtures these tests use
    CONDITION_FAILED,
    IMAGE,
    PROJECT,
    REGION,
    FakeCloudRun,
)
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from nb2prod.deploy import cloudrun
from nb2prod.errors import ConfigError, DeployError
from nb2prod.models import CloudRunOptions, TrafficOptions, TrafficSplit
from nb2prod.naming import google_label_value

SERVICE_PATH = f"/v2/projects/{PROJECT}/locations/{REGION}/services/iris-classifier"
REAL_HOME = os.environ.get("HOME", "")


def options(build_dir: Path, fake: FakeCloudRun, **changes: Any) -> CloudRunOptions:
    return CloudRunOptions(
        build_dir=build_dir, project=PROJECT, region=REGION, endpoint=fake.endpoint, **changes
    )


def expected_body(revision: str, traffic: list[dict[str, Any]], **container: Any) -> dict[str, Any]:
    """The body nb2prod sends with default options (container fields overridable)."""
    labels = {
        "managed-by": "nb2prod",
        "nb2prod-model": "iris_classifier",
        "nb2prod-model-version": "3f2a9c1b0d7e",
    }
    return {
        "labels": labels,
        "client": "nb2prod",
        "clientVersion": cloudrun.nb2prod_version(),
        "template": {
            "revision": revision,
            "labels": labels,
            "scaling": {"maxInstanceCount": 100},
            "timeout": "300s",
            "containers": [
                {
                    "image": IMAGE,
                    "resources": {
                        "limits": {"cpu": "1", "memory": "512Mi"},
                        "cpuIdle": True,
                        "startupCpuBoost": True,
                    },
                    "ports": [{"name": "http1", "containerPort": 8080}],
                    "startupProbe": {
                        "httpGet": {"path": "/readyz"},
                        "periodSeconds": 2,
                        "timeoutSeconds": 1,
                        "failureThreshold": 120,
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz"},
                        "periodSeconds": 10,
                        "timeoutSeconds": 2,
                        "failureThreshold": 3,
                    },
                    **container,
                }
            ],
            "maxInstanceRequestConcurrency": 80,
        },
        "traffic": traffic,
    }


LATEST_100 = [{"type": 1, "percent": 100}]


#: service id, the model version's first six characters, a fingerprint of the revision
REVISION_NAME = r"iris-classifier-3f2a9c-[0-9a-f]{6}"


# -- create, update, canary, promote, rollback --------------------------------------------


def test_create_sends_the_whole_service_with_allow_missing(build_dir: Path, fake: Any) -> None:
    result = cloudrun.deploy(options(build_dir, fake))

    assert re.fullmatch(REVISION_NAME, result.revision)
    calls = fake.service_requests()
    assert [(c.method, c.path) for c in calls] == [("GET", SERVICE_PATH), ("PATCH", SERVICE_PATH)]
    assert calls[1].query["allowMissing"] == "true"
    assert "updateMask" not in calls[1].query
    assert calls[1].body == expected_body(result.revision, LATEST_100)
    assert result.url == "https://iris-classifier-abc123-ew.a.run.app"
    assert result.traffic == (TrafficSplit(None, 100),)
    state = json.loads((build_dir / ".nb2prod" / "deploy.json").read_text())
    assert state["baseline"] is None and state["canary"] is None
    assert state["image"] == IMAGE and state["revision"] == result.revision


def test_update_sends_every_setting_and_remembers_what_served(build_dir: Path, fake: Any) -> None:
    first = cloudrun.deploy(options(build_dir, fake))
    second = cloudrun.deploy(
        options(
            build_dir,
            fake,
            concurrency=20,
            cpu="2",
            memory="2Gi",
            cpu_idle=False,
            startup_cpu_boost=False,
            min_instances=1,
            max_instances=5,
            timeout_seconds=60,
            service_account="runner@demo-project.iam.gserviceaccount.com",
            env={"LOG_LEVEL": "debug"},
            drift_webhook="https://hooks.example.com/drift",
        )
    )

    assert second.revision != first.revision
    body = fake.bodies("PATCH")[-1]
    want = expected_body(
        second.revision,
        LATEST_100,
        resources={"limits": {"cpu": "2", "memory": "2Gi"}},
        env=[
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "NB2PROD_DRIFT_WEBHOOK", "value": "https://hooks.example.com/drift"},
        ],
    )
    want["template"].update(
        scaling={"minInstanceCount": 1, "maxInstanceCount": 5},
        timeout="60s",
        serviceAccount="runner@demo-project.iam.gserviceaccount.com",
        maxInstanceRequestConcurrency=20,
    )
    assert body == want
    state = json.loads((build_dir / ".nb2prod" / "deploy.json").read_text())
    assert state["baseline"] == [{"revision": first.revision, "percent": 100, "tag": ""}]


def test_same_build_and_settings_name_the_same_revision(build_dir: Path, fake: Any) -> None:
    first = cloudrun.deploy(options(build_dir, fake))
    again = cloudrun.deploy(options(build_dir, fake))
    assert again.revision == first.revision
    assert len(fake.revisions) == 1


def canary_setup(build_dir: Path, fake: Any, percent: int = 10) -> tuple[str, str]:
    stable = cloudrun.deploy(options(build_dir, fake)).revision
    canary = cloudrun.deploy(options(build_dir, fake, memory="1Gi", canary=percent)).revision
    return stable, canary


def test_canary_routes_its_share_by_name_and_leaves_the_rest(build_dir: Path, fake: Any) -> None:
    stable, canary = canary_setup(build_dir, fake, percent=10)

    assert canary != stable
    body = fake.bodies("PATCH")[-1]
    assert body == expected_body(
        canary,
        [
            {"type": 2, "revision": canary, "percent": 10, "tag": "canary"},
            {"type": 2, "revision": stable, "percent": 90},
        ],
        resources={
            "limits": {"cpu": "1", "memory": "1Gi"},
            "cpuIdle": True,
            "startupCpuBoost": True,
        },
    )
    state = json.loads((build_dir / ".nb2prod" / "deploy.json").read_text())
    assert state["canary"] == {"revision": canary, "percent": 10}
    knative = yaml.safe_load((build_dir / "service.yaml").read_text())
    assert knative["spec"]["traffic"] == [
        {"revisionName": canary, "percent": 10, "tag": "canary"},
        {"revisionName": stable, "percent": 90},
    ]


def test_canary_splits_an_existing_split_proportionally() -> None:
    baseline = (
        TrafficSplit("svc-a", 70),
        TrafficSplit("svc-b", 30),
        TrafficSplit("svc-c", 0, "old"),
    )
    split = cloudrun.canary_traffic(baseline, "svc-new", 25, "svc")
    assert split == (
        TrafficSplit("svc-new", 25, "canary"),
        TrafficSplit("svc-a", 53),
        TrafficSplit("svc-b", 22),
        TrafficSplit("svc-c", 0, "old"),
    )
    assert sum(s.percent for s in split) == 100


def test_canary_refuses_a_second_canary_and_a_new_service(build_dir: Path, fake: Any) -> None:
    with pytest.raises(ConfigError, match="no serving revision"):
        cloudrun.deploy(options(build_dir, fake, canary=10))
    canary_setup(build_dir, fake)
    with pytest.raises(DeployError, match="already receives 10%"):
        cloudrun.deploy(options(build_dir, fake, memory="2Gi", canary=20))


def test_promote_moves_all_traffic_to_the_canary_by_mask(build_dir: Path, fake: Any) -> None:
    stable, canary = canary_setup(build_dir, fake)
    canary_body = fake.bodies("PATCH")[-1]
    etag = next(iter(fake.services.values()))["etag"]

    result = cloudrun.promote(TrafficOptions(build_dir, endpoint=fake.endpoint))

    call = fake.service_requests()[-1]
    assert call.method == "PATCH" and call.query.get("updateMask") == "traffic"
    assert "allowMissing" not in call.query
    assert call.body == {
        **canary_body,
        "etag": etag,
        "traffic": [{"type": 2, "revision": canary, "percent": 100}],
    }
    assert result.revision == canary
    assert result.traffic == (TrafficSplit(canary, 100),)
    state = json.loads((build_dir / ".nb2prod" / "deploy.json").read_text())
    assert state["canary"] is None and state["revision"] == canary
    knative = yaml.safe_load((build_dir / "service.yaml").read_text())
    assert knative["spec"]["traffic"] == [{"revisionName": canary, "percent": 100}]


def test_rollback_restores_the_traffic_before_the_canary(build_dir: Path, fake: Any) -> None:
    stable, canary = canary_setup(build_dir, fake)
    canary_body = fake.bodies("PATCH")[-1]
    cloudrun.promote(TrafficOptions(build_dir, endpoint=fake.endpoint))
    etag = next(iter(fake.services.values()))["etag"]

    result = cloudrun.rollback(TrafficOptions(build_dir, endpoint=fake.endpoint))

    call = fake.service_requests()[-1]
    assert call.query.get("updateMask") == "traffic"
    assert call.body == {
        **canary_body,
        "etag": etag,
        "traffic": [{"type": 2, "revision": stable, "percent": 100}],
    }
    assert result.revision == stable
    served = next(iter(fake.services.values()))["trafficStatuses"]
    assert served == [{"type": 2, "percent": 100, "revision": stable}]


def test_promote_without_a_canary_goes_to_latest(build_dir: Path, fake: Any) -> None:
    cloudrun.deploy(options(build_dir, fake))
    cloudrun.promote(TrafficOptions(build_dir, endpoint=fake.endpoint))
    assert fake.bodies("PATCH")[-1]["traffic"] == LATEST_100


def test_rollback_needs_something_to_go_back_to(build_dir: Path, fake: Any) -> None:
    cloudrun.deploy(options(build_dir, fake))
    with pytest.raises(DeployError, match="nothing to roll back to"):
        cloudrun.rollback(TrafficOptions(build_dir, endpoint=fake.endpoint))


def test_promote_needs_a_deploy(build_dir: Path, fake: Any) -> None:
    with pytest.raises(ConfigError, match="deploy.json is missing"):
        cloudrun.promote(TrafficOptions(build_dir, endpoint=fake.endpoint))


# -- errors -------------------------------------------------------------------------------


def test_permission_denied_names_the_permission_and_role(build_dir: Path, fake: Any) -> None:
    fake.fail(403, permission="run.services.get")
    with pytest.raises(DeployError) as caught:
        cloudrun.deploy(options(build_dir, fake))
    assert "run.services.get" in caught.value.message
    assert "roles/run.developer" in (caught.value.hint or "")
    assert not (build_dir / ".nb2prod" / "deploy.json").exists()


def test_missing_service_account_permission_names_the_account_role(
    build_dir: Path, fake: Any
) -> None:
    fake.fail(403, permission="iam.serviceaccounts.actAs")
    with pytest.raises(DeployError) as caught:
        cloudrun.deploy(options(build_dir, fake))
    assert "roles/iam.serviceAccountUser" in (caught.value.hint or "")


@pytest.mark.parametrize(("project", "region"), [("no-such-project", REGION), (PROJECT, "mars1")])
def test_unknown_project_or_region(build_dir: Path, fake: Any, project: str, region: str) -> None:
    with pytest.raises(DeployError) as caught:
        cloudrun.deploy(replace_options(options(build_dir, fake), project=project, region=region))
    assert f"project {project!r} or region {region!r} was not found" in caught.value.message
    assert "gcloud run regions list" in (caught.value.hint or "")


def replace_options(opts: CloudRunOptions, **changes: Any) -> CloudRunOptions:
    from dataclasses import replace

    return replace(opts, **changes)


@pytest.mark.parametrize("as_operation_error", [False, True])
def test_revision_that_is_not_ready_shows_its_condition(
    build_dir: Path, fake: Any, as_operation_error: bool
) -> None:
    first = cloudrun.deploy(options(build_dir, fake))
    message = "The user-provided container failed to start and listen on PORT=8080."
    fake.revision_not_ready(message, as_operation_error=as_operation_error)

    with pytest.raises(DeployError) as caught:
        cloudrun.deploy(options(build_dir, fake, memory="1Gi"))

    assert message in caught.value.message
    assert "did not become ready" in caught.value.message
    assert "previous revision keeps serving" in (caught.value.hint or "")
    service = next(iter(fake.services.values()))
    assert service["latestReadyRevision"].endswith(first.revision)
    if not as_operation_error:
        assert service["terminalCondition"]["state"] == CONDITION_FAILED
    state = json.loads((build_dir / ".nb2prod" / "deploy.json").read_text())
    assert state["revision"] == first.revision  # the failed deploy recorded nothing


def test_no_credentials_says_how_to_log_in(
    build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_credentials(**_: Any) -> Any:
        raise auth_exceptions.DefaultCredentialsError("Could not find default credentials.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(DeployError) as caught:
        cloudrun.deploy(CloudRunOptions(build_dir, project=PROJECT, region=REGION))
    assert "gcloud auth application-default login" in (caught.value.hint or "")


def test_unpushed_image_is_not_deployed(build_dir: Path, fake: Any) -> None:
    (build_dir / ".nb2prod" / "push.json").unlink()
    with pytest.raises(ConfigError, match="has not been pushed"):
        cloudrun.deploy(options(build_dir, fake))
    assert fake.requests == []


def test_image_rebuilt_after_push_is_not_deployed(build_dir: Path, fake: Any) -> None:
    write_image_record(build_dir, "iris_classifier:new", "sha256:" + "22" * 32)
    with pytest.raises(ConfigError, match="rebuilt after its last push"):
        cloudrun.deploy(options(build_dir, fake))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"cpu": "0.5"}, "concurrency 1"),
        ({"canary": 100}, "--canary"),
        ({"env": {"PORT": "9000"}}, "--env PORT"),
        ({"timeout_seconds": 4000}, "--timeout"),
        ({"min_instances": 3, "max_instances": 2}, "--min-instances"),
        ({"memory": "lots"}, "--memory"),
        ({"service": "Bad_Name"}, "--service"),
        ({"service": "a" * 41, "canary": 5}, "too long for a canary"),
    ],
)
def test_unusable_options(
    build_dir: Path, fake: Any, changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        cloudrun.deploy(options(build_dir, fake, **changes))
    assert fake.requests == []


# -- dry run, service.yaml ----------------------------------------------------------------


def test_dry_run_sends_nothing_and_writes_service_yaml(build_dir: Path, fake: Any) -> None:
    result = cloudrun.deploy(options(build_dir, fake, dry_run=True))

    assert fake.requests == []
    assert result.dry_run and result.url == ""
    assert not (build_dir / ".nb2prod" / "deploy.json").exists()
    header, _, body = result.request.partition("\n# (")
    assert header == f"# PATCH {fake.endpoint}{SERVICE_PATH}?allowMissing=true"
    assert yaml.safe_load(body.partition("\n")[2]) == expected_body(result.revision, LATEST_100)
    knative = yaml.safe_load((build_dir / "service.yaml").read_text())
    assert knative["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def test_dry_run_before_push_says_the_digest_is_pinned_later(build_dir: Path) -> None:
    (build_dir / ".nb2prod" / "push.json").unlink()
    result = cloudrun.deploy(
        CloudRunOptions(build_dir, project=PROJECT, region=REGION, dry_run=True, canary=10)
    )
    assert any("pinned at push time" in note for note in result.notes)
    assert "@<digest pinned at push time>" in result.image
    assert "# PATCH https://run.googleapis.com/v2/" in result.request


def test_service_yaml_is_the_same_service_in_knative_form(build_dir: Path, fake: Any) -> None:
    result = cloudrun.deploy(
        options(build_dir, fake, min_instances=1, max_instances=3, service_account="sa@x.iam")
    )
    text = (build_dir / "service.yaml").read_text()
    assert text.startswith("# Written by nb2prod. Apply with: gcloud run services replace")
    knative = yaml.safe_load(text)
    assert knative["apiVersion"] == "serving.knative.dev/v1" and knative["kind"] == "Service"
    assert knative["metadata"]["name"] == "iris-classifier"
    assert knative["metadata"]["labels"]["cloud.googleapis.com/location"] == REGION
    template = knative["spec"]["template"]
    assert template["metadata"]["name"] == result.revision
    assert template["metadata"]["annotations"] == {
        "autoscaling.knative.dev/minScale": "1",
        "autoscaling.knative.dev/maxScale": "3",
        "run.googleapis.com/cpu-throttling": "true",
        "run.googleapis.com/startup-cpu-boost": "true",
    }
    spec = template["spec"]
    assert spec["containerConcurrency"] == 80 and spec["timeoutSeconds"] == 300
    assert spec["serviceAccountName"] == "sa@x.iam"
    container = spec["containers"][0]
    assert container["image"] == IMAGE
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert knative["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]


# -- client, settings ---------------------------------------------------------------------


def test_default_endpoint_stays_googles(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: dict[str, Any] = {}

    def adc(**kwargs: Any) -> Any:
        asked.update(kwargs)
        return AnonymousCredentials(), None

    monkeypatch.setattr(google.auth, "default", adc)
    client = cloudrun.make_client()
    assert isinstance(client, run_v2.ServicesClient)
    assert client.api_endpoint == "run.googleapis.com"
    assert client.transport._host == "https://run.googleapis.com"
    assert asked["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"]


def test_local_http_endpoint_uses_anonymous_credentials() -> None:
    client = cloudrun.make_client("http://127.0.0.1:9")
    assert client.transport._host == "http://127.0.0.1:9"
    assert isinstance(client.transport._credentials, AnonymousCredentials)


def test_project_and_region_fall_back_to_env_then_gcloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "CLOUDSDK_RUN_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLOUDSDK_CONFIG", raising=False)
    monkeypatch.delenv("CLOUDSDK_ACTIVE_CONFIG_NAME", raising=False)
    with pytest.raises(ConfigError, match="no Google Cloud project"):
        cloudrun.resolve_location(None, None, None, "m")

    configs = Path(os.environ["HOME"]) / ".config" / "gcloud" / "configurations"
    configs.mkdir(parents=True)
    (configs / "config_default").write_text(
        "[core]\nproject = from-gcloud\naccount = me@example.com\n\n[run]\nregion = us-east1\n"
    )
    assert cloudrun.resolve_location(None, None, None, "m") == cloudrun.ServiceLocation(
        "from-gcloud", "us-east1", "m"
    )
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", "from-sdk-env")
    monkeypatch.setenv("CLOUDSDK_RUN_REGION", "asia-east1")
    assert cloudrun.resolve_location(None, None, None, "m").project == "from-sdk-env"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    location = cloudrun.resolve_location(None, None, None, "m")
    assert (location.project, location.region) == ("from-env", "asia-east1")
    location = cloudrun.resolve_location("arg", "europe-west4", "svc", "m")
    assert (location.project, location.region, location.service) == ("arg", "europe-west4", "svc")


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("iris_classifier", "iris-classifier"),
        ("Churn Model (v2)", "churn-model-v2"),
        ("3d_model", "model-3d-model"),
        ("x" * 80, "x" * 40),
    ],
)
def test_service_names_follow_cloud_run_rules(name: str, service: str) -> None:
    assert cloudrun.service_id_for(name) == service


def test_labels_follow_google_label_rules() -> None:
    assert google_label_value("V1.2+Build") == "v1-2-build"
    assert len(google_label_value("a" * 100)) == 63


# -- the real thing -----------------------------------------------------------------------


def _real_cloud_run() -> str | None:
    """Why the real-Cloud-Run test cannot run, or None when it can."""
    if not os.environ.get("GOOGLE_CLOUD_PROJECT"):
        return "GOOGLE_CLOUD_PROJECT is not set"
    try:
        google.auth.default()
    except auth_exceptions.DefaultCredentialsError:
        return "no Application Default Credentials"
    return None


@pytest.mark.skipif(_real_cloud_run() is not None, reason=f"real Cloud Run: {_real_cloud_run()}")
def test_real_cloud_run_validates_the_service(
    build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REAL GOOGLE CLOUD: validate_only, so nothing is created or changed."""
    monkeypatch.setenv("HOME", REAL_HOME)  # the ADC file lives in the real home
    project = os.environ["GOOGLE_CLOUD_PROJECT"]
    region = os.environ.get("CLOUDSDK_RUN_REGION", "us-central1")
    opts = CloudRunOptions(build_dir, project=project, region=region)
    location = cloudrun.resolve_location(project, region, "nb2prod-validate", "x")
    card = make_card(name="iris_classifier", model_version="3f2a9c1b0d7e")
    service = cloudrun.build_service(
        opts, location, "us-docker.pkg.dev/cloudrun/container/hello", card
    )
    client = cloudrun.make_client()
    request = run_v2.UpdateServiceRequest(service=service, allow_missing=True, validate_only=True)
    client.update_service(request=request).result(timeout=300)
