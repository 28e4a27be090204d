"""``nb2prod deploy`` as a user types it: each option belongs to its targets (cloudrun,
cloudrun-job, kubernetes), and each target's client is an extra the core install does without.

Cloud Run calls go to the local fake of the Admin API v2 (tests/fake_cloudrun.py)
through the real google-cloud-run client, via the hidden ``--endpoint`` flag.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_cloudrun import (  # noqa: F401 - fixtures these tests use
    PROJECT,
    REGION,
)
from helpers import run_cli

WHERE = ("--project", PROJECT, "--region", REGION)

#: Each target-bound option, a value to pass, and the targets it belongs to.
GOOGLE = ("cloudrun", "cloudrun-job")
JOBS = ("cloudrun-job", "kubernetes")
SERVICES = ("cloudrun", "kubernetes")
TARGET_OPTIONS = [
    ("--project", PROJECT, GOOGLE),
    ("--region", REGION, GOOGLE),
    ("--service-account", "sa@demo-project.iam.gserviceaccount.com", GOOGLE),
    ("--dry-run", None, GOOGLE),
    ("--endpoint", "http://127.0.0.1:9", GOOGLE),
    ("--service", "iris-api", SERVICES),
    ("--min-instances", "1", SERVICES),
    ("--max-instances", "3", SERVICES),
    ("--drift-webhook", "https://hooks.example.com/drift", SERVICES),
    ("--input", "gs://nb2prod-in/rows/", JOBS),
    ("--output", "gs://nb2prod-out/scored.csv", JOBS),
    ("--tasks", "4", JOBS),
    ("--parallelism", "2", JOBS),
    ("--max-retries", "1", JOBS),
    ("--task-timeout", "600", JOBS),
    ("--format", "csv", JOBS),
    ("--keep", "id", JOBS),
    ("--chunk-rows", "100", JOBS),
    ("--rejects", "gs://nb2prod-out/rejects.csv", JOBS),
    ("--canary", "10", ("cloudrun",)),
    ("--concurrency", "5", ("cloudrun",)),
    ("--timeout", "60", ("cloudrun",)),
    ("--pubsub-topic", "churn-events", ("cloudrun",)),
    ("--pubsub-dead-letter-topic", "churn-dead", ("cloudrun",)),
    ("--job", "nightly", ("cloudrun-job",)),
    ("--no-execute", None, ("cloudrun-job",)),
    ("--namespace", "ml", ("kubernetes",)),
    ("--apply", None, ("kubernetes",)),
    ("--kserve", None, ("kubernetes",)),
    ("--claim", "scoring-data", ("kubernetes",)),
]
FOREIGN = [
    (name, value, owners, target)
    for name, value, owners in TARGET_OPTIONS
    for target in ("cloudrun", "cloudrun-job", "kubernetes")
    if target not in owners
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI's entry point in process (helpers.run_cli): exit code, stdout, stderr."""
    result = run_cli(*args)
    return result.returncode, result.stdout, result.stderr


def flag(name: str, value: str | None) -> list[str]:
    return [name] if value is None else [name, value]


# -- an option of another target is a usage error ---------------------------------------


@pytest.mark.parametrize(("name", "value", "owners", "target"), FOREIGN)
def test_an_option_of_another_target_is_refused(
    build_dir: Path,
    fake: Any,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str | None,
    owners: tuple[str, ...],
    target: str,
) -> None:
    where = [*WHERE, "--endpoint", fake.endpoint] if target in GOOGLE else []
    code, out, err = run(
        capsys, "deploy", str(build_dir), "--target", target, *where, *flag(name, value)
    )
    assert code == 2
    only = " or ".join(f"--target {owner}" for owner in owners)
    assert f"Error: {name} applies to {only} only" in err
    assert out == ""
    assert fake.requests == []
    for written in ("service.yaml", "job.yaml", "k8s"):
        assert not (build_dir / written).exists()


@pytest.mark.parametrize("target", [None, "cloudrun"])  # cloudrun is the default target
def test_kubernetes_options_are_refused_for_cloud_run_by_default(
    build_dir: Path, fake: Any, capsys: pytest.CaptureFixture[str], target: str | None
) -> None:
    chosen = ["--target", target] if target else []
    code, _, err = run(
        capsys, "deploy", str(build_dir), *chosen, *WHERE, "--endpoint", fake.endpoint, "--kserve"
    )
    assert code == 2
    assert "Error: --kserve applies to --target kubernetes only" in err
    assert fake.requests == []


def test_every_foreign_option_is_named(build_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "deploy", str(build_dir), "--kserve", "--target", "kubernetes", "--canary", "5"
    )
    assert code == 2
    assert "--canary applies to --target cloudrun only" in err
    assert "--kserve" not in err.partition("Error:")[2]


# -- valid combinations still work --------------------------------------------------------


def test_cloud_run_with_every_flag_sends_each_setting(
    build_dir: Path, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "deploy",
        str(build_dir),
        "--target",
        "cloudrun",
        *WHERE,
        "--service",
        "iris-api",
        "--cpu",
        "2",
        "--memory",
        "2Gi",
        "--min-instances",
        "1",
        "--max-instances",
        "4",
        "--env",
        "LOG_LEVEL=debug",
        "--drift-webhook",
        "https://hooks.example.com/drift",
        "--concurrency",
        "20",
        "--timeout",
        "60",
        "--service-account",
        "sa@demo-project.iam.gserviceaccount.com",
        "--endpoint",
        fake.endpoint,
    )
    assert code == 0, err
    assert "deployed iris-api in demo-project/europe-west1" in out
    [call] = [c for c in fake.service_requests() if c.method == "PATCH"]
    assert call.path.endswith("/services/iris-api")
    template = call.body["template"]
    container = template["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert container["env"] == [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "NB2PROD_DRIFT_WEBHOOK", "value": "https://hooks.example.com/drift"},
    ]
    assert template["scaling"] == {"minInstanceCount": 1, "maxInstanceCount": 4}
    assert template["maxInstanceRequestConcurrency"] == 20
    assert template["timeout"] == "60s"
    assert template["serviceAccount"] == "sa@demo-project.iam.gserviceaccount.com"


def test_cloud_run_defaults_are_cloud_runs(
    build_dir: Path, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without flags: the defaults docs/deploy.md lists (80, 1 CPU, 512Mi, 0-100, 300 s)."""
    code, _, err = run(capsys, "deploy", str(build_dir), *WHERE, "--endpoint", fake.endpoint)
    assert code == 0, err
    template = fake.bodies("PATCH")[-1]["template"]
    assert template["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert template["scaling"] == {"maxInstanceCount": 100}  # min 0 is left out of the body
    assert template["maxInstanceRequestConcurrency"] == 80
    assert template["timeout"] == "300s"


def test_cloud_run_dry_run_and_canary(
    build_dir: Path, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "deploy", str(build_dir), *WHERE, "--dry-run", "--canary", "10")
    assert code == 0, err
    assert out.startswith("# PATCH https://run.googleapis.com/v2/")
    assert "would deploy iris-classifier" in out
    assert yaml.safe_load((build_dir / "service.yaml").read_text())["kind"] == "Service"


def k8s_documents(build_dir: Path) -> dict[str, Any]:
    return {
        path.relative_to(build_dir / "k8s").as_posix(): yaml.safe_load(path.read_text())
        for path in sorted((build_dir / "k8s").rglob("*.yaml"))
    }


def test_kubernetes_with_every_flag_writes_each_setting(
    build_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "deploy",
        str(build_dir),
        "--target",
        "kubernetes",
        "--service",
        "iris-api",
        "--namespace",
        "ml",
        "--cpu",
        "2",
        "--memory",
        "2Gi",
        "--min-instances",
        "3",
        "--max-instances",
        "6",
        "--env",
        "LOG_LEVEL=debug",
        "--drift-webhook",
        "https://hooks.example.com/drift",
        "--kserve",
    )
    assert code == 0, err
    assert out.startswith(f"wrote {build_dir / 'k8s'}")
    docs = k8s_documents(build_dir)
    assert "kserve/inferenceservice.yaml" in docs
    deployment = docs["deployment.yaml"]
    metadata = deployment["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("iris-api", "ml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert {"name": "LOG_LEVEL", "value": "debug"} in container["env"]
    assert {"name": "NB2PROD_DRIFT_WEBHOOK", "value": "https://hooks.example.com/drift"} in (
        container["env"]
    )
    hpa = docs["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 6)


def test_kubernetes_defaults_are_kubernetes(
    build_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without flags: 2 to 10 replicas (docs/deploy.md), not Cloud Run's 0 to 100."""
    code, _, err = run(capsys, "deploy", str(build_dir), "--target", "kubernetes")
    assert code == 0, err
    docs = k8s_documents(build_dir)
    hpa = docs["hpa.yaml"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    container = docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] != "512Mi"  # not Cloud Run's default


#: deploy --help's sections, by the targets their options belong to.
HELP_SECTIONS = {
    ("cloudrun", "cloudrun-job", "kubernetes"): "Options (every target):",
    SERVICES: "Services (--target cloudrun or kubernetes):",
    GOOGLE: "Google Cloud (--target cloudrun or cloudrun-job):",
    JOBS: "Batch scoring jobs (--target cloudrun-job, or kubernetes with --input):",
    ("cloudrun",): "Cloud Run only (--target cloudrun):",
    ("cloudrun-job",): "Cloud Run Job only (--target cloudrun-job):",
    ("kubernetes",): "Kubernetes only (--target kubernetes):",
}


def help_sections(text: str) -> dict[str, tuple[list[str], str]]:
    """deploy --help by section title: the options each lists, and its text on one line."""
    sections: dict[str, tuple[list[str], str]] = {}
    titles = list(HELP_SECTIONS.values())
    positions = sorted((text.index(title), title) for title in titles)
    for (start, title), (end, _) in zip(positions, [*positions[1:], (len(text), "")], strict=True):
        body = text[start + len(title) : end]
        names = [line.split()[0] for line in body.splitlines() if line.startswith("  -")]
        sections[title] = ([n.rstrip(",") for n in names], " ".join(body.split()))
    return sections


def test_help_lists_each_option_under_the_targets_it_belongs_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "deploy", "--help")
    assert code == 0
    sections = help_sections(out)
    every, every_text = sections["Options (every target):"]
    for name in ("--target", "--registry", "--cpu", "--memory", "--env"):
        assert name in every
    for name, _value, owners in TARGET_OPTIONS:
        listed_in = [title for title, (names, _) in sections.items() if name in names]
        if name == "--endpoint":
            assert listed_in == []  # hidden
        else:
            assert listed_in == [HELP_SECTIONS[owners]], name
    assert "Default: 512Mi (cloudrun), 2Gi (cloudrun-job), 1Gi (kubernetes)" in every_text
    assert "Default: 0 (cloudrun), 2 (kubernetes)" in sections[HELP_SECTIONS[SERVICES]][1]
    assert "Default: 80." in sections[HELP_SECTIONS[("cloudrun",)]][1]
    batch_text = sections[HELP_SECTIONS[JOBS]][1]
    assert "file. Default: 1." in batch_text  # --tasks: the same default for both targets
    assert "Default: 3600." in batch_text


# -- the extras ---------------------------------------------------------------------------

#: Runs the CLI with some modules made unimportable, as if their extra were not installed.
WITHOUT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    blocked = json.loads(sys.argv[1])

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in blocked):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    from nb2prod.cli import main

    try:
        main(sys.argv[2:])
    finally:
        heavy = ("google.cloud.run_v2", "kubernetes")
        loaded = sorted(m for m in sys.modules if m in heavy)
        print("LOADED " + json.dumps(loaded), file=sys.stderr)
    """
)


def without(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, json.dumps(blocked), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "blocked", "extra", "what"),
    [
        (["deploy", "--target", "cloudrun"], "google.cloud.run_v2", "cloudrun", "Cloud Run"),
        (["promote"], "google.cloud.run_v2", "cloudrun", "Cloud Run"),
        (["rollback"], "google.cloud.run_v2", "cloudrun", "Cloud Run"),
        (["deploy", "--target", "kubernetes"], "kubernetes", "kubernetes", "Kubernetes"),
    ],
)
def test_a_missing_extra_is_one_error_naming_it(
    build_dir: Path, command: list[str], blocked: str, extra: str, what: str
) -> None:
    result = without([blocked], command[0], str(build_dir), *command[1:])
    assert result.returncode == 14, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"Error: deploying to {what} needs the nb2prod[{extra}] extra (")
    assert repr(blocked.rsplit(".", 1)[-1]) in lines[0]  # what could not be imported
    assert lines[1] == f"Hint: pip install 'nb2prod[{extra}]'"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["deploy", "--help"], ["check", "--help"]])
def test_the_cli_and_its_help_do_not_import_the_deploy_clients(args: list[str]) -> None:
    loaded = without([], *args)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stderr.strip().splitlines()[-1] == "LOADED []"
    # ...and work without them installed at all.
    missing = without(["google.cloud.run_v2", "kubernetes"], *args)
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout == loaded.stdout
