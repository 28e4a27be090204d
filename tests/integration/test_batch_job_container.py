"""The batch jobs deploy makes, run for real: each task's container, taken from the job nb2prod
sends (a Cloud Run Job, through the real JobsClient to the local fake) or writes (the Indexed
Job in k8s/job.yaml), started with the real Docker engine the way the platform starts it.

The image is an example build, pushed to the local registry and run by its digest. The
platform's storage is a host folder per bucket (or the claim), bind-mounted where the job
mounts it, read-only where the job mounts it read-only; the container gets no network, so the
rows can only come through the mounts. Across the tasks, every input row must be scored exactly
once, with the notebook's own prediction (run in Jupyter, tests/reference.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import reference
import yaml
from fake_cloudrun import PROJECT, REGION
from fake_cloudrun_jobs import FakeCloudRunJobs
from helpers import (
    assert_same_predictions,
    build_example,
    example_notebook,
    run_cli,
    run_cli_process,
)

pytestmark = pytest.mark.docker

NAME = "iris_function"
ROWS = 30
FILES = 5  # input files; tasks take every N-th one
REGISTRY_HOST = "127.0.0.1:5000"
MEMORY = "1g"


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, docker_engine: Any) -> Iterator[Path]:
    """The example built with its image, and pushed: deploys then name the image by digest."""
    try:
        httpx.get(f"http://{REGISTRY_HOST}/v2/", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        pytest.skip(f"no registry at {REGISTRY_HOST}: {err} (run ../shared/ci/docker-env.sh)")
    out = tmp_path_factory.mktemp("job-image") / NAME
    build_example(NAME, out, "-q")
    registry = f"{REGISTRY_HOST}/nb2prod-jobs-{uuid.uuid4().hex[:8]}"
    result = run_cli_process("push", out, "--registry", registry, timeout=600)
    assert result.returncode == 0, result.stderr
    yield out


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return reference.example_rows(NAME, ROWS)


@pytest.fixture(scope="module")
def expected(rows: list[dict[str, Any]]) -> list[Any]:
    return reference.reference_predictions(example_notebook(NAME), rows)


def write_inputs(folder: Path, rows: list[dict[str, Any]]) -> list[str]:
    """The rows, with an id, split over FILES CSV files; their names."""
    folder.mkdir(parents=True)
    frame = pd.DataFrame(rows)
    frame.insert(0, "id", range(len(frame)))
    for part in range(FILES):
        frame.iloc[part::FILES].to_csv(folder / f"part-{part}.csv", index=False)
    return sorted(p.name for p in folder.iterdir())


def writable_folder(path: Path) -> Path:
    """An output folder the image's user (10001) can write to.

    Made here because the batch runtime writes into an existing folder; in a bucket, a
    prefix shows as a folder only once it holds an object.
    """
    path.mkdir(parents=True)
    path.chmod(0o777)
    return path


def run_task(
    client: Any,
    container: dict[str, Any],
    env: dict[str, str],
    binds: dict[str, dict[str, str]],
    security: dict[str, Any] | None = None,
) -> None:
    """One task: the job's command and args in place of the image's server, as the platform
    runs them (command replaces the entrypoint, args the CMD); fails the test if it fails."""
    security = security or {}
    user = security.get("user")
    running = client.containers.run(
        container["image"],
        entrypoint=container["command"],
        command=container["args"],
        environment=env,
        volumes=binds,
        detach=True,
        network_disabled=True,
        read_only=security.get("read_only", False),
        tmpfs={"/tmp": ""},  # noqa: S108 - Cloud Run's in-memory /tmp; the pod's emptyDir
        mem_limit=MEMORY,
        cap_drop=security.get("cap_drop"),
        security_opt=["no-new-privileges"] if security.get("no_new_privileges") else None,
        **({"user": user} if user else {}),
    )
    try:
        status = running.wait(timeout=300)
        logs = running.logs().decode()
    finally:
        running.remove(force=True)
    assert status["StatusCode"] == 0, logs


def assert_every_row_scored_once(
    outputs: list[Path], expected: list[Any], tasks: int, inputs: list[str]
) -> None:
    """The tasks' outputs hold each row once, as the notebook predicts it, each its own share."""
    assert [p.name for p in outputs] == [
        f"scored-{index:05d}-of-{tasks:05d}.csv" for index in range(tasks)
    ]
    frames = [pd.read_csv(path) for path in outputs]
    scored = pd.concat(frames, ignore_index=True)
    assert sorted(scored["id"].tolist()) == list(range(ROWS))  # every row, exactly once
    by_id = dict(zip(scored["id"].tolist(), scored["prediction"].tolist(), strict=True))
    assert_same_predictions(expected, [by_id[i] for i in range(ROWS)])
    for index, path in enumerate(outputs):
        sidecar = json.loads(Path(f"{path}.nb2prod.json").read_text())
        assert [Path(p).name for p in sidecar["inputs"]] == inputs[index::tasks]


def test_each_cloud_run_task_scores_its_share_of_the_files(
    pushed: Path,
    docker_engine: Any,
    rows: list[dict[str, Any]],
    expected: list[Any],
    tmp_path: Path,
) -> None:
    buckets = tmp_path / "buckets"
    inputs = write_inputs(buckets / "nb2prod-in" / "rows", rows)
    out = writable_folder(buckets / "nb2prod-out" / "scores")
    with FakeCloudRunJobs(projects=(PROJECT,), regions=(REGION,)) as fake:
        result = run_cli(
            "deploy", pushed, "--target", "cloudrun-job", "--project", PROJECT,
            "--region", REGION, "--endpoint", fake.endpoint, "--no-execute",
            "--input", "gs://nb2prod-in/rows/", "--output", "gs://nb2prod-out/scores/scored.csv",
            "--tasks", "3", "--keep", "id", "--env", "LOG_LEVEL=info",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        [job] = fake.bodies("PATCH")
    pushed_image = json.loads((pushed / ".nb2prod" / "push.json").read_text())["image"]
    task = job["template"]["template"]
    [container] = task["containers"]
    assert container["image"] == pushed_image and "@sha256:" in pushed_image
    volumes = {volume["name"]: volume["gcs"] for volume in task["volumes"]}
    binds = {
        str(buckets / volumes[mount["name"]]["bucket"]): {
            "bind": mount["mountPath"],
            "mode": "ro" if volumes[mount["name"]].get("readOnly") else "rw",
        }
        for mount in container["volumeMounts"]
    }
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    count = job["template"]["taskCount"]
    for index in range(count):  # what Cloud Run sets in each task
        cloud_run = {"CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": str(count)}
        run_task(docker_engine.client, container, env | cloud_run, binds, {"read_only": True})

    outputs = sorted(out.glob("scored-*.csv"))
    assert_every_row_scored_once(outputs, expected, count, inputs)
    assert sorted(p.name for p in (buckets / "nb2prod-in" / "rows").iterdir()) == inputs


def test_each_indexed_job_pod_scores_its_share_of_the_files(
    pushed: Path,
    docker_engine: Any,
    rows: list[dict[str, Any]],
    expected: list[Any],
    tmp_path: Path,
) -> None:
    claim = tmp_path / "claim"
    inputs = write_inputs(claim / "incoming", rows)
    out = writable_folder(claim / "scored")
    result = run_cli(
        "deploy", pushed, "--target", "kubernetes", "--input", "incoming/",
        "--output", "scored/scored.csv", "--claim", "scoring-data", "--tasks", "2", "--keep", "id",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load((pushed / "k8s" / "job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"].endswith(
        json.loads((pushed / ".nb2prod/push.json").read_text())["digest"]
    )
    [data] = [m for m in container["volumeMounts"] if m["name"] == "data"]
    binds = {str(claim): {"bind": data["mountPath"], "mode": "rw"}}
    context, pod_context = container["securityContext"], pod["securityContext"]
    security = {
        "user": f"{context['runAsUser']}:{pod_context['runAsGroup']}",
        "read_only": context["readOnlyRootFilesystem"],
        "cap_drop": context["capabilities"]["drop"],
        "no_new_privileges": not context["allowPrivilegeEscalation"],
    }
    env = {item["name"]: item["value"] for item in container["env"]}
    completions = job["spec"]["completions"]
    for index in range(completions):  # Kubernetes sets only the index; the count is ours
        run_task(
            docker_engine.client,
            container,
            env | {"JOB_COMPLETION_INDEX": str(index)},
            binds,
            security,
        )

    outputs = sorted(out.glob("scored-*.csv"))
    assert_every_row_scored_once(outputs, expected, completions, inputs)
