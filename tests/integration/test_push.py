"""Push to the local registry (127.0.0.1:5000) and deploy by the digest it serves."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from fake_build import make_card, write_image_record, write_model_dir
from fake_cloudrun import FakeCloudRun
from helpers import free_port, run_cli_process

from nb2prod.deploy import cloudrun
from nb2prod.errors import PushError
from nb2prod.models import CloudRunOptions
from nb2prod.ship import push

REGISTRY_HOST = "127.0.0.1:5000"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


@pytest.fixture
def registry() -> str:
    """A fresh namespace in the local registry; skips when it does not answer."""
    try:
        httpx.get(f"http://{REGISTRY_HOST}/v2/", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        reason = f"no registry at {REGISTRY_HOST}: {err} (run ../shared/ci/docker-env.sh)"
        if os.environ.get("NB2PROD_REQUIRE_DOCKER") == "1":
            pytest.fail(f"NB2PROD_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    return f"{REGISTRY_HOST}/nb2prod-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def built_dir(tmp_path: Path, docker_engine: Any) -> Iterator[tuple[Path, docker.DockerClient]]:
    """A DIR whose image.json names a tiny image built from the local python:3.11-slim."""
    client: docker.DockerClient = docker_engine.client
    marker = uuid.uuid4().hex
    dockerfile = f"FROM python:3.11-slim\nLABEL io.nb2prod.test={marker}\n".encode()
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), pull=False, rm=True)
    directory = tmp_path / "iris_classifier"
    write_model_dir(directory, make_card(name="iris_classifier", model_version=marker[:12]))
    tag = f"iris_classifier:{marker[:12]}"
    image.tag(tag)
    write_image_record(directory, tag, str(image.id))
    try:
        yield directory, client
    finally:
        client.images.remove(image.id, force=True)


@pytest.mark.docker
def test_pushed_digest_is_what_the_registry_serves_and_what_deploys(
    built_dir: tuple[Path, docker.DockerClient], registry: str
) -> None:
    directory, _ = built_dir
    lines: list[str] = []

    record = push.push_image(directory, f"http://{registry}/", progress=lines.append)

    version = json.loads((directory / "model" / "model_card.json").read_text())["model_version"]
    assert record.repository == f"{registry}/iris_classifier" and record.tag == version
    assert record.image == f"{registry}/iris_classifier@{record.digest}"
    assert json.loads((directory / ".nb2prod" / "push.json").read_text()) == {
        "registry": registry,
        "repository": record.repository,
        "tag": version,
        "digest": record.digest,
        "image": record.image,
        "image_id": json.loads((directory / ".nb2prod" / "image.json").read_text())["image_id"],
    }
    assert any("Pushed" in line for line in lines)

    path = record.repository.removeprefix(f"{REGISTRY_HOST}/")
    served = httpx.get(
        f"http://{REGISTRY_HOST}/v2/{path}/manifests/{record.tag}",
        headers={"Accept": MANIFEST_TYPES},
        timeout=10,
    )
    served.raise_for_status()
    assert served.headers["Docker-Content-Digest"] == record.digest

    with FakeCloudRun() as fake:
        options = CloudRunOptions(
            directory, project="demo-project", region="europe-west1", endpoint=fake.endpoint
        )
        dry = cloudrun.deploy(
            CloudRunOptions(directory, "demo-project", "europe-west1", dry_run=True)
        )
        assert dry.image == record.image and record.image in dry.request
        knative = yaml.safe_load((directory / "service.yaml").read_text())
        assert knative["spec"]["template"]["spec"]["containers"][0]["image"] == record.image

        cloudrun.deploy(options)
        sent = fake.bodies("PATCH")[-1]
        assert sent["template"]["containers"][0]["image"] == record.image


@pytest.mark.docker
def test_unreachable_registry_is_a_push_error(
    built_dir: tuple[Path, docker.DockerClient],
) -> None:
    directory, _ = built_dir
    port = free_port()  # a port nobody listens on
    with pytest.raises(PushError, match="unreachable"):
        push.push_image(directory, f"127.0.0.1:{port}/models")
    assert not (directory / ".nb2prod" / "push.json").exists()


@pytest.mark.docker
def test_cli_deploy_pushes_first_then_canary_promote_and_rollback(
    built_dir: tuple[Path, docker.DockerClient], registry: str
) -> None:
    """The commands as a user types them: deploy --registry pushes what is not pushed yet,
    then --canary, promote and rollback move traffic through the API's traffic targets."""
    directory, _ = built_dir
    with FakeCloudRun() as fake:
        where = ["--project", "demo-project", "--region", "europe-west1"]
        first = run_cli_process(
            "deploy", str(directory), *where, "--registry", registry, "--endpoint", fake.endpoint
        )
        assert first.returncode == 0, first.stderr
        pushed = json.loads((directory / ".nb2prod" / "push.json").read_text())
        assert pushed["image"] in first.stdout
        assert fake.bodies("PATCH")[-1]["template"]["containers"][0]["image"] == pushed["image"]
        first_revision = fake.bodies("PATCH")[-1]["template"]["revision"]

        canary = run_cli_process(
            "deploy",
            str(directory),
            *where,
            "--canary",
            "10",
            "--concurrency",
            "40",
            "--endpoint",
            fake.endpoint,
        )
        assert canary.returncode == 0, canary.stderr
        body = fake.bodies("PATCH")[-1]
        assert body["template"]["maxInstanceRequestConcurrency"] == 40
        shares = sorted(int(t.get("percent", 0)) for t in body["traffic"])
        assert shares == [10, 90]
        assert any(t.get("tag") == "canary" for t in body["traffic"])

        promoted = run_cli_process("promote", str(directory), "--endpoint", fake.endpoint)
        assert promoted.returncode == 0, promoted.stderr
        assert [int(t.get("percent", 0)) for t in fake.bodies("PATCH")[-1]["traffic"]] == [100]

        rolled = run_cli_process("rollback", str(directory), "--endpoint", fake.endpoint)
        assert rolled.returncode == 0, rolled.stderr
        # Back to where traffic was before the canary deploy: all on the first revision.
        restored = fake.bodies("PATCH")[-1]["traffic"]
        assert [int(t.get("percent", 0)) for t in restored] == [100]
        assert restored[0].get("revision") == first_revision

        fake.fail(403, "Permission 'run.services.update' denied", "run.services.update")
        denied = run_cli_process("deploy", str(directory), *where, "--endpoint", fake.endpoint)
        assert denied.returncode == 11, denied.stderr
        assert denied.stderr.startswith("Error: ") and "Traceback" not in denied.stderr
