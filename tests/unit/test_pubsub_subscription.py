"""``deploy --target cloudrun --pubsub-topic TOPIC`` prints the gcloud commands that push the
topic's messages to the service's POST /pubsub: checked by running them in bash against a
stand-in ``gcloud`` that records its arguments (and answers ``services describe`` with a URL).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fake_cloudrun import PROJECT, REGION
from helpers import CliResult, run_cli

WHERE = ("--project", PROJECT, "--region", REGION)
SA = "pusher@demo-project.iam.gserviceaccount.com"
URL = "https://iris-classifier-abc123-ew.a.run.app"  # what the fake answers as the service URL
#: A gcloud that prints its arguments, one per line, and the URL when asked to describe.
FAKE_GCLOUD = f"""#!/bin/sh
if [ "$1 $2 $3" = "run services describe" ]; then echo "{URL}"; exit 0; fi
printf '%s\\n' "$@" > "$GCLOUD_LOG.$(date +%s%N)"
"""


def deploy(fake: Any, build_dir: Path, *args: str) -> CliResult:
    endpoint = ("--endpoint", fake.endpoint) if fake is not None else ()
    return run_cli("deploy", build_dir, *WHERE, *endpoint, *args)


def commands(result: CliResult) -> list[str]:
    lines = result.stdout.partition("To push the topic's messages to POST /pubsub, run:\n")[2]
    return [line.strip() for line in lines.splitlines() if line.startswith("  gcloud ")]


def run_in_bash(tmp_path: Path, lines: list[str]) -> list[list[str]]:
    """Run the printed commands in bash with the stand-in gcloud; the arguments of each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    log = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_LOG": str(log)}
    for line in lines:
        subprocess.run(["bash", "-c", line], env=env, check=True, timeout=30)
    calls = sorted(tmp_path.glob("calls.*"))
    return [call.read_text().splitlines() for call in calls]


def test_after_a_deploy_the_commands_push_to_the_service_url(
    build_dir: Path, fake: Any, tmp_path: Path
) -> None:
    result = deploy(
        fake,
        build_dir,
        *("--service-account", SA, "--pubsub-topic", "churn-events"),
        *("--pubsub-dead-letter-topic", "projects/demo-project/topics/churn-dead"),
    )
    assert result.returncode == 0, result.stderr
    grant, create = commands(result)
    assert shlex.split(grant) == [
        *("gcloud", "run", "services", "add-iam-policy-binding", "iris-classifier"),
        *("--region", REGION, "--project", PROJECT),
        *("--member", f"serviceAccount:{SA}", "--role", "roles/run.invoker"),
    ]
    assert shlex.split(create) == [
        *("gcloud", "pubsub", "subscriptions", "create", "iris-classifier-push"),
        *("--project", PROJECT, "--topic", "churn-events"),
        *("--push-endpoint", f"{URL}/pubsub", "--push-auth-service-account", SA),
        "--ack-deadline",
        "300",  # the service's request timeout: Pub/Sub waits as long as a request may take
        *("--dead-letter-topic", "projects/demo-project/topics/churn-dead"),
        *("--max-delivery-attempts", "5"),
    ]
    assert "NB2PROD_RESULT_TOPIC" in result.stderr  # where the predictions would go
    assert "NB2PROD_DEAD_LETTER_TOPIC=projects/demo-project/topics/churn-dead" in result.stderr


def test_a_dry_run_reads_the_url_when_the_command_runs(build_dir: Path, tmp_path: Path) -> None:
    result = deploy(None, build_dir, "--dry-run", "--pubsub-topic", "churn-events")
    assert result.returncode == 0, result.stderr
    lines = commands(result)
    assert "$(gcloud run services describe iris-classifier" in lines[1]
    grant, create = run_in_bash(tmp_path, lines)
    assert grant[-3:] == ["serviceAccount:PUSH_SA@demo-project.iam.gserviceaccount.com", "--role",
                          "roles/run.invoker"]  # fmt: skip
    assert create[create.index("--push-endpoint") + 1] == f"{URL}/pubsub"
    assert "--dead-letter-topic" not in create
    assert "PUSH_SA stands for the service account Pub/Sub signs each push with" in result.stderr


@pytest.mark.parametrize(("timeout", "ack"), [("900", "600"), ("5", "10"), ("120", "120")])
def test_the_ack_deadline_follows_the_request_timeout_within_pubsubs_range(
    build_dir: Path, timeout: str, ack: str
) -> None:
    result = deploy(
        None, build_dir, "--dry-run", "--timeout", timeout, "--concurrency", "1",
        "--pubsub-topic", "events",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    create = commands(result)[1]
    assert f"--ack-deadline {ack} " in f"{create} "


def test_the_result_topic_hint_is_left_out_once_it_is_set(build_dir: Path) -> None:
    result = deploy(
        None, build_dir, "--dry-run", "--pubsub-topic", "events",
        "--env", "NB2PROD_RESULT_TOPIC=projects/demo-project/topics/scores",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "NB2PROD_RESULT_TOPIC" not in result.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--pubsub-topic", "1-not a topic"), "--pubsub-topic '1-not a topic' is not a Pub/Sub"),
        (("--pubsub-dead-letter-topic", "dead"), "--pubsub-dead-letter-topic needs --pubsub-topic"),
    ],
)
def test_unusable_topics_are_refused_before_deploying(
    build_dir: Path, fake: Any, args: tuple[str, ...], problem: str
) -> None:
    result = deploy(fake, build_dir, *args)
    assert result.returncode == 2
    assert len(result.error_lines) == 1 and problem in result.error_lines[0]
    assert fake.requests == []


def test_without_a_topic_nothing_is_printed(build_dir: Path, fake: Any) -> None:
    result = deploy(fake, build_dir)
    assert result.returncode == 0, result.stderr
    assert "pubsub" not in result.stdout
