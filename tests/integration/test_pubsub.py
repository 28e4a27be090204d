"""Events against the real Pub/Sub emulator: a push subscription delivers messages to a real
uvicorn serving each example build, and the predictions arrive on the result topic.

- Parity: for every example notebook, a push message scores what ``POST /predict`` answers for
  the same rows, and what the notebook itself predicts in Jupyter (reference.py).
- Eventarc: CloudEvents in binary and structured mode, encoded by the CNCF CloudEvents SDK
  (not by hand), are scored and published; the request id is the message id, else the event's.
- Poison messages (bad envelopes, events of another type, rows that fail validation, model
  code that raises) are acknowledged once (204, never 500) with a log line, and dead-lettered
  when a dead-letter topic is set. A result that can't be published answers 503, and the
  emulator redelivers the message until it can.

One emulator for the module, one server per example (started on first use).
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
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import reference
from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from helpers import EXAMPLES, assert_same_predictions, example_notebook, free_port
from service_server import Uvicorn

PROJECT = "nb2prod-test"
IRIS = "iris_function"
MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
#: The rows test_batch scores each example on: the same rows by every path, and in one session
#: the notebook's reference run is shared.
PARITY_ROWS = 25

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


@dataclass(frozen=True)
class Clients:
    """google-cloud-pubsub's clients, talking to the emulator."""

    publisher: Any
    subscriber: Any


@pytest.fixture(scope="module")
def clients(emulator: str) -> Iterator[Clients]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PUBSUB_EMULATOR_HOST", emulator)
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        try:
            yield Clients(pubsub_v1.PublisherClient(), subscriber)
        finally:
            subscriber.close()


def topic(name: str) -> str:
    return f"projects/{PROJECT}/topics/{name}"


def subscription(name: str) -> str:
    return f"projects/{PROJECT}/subscriptions/{name}"


@dataclass(frozen=True)
class Service:
    """One example served by uvicorn, with its topics on the emulator: ``rows`` (pushed to
    ``/pubsub``), ``results`` and ``dead``, the last two read through pull subscriptions."""

    server: Uvicorn
    rows: str
    results: str
    dead: str
    model_version: str

    @property
    def url(self) -> str:
        return self.server.url

    def log_text(self) -> str:
        return self.server.log.read_text()


def start_service(name: str, build: Path, emulator: str, clients: Clients) -> Service:
    """Topics and subscriptions for ``name``, and a server pushed to by the emulator."""
    for kind in ("rows", "results", "dead"):
        clients.publisher.create_topic(name=topic(f"{kind}-{name}"))
    server = Uvicorn(
        build,
        env={
            "PUBSUB_EMULATOR_HOST": emulator,
            "NB2PROD_RESULT_TOPIC": topic(f"results-{name}"),
            "NB2PROD_DEAD_LETTER_TOPIC": f"dead-{name}",  # a bare name: GOOGLE_CLOUD_PROJECT's
            "GOOGLE_CLOUD_PROJECT": PROJECT,
        },
    )
    for kind in ("results", "dead"):
        clients.subscriber.create_subscription(
            name=subscription(f"{kind}-{name}"), topic=topic(f"{kind}-{name}")
        )
    clients.subscriber.create_subscription(
        name=subscription(f"rows-{name}-push"),
        topic=topic(f"rows-{name}"),
        push_config={"push_endpoint": f"{server.url}/pubsub"},
    )
    card = json.loads((build / "model" / "model_card.json").read_text())
    return Service(
        server=server,
        rows=topic(f"rows-{name}"),
        results=subscription(f"results-{name}"),
        dead=subscription(f"dead-{name}"),
        model_version=card["model_version"],
    )


@pytest.fixture(scope="module")
def services(
    emulator: str, clients: Clients, built_examples: Callable[[str], Path]
) -> Iterator[Callable[[str], Service]]:
    """The service of an example, started on first use and kept for the module."""
    started: dict[str, Service] = {}

    def get(name: str) -> Service:
        if name not in started:
            started[name] = start_service(name, built_examples(name), emulator, clients)
        return started[name]

    try:
        yield get
    finally:
        for service in started.values():
            service.server.stop()


def publish(clients: Clients, topic_path: str, data: Any) -> str:
    """Publish ``data`` as JSON; the message id."""
    future = clients.publisher.publish(topic_path, json.dumps(data).encode())
    message_id: str = future.result(timeout=30)
    return message_id


def pull(
    clients: Clients, subscription_path: str, ids: set[str], timeout: float = 90
) -> dict[str, Any]:
    """The messages whose ``nb2prod_message_id`` is in ``ids``, by that id (all acknowledged;
    others, such as a duplicate delivery, are dropped)."""
    got: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while not ids <= got.keys():
        missing = sorted(ids - got.keys())
        assert time.monotonic() < deadline, f"never arrived on {subscription_path}: {missing}"
        response = clients.subscriber.pull(
            subscription=subscription_path, max_messages=20, timeout=5
        )
        received = response.received_messages
        if not received:
            time.sleep(0.2)
            continue
        clients.subscriber.acknowledge(
            subscription=subscription_path, ack_ids=[m.ack_id for m in received]
        )
        for item in received:
            got[item.message.attributes["nb2prod_message_id"]] = item.message
    return {key: got[key] for key in ids}


def envelope(data: bytes, message_id: str | None) -> dict[str, Any]:
    """A Pub/Sub push envelope (what Eventarc puts in a messagePublished event's data)."""
    message: dict[str, Any] = {"data": base64.b64encode(data).decode()}
    if message_id is not None:
        message["messageId"] = message_id
        message["publishTime"] = "2026-01-01T00:00:00Z"
    return {"message": message, "subscription": subscription("eventarc-trigger-sub")}


def cloud_event(
    mode: str, event_id: str, data: Any, event_type: str = MESSAGE_PUBLISHED
) -> HTTPMessage:
    """An Eventarc event in ``mode`` (binary or structured), encoded by the CloudEvents SDK."""
    event = CloudEvent(
        attributes={
            "id": event_id,
            "type": event_type,
            "source": f"//pubsub.googleapis.com/{topic('rows')}",
            "specversion": "1.0",
            "datacontenttype": "application/json",
        },
        data=data,
    )
    encode = {"binary": to_binary, "structured": to_structured}[mode]
    return encode(event, JSONFormat())


# --- parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_push_predicts_what_predict_and_the_notebook_predict(
    name: str, services: Callable[[str], Service], clients: Clients
) -> None:
    service = services(name)
    rows = reference.example_rows(name, PARITY_ROWS)
    expected = reference.reference_predictions(example_notebook(name), rows)
    # Each message's rows, and the shape they are sent in.
    messages = {
        "one row": (rows[0], slice(0, 1)),
        "a list of rows": (rows[1:13], slice(1, 13)),
        "a /predict body": ({"instances": rows[13:]}, slice(13, PARITY_ROWS)),
    }
    ids = {label: publish(clients, service.rows, data) for label, (data, _) in messages.items()}
    results = pull(clients, service.results, set(ids.values()))
    with httpx.Client(base_url=service.url, timeout=60) as http:
        for label, (_, part) in messages.items():
            message = results[ids[label]]
            body = json.loads(message.data)
            assert_same_predictions(expected[part], body["predictions"])
            answer = http.post("/predict", json={"instances": rows[part]})
            assert answer.status_code == 200, answer.text
            assert body == answer.json(), label  # predictions and model_version, exactly
            assert message.attributes["model_version"] == service.model_version


def test_a_row_that_fails_validation_is_dead_lettered_once(
    services: Callable[[str], Service], clients: Clients
) -> None:
    service = services(IRIS)
    bad = dict(reference.example_rows(IRIS, 1)[0], **{"petal width (cm)": "wide"})
    bad_id = publish(clients, service.rows, bad)
    dead = pull(clients, service.dead, {bad_id})[bad_id]
    assert "petal width (cm)" in dead.attributes["nb2prod_error"]
    assert json.loads(dead.data) == bad  # the message as sent, for a replay after a fix
    time.sleep(3)  # acknowledged once: the emulator does not push it again
    assert service.log_text().count(f"pubsub message {bad_id} not scored") == 1


# --- Eventarc ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_eventarc_events_are_scored_and_published(
    mode: str, services: Callable[[str], Service], clients: Clients
) -> None:
    service = services(IRIS)
    rows = reference.example_rows(IRIS, 3)
    expected = reference.reference_predictions(example_notebook(IRIS), rows)
    events = [
        # Eventarc's own shape: the message id is the request id.
        cloud_event(mode, f"{mode}-event-1", envelope(json.dumps(rows[:2]).encode(), f"{mode}-m1")),
        # A message without an id: the event's id is the request id.
        cloud_event(mode, f"{mode}-event-2", envelope(json.dumps(rows[2]).encode(), None)),
    ]
    if mode == "structured":
        assert events[0].headers["content-type"] == "application/cloudevents+json"
    else:
        assert events[0].headers["ce-type"] == MESSAGE_PUBLISHED
    for event in events:
        response = httpx.post(
            f"{service.url}/pubsub", content=event.body, headers=event.headers, timeout=30
        )
        assert response.status_code == 204, response.text
    results = pull(clients, service.results, {f"{mode}-m1", f"{mode}-event-2"})
    for message_id, part in ((f"{mode}-m1", slice(0, 2)), (f"{mode}-event-2", slice(2, 3))):
        body = json.loads(results[message_id].data)
        assert_same_predictions(expected[part], body["predictions"])
        assert body["model_version"] == service.model_version


def test_malformed_events_are_acknowledged_and_dead_lettered_never_500(
    services: Callable[[str], Service], clients: Clients
) -> None:
    service = services(IRIS)
    row = reference.example_rows(IRIS, 1)[0]
    bad_row = json.dumps(dict(row, **{"sepal width (cm)": None})).encode()
    not_base64 = cloud_event("binary", "ev-b64", envelope(b"", "m-b64"))
    structured = {"content-type": "application/cloudevents+json"}
    bad_data_base64 = {
        "specversion": "1.0",
        "id": "ev-b64-data",
        "type": MESSAGE_PUBLISHED,
        "source": "//pubsub.googleapis.com/x",
        "data_base64": "%%",
    }
    # (headers, body, the id it is dead-lettered and logged under, a word of the reason)
    cases: list[tuple[dict[str, str], bytes, str, str]] = [
        (*astuple(cloud_event("structured", "storage-1", {"bucket": "b"},
                              "google.cloud.storage.object.v1.finalized")),
         "storage-1", "storage.object.v1.finalized"),
        (*astuple(cloud_event("binary", "ev-type", envelope(b"{}", None), "other.type")),
         "ev-type", "other.type"),
        (*astuple(cloud_event("structured", "ev-no-message", {"no": "message"})),
         "ev-no-message", "envelope"),
        (not_base64.headers, not_base64.body.replace(b'"data": ""', b'"data": "%%%"'),
         "m-b64", "base64"),
        (*astuple(cloud_event("binary", "ev-not-json", envelope(b"{not json", None))),
         "ev-not-json", "JSON"),
        (*astuple(cloud_event("structured", "ev-row", envelope(bad_row, "m-row"))),
         "m-row", "sepal width"),
        ({**structured, "X-Request-ID": "r-oops"}, b"{oops", "r-oops", "JSON"),
        (structured, json.dumps(bad_data_base64).encode(), "ev-b64-data", "data_base64"),
    ]  # fmt: skip
    for headers, body, message_id, _ in cases:
        response = httpx.post(f"{service.url}/pubsub", content=body, headers=headers, timeout=30)
        assert response.status_code == 204, (message_id, response.status_code, response.text)
    dead = pull(clients, service.dead, {message_id for _, _, message_id, _ in cases})
    log = service.log_text()
    for _, _, message_id, reason in cases:
        assert reason in dead[message_id].attributes["nb2prod_error"], message_id
        assert log.count(f"pubsub message {message_id} not scored (acknowledged)") == 1
    assert json.loads(dead["m-row"].data) == json.loads(bad_row)  # the message's data as sent


# --- faults: no dead-letter topic, a bug in the model code, a result topic that isn't there ---


@pytest.fixture(scope="module")
def faulty(
    emulator: str,
    built_examples: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """The iris build whose preprocess raises RuntimeError for a sepal over 100 cm (a bug only
    some rows reach), with a result topic that does not exist yet and no dead-letter topic."""
    build = tmp_path_factory.mktemp("faulty") / "build"
    shutil.copytree(built_examples(IRIS), build)
    with (build / "model_code.py").open("a") as code:
        code.write(
            "\n\n_notebook_preprocess = preprocess\n\n\n"
            "def preprocess(df):\n"
            "    if (df['sepal length (cm)'] > 100).any():\n"
            "        raise RuntimeError('a bug in the model code')\n"
            "    return _notebook_preprocess(df)\n"
        )
    server = Uvicorn(
        build,
        env={"PUBSUB_EMULATOR_HOST": emulator, "NB2PROD_RESULT_TOPIC": topic("late-results")},
    )
    try:
        yield Service(server, "", "", "", "")
    finally:
        server.stop()


def test_without_a_dead_letter_topic_a_poison_message_is_acknowledged_and_logged(
    faulty: Service,
) -> None:
    row = reference.example_rows(IRIS, 1)[0]
    bug = envelope(json.dumps(dict(row, **{"sepal length (cm)": 500.0})).encode(), "m-bug")
    for body in (b"not json", json.dumps(envelope(b"[1, 2]", "m-shape")).encode()):
        response = httpx.post(f"{faulty.url}/pubsub", content=body, timeout=30)
        assert response.status_code == 204, response.text
    response = httpx.post(f"{faulty.url}/pubsub", json=bug, timeout=30)
    assert response.status_code == 204, response.text  # acknowledged, not a 500 retried forever
    log = faulty.log_text()
    assert log.count("pubsub message m-shape not scored (acknowledged)") == 1
    (line,) = [json.loads(x) for x in log.splitlines() if "m-bug not scored" in x]
    assert line["severity"] == "ERROR"
    assert "RuntimeError: a bug in the model code" in line["message"]
    assert "Traceback" in line["message"]  # a fault in the model code: its traceback


def test_a_result_that_cannot_be_published_is_503_and_redelivered(
    faulty: Service, clients: Clients
) -> None:
    rows = reference.example_rows(IRIS, 2)
    expected = reference.reference_predictions(example_notebook(IRIS), rows)
    direct = httpx.post(f"{faulty.url}/pubsub", json=envelope(json.dumps(rows).encode(), "m-503"))
    assert direct.status_code == 503  # the result topic does not exist: Pub/Sub must retry
    assert "message m-503 not published, Pub/Sub will redeliver" in faulty.log_text()
    clients.publisher.create_topic(name=topic("faulty-rows"))
    clients.subscriber.create_subscription(
        name=subscription("faulty-rows-push"),
        topic=topic("faulty-rows"),
        push_config={"push_endpoint": f"{faulty.url}/pubsub"},
    )
    message_id = publish(clients, topic("faulty-rows"), rows)
    deadline = time.monotonic() + 60
    while f"message {message_id} not published, Pub/Sub will redeliver" not in faulty.log_text():
        assert time.monotonic() < deadline, faulty.log_text()[-3000:]
        time.sleep(0.2)
    # The topic appears: the next delivery of the same message is published.
    clients.publisher.create_topic(name=topic("late-results"))
    clients.subscriber.create_subscription(
        name=subscription("late-results"), topic=topic("late-results")
    )
    result = pull(clients, subscription("late-results"), {message_id}, timeout=120)[message_id]
    assert_same_predictions(expected, json.loads(result.data)["predictions"])
