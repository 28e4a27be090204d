"""Moving a Cloud Run service's traffic: the canary split, promote and rollback.

``DIR/.nb2prod/deploy.json`` remembers where the service is, the canary, and the
traffic before the last deploy; promote and rollback read it and change only the
service's traffic (a read-modify-write with the etag and an update mask).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from google.cloud import run_v2

from ...builddir import BuildDir
from ...errors import ConfigError, DeployError
from ...models import CloudRunDeployment, TrafficOptions, TrafficSplit
from . import api
from .service import knative_traffic, read_service_yaml, traffic_targets, write_service_yaml
from .settings import CANARY_TAG, ServiceLocation

#: Fields Cloud Run fills in; cleared before a read-modify-write of traffic.
_OUTPUT_ONLY = (
    "uid", "generation", "create_time", "update_time", "delete_time", "expire_time",
    "creator", "last_modifier", "observed_generation", "terminal_condition", "conditions",
    "latest_ready_revision", "latest_created_revision", "traffic_statuses", "uri", "urls",
    "satisfies_pzs", "reconciling",
)  # fmt: skip


def canary_traffic(
    baseline: tuple[TrafficSplit, ...], revision: str, percent: int, service: str
) -> tuple[TrafficSplit, ...]:
    """``percent`` to the new revision, the rest split as before (by revision name)."""
    if not any(split.percent for split in baseline):
        raise ConfigError(
            f"{service} has no serving revision to split traffic with",
            hint="Deploy once without --canary first.",
        )
    for split in baseline:
        if split.tag == CANARY_TAG and split.percent:
            raise DeployError(
                f"a canary ({split.revision}) already receives {split.percent}% of {service}",
                hint="Run nb2prod promote DIR or nb2prod rollback DIR first.",
            )
        if split.revision == revision and split.percent:
            raise ConfigError(f"{revision} already serves {service}: nothing new to canary")
    kept = [split for split in baseline if split.tag != CANARY_TAG]
    remaining = 100 - percent
    shares = [split.percent * remaining // 100 for split in kept]
    largest = max(range(len(kept)), key=lambda i: kept[i].percent)
    shares[largest] += remaining - sum(shares)
    rest = tuple(replace(split, percent=share) for split, share in zip(kept, shares, strict=True))
    return (TrafficSplit(revision, percent, CANARY_TAG), *rest)


def serving(service: run_v2.Service) -> tuple[TrafficSplit, ...]:
    """The service's actual traffic, with "latest" resolved to a revision name."""
    latest = short_name(service.latest_ready_revision)
    splits = []
    for status in service.traffic_statuses:
        revision = status.revision or latest
        if revision and (status.percent or status.tag):
            splits.append(TrafficSplit(revision, status.percent, status.tag))
    return tuple(splits)


def promote(options: TrafficOptions) -> CloudRunDeployment:
    """Send all traffic to the canary revision (or, without a canary, the latest one)."""
    state = read_state(Path(options.build_dir))
    canary = state.get("canary")
    revision = canary["revision"] if canary else None
    return _move_traffic(options, state, (TrafficSplit(revision, 100),))


def rollback(options: TrafficOptions) -> CloudRunDeployment:
    """Restore the traffic split the service had before nb2prod's last deploy."""
    state = read_state(Path(options.build_dir))
    if not state.get("baseline"):
        raise DeployError(
            f"nothing to roll back to: {state['service']} had no serving revision before "
            "the last deploy",
            hint="Deploy an earlier build directory instead.",
        )
    return _move_traffic(options, state, tuple(TrafficSplit(**s) for s in state["baseline"]))


def _move_traffic(
    options: TrafficOptions, state: dict[str, Any], traffic: tuple[TrafficSplit, ...]
) -> CloudRunDeployment:
    build_dir = Path(options.build_dir)
    location = ServiceLocation(state["project"], state["region"], state["service"])
    client = api.make_client(options.endpoint)
    current = api.get_service(client, location)
    if current is None:
        raise DeployError(f"service {location.name} does not exist (any more)")
    # Read-modify-write with the etag, and a mask so only traffic changes.
    service = run_v2.Service(current)
    for field_name in _OUTPUT_ONLY:
        run_v2.Service.pb(service).ClearField(field_name)
    service.traffic = traffic_targets(traffic)
    deployed = api.send(
        client,
        service,
        location,
        options.wait_seconds,
        allow_missing=False,
        update_mask=("traffic",),
    )
    service_yaml = BuildDir(build_dir).service_yaml
    knative = read_service_yaml(service_yaml)
    if knative is not None:
        knative["spec"]["traffic"] = knative_traffic(traffic)
        write_service_yaml(service_yaml, knative)
    top = max(traffic, key=lambda split: split.percent)
    state.update(traffic=[asdict(split) for split in traffic], canary=None, url=deployed.uri)
    state["revision"] = top.revision or short_name(deployed.latest_ready_revision)
    write_state(build_dir, state)
    return CloudRunDeployment(
        project=location.project,
        region=location.region,
        service=location.service,
        revision=state["revision"],
        image=str(state.get("image", "")),
        traffic=traffic,
        service_yaml=service_yaml,
        url=deployed.uri,
    )


def short_name(resource: str) -> str:
    """The last part of a resource name (a revision's id)."""
    return resource.rsplit("/", 1)[-1]


# -- files --------------------------------------------------------------------------------


def read_state(build_dir: Path) -> dict[str, Any]:
    """What the last deploy of DIR recorded; ConfigError when DIR was never deployed here."""
    state = BuildDir(build_dir).deployment()
    if state.get("target") != "cloudrun":
        raise ConfigError(f"{build_dir} was not deployed to Cloud Run by nb2prod")
    return state


def write_state(build_dir: Path, state: dict[str, Any]) -> None:
    """Record a deploy (or a traffic move) for promote and rollback."""
    BuildDir(build_dir).write_deployment(state)
