"""``nb2prod deploy --target cloudrun-job`` against the local fake of the Admin API v2 jobs
(tests/fake_cloudrun_jobs.py), through the CLI as a user types it.

The clients are the real ``google-cloud-run`` JobsClient and ExecutionsClient (REST), pointed
at the fake with the hidden ``--endpoint``; the tests assert the exact bodies they send.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_cloudrun import IMAGE, PROJECT, REGION
from fake_cloudrun_jobs import FakeCloudRunJobs
from helpers import CliResult, run_cli

from nb2prod.deploy import cloudrun

JOB_PATH = f"/v2/projects/{PROJECT}/locations/{REGION}/jobs/iris-classifier"
WHERE = ("--project", PROJECT, "--region", REGION)
IN, OUT = "gs://nb2prod-in/rows/", "gs://nb2prod-out/scores/scored.csv"
LABELS = {
    "managed-by": "nb2prod",
    "nb2prod-model": "iris_classifier",
    "nb2prod-model-version": "3f2a9c1b0d7e",
}
BATCH_COMMAND = ["python", "-m", "nb2prod_runtime.batch"]


def deploy_job(build_dir: Path, fake: FakeCloudRunJobs | None, *args: str) -> CliResult:
    endpoint = ["--endpoint", fake.endpoint] if fake else []
    return run_cli("deploy", build_dir, "--target", "cloudrun-job", *WHERE, *endpoint, *args)


def expected_body(tasks: int = 3, **task_changes: Any) -> dict[str, Any]:
    """The job nb2prod sends for IN -> OUT with --keep id (and the defaults)."""
    task = {
        "containers": [
            {
                "image": IMAGE,
                "command": BATCH_COMMAND,
                "args": [
                    "/gcs/nb2prod-in/rows/",
                    *("-o", "/gcs/nb2prod-out/scores/scored.csv", "--force", "--keep", "id"),
                ],
                "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                "volumeMounts": [
                    {"name": "gcs-nb2prod-in", "mountPath": "/gcs/nb2prod-in"},
                    {"name": "gcs-nb2prod-out", "mountPath": "/gcs/nb2prod-out"},
                ],
            }
        ],
        "volumes": [
            {
                "name": "gcs-nb2prod-in",
                "gcs": {
                    "bucket": "nb2prod-in",
                    "readOnly": True,
                    "mountOptions": ["implicit-dirs"],
                },
            },
            {
                "name": "gcs-nb2prod-out",
                "gcs": {"bucket": "nb2prod-out", "mountOptions": ["implicit-dirs"]},
            },
        ],
        "maxRetries": 3,
        "timeout": "3600s",
        "executionEnvironment": 2,  # GEN2: Cloud Storage volumes need it
        **task_changes,
    }
    return {
        "labels": LABELS,
        "client": "nb2prod",
        "clientVersion": cloudrun.nb2prod_version(),
        "template": {"labels": LABELS, "taskCount": tasks, "template": task},
    }


# -- create, run, wait ---------------------------------------------------------------------


def test_the_job_runs_the_image_by_digest_with_the_batch_command(
    build_dir: Path, jobs_fake: FakeCloudRunJobs
) -> None:
    jobs_fake.polls_to_finish = 3
    result = deploy_job(
        build_dir, jobs_fake, "--input", IN, "--output", OUT, "--tasks", "3", "--keep", "id"
    )

    assert result.returncode == 0, result.stderr
    calls = jobs_fake.job_requests()
    execution = next(iter(jobs_fake.executions))
    assert [(c.method, c.path) for c in calls] == [
        ("PATCH", JOB_PATH),
        ("POST", f"{JOB_PATH}:run"),
        *[("GET", f"/v2/{execution}")] * 3,
    ]
    assert calls[0].query["allowMissing"] == "true"
    assert calls[0].body == expected_body()
    assert calls[1].body == {}
    short = execution.rsplit("/", 1)[1]
    assert result.stderr.splitlines()[-3:] == [
        f"execution {short}: 1/3 tasks succeeded, 0 failed, 2 running",
        f"execution {short}: 2/3 tasks succeeded, 0 failed, 1 running",
        f"execution {short}: 3/3 tasks succeeded, 0 failed, 0 running",
    ]
    assert (
        f"deployed job iris-classifier in {PROJECT}/{REGION}: {IMAGE}; 3 task(s)" in result.stdout
    )
    assert f"execution {short}: 3/3 tasks succeeded" in result.stdout
    assert (
        "outputs: gs://nb2prod-out/scores/scored-00000-of-00003.csv ... scored-00002-of-00003.csv"
        in result.stdout
    )
    state = json.loads((build_dir / ".nb2prod" / "job.json").read_text())
    assert state["job"] == "iris-classifier" and state["image"] == IMAGE
    assert state["execution"] == execution and state["succeeded"] == 3
    assert not (build_dir / ".nb2prod" / "deploy.json").exists()  # the service's record


def test_every_job_flag_is_sent(build_dir: Path, jobs_fake: FakeCloudRunJobs) -> None:
    result = deploy_job(
        build_dir,
        jobs_fake,
        *("--input", "gs://nb2prod-data/in/*.jsonl", "--output", "gs://nb2prod-data/out/s.jsonl"),
        *("--tasks", "8", "--parallelism", "2", "--max-retries", "0", "--task-timeout", "900"),
        *("--format", "jsonl", "--keep", "id", "--keep", "region", "--chunk-rows", "500"),
        *("--rejects", "gs://nb2prod-bad/rejects.csv", "--job", "nightly-scores"),
        *("--cpu", "2", "--memory", "4Gi", "--env", "LOG_LEVEL=debug"),
        *("--service-account", "scorer@demo-project.iam.gserviceaccount.com"),
    )
    assert result.returncode == 0, result.stderr
    [call] = [c for c in jobs_fake.job_requests() if c.method == "PATCH"]
    assert call.path == f"/v2/projects/{PROJECT}/locations/{REGION}/jobs/nightly-scores"
    template = call.body["template"]
    assert (template["taskCount"], template["parallelism"]) == (8, 2)
    task = template["template"]
    assert task["maxRetries"] == 0  # sent, not dropped: 0 means "never retry", not the default 3
    assert task["timeout"] == "900s"
    assert task["serviceAccount"] == "scorer@demo-project.iam.gserviceaccount.com"
    [container] = task["containers"]
    assert container["args"] == [
        *("/gcs/nb2prod-data/in/*.jsonl", "-o", "/gcs/nb2prod-data/out/s.jsonl", "--force"),
        *("--format", "jsonl", "--keep", "id", "--keep", "region", "--chunk-rows", "500"),
        *("--rejects", "/gcs/nb2prod-bad/rejects.csv"),
    ]
    assert container["env"] == [{"name": "LOG_LEVEL", "value": "debug"}]
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}
    # One bucket read and written is one writable volume; the rejects bucket is writable too.
    assert task["volumes"] == [
        {
            "name": "gcs-nb2prod-data",
            "gcs": {"bucket": "nb2prod-data", "mountOptions": ["implicit-dirs"]},
        },
        {
            "name": "gcs-nb2prod-bad",
            "gcs": {"bucket": "nb2prod-bad", "mountOptions": ["implicit-dirs"]},
        },
    ]


def test_a_second_deploy_updates_the_job(build_dir: Path, jobs_fake: FakeCloudRunJobs) -> None:
    args = ("--input", IN, "--output", OUT, "--keep", "id")
    assert deploy_job(build_dir, jobs_fake, *args).returncode == 0
    again = deploy_job(build_dir, jobs_fake, *args, "--tasks", "5", "--no-execute")
    assert again.returncode == 0, again.stderr
    job = jobs_fake.jobs[f"projects/{PROJECT}/locations/{REGION}/jobs/iris-classifier"]
    assert job["generation"] == "2" and job["template"]["taskCount"] == 5
    assert jobs_fake.job_requests()[-1].method == "PATCH"  # --no-execute: not run
    assert len(jobs_fake.executions) == 1
    assert f"run it: gcloud run jobs execute iris-classifier --region {REGION} --wait" in (
        again.stdout
    )


# -- dry run and job.yaml --------------------------------------------------------------------


def test_dry_run_sends_nothing_and_writes_only_job_yaml(
    build_dir: Path, jobs_fake: FakeCloudRunJobs
) -> None:
    before = sorted(p.relative_to(build_dir) for p in build_dir.rglob("*"))
    result = deploy_job(
        build_dir,
        jobs_fake,
        "--input",
        IN,
        "--output",
        OUT,
        "--tasks",
        "3",
        "--keep",
        "id",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    assert jobs_fake.requests == []
    after = sorted(p.relative_to(build_dir) for p in build_dir.rglob("*"))
    assert sorted(set(after) - set(before)) == [Path("job.yaml")]
    patch, _, run = result.stdout.partition("# POST ")
    header, _, body = patch.partition("\n# (creates the job when missing")
    assert header == f"# PATCH {jobs_fake.endpoint}{JOB_PATH}?allowMissing=true"
    assert yaml.safe_load(body.partition("\n")[2]) == expected_body()
    assert run.startswith(f"{jobs_fake.endpoint}{JOB_PATH}:run\n")
    assert "would deploy job iris-classifier" in result.stdout


def test_dry_run_with_no_execute_shows_only_the_update(build_dir: Path) -> None:
    result = deploy_job(
        build_dir, None, "--input", IN, "--output", OUT, "--dry-run", "--no-execute"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# PATCH https://run.googleapis.com/v2/")
    assert ":run" not in result.stdout


def test_job_yaml_is_the_same_job_for_gcloud(build_dir: Path, jobs_fake: FakeCloudRunJobs) -> None:
    result = deploy_job(
        build_dir,
        jobs_fake,
        *("--input", IN, "--output", OUT, "--tasks", "3", "--parallelism", "2", "--keep", "id"),
        *("--env", "LOG_LEVEL=debug", "--service-account", "sa@x.iam", "--max-retries", "1"),
    )
    assert result.returncode == 0, result.stderr
    sent = jobs_fake.job_requests()[0].body
    text = (build_dir / "job.yaml").read_text()
    assert text.startswith("# Written by nb2prod. Apply with: gcloud run jobs replace job.yaml\n")
    document = yaml.safe_load(text)
    assert (document["apiVersion"], document["kind"]) == ("run.googleapis.com/v1", "Job")
    assert document["metadata"]["name"] == "iris-classifier"
    assert document["metadata"]["labels"] == {**LABELS, "cloud.googleapis.com/location": REGION}
    template = document["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "run.googleapis.com/execution-environment": "gen2"
    }
    spec = template["spec"]
    assert (spec["taskCount"], spec["parallelism"]) == (3, 2)
    task = spec["template"]["spec"]
    sent_task = sent["template"]["template"]
    assert task["maxRetries"] == sent_task["maxRetries"] == 1
    assert f"{task['timeoutSeconds']}s" == sent_task["timeout"]
    assert task["serviceAccountName"] == sent_task["serviceAccount"] == "sa@x.iam"
    [container], [sent_container] = task["containers"], sent_task["containers"]
    for key in ("image", "command", "args", "env", "resources", "volumeMounts"):
        assert container[key] == sent_container[key], key
    assert [
        (v["name"], v["csi"]["volumeAttributes"]["bucketName"], v["csi"]["readOnly"])
        for v in task["volumes"]
    ] == [
        (v["name"], v["gcs"]["bucket"], v["gcs"].get("readOnly", False))
        for v in sent_task["volumes"]
    ]
    assert {v["csi"]["driver"] for v in task["volumes"]} == {"gcsfuse.run.googleapis.com"}


# -- refusals and failures -------------------------------------------------------------------


def test_a_failed_execution_fails_the_deploy_with_cloud_runs_reason(
    build_dir: Path, jobs_fake: FakeCloudRunJobs
) -> None:
    jobs_fake.fail_tasks(1, message="The container exited with an error.")
    result = deploy_job(build_dir, jobs_fake, "--input", IN, "--output", OUT, "--tasks", "3")

    assert result.returncode == 11
    [error] = result.error_lines
    short = next(iter(jobs_fake.executions)).rsplit("/", 1)[1]
    assert error.startswith(f"Error: execution {short} of job iris-classifier failed: 1 of 3 ")
    assert f"Task {short}-task1 failed with message: The container exited with an error." in error
    hint = result.stderr.partition("Hint: ")[2]
    assert f"logs/viewer?execution={short}" in hint  # the execution's own logs
    assert "gcloud run jobs execute iris-classifier" in hint
    assert "2/3 tasks succeeded, 1 failed, 0 running, 3 retried" in result.stderr
    state = json.loads((build_dir / ".nb2prod" / "job.json").read_text())
    assert state["succeeded"] == 2  # the record says how far it got


def test_a_job_cloud_run_does_not_accept_is_not_run(
    build_dir: Path, jobs_fake: FakeCloudRunJobs
) -> None:
    message = "Image 'europe-west1-docker.pkg.dev/demo-project/models/iris' not found."
    jobs_fake.job_not_ready(message)
    result = deploy_job(build_dir, jobs_fake, "--input", IN, "--output", OUT)
    assert result.returncode == 11
    assert result.error_lines == [f"Error: job iris-classifier was not accepted: {message}"]
    assert jobs_fake.executions == {}
    assert not (build_dir / ".nb2prod" / "job.json").exists()


def test_permission_denied_names_the_permission(
    build_dir: Path, jobs_fake: FakeCloudRunJobs
) -> None:
    jobs_fake.fail(403, permission="run.jobs.update")
    result = deploy_job(build_dir, jobs_fake, "--input", IN, "--output", OUT)
    assert result.returncode == 11
    assert "run.jobs.update is missing" in result.error_lines[0]
    assert "roles/run.developer" in result.stderr
    assert not (build_dir / ".nb2prod" / "job.json").exists()


def test_an_unknown_project_is_named(build_dir: Path, jobs_fake: FakeCloudRunJobs) -> None:
    result = run_cli(
        "deploy", build_dir, "--target", "cloudrun-job", "--project", "no-such-project",
        "--region", REGION, "--endpoint", jobs_fake.endpoint, "--input", IN, "--output", OUT,
    )  # fmt: skip
    assert result.returncode == 11
    assert f"project 'no-such-project' or region '{REGION}' was not found" in result.stderr
    assert "gcloud run regions list" in result.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--input", "data/rows.csv", "--output", OUT), "a Cloud Run Job can't see your disk"),
        (("--input", IN, "--output", "scored.csv"), "--output scored.csv is on this machine"),
        (("--input", "s3://bucket/rows/", "--output", OUT), "only gs:// URLs"),
        (("--input", IN, "--output", "gs://nb2prod-out/scores/"), "must name the output file"),
        (("--input", IN, "--output", OUT, "--tasks", "2", "--parallelism", "3"), "--parallelism"),
        (("--input", IN, "--output", OUT, "--max-retries", "11"), "--max-retries"),
        (("--input", IN), "a batch job needs --output"),
        ((), "--target cloudrun-job needs --input and --output"),
        (("--input", IN, "--output", OUT, "--job", "Nightly_Job"), "not a Cloud Run job name"),
        (("--input", IN, "--output", OUT, "--env", "CLOUD_RUN_TASK_INDEX=1"), "--env CLOUD_RUN"),
    ],
)
def test_unusable_settings_are_refused_before_any_call(
    build_dir: Path, jobs_fake: FakeCloudRunJobs, args: tuple[str, ...], problem: str
) -> None:
    result = deploy_job(build_dir, jobs_fake, *args)
    assert result.returncode == 2, result.stderr
    assert len(result.error_lines) == 1 and problem in result.error_lines[0]
    assert jobs_fake.requests == []
    assert not (build_dir / "job.yaml").exists()


def test_a_local_input_says_how_to_upload_it(build_dir: Path) -> None:
    result = deploy_job(build_dir, None, "--input", "data/rows.csv", "--output", OUT, "--dry-run")
    assert result.returncode == 2
    assert "Hint: Upload it first (gcloud storage cp -r data/rows.csv gs://BUCKET/PATH)" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("flag", "value", "owner"),
    [
        ("--canary", "10", "--target cloudrun only"),
        ("--service", "iris", "--target cloudrun or --target kubernetes only"),
        ("--claim", "data", "--target kubernetes only"),
        ("--pubsub-topic", "events", "--target cloudrun only"),
    ],
)
def test_an_option_of_another_target_is_a_usage_error(
    build_dir: Path, jobs_fake: FakeCloudRunJobs, flag: str, value: str, owner: str
) -> None:
    result = deploy_job(build_dir, jobs_fake, "--input", IN, "--output", OUT, flag, value)
    assert result.returncode == 2
    assert f"Error: {flag} applies to {owner}" in result.stderr
    assert jobs_fake.requests == []
