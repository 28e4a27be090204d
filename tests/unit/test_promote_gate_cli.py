"""``nb2prod promote --gate`` at the CLI: flags that apply to the gate only, what stdout holds
with --json, and the exit codes with their messages. The verdict is stubbed here;
tests/integration/test_promote_gate.py decides on real logs against the Cloud Run fake."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from nb2prod import pipeline
from nb2prod.models import CloudRunDeployment, GateOptions, TrafficSplit


@dataclass
class Verdict:
    """What the CLI reads of a GateReport."""

    decision: str

    summary = "the canary is worse on accuracy: 0.7 vs 0.9 (p = 0.001, alpha 0.05)"

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "p_value": 0.001}

    def table(self) -> str:
        return f"decision: {self.decision.upper()}"


def stub_gate(monkeypatch: pytest.MonkeyPatch, decision: str) -> list[GateOptions]:
    """pipeline.promote_gate deciding ``decision``; traffic "moves" unless it is a dry run."""
    seen: list[GateOptions] = []

    def promote_gate(options: GateOptions) -> tuple[Verdict, CloudRunDeployment | None]:
        seen.append(options)
        if options.dry_run or decision == "wait":
            return Verdict(decision), None
        moved = CloudRunDeployment(
            project="p", region="europe-west1", service="iris", revision="iris-00002",
            image="img@sha256:ab", traffic=(TrafficSplit("iris-00002", 100),),
            service_yaml=options.build_dir / "service.yaml",
        )  # fmt: skip
        return Verdict(decision), moved

    monkeypatch.setattr(pipeline, "promote_gate", promote_gate)
    return seen


def gate(directory: Path, *extra: str) -> Any:
    return run_cli("promote", directory, "--gate", "--predictions", "log/", "--labels",
                   "labels.csv", *extra)  # fmt: skip


@pytest.mark.parametrize("flag", [["--alpha", "0.05"], ["--key", "request_id"], ["--json"]])
def test_a_gate_flag_without_gate_is_refused_even_at_its_default(
    tmp_path: Path, flag: list[str]
) -> None:
    """Typed and silently ignored would leave a user thinking the gate ran."""
    result = run_cli("promote", tmp_path, *flag)
    assert result.returncode == 2
    assert f"{flag[0]} applies to --gate only" in result.stderr


def test_json_stdout_is_one_json_document_when_traffic_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_gate(monkeypatch, "promote")
    result = gate(tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"decision": "promote", "p_value": 0.001}
    assert "deployed iris in p/europe-west1" in result.stderr


@pytest.mark.parametrize(("decision", "code"), [("promote", 0), ("wait", 18), ("rollback", 19)])
def test_each_verdict_has_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decision: str, code: int
) -> None:
    stub_gate(monkeypatch, decision)
    result = gate(tmp_path)
    assert result.returncode == code, result.stderr
    assert f"decision: {decision.upper()}" in result.stdout
    if decision == "rollback":
        assert result.error_lines[0].endswith("; rolled back")
        assert "serves all traffic again" in result.stderr


def test_a_dry_run_rollback_says_nothing_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 19 as documented, but the hint must not claim stable serves everything again."""
    seen = stub_gate(monkeypatch, "rollback")
    result = gate(tmp_path, "--dry-run")
    assert result.returncode == 19
    assert seen[0].dry_run is True
    assert "dry run: would rollback; traffic unchanged" in result.stderr
    assert result.error_lines[0].endswith("; would roll back")
    assert "serves all traffic again" not in result.stderr
    assert "without --dry-run" in result.stderr


def test_an_endpoint_from_the_environment_is_used_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NB2PROD_CLOUD_RUN_ENDPOINT lets the workflow run against a fake unchanged; left set in a
    shell it would silently redirect real traffic changes, so it is named on stderr."""
    seen = stub_gate(monkeypatch, "wait")
    result = run_cli("promote", tmp_path, "--gate", "--predictions", "log/", "--labels", "l.csv",
                     env={"NB2PROD_CLOUD_RUN_ENDPOINT": "http://127.0.0.1:9"})  # fmt: skip
    assert result.returncode == 18
    assert seen[-1].endpoint == "http://127.0.0.1:9"
    assert "note: Cloud Run API at http://127.0.0.1:9 (NB2PROD_CLOUD_RUN_ENDPOINT)" in result.stderr
    result = gate(tmp_path)  # unset: Google's endpoint, nothing said
    assert seen[-1].endpoint is None and "Cloud Run API at" not in result.stderr
