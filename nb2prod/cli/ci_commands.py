"""``nb2prod ci``: write the CI workflow that retrains, compares, canaries and gates a model."""

from __future__ import annotations

from pathlib import Path

import click

from .. import pipeline
from ..ci.workflow import repository_root
from ..models import CiOptions
from .group import EXIT_CODE_HELP, cli, say


@cli.group()
def ci() -> None:
    """CI workflows that close the loop: retrain on drift or a schedule, gate, promote."""


@ci.command(epilog=EXIT_CODE_HELP)
@click.option(
    "--provider",
    type=click.Choice(["github"]),
    default="github",
    show_default=True,
    help="The CI system.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write it. Default: .github/workflows/nb2prod-retrain.yml.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite a workflow nb2prod wrote that was edited since (a copy is kept). A file "
    "nb2prod did not write is never overwritten.",
)
@click.option(
    "--notebook",
    metavar="PATH",
    help="The notebook to retrain, relative to the repository root. Default: the only one.",
)
@click.option(
    "--champion-dir",
    default="builds/champion",
    show_default=True,
    help="The committed build directory of the model in production (compare reads its card).",
)
@click.option(
    "--schedule",
    default="0 6 * * 1",
    show_default=True,
    help="When to retrain besides on drift (cron, UTC).",
)
def init(
    provider: str,
    output: Path | None,
    force: bool,
    notebook: str | None,
    champion_dir: str,
    schedule: str,
) -> None:
    """Write the retraining workflow at the root of the git repository you are in.

    \b
    On the drift webhook's repository_dispatch event (nb2prod-drift), on
    --schedule and by hand, it runs: nb2prod build NOTEBOOK -o build-new,
    nb2prod compare CHAMPION_DIR build-new, nb2prod push, nb2prod deploy
    --canary, a wait for labelled traffic, then nb2prod promote build-new
    --gate (exit 18 retried, then left waiting: not a failure; exit 19
    rolled back: the job fails). The file's comments list the repository
    variables and secrets it reads.
    """
    here = Path.cwd()
    root = repository_root(here)
    if root != here:
        say(f"note: writing for the repository at {root} (its root, where GitHub reads .github/)")
        if notebook and not Path(notebook).is_absolute() and (here / notebook).is_file():
            notebook = (here / notebook).resolve().relative_to(root.resolve()).as_posix()
    options = CiOptions(
        root=root,
        provider=provider,
        output=output,
        force=force,
        notebook=notebook,
        champion_dir=champion_dir,
        schedule=schedule,
    )
    written = pipeline.ci_init(options)
    if written.edited_copy:
        say(f"note: kept your edited version as {written.edited_copy}")
    click.echo(f"wrote {written.path} (retrains {written.notebook})")
    click.echo(
        "set the repository variables NB2PROD_REGISTRY, NB2PROD_PROJECT, NB2PROD_REGION, "
        "NB2PROD_PREDICTIONS, NB2PROD_LABELS and the secrets GCP_WORKLOAD_IDENTITY_PROVIDER, "
        "GCP_SERVICE_ACCOUNT (see the file's header)"
    )
