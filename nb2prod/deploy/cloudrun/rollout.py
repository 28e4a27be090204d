"""``deploy``: create or update DIR's Cloud Run service by image digest (or show the request).

The steps: check the options, find the pushed image, resolve where the service goes,
read what serves now, decide the traffic (all to the new revision, or a canary
share), send one ``UpdateServiceRequest(allow_missing=True)``, and record the
result in ``DIR/.nb2prod/deploy.json`` and ``DIR/service.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ...builddir import BuildDir
from ...errors import ConfigError
from ...models import CloudRunDeployment, CloudRunOptions, TrafficSplit
from ...runtime.card import ModelCard
from . import api
from .pubsub import check_topics, subscription_commands, subscription_notes
from .service import build_service, knative_service, render_request, write_service_yaml
from .settings import (
    CANARY_TAG,
    ServiceLocation,
    check_canary_name,
    check_options,
    resolve_location,
)
from .traffic import canary_traffic, serving, write_state

_NOT_PUSHED = "<digest pinned at push time>"
_PREVIOUS = "<the revision serving now>"


def deploy(options: CloudRunOptions) -> CloudRunDeployment:
    """Create or update the Cloud Run service for DIR (or show what would be sent).

    Raises ConfigError for unusable options, a missing card or an image not pushed
    yet; DeployError when credentials are missing, access is denied, the project or
    region does not exist, or the new revision does not become ready.
    """
    build_dir = Path(options.build_dir)
    check_options(options)
    check_topics(options)
    card = BuildDir(build_dir).card()
    location = resolve_location(options.project, options.region, options.service, card.name)
    if options.canary is not None:
        check_canary_name(location)
    image, notes = deployable_image(build_dir, card, options.dry_run)
    revision = build_service(options, location, image, card).template.revision
    client = None if options.dry_run else api.make_client(options.endpoint)
    current = api.get_service(client, location) if client else None
    baseline = serving(current) if current else ()
    traffic, traffic_notes = _traffic(options, location, revision, baseline)
    service = build_service(options, location, image, card, traffic)
    service_yaml = write_service_yaml(
        BuildDir(build_dir).service_yaml, knative_service(service, location.region)
    )
    result = CloudRunDeployment(
        project=location.project,
        region=location.region,
        service=location.service,
        revision=revision,
        image=image,
        traffic=traffic,
        service_yaml=service_yaml,
        dry_run=options.dry_run,
        notes=notes + traffic_notes,
    )
    if client is None:
        return _subscribe(
            options, location, replace(result, request=render_request(service, options.endpoint))
        )
    deployed = api.send(client, service, location, options.wait_seconds, allow_missing=True)
    write_state(build_dir, _state(options, location, result, baseline, deployed.uri))
    return _subscribe(options, location, replace(result, url=deployed.uri))


def _subscribe(
    options: CloudRunOptions, location: ServiceLocation, result: CloudRunDeployment
) -> CloudRunDeployment:
    """With --pubsub-topic: the commands that push the topic to the service, and their notes."""
    if options.pubsub_topic is None:
        return result
    commands = subscription_commands(options, location, result.url or None)
    notes = result.notes + subscription_notes(options)
    return replace(result, pubsub_commands=commands, notes=notes)


def _traffic(
    options: CloudRunOptions,
    location: ServiceLocation,
    revision: str,
    baseline: tuple[TrafficSplit, ...],
) -> tuple[tuple[TrafficSplit, ...], tuple[str, ...]]:
    """The new traffic split, and a note when a dry run cannot know what serves now."""
    if options.canary is None:
        return (TrafficSplit(None, 100),), ()
    if options.dry_run:
        split = (
            TrafficSplit(revision, options.canary, CANARY_TAG),
            TrafficSplit(_PREVIOUS, 100 - options.canary),
        )
        return split, ("The canary's share comes out of the revision(s) serving at deploy time.",)
    return canary_traffic(baseline, revision, options.canary, location.service), ()


def _state(
    options: CloudRunOptions,
    location: ServiceLocation,
    result: CloudRunDeployment,
    baseline: tuple[TrafficSplit, ...],
    url: str,
) -> dict[str, Any]:
    """What promote and rollback need to know about this deploy."""
    canary = options.canary
    return {
        "target": "cloudrun",
        **asdict(location),
        "revision": result.revision,
        "image": result.image,
        "url": url,
        "traffic": [asdict(split) for split in result.traffic],
        "canary": {"revision": result.revision, "percent": canary} if canary else None,
        "baseline": [asdict(split) for split in baseline] or None,
    }


def deployable_image(
    build_dir: Path, card: ModelCard, dry_run: bool
) -> tuple[str, tuple[str, ...]]:
    """The pushed image by digest; a placeholder with a note on a dry run before a push."""
    push, stale = BuildDir(build_dir).current_push()
    if push and not stale:
        return push.image, ()
    why = "was rebuilt after its last push" if stale else "has not been pushed yet"
    if dry_run:
        image = f"REGISTRY/{card.name}@{_NOT_PUSHED}"
        return image, (f"The image {why}: the digest will be pinned at push time.",)
    raise ConfigError(
        f"the image in {build_dir} {why}; Cloud Run deploys by digest only",
        hint=f"Run: nb2prod push {build_dir} --registry REGION-docker.pkg.dev/PROJECT/REPO "
        "(or pass --registry to deploy)",
    )
