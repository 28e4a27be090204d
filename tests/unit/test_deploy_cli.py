"""``nb2prod deploy`` as a user types it: each option belongs to its target, and each
target's client is an extra that the core install does without.

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

#: The options docs/deploy.md lists for one target only, with a value to pass.
CLOUDRUN_ONLY = [
    ("--project", PROJECT),
    ("--region", REGION),
    ("--canary", "10"),
    ("--concurrency", "5"),
    ("--timeout", "60"),
    ("--service-account", "sa@demo-project.iam.gserviceaccount.com"),
    ("--dry-run", None),
    ("--endpoint", "http://127.0.0.1:9"),
]
KUBERNETES_ONLY = [("--namespace", "ml"), ("--apply", None), ("--kserve", None)]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI's entry point in process (helpers.run_cli): exit code, stdout, stderr."""
    result = run_cli(*args)
    return result.returncode, result.stdout, result.stderr


def flag(name: str, value: str | None) -> list[str]:
    return [name] if value is None else [name, value]


# -- an option of the other target is a usage error ---------------------------------------


@pytest.mark.parametrize(("name", "value"), CLOUDRUN_ONLY)
def test_cloud_run_options_are_refused_for_kubernetes(
    build_dir: Path, capsys: pytest.CaptureFixture[str], name: str, value: str | None
) -> None:
    code, out, err = run(
        capsys, "deploy", str(build_dir), "--target", "kubernetes", *flag(name, value)
    )
    assert code == 2
    assert f"Error: {name} applies to --target cloudrun only" in err
    assert out == ""
    assert not (build_dir / "k8s").exists()


@pytest.mark.parametrize("target", [None, "cloudrun"])  # cloudrun is the default target
@pytest.mark.parametrize(("name", "value"), KUBERNETES_ONLY)
def test_kubernetes_options_are_refused_for_cloud_run(
    build_dir: Path,
    fake: Any,
    capsys: pytest.CaptureFixture[str],
    target: str | None,
    name: str,
    value: str | None,
) -> None:
    chosen = ["--target", target] if target else []
    code, _, err = run(
        capsys,
        "deploy",
        str(build_dir),
        *chosen,
        *WHERE,
        "--endpoint",
        fake.endpoint,
        *flag(name, value),
    )
    assert code == 2
    assert f"Error: {name} applies to --target kubernetes only" in err
    assert fake.requests == []
    assert not (build_dir / "service.yaml").exists()


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


def test_help_shows_each_targets_options_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "deploy", "--help")
    assert code == 0
    both, _, rest = out.partition("Cloud Run only (--target cloudrun):")
    cloudrun, _, kubernetes = rest.partition("Kubernetes only (--target kubernetes):")
    for name in ("--service", "--registry", "--cpu", "--memory", "--env", "--drift-webhook"):
        assert name in both
    for name, _value in CLOUDRUN_ONLY[:-1]:  # --endpoint is hidden
        assert name in cloudrun and name not in both + kubernetes
    for name, _value in KUBERNETES_ONLY:
        assert name in kubernetes and name not in both + cloudrun
    flat = " ".join(both.split())
    assert "Default: 512Mi (cloudrun), 1Gi (kubernetes)" in flat
    assert "Default: 0 (cloudrun), 2 (kubernetes)" in flat
    assert "Default: 80." in " ".join(cloudrun.split())


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
