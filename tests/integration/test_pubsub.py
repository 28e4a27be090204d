"""Pub/Sub push against the real Pub/Sub emulator: a push subscription delivers messages to a
running service (`nb2prod serve`), and the predictions arrive on the result topic.

The expected predictions come from the notebook run in Jupyter (reference.py). A message
that can't score is acknowledged once and dead-lettered, never redelivered forever.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import reference
from helpers import (
    ServeProcess,
    assert_same_predictions,
    example_notebook,
    free_port,
)

PROJECT = "nb2prod-test"
NAME = "iris_function"

pytestmark = pytest.mark.skipif(
    shutil.which("gcloud") is None and not os.environ.get("NB2PROD_REQUIRE_DOCKER"),
    reason="the Pub/Sub emulator (gcloud beta emulators pubsub) is not installed",
)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host = f"127.0.0.1:{free_port()}"
    data = tmp_path_factory.mktemp("pubsub-emulator")
    log = (data / "emulator.log").open("wb")
    process = subprocess.Popen(
        ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}",
         f"--project={PROJECT}", f"--data-dir={data}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the emulator's java child goes with its group
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (data / "emulator.log").read_text()
            try:
                if httpx.get(f"http://{host}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (data / "emulator.log").read_text()
            time.sleep(0.5)
        yield host
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def built(built_examples: Callable[[str], Path]) -> Path:
    return built_examples(NAME)


def topic(name: str) -> str:
    return f"projects/{PROJECT}/topics/{name}"


def pull(subscriber: Any, subscription: str, count: int, timeout: float = 90) -> list[Any]:
    """``count`` messages from a pull subscription, acknowledged."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} messages arrived"
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages]
            )
            got.extend(m.message for m in response.received_messages)
        else:
            time.sleep(0.2)
    return got


def test_push_messages_are_scored_and_published_to_the_result_topic(
    emulator: str, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator)
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for name in ("rows", "results", "dead"):
        publisher.create_topic(name=topic(name))
    server = ServeProcess(
        built,
        tmp_path / "serve.log",
        env={
            "PUBSUB_EMULATOR_HOST": emulator,
            "NB2PROD_RESULT_TOPIC": topic("results"),
            "NB2PROD_DEAD_LETTER_TOPIC": "dead",  # a bare name: GOOGLE_CLOUD_PROJECT's topic
            "GOOGLE_CLOUD_PROJECT": PROJECT,
        },
    )
    try:
        subscriptions = {
            name: f"projects/{PROJECT}/subscriptions/{name}-pull" for name in ("results", "dead")
        }
        for name, path in subscriptions.items():
            subscriber.create_subscription(name=path, topic=topic(name))
        subscriber.create_subscription(
            name=f"projects/{PROJECT}/subscriptions/rows-push",
            topic=topic("rows"),
            push_config={"push_endpoint": f"{server.url}/pubsub"},
        )
        rows = reference.example_rows(NAME, 6)
        expected = reference.reference_predictions(example_notebook(NAME), rows)
        payloads = {
            "one row": (rows[0], expected[:1]),
            "a list of rows": (rows[1:4], expected[1:4]),
            "a /predict body": ({"instances": rows[4:]}, expected[4:]),
        }
        ids = {
            label: publisher.publish(topic("rows"), json.dumps(data).encode()).result(timeout=30)
            for label, (data, _) in payloads.items()
        }
        bad = dict(rows[0], **{"petal width (cm)": "wide"})
        bad_id = publisher.publish(topic("rows"), json.dumps(bad).encode()).result(timeout=30)

        results = {
            m.attributes["nb2prod_message_id"]: m
            for m in pull(subscriber, subscriptions["results"], 3)
        }
        card = json.loads((built / "model" / "model_card.json").read_text())
        for label, (_, want) in payloads.items():
            message = results[ids[label]]
            body = json.loads(message.data)
            assert_same_predictions(want, body["predictions"])
            assert body["model_version"] == message.attributes["model_version"]
            assert body["model_version"] == card["model_version"]

        (dead,) = pull(subscriber, subscriptions["dead"], 1)
        assert dead.attributes["nb2prod_message_id"] == bad_id
        assert "petal width (cm)" in dead.attributes["nb2prod_error"]
        assert json.loads(dead.data) == bad  # the message as sent, for a replay after a fix
        time.sleep(3)  # acknowledged once: the emulator does not push it again
        assert server.log.read_text().count(f"pubsub message {bad_id} not scored") == 1
    finally:
        server.close()


def test_a_broken_envelope_is_acknowledged_not_a_500(built: Path, tmp_path: Path) -> None:
    server = ServeProcess(built, tmp_path / "serve.log")
    try:
        for body in (b"not json", b'{"no": "message"}', b'{"message": {"data": "%%%"}}'):
            response = httpx.post(f"{server.url}/pubsub", content=body, timeout=10)
            assert response.status_code == 204, (body, response.text)
        row = reference.example_rows(NAME, 1)[0]
        data = base64.b64encode(json.dumps(row).encode()).decode()
        envelope = {"message": {"data": data, "messageId": "m-1"}, "subscription": "s"}
        # Without a result topic the prediction is made (and monitored) and acknowledged.
        assert httpx.post(f"{server.url}/pubsub", json=envelope, timeout=10).status_code == 204
    finally:
        server.close()
