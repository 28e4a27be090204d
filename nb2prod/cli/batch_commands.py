"""``nb2prod batch``: score files with a built directory, as its image would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from ..builddir import BuildDir
from ..errors import ConfigError
from .group import cli

BATCH_EXIT_CODES = """\b
Exit codes:
    0  scored (rejected rows are counted in the summary, not fatal)
    1  writing failed (disk full, permissions): nothing under the output name
    2  bad arguments or input: a missing column, an unreadable file, an output that exists
    5  the model could not be loaded
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM): nothing half-written is left
"""


@cli.command(epilog=BATCH_EXIT_CODES)
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.argument("input_spec", metavar="INPUT")
# OUTPUT and --rejects stay text: a gs:// URL through click.Path would lose its "//".
@click.option(
    "-o", "--output", required=True, help="A file, or a URL (gs://...; pip install 'nb2prod[gcs]')."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "jsonl"]),
    help="Input format. Default: from each file's extension.",
)
@click.option(
    "--output-format",
    type=click.Choice(["csv", "parquet", "jsonl"]),
    help="Default: from the output's extension, else csv.",
)
@click.option(
    "--keep",
    multiple=True,
    metavar="COL",
    help="Input column copied to the output beside the predictions (ids). Repeatable, or "
    "comma-separated: --keep id,region.",
)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=50_000, show_default=True)
@click.option(
    "--rejects",
    help="Where rejected rows go (CSV: file, row, reason, the --keep columns). Default: "
    "OUTPUT_STEM.rejects.csv beside the output, written only when a row is rejected.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--force", is_flag=True, help="Replace an output a previous nb2prod batch wrote.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option(
    "--engine",
    type=click.Choice(["pandas", "spark"]),
    default="pandas",
    show_default=True,
    help="pandas: chunks in one process. spark: a Spark job (pip install 'nb2prod[spark]', "
    "Java 17); OUTPUT is then a directory of part files.",
)
@click.option(
    "--master",
    help="--engine spark only: the Spark master. Default: SPARK_MASTER, spark-submit's, "
    "else local[*].",
)
@click.option(
    "--prediction-log",
    metavar="DIR|URL",
    help="Write the service's prediction log records for the scored rows (JSON Lines files, "
    "the --keep columns among the inputs). Default: NB2PROD_PREDICTION_LOG; neither: no log. "
    "Pandas engine only.",
)
def batch(
    directory: Path,
    input_spec: str,
    output: str,
    fmt: str | None,
    output_format: str | None,
    keep: tuple[str, ...],
    chunk_rows: int,
    rejects: str | None,
    as_json: bool,
    force: bool,
    quiet: bool,
    engine: str,
    master: str | None,
    prediction_log: str | None,
) -> None:
    """Score INPUT (a CSV / Parquet / JSON Lines file, a folder or a glob) with the model in
    the built DIRECTORY, into OUTPUT.

    \b
    Each row goes through what POST /predict does: the input schema's
    validation, the notebook's preprocess and predict code, the model.
    Rows are read in chunks (memory stays bounded by --chunk-rows), and
    a row that fails validation or that the model code refuses goes to
    the rejects file with its file, row number and reason; the run goes
    on. OUTPUT holds the --keep columns and the predictions in input
    order. It appears only when every input row is scored or rejected,
    with OUTPUT.nb2prod.json beside it (model version and counts).

    \b
    INPUT, OUTPUT and --rejects may be gs:// URLs (fsspec): objects are
    streamed in, and the output is uploaded only once it is complete.

    \b
    In the image:  docker run -v $PWD:/data IMAGE \\
                     python -m nb2prod_runtime.batch /data/in.csv -o /data/out.csv
    """
    if master and engine != "spark":
        raise ConfigError("--master applies to --engine spark only")
    if prediction_log and engine == "spark":
        raise ConfigError("--prediction-log applies to the pandas engine only")
    build = BuildDir(directory)
    if not build.card_path.is_file():
        raise ConfigError(
            f"{directory} has no trained model (no model/model_card.json)",
            hint="Build it first: nb2prod build NOTEBOOK --no-docker -o DIR.",
        )
    build.card()  # an old or hand-edited card: one clear error here
    needed = "spark_batch.py" if engine == "spark" else "batch.py"
    if not (directory / "nb2prod_runtime" / needed).is_file():
        raise ConfigError(
            f"{directory} was built by an nb2prod without "
            + ("--engine spark" if engine == "spark" else "batch scoring"),
            hint="Rebuild it with this nb2prod (nb2prod build NOTEBOOK -o DIR).",
        )
    command = [sys.executable, "-m", "nb2prod_runtime.batch", input_spec, "-o", output]
    command += ["--chunk-rows", str(chunk_rows)]
    for flag, value in (("--format", fmt), ("--output-format", output_format)):
        if value:
            command += [flag, value]
    if rejects is not None:
        command += ["--rejects", rejects]
    if prediction_log:
        command += ["--prediction-log", prediction_log]
    if engine != "pandas":
        command += ["--engine", engine] + (["--master", master] if master else [])
    for column in keep:
        command += ["--keep", column]
    command += [flag for flag, on in (("--json", as_json), ("--force", force), ("-q", quiet)) if on]
    # The build's own runtime and model code, exactly what its image runs.
    path = os.pathsep.join(p for p in (str(directory.resolve()), os.environ.get("PYTHONPATH")) if p)
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": path})
    try:
        code = process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the run too (same process group); SIGTERM to nb2prod did not.
        process.send_signal(signal.SIGTERM)
        process.wait()
        raise
    if code:
        sys.exit(code)
