"""The gcloud commands that deliver a Pub/Sub topic's messages to the service's ``POST /pubsub``.

nb2prod doesn't create the subscription itself: that takes Pub/Sub and IAM rights a
deploying account often lacks, and it is done once per topic, not on every deploy.
``deploy --pubsub-topic TOPIC`` prints the exact commands instead: let the push identity
invoke the (private) service, then create a push subscription with an OIDC token, an ack
deadline as long as the service's request timeout, and optionally a dead-letter topic.
"""

from __future__ import annotations

import re
import shlex

from ...errors import ConfigError
from ...models import CloudRunOptions
from ...runtime.pubsub import DEAD_LETTER_TOPIC_ENV, RESULT_TOPIC_ENV
from .settings import ServiceLocation

PUSH_PATH = "/pubsub"
#: Deliveries of one message before Pub/Sub gives it to the dead-letter topic (its minimum).
MAX_DELIVERY_ATTEMPTS = 5
_ACK_DEADLINE = (10, 600)  # what Pub/Sub accepts, in seconds
#: Stands in for the push endpoint while the command is quoted: a substitution must not be.
_URL = "NB2PROD_PUSH_ENDPOINT"
_TOPIC = re.compile(r"(projects/[a-z][-a-z0-9:.]{4,61}[a-z0-9]/topics/)?[A-Za-z][\w.~+%-]{2,254}")


def check_topics(options: CloudRunOptions) -> None:
    """Refuse a --pubsub-topic (or dead-letter topic) Pub/Sub would refuse, before deploying."""
    topics = {
        "--pubsub-topic": options.pubsub_topic,
        "--pubsub-dead-letter-topic": options.pubsub_dead_letter_topic,
    }
    if options.pubsub_dead_letter_topic and not options.pubsub_topic:
        raise ConfigError("--pubsub-dead-letter-topic needs --pubsub-topic")
    for flag, name in topics.items():
        if name is not None and not _TOPIC.fullmatch(name):
            raise ConfigError(
                f"{flag} {name!r} is not a Pub/Sub topic",
                hint="Give the topic's id (my-topic) or its name (projects/P/topics/my-topic).",
            )


def subscription_commands(
    options: CloudRunOptions, location: ServiceLocation, url: str | None
) -> tuple[str, ...]:
    """Grant the push identity run.invoker, then create the push subscription.

    ``url`` is the service's URL; None (a dry run) puts a shell substitution that reads it.
    """
    topic = options.pubsub_topic
    assert topic is not None
    identity = options.service_account or f"PUSH_SA@{location.project}.iam.gserviceaccount.com"
    where = ["--region", location.region, "--project", location.project]
    grant = [
        *("gcloud", "run", "services", "add-iam-policy-binding", location.service, *where),
        *("--member", f"serviceAccount:{identity}", "--role", "roles/run.invoker"),
    ]
    ack = min(max(options.timeout_seconds, _ACK_DEADLINE[0]), _ACK_DEADLINE[1])
    create = [
        *("gcloud", "pubsub", "subscriptions", "create", f"{location.service}-push"),
        *("--project", location.project, "--topic", topic),
        *("--push-endpoint", _URL),
        *("--push-auth-service-account", identity, "--ack-deadline", str(ack)),
    ]
    if options.pubsub_dead_letter_topic:
        create += ["--dead-letter-topic", options.pubsub_dead_letter_topic]
        create += ["--max-delivery-attempts", str(MAX_DELIVERY_ATTEMPTS)]
    if url:
        endpoint = shlex.quote(url.rstrip("/") + PUSH_PATH)
    else:
        describe = shlex.join(
            ["gcloud", "run", "services", "describe", location.service, *where]
            + ["--format", "value(status.url)"]
        )
        endpoint = f'"$({describe}){PUSH_PATH}"'
    return (shlex.join(grant), shlex.join(create).replace(_URL, endpoint))


def subscription_notes(options: CloudRunOptions) -> tuple[str, ...]:
    """What the commands leave to the user: where predictions go, and the service account."""
    notes = []
    if RESULT_TOPIC_ENV not in options.env:
        notes.append(
            f"POST /pubsub publishes its predictions only when {RESULT_TOPIC_ENV} is set: deploy "
            f"with --env {RESULT_TOPIC_ENV}=projects/P/topics/RESULTS (the service account needs "
            "roles/pubsub.publisher on that topic)."
        )
    if options.pubsub_dead_letter_topic and DEAD_LETTER_TOPIC_ENV not in options.env:
        notes.append(
            "The service acknowledges a message that can never score (so Pub/Sub's dead-letter "
            "topic only gets messages it could not deliver); to keep those too, deploy with "
            f"--env {DEAD_LETTER_TOPIC_ENV}={options.pubsub_dead_letter_topic}."
        )
    if not options.service_account:
        notes.append(
            "PUSH_SA stands for the service account Pub/Sub signs each push with (the first "
            "command lets it invoke the service); with --service-account, the service's own."
        )
    return tuple(notes)
