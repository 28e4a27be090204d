"""The push's control flow on the engine double: what is tagged and pushed, what each failure says.

The real push to a local registry is in tests/integration/test_push.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_double import FakeEngine, ScriptedPush
from fake_build import make_card, write_image_record, write_model_dir

from nb2prod.engine import ImageInfo
from nb2prod.errors import PushError
from nb2prod.ship import push

DIGEST = "sha256:" + "cd" * 32


def stub_dir(tmp_path: Path) -> Path:
    """A build dir whose image.json names image sha256:1, tagged m:v1."""
    write_model_dir(tmp_path, make_card(name="m", model_version="v1"))
    write_image_record(tmp_path, "m:v1", "sha256:1")
    return tmp_path


def engine_with(*pushes: ScriptedPush) -> FakeEngine:
    return FakeEngine(pushes=list(pushes), images={"sha256:1": ImageInfo("sha256:1", 10)})


def test_tags_under_the_registry_pushes_and_records_the_digest(tmp_path: Path) -> None:
    engine = engine_with(ScriptedPush(["abc: Preparing", "abc: Pushed"], digest=DIGEST))
    lines: list[str] = []
    record = push.push_image(
        stub_dir(tmp_path), "https://127.0.0.1:5000/x/", lines.append, engine=engine
    )
    assert engine.calls_to("tag") == [{"image": "sha256:1", "ref": "127.0.0.1:5000/x/m:v1"}]
    assert engine.calls_to("push") == [{"ref": "127.0.0.1:5000/x/m:v1"}]
    assert record.image == f"127.0.0.1:5000/x/m@{DIGEST}" and record.tag == "v1"
    saved = json.loads((tmp_path / ".nb2prod" / "push.json").read_text())
    assert saved["digest"] == DIGEST and saved["image_id"] == "sha256:1"
    assert lines == [
        "Pushing 127.0.0.1:5000/x/m:v1",
        "abc: Preparing",
        "abc: Pushed",
        f"Pushed 127.0.0.1:5000/x/m@{DIGEST}",
    ]


def test_auth_failure_points_at_gcloud_configure_docker(tmp_path: Path) -> None:
    engine = engine_with(ScriptedPush(["abc: Preparing"], error="denied: Unauthenticated request."))
    registry = "europe-west1-docker.pkg.dev/proj/models"
    with pytest.raises(PushError) as caught:
        push.push_image(stub_dir(tmp_path), registry, engine=engine)
    assert "authentication" in caught.value.message
    assert caught.value.hint == (
        "Run: gcloud auth login && gcloud auth configure-docker europe-west1-docker.pkg.dev"
    )
    assert not (tmp_path / ".nb2prod" / "push.json").exists()


def test_plain_http_registry_points_at_insecure_registries(tmp_path: Path) -> None:
    error = 'Get "https://10.0.0.5:5000/v2/": http: server gave HTTP response to HTTPS client'
    engine = engine_with(ScriptedPush(error=error))
    with pytest.raises(PushError, match="unreachable") as caught:
        push.push_image(stub_dir(tmp_path), "10.0.0.5:5000/models", engine=engine)
    assert (
        caught.value.hint
        == 'Add "10.0.0.5:5000" to "insecure-registries" in the Docker daemon config.'
    )


def test_push_without_a_digest_is_an_error(tmp_path: Path) -> None:
    engine = engine_with(ScriptedPush(["abc: Pushed"]))
    with pytest.raises(PushError, match="did not report a digest"):
        push.push_image(stub_dir(tmp_path), "127.0.0.1:5000/x", engine=engine)


def test_an_image_gone_from_the_engine_is_a_push_error(tmp_path: Path) -> None:
    engine = FakeEngine()
    with pytest.raises(PushError, match="no longer in the local Docker engine") as caught:
        push.push_image(stub_dir(tmp_path), "127.0.0.1:5000/x", engine=engine)
    assert "nb2prod build" in (caught.value.hint or "")
    assert engine.calls_to("push") == []
