"""``nb2prod ci init`` writes a GitHub workflow that actually works.

The workflow is checked as YAML, against the GitHub workflow JSON schema (check-jsonschema's
vendored copy of SchemaStore's), and structurally (its triggers match what the drift webhook
sends). Then its ``run:`` steps are executed in order, as the runner would (``bash -eo
pipefail``, the job's and step's ``env:`` with their ``${{ ... }}`` expressions evaluated from
test values, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files), on the iris example notebook,
against the local registry (127.0.0.1:5000) and the local fake of the Cloud Run API: build
(one Docker image for the module), compare with a champion, push, deploy a canary, wait, and
``promote --gate`` on a prediction log written while "waiting", which promotes the canary.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fake_build import write_push_record
from fake_cloudrun import FakeCloudRun
from helpers import assert_valid_github_workflow, example_notebook, run_cli

from nb2prod.runtime.monitoring import alerts

REGISTRY_HOST = "127.0.0.1:5000"
PROJECT, REGION = "demo-project", "europe-west1"
WORKFLOW = Path(".github/workflows/nb2prod-retrain.yml")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, built_examples: Any) -> Path:
    """A repository with the notebook and its champion build (the example built without
    Docker: compare reads only its card), where ``nb2prod ci init`` is run."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copy(example_notebook("iris_function"), root / "iris_function.ipynb")
    shutil.copytree(built_examples("iris_function"), root / "builds" / "champion")
    result = run_cli("ci", "init", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def load(repo: Path) -> dict[str, Any]:
    return yaml.safe_load((repo / WORKFLOW).read_text())


def test_the_workflow_is_valid_yaml_and_a_valid_github_workflow(repo: Path) -> None:
    workflow = load(repo)
    # PyYAML reads the bare key `on` as True (YAML 1.1); GitHub reads it as "on".
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["repository_dispatch"]["types"] == ["nb2prod-drift"]
    assert [entry["cron"] for entry in triggers["schedule"]] == ["0 6 * * 1"]
    assert "workflow_dispatch" in triggers
    steps = workflow["jobs"]["retrain"]["steps"]
    assert workflow["jobs"]["retrain"]["runs-on"] == "ubuntu-latest"
    for step in steps:
        assert ("run" in step) != ("uses" in step), step
        if "run" in step:
            # Expressions go through env:, never into a script (GitHub's advice on injection).
            assert not EXPRESSION.search(step["run"]), step["run"]
    assert_valid_github_workflow(repo / WORKFLOW)


def test_the_trigger_is_the_event_the_drift_webhook_sends(repo: Path) -> None:
    """The service's webhook in GitHub's format, posted to a local receiver: its event type is
    the one the workflow runs on, and its payload has the field the workflow reports."""
    bodies: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/repos/o/r/dispatches"
        settings = alerts.WebhookSettings(url=url, format="github", token="t", retries=1)
        drift = alerts.DriftAlerts("iris", "v1", settings, lambda outcome: None)
        feature = {"test": "ks", "psi": 1.0, "statistic": 0.5, "p_value": 1e-9, "drifted": True,
                   "threshold": {"psi": 0.2, "p_value": 0.01}}  # fmt: skip
        drift.observe({"features": {"petal length (cm)": feature}, "predictions": None,
                       "window_rows": 1000, "checked_at": "now",
                       "overall": {"share": 1.0, "drifted": True}})  # fmt: skip
        drift.wait(10)
    finally:
        server.shutdown()
        server.server_close()
    triggers = load(repo).get("on", load(repo).get(True))
    assert len(bodies) == 1
    assert [bodies[0]["event_type"]] == triggers["repository_dispatch"]["types"]
    assert "petal length (cm)" in bodies[0]["client_payload"]["drifted"]
    assert "github.event.client_payload.drifted" in (repo / WORKFLOW).read_text()


def test_a_users_workflow_is_never_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yml"
    mine.write_text("name: my own\non: push\njobs: {}\n")
    notebook = tmp_path / "model.ipynb"
    shutil.copy(example_notebook("iris_function"), notebook)

    refused = run_cli("ci", "init", "-o", mine, "--force", cwd=tmp_path)
    assert refused.returncode == 4 and "did not write it" in refused.stderr
    assert mine.read_text() == "name: my own\non: push\njobs: {}\n"

    ours = tmp_path / "ours.yml"
    assert run_cli("ci", "init", "-o", ours, cwd=tmp_path).returncode == 0
    assert run_cli("ci", "init", "-o", ours, cwd=tmp_path).returncode == 0  # unedited: rewritten
    ours.write_text(ours.read_text().replace("0 6 * * 1", "0 7 * * *"))
    edited = run_cli("ci", "init", "-o", ours, cwd=tmp_path)
    assert edited.returncode == 4 and "edited since" in edited.stderr
    forced = run_cli("ci", "init", "-o", ours, "--force", cwd=tmp_path)
    assert forced.returncode == 0
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("ours.yml.edited-")]
    assert len(kept) == 1 and "0 7 * * *" in kept[0].read_text()
    assert "0 6 * * 1" in ours.read_text()


# -- running the steps ---------------------------------------------------------------------


@pytest.fixture
def registry() -> str:
    try:
        httpx.get(f"http://{REGISTRY_HOST}/v2/", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        if os.environ.get("NB2PROD_REQUIRE_DOCKER") == "1":
            pytest.fail(f"NB2PROD_REQUIRE_DOCKER=1 but no registry at {REGISTRY_HOST}: {err}")
        pytest.skip(f"no registry at {REGISTRY_HOST}: {err}")
    return f"{REGISTRY_HOST}/nb2prod-ci-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fake() -> Iterator[FakeCloudRun]:
    with FakeCloudRun(projects=(PROJECT,), regions=(REGION,)) as server:
        yield server


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """The subset of GitHub's expression language the workflow uses: context lookups,
    'literals', ||, !, == and toJSON(); anything else fails the test."""
    expression = expression.strip()
    if "||" in expression:
        for term in expression.split("||"):
            value = evaluate(term, context)
            if value:
                return value
        return value
    if match := re.fullmatch(r"(.+?)\s*==\s*'([^']*)'", expression):
        return evaluate(match.group(1), context) == match.group(2)
    if expression.startswith("!"):
        return not evaluate(expression[1:], context)
    if match := re.fullmatch(r"toJSON\((.+)\)", expression):
        return json.dumps(evaluate(match.group(1), context))
    if match := re.fullmatch(r"'([^']*)'", expression):
        return match.group(1)
    assert re.fullmatch(r"[a-z_]+(\.[A-Za-z0-9_]+)+", expression), (
        f"unknown expression {expression}"
    )
    return context.get(expression, "")


def substituted(value: Any, context: dict[str, Any]) -> str:
    text = str(value)
    whole = EXPRESSION.fullmatch(text.strip())
    if whole:
        return str(evaluate(whole.group(1), context))
    return EXPRESSION.sub(lambda m: str(evaluate(m.group(1), context)), text)


def write_traffic(folder: Path, canary: dict[str, str], stable: dict[str, str]) -> None:
    """What the two revisions logged while the workflow waited (the log's record format) and
    the labels that arrived: the canary right on 285 of 300 rows, stable on 225 of 300
    (enough rows for --min-effect 0.1: about 260 per side)."""
    log = folder / "prediction-log"
    log.mkdir(parents=True)
    species = ["setosa", "versicolor", "virginica"]
    start = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
    labels = ["request_id,label"]
    for side, right in ((canary, 285), (stable, 225)):
        lines = []
        for i in range(300):
            label = species[i % 3]
            predicted = label if i < right else species[(i + 1) % 3]
            request_id = f"{side['revision']}-{i}"
            record = {
                "request_id": request_id,
                "timestamp": (start + dt.timedelta(seconds=i)).isoformat(),
                "model_version": side["model_version"],
                "revision": side["revision"],
                "sample_rate": 1.0,
                "rows": 1,
                "row_offset": 0,
                "inputs": [{"sepal length (cm)": 5.0, "sepal width (cm)": 3.0,
                            "petal length (cm)": 1.5, "petal width (cm)": 0.2}],
                "predictions": [predicted],
            }  # fmt: skip
            lines.append(json.dumps(record))
            labels.append(f"{request_id},{label}")
        (log / f"predictions-20260601T000000Z-1-{side['revision'][-6:]}.jsonl").write_text(
            "\n".join(lines) + "\n"
        )
    (folder / "labels.csv").write_text("\n".join(labels) + "\n")


@pytest.mark.docker
@pytest.mark.slow
def test_the_workflows_commands_work_in_order(
    repo: Path, registry: str, fake: FakeCloudRun, docker_engine: Any
) -> None:
    """build -> compare -> push -> deploy --canary -> wait -> promote --gate, step by step."""
    champion = repo / "builds" / "champion"
    write_push_record(champion, f"{registry}/iris_function@sha256:{'ab' * 32}", "")
    stable = run_cli("deploy", champion, "--project", PROJECT, "--region", REGION,
                     "--endpoint", fake.endpoint)  # fmt: skip
    assert stable.returncode == 0, stable.stderr
    service = next(iter(fake.services))
    stable_revision = (
        fake.services[service]["trafficStatuses"][0].get("revision")
        or (fake.services[service]["latestReadyRevision"])
    )
    workflow = load(repo)
    job = workflow["jobs"]["retrain"]
    context = {
        "vars.NB2PROD_REGISTRY": registry,
        "vars.NB2PROD_PROJECT": PROJECT,
        "vars.NB2PROD_REGION": REGION,
        "vars.NB2PROD_PREDICTIONS": str(repo / "prediction-log"),
        "vars.NB2PROD_LABELS": str(repo / "labels.csv"),
        "vars.NB2PROD_WAIT_MINUTES": "0",
        "vars.NB2PROD_GATE_ATTEMPTS": "1",
        "vars.NB2PROD_GATE_OPTIONS": "--min-effect 0.1",
        "github.event_name": "repository_dispatch",
        "github.event.client_payload.drifted": ["petal length (cm)"],
    }
    outputs, summary = repo / "github_output", repo / "github_summary"
    base_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",  # the install step finds nb2prod installed; nothing is fetched
        "NB2PROD_CLOUD_RUN_ENDPOINT": fake.endpoint,  # the fake instead of run.googleapis.com
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_RUN_ID": "4242",
    }
    base_env.update({k: substituted(v, context) for k, v in job["env"].items()})
    assert (
        base_env["NOTEBOOK"] == "iris_function.ipynb"
        and base_env["CHAMPION_DIR"] == "builds/champion"
    )
    ran = []
    try:
        for step in job["steps"]:
            if "run" not in step or ("if" in step and not evaluate_if(step["if"], context)):
                continue
            env = {
                **base_env,
                **{k: substituted(v, context) for k, v in step.get("env", {}).items()},
            }
            if step["name"] == "Gate the canary on live quality":
                # The traffic the canary and stable served while the workflow waited.
                revisions = fake.services[service]["trafficStatuses"]
                canary_revision = next(s["revision"] for s in revisions if s.get("tag") == "canary")
                assert {s.get("revision") for s in revisions if not s.get("tag")} == {
                    stable_revision
                }
                write_traffic(
                    repo,
                    canary={
                        "revision": canary_revision,
                        "model_version": version(repo / "build-new"),
                    },
                    stable={"revision": stable_revision, "model_version": version(champion)},
                )
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=repo, env=env, capture_output=True, text=True, timeout=1800, check=False,
            )  # fmt: skip
            ran.append(step["name"])
            assert result.returncode == 0, f"{step['name']}:\n{result.stdout}\n{result.stderr}"
    finally:
        remove_built_image(repo / "build-new", docker_engine)

    assert ran == [
        "Install nb2prod",
        "Check the settings",
        "Why this run",
        "Build from fresh data",
        "Compare with the champion",
        "Push the image",
        "Deploy as a canary",
        "Wait for labelled traffic",
        "Gate the canary on live quality",
    ]
    assert "decision=promote" in outputs.read_text()
    assert "petal length (cm)" in summary.read_text()
    pushed = json.loads((repo / "build-new" / ".nb2prod" / "push.json").read_text())
    assert pushed["repository"].startswith(registry)
    traffic = fake.services[service]["trafficStatuses"]
    assert [(s["revision"], s["percent"]) for s in traffic] == [(canary_revision, 100)]


def evaluate_if(condition: str, context: dict[str, Any]) -> bool:
    match = EXPRESSION.fullmatch(condition.strip())
    return bool(evaluate(match.group(1) if match else condition, context))


def version(build_dir: Path) -> str:
    card = json.loads((build_dir / "model" / "model_card.json").read_text())
    return str(card["model_version"])


def remove_built_image(build_dir: Path, docker_engine: Any) -> None:
    record = build_dir / ".nb2prod" / "image.json"
    if record.is_file():
        image_id = json.loads(record.read_text())["image_id"]
        docker_engine.client.images.remove(image_id, force=True)
