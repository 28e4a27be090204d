"""Deploy options that belong to a target: an option of another target is a usage error.

Each target's options record (``models.CloudRunOptions``, ``models.KubernetesOptions``)
is the one place its defaults are set; the options here only say which field of which
record they fill, and ``deploy --help`` shows each target's default from the records.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from ..errors import ConfigError
from ..models import CloudRunOptions, KubernetesOptions

#: Each deploy target's options record: the one place its defaults are set.
DEPLOY_TARGETS: dict[str, type[CloudRunOptions] | type[KubernetesOptions]] = {
    "cloudrun": CloudRunOptions,
    "kubernetes": KubernetesOptions,
}
_TARGET_TITLES = {"cloudrun": "Cloud Run", "kubernetes": "Kubernetes"}
#: Record defaults not worth showing in --help: "not set" and flags that are off.
_NO_DEFAULT = (None, False, dataclasses.MISSING)


def _record_default(target: str, field_name: str) -> Any:
    """A field's default in ``target``'s options record (None when it has none to show)."""
    for record_field in dataclasses.fields(DEPLOY_TARGETS[target]):
        if record_field.name == field_name:
            return record_field.default
    raise AssertionError(f"{DEPLOY_TARGETS[target].__name__} has no field {field_name}")


class TargetOption(click.Option):
    """A deploy option that belongs to some targets: ``fields`` maps each to its record field.

    The option itself has no default; its help shows each target's default, read from
    the options records, so the records stay the only place defaults are set.
    """

    def __init__(self, *args: Any, fields: dict[str, str], **kwargs: Any) -> None:
        self.fields = fields
        defaults = {
            target: _record_default(target, name)
            for target, name in fields.items()
            # "is", not "in": 0 is a default worth showing, and 0 == False.
            if not any(_record_default(target, name) is v for v in _NO_DEFAULT)
        }
        if len(defaults) == 1 and len(fields) == 1:
            kwargs["help"] += f" Default: {next(iter(defaults.values()))}."
        elif defaults:
            shown = ", ".join(f"{value} ({target})" for target, value in defaults.items())
            kwargs["help"] += f" Default: {shown}."
        super().__init__(*args, **kwargs)


class DeployCommand(click.Command):
    """Lists deploy's options in sections: both targets, Cloud Run only, Kubernetes only."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options (both targets)": []}
        for target, title in _TARGET_TITLES.items():
            sections[f"{title} only (--target {target})"] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or not isinstance(param, click.Option):
                continue
            fields = param.fields if isinstance(param, TargetOption) else DEPLOY_TARGETS
            if len(fields) == 1:
                target = next(iter(fields))
                sections[f"{_TARGET_TITLES[target]} only (--target {target})"].append(record)
            else:
                sections["Options (both targets)"].append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


def given_for(ctx: click.Context, target: str) -> dict[str, Any]:
    """The deploy flags the user gave, as fields of ``target``'s options record.

    Flags left out are not passed on, so each target keeps its record's defaults. A flag
    of the other target is a usage error (exit 2), never silently ignored.
    """
    given: dict[str, Any] = {}
    foreign = []
    for param in ctx.command.params:
        if not isinstance(param, TargetOption) or param.name is None:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is None or source == click.core.ParameterSource.DEFAULT:
            continue
        if target in param.fields:
            given[param.fields[target]] = ctx.params[param.name]
        else:
            only = " or ".join(f"--target {name}" for name in param.fields)
            foreign.append(f"{param.opts[0]} applies to {only} only")
    if foreign:
        raise click.UsageError("; ".join(foreign), ctx)
    return given


def env_pairs(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """``--env NAME=VALUE`` flags as a dict (a click callback)."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise ConfigError(f"--env {value!r} is not NAME=VALUE")
        pairs[name] = text
    return pairs


def cloudrun_only(field_name: str) -> dict[str, str]:
    return {"cloudrun": field_name}


def kubernetes_only(field_name: str) -> dict[str, str]:
    return {"kubernetes": field_name}


def both(cloudrun: str, kubernetes: str | None = None) -> dict[str, str]:
    return {"cloudrun": cloudrun, "kubernetes": kubernetes or cloudrun}
