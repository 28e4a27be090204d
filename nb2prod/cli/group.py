"""The ``nb2prod`` command group and what its commands share: flags, progress, exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..build.kale import parse_role_map
from ..build.notebook import parse_parameter
from ..build.sensitive import parse_sensitive_option
from ..errors import EXIT_CODES

STATE = {"debug": False}

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>3}  {what}" for what, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1])
)


def say(message: str) -> None:
    click.echo(message, err=True)


def parameters(values: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_parameter(value) for value in values)


PARAM_HELP = "Override a notebook parameter: -p name=value (a Python literal). Repeatable."
STRICT_HELP = (
    "Refuse fits on the serving path (.fit(, .fit_transform() instead of recording them at "
    "training and replaying them at serving; statistics like .mean() then run on each "
    "request's rows). One cell: a `# nb2prod: strict` line."
)

ROLE_MAP_HELP = (
    "Roles for Kubeflow Kale blocks, e.g. --role-map loaddata=load,featureengineering=preprocess. "
    "Without it each block gets the role nb2prod's analysis gives its cells (`nb2prod check` "
    "shows the mapping)."
)


SENSITIVE_HELP = (
    "Input columns the prediction log never writes (names, values): --sensitive ssn,email. "
    "Repeatable; adds to a `# nb2prod: sensitive=ssn,email` line in the parameters cell. "
    "A name that is not an input column stops the build."
)


def sensitive(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--sensitive`` as column names; a ConfigError for an empty one."""
    return parse_sensitive_option(values)


def role_map(text: str | None) -> dict[str, str]:
    """``--role-map`` as {block: role}; a ConfigError when it is not BLOCK=ROLE,..."""
    return parse_role_map(text)


F = TypeVar("F", bound=Callable[..., Any])


def context_options(command: F) -> F:
    """NOTEBOOK, -o, -p, --force, --template, --strict, --role-map and --sensitive: what
    generate and build share."""
    decorators = [
        click.argument("notebook", type=click.Path(path_type=Path)),
        click.option(
            "-o", "--output", type=click.Path(path_type=Path), help="Default: build/<stem>."
        ),
        click.option(
            "-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP
        ),
        click.option(
            "--force", is_flag=True, help="Replace -o DIR even if nb2prod did not write it."
        ),
        click.option(
            "--template",
            type=click.Path(path_type=Path, file_okay=False, exists=True),
            help="A cookiecutter template dir to use instead of nb2prod's own layout.",
        ),
        click.option("--strict", is_flag=True, help=STRICT_HELP),
        click.option("--role-map", "role_map_text", metavar="BLOCK=ROLE,...", help=ROLE_MAP_HELP),
        click.option(
            "--sensitive",
            "sensitive_values",
            multiple=True,
            metavar="COL,...",
            help=SENSITIVE_HELP,
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@click.group(epilog=EXIT_CODE_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nb2prod")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Take a tagged Jupyter notebook to a tested production service.

    \b
    Tag cells (Jupyter cell tags, or a first line `# nb2prod: <role>`):
      parameters  literal assignments, overridable with -p
      load        training-only data loading
      preprocess  raw rows -> features; runs in training AND serving
      train       fits the model (required)
      evaluate    every scalar number it binds is a recorded metric
      predict     features -> predictions; runs in serving (required)
      definitions functions, classes and constants other cells use
      skip        never run; untagged cells are not run either, except
                  cells that only define what tagged cells use
    Kubeflow Kale tags (block:/step:, imports, functions, skip, ...) are
    read too; `nb2prod check` shows how.

    \b
    Typical use:
      nb2prod tag nb.ipynb --write           # propose and add the tags
      nb2prod check nb.ipynb                 # fast contract lint (CI)
      nb2prod build nb.ipynb --no-docker     # generate, train, verify parity
      nb2prod serve build/nb                 # serve it on 127.0.0.1:8080

    \b
    Closing the loop, once deployed:
      nb2prod quality --predictions LOG --labels labels.csv --by COL
                                             # quality and fairness per version
      nb2prod compare build/prod build/new   # offline gate on the metrics
      nb2prod promote build/new --gate --predictions LOG --labels labels.csv
                                             # online gate: promote, wait or roll back
      nb2prod ci init                        # a GitHub workflow doing all of it
    """
    STATE["debug"] = debug


BUILD_DIR = click.Path(path_type=Path, file_okay=False, exists=True)
