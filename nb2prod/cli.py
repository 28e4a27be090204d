"""The command line: click only. Flags become an options record and one call.

``main()`` is the single place where an Nb2ProdError becomes ``Error: ...`` on
stderr and the class's exit code; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from . import __version__, pipeline
from .errors import EXIT_CODES, ConfigError, Nb2ProdError
from .models import BuildOptions, NotebookSpec
from .notebook import parse_parameter

_STATE = {"debug": False}

EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(
    f"  {code:>2}  {what}" for what, code in sorted(EXIT_CODES.items(), key=lambda kv: kv[1])
)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _parameters(values: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_parameter(value) for value in values)


PARAM_HELP = "Override a notebook parameter: -p name=value (a Python literal). Repeatable."


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
      skip        never run; untagged cells are not run either

    \b
    Typical use:
      nb2prod check nb.ipynb                 # fast contract lint (CI)
      nb2prod build nb.ipynb --no-docker     # generate, train, verify parity
      nb2prod serve build/nb                 # serve it on 127.0.0.1:8080
    """
    _STATE["debug"] = debug


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP)
def check(notebook: Path, params: tuple[str, ...]) -> None:
    """Validate NOTEBOOK against the contract; print cell roles and the serving state.

    Writes nothing. Exits 0 when `nb2prod build` would accept the notebook,
    with exit code 3 (and the cell, line and fix) when it would not.
    """
    spec = pipeline.check(notebook, _parameters(params))
    click.echo(_describe(spec))


@cli.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Default: build/<stem>.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP)
@click.option("--force", is_flag=True, help="Replace -o DIR even if nb2prod did not write it.")
@click.option(
    "--template",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A cookiecutter template dir to use instead of nb2prod's own layout.",
)
def generate(
    notebook: Path, output: Path | None, params: tuple[str, ...], force: bool, template: Path | None
) -> None:
    """Write the build context for NOTEBOOK (train.py, serving code, Dockerfile) only.

    Nothing is trained. Run `python DIR/train.py` yourself, or use `nb2prod build`.
    """
    context = pipeline.generate(notebook, output, _parameters(params), force, template)
    click.echo(f"wrote {context.path}")


@cli.command(epilog=EXIT_CODE_HELP)
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Default: build/<stem>.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=PARAM_HELP)
@click.option("--force", is_flag=True, help="Replace -o DIR even if nb2prod did not write it.")
@click.option(
    "--template",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A cookiecutter template dir to use instead of nb2prod's own layout.",
)
@click.option("--no-docker", is_flag=True, help="Stop after training and the parity check.")
@click.option("--quiet", "-q", is_flag=True, help="Only errors and the final summary.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write a machine-readable summary (model version, metrics, timings) here.",
)
def build(
    notebook: Path,
    output: Path | None,
    params: tuple[str, ...],
    force: bool,
    template: Path | None,
    no_docker: bool,
    quiet: bool,
    json_path: Path | None,
) -> None:
    """Generate, train and verify NOTEBOOK into DIR (default build/<stem>).

    \b
    Steps:
      1. generate the build context (as `nb2prod generate`)
      2. train: run train.py in a fresh process; writes DIR/model/
      3. parity: the generated service must reproduce the notebook's own
         predictions for sample training rows (the skew guard)
    DIR appears only when every step passed.
    """
    options = BuildOptions(
        notebook=notebook,
        output=output,
        parameters=_parameters(params),
        force=force,
        template=template,
        docker=not no_docker,
        quiet=quiet,
        json_path=json_path,
    )
    result = pipeline.build(options, progress=None if quiet else _say)
    card = result.artifact.card
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in card.get("metrics", {}).items())
    click.echo(
        f"built {result.context.path} (model {card['model_version']}"
        + (f"; {metrics}" if metrics else "")
        + ")"
    )
    if json_path is not None:
        summary = {
            "build_dir": str(result.context.path),
            "model_version": card["model_version"],
            "metrics": card.get("metrics", {}),
            "parity": {"rows": result.parity.rows, "ok": result.parity.ok},
            "timings": result.timings,
        }
        json_path.write_text(json.dumps(summary, indent=2) + "\n")


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def serve(directory: Path, host: str, port: int) -> None:
    """Serve a built DIRECTORY with uvicorn, without Docker.

    Endpoints: POST /predict, GET /healthz, /readyz, /metadata, /metrics, /docs.
    """
    card = directory / "model" / "model_card.json"
    if not card.is_file():
        raise ConfigError(
            f"{directory} has no trained model (no model/model_card.json)",
            hint="Build it first: nb2prod build NOTEBOOK --no-docker -o DIR.",
        )
    import uvicorn

    _say(f"serving {directory} on http://{host}:{port} (docs at /docs)")
    sys.path.insert(0, str(directory.resolve()))
    uvicorn.run(
        "serving:app",
        host=host,
        port=port,
        app_dir=str(directory.resolve()),
        access_log=False,
        log_config=None,
    )


def _describe(spec: NotebookSpec) -> str:
    lines = [f"{spec.path.name}: ok"]
    for cell in spec.cells:
        if cell.role is None and not cell.source.strip():
            continue
        lines.append(f"  cell {cell.number:>3}  {cell.role or '(untagged)':<11} {cell.first_line}")
    lines.append(f"preprocess: {spec.preprocess_style} style; predict: {spec.predict_style} style")
    state = ", ".join(spec.serving_reads) or "(none)"
    lines.append(f"serving reads from training: {state}")
    if spec.parameters:
        params = ", ".join(f"{k}={v!r}" for k, v in spec.parameters.items())
        lines.append(f"parameters: {params}")
    if spec.pip_hints:
        lines.append(f"pip hints: {', '.join(spec.pip_hints)}")
    lines.extend(f"notice: {notice}" for notice in spec.notices)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="nb2prod", standalone_mode=False)
    except Nb2ProdError as err:
        if _STATE["debug"]:
            traceback.print_exc()
        click.echo(f"Error: {err.message}", err=True)
        if err.hint:
            click.echo(f"Hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as err:  # a bug in nb2prod: still one line unless --debug
        if _STATE["debug"]:
            raise
        click.echo(f"Error: unexpected {type(err).__name__}: {err}", err=True)
        click.echo("Hint: this is a bug in nb2prod; rerun with --debug and report it.", err=True)
        sys.exit(1)
    sys.exit(0)
