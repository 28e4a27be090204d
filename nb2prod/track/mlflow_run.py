"""Log a finished build directory to an MLflow tracking server, and register its model.

Talks to MLflow only through an ``MlflowClient`` made for the one URI asked for: no
``mlflow.set_tracking_uri``, no active run, nothing left behind in the process for the
next build. One run per call, in the experiment named after the notebook (or the one
given): parameters, metrics and tags in one batch, then the model card and the build
directory as artifacts, then a new version of the registered model named after the
notebook, tagged ``nb2prod_model_version``. A run that fails half way is marked FAILED.

Every failure (server unreachable, request refused) is a TrackingError: tracking runs
after the build directory is written, so the message says it is complete and how to
retry with ``nb2prod track``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..builddir import write_json_atomically
from ..errors import ConfigError, MissingExtraError, TrackingError
from ..models import TrackOptions, TrackRecord
from .contents import (
    BUILD_ARTIFACT,
    RunContents,
    records_path,
    redact,
    run_contents,
    scrub,
    staged_build_copy,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["REGISTRY_TAG", "check_tracking_uri", "require_mlflow", "track"]

#: The model version tag that names nb2prod's model version.
REGISTRY_TAG = "nb2prod_model_version"
#: How long the reachability probe waits: an unreachable server fails in seconds, not
#: after MLflow's own retries (about four minutes by default).
_PROBE_SECONDS = 10.0
WHAT = "Experiment tracking (--mlflow, MLFLOW_TRACKING_URI)"

#: What to do when the server answered but refused.
_FIX = (
    "Fix what the server refused (credentials come from MLFLOW_TRACKING_TOKEN, or "
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), then log it"
)
_FIX_LOCAL = (
    "Check the URI (a local database or file store needs the whole mlflow: pip install "
    "mlflow; a team server is http(s)://HOST), then log it"
)

Progress = Callable[[str], None]


def require_mlflow() -> None:
    """MissingExtraError unless MLflow's client is installed; cheap, imports nothing."""
    if importlib.util.find_spec("mlflow") is None:
        raise MissingExtraError("mlflow", WHAT, ImportError("No module named 'mlflow'"))


def check_tracking_uri(uri: str) -> None:
    """ConfigError for a URI that cannot name a tracking server: found before a build trains,
    not after. The URI's password never appears in the message."""
    shown = redact(uri)
    if re.match(r"^[A-Za-z0-9.-]+:[0-9]+(/|$)", uri):  # mlflow.internal:5000
        raise ConfigError(
            f"--mlflow {shown} has no scheme: MLflow would read it as a local path",
            hint=f"Pass http://{shown} (or https://).",
        )
    if not _is_server(uri):
        return  # databricks, sqlite:///..., file:, a path: MLflow's to judge
    import httpx

    try:
        url = httpx.URL(uri)
    except httpx.InvalidURL as err:
        if shown == uri:
            reason, hint = f" ({err})", "Pass http(s)://HOST[:PORT][/PATH]."
        else:  # the reason may quote part of the password
            reason, hint = (
                "",
                (
                    "Percent-encode a '/' or '@' in a password (%2F, %40), or better, pass the "
                    "credentials as MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."
                ),
            )
        raise ConfigError(f"--mlflow {shown} is not a valid URL{reason}", hint=hint) from None
    if not url.host:
        raise ConfigError(
            f"--mlflow {shown} names no host", hint="Pass http(s)://HOST[:PORT][/PATH]."
        )


def track(options: TrackOptions, progress: Progress | None = None) -> TrackRecord:
    """Log ``options.build_dir`` to MLflow as one run and register its model version."""
    say = progress or (lambda _: None)
    contents = run_contents(options.build_dir)  # a ConfigError before any network call
    uri = options.tracking_uri
    shown = redact(uri)
    experiment = options.experiment or contents.name
    check_tracking_uri(uri)
    require_mlflow()
    _probe(uri, options)  # before importing MLflow, which takes seconds
    client_class = _client_class()
    with _refusals(shown, options):
        client = client_class(tracking_uri=uri)  # this URI only: no process-wide setting
        experiment_id = _experiment_id(client, experiment)
        run = client.create_run(experiment_id, run_name=contents.run_name, tags=contents.tags)
        run_id = run.info.run_id
        say(f"      mlflow: run {run_id} in experiment {experiment!r} at {shown}")
        with _failed_on_error(client, run_id):
            _log_run(client, run_id, contents)
            version = _register(client, contents, run_id)
            with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints run links there
                client.set_terminated(run_id, "FINISHED")
    record = TrackRecord(
        tracking_uri=shown,
        experiment=experiment,
        experiment_id=str(experiment_id),
        run_id=run_id,
        artifact_uri=str(run.info.artifact_uri),
        registered_model=contents.registered_model,
        registered_version=str(version),
        model_version=contents.model_version,
    )
    write_json_atomically(records_path(options.build_dir), record.to_json())
    say(
        f"      mlflow: registered {contents.registered_model} version {version} "
        f"({REGISTRY_TAG}={contents.model_version})"
    )
    return record


def _client_class() -> type[MlflowClient]:
    try:
        from mlflow import MlflowClient
    except ImportError as err:
        raise MissingExtraError("mlflow", WHAT, err) from err
    return MlflowClient


def _log_run(client: MlflowClient, run_id: str, contents: RunContents) -> None:
    """Parameters, metrics and tags in one request, then the card and the build directory."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in contents.metrics.items()],
        params=[Param(k, v) for k, v in contents.params.items()],
    )
    client.log_artifact(run_id, str(contents.card_path))
    with staged_build_copy(contents) as copy:
        client.log_artifacts(run_id, str(copy), BUILD_ARTIFACT)


def _experiment_id(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"the MLflow experiment {name!r} is deleted",
                hint="Restore it (mlflow experiments restore) or pass --mlflow-experiment NAME.",
            )
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another build may have created it
        if found is None:
            raise
        return str(found.experiment_id)


def _register(client: MlflowClient, contents: RunContents, run_id: str) -> str:
    """A new version of the notebook's registered model, its source the logged build dir."""
    from mlflow.exceptions import MlflowException

    name = contents.registered_model
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        with contextlib.suppress(MlflowException):  # created meanwhile by a parallel build
            client.create_registered_model(
                name, description=f"{contents.name}: built by nb2prod from the notebook"
            )
    created = client.create_model_version(
        name,
        source=f"runs:/{run_id}/{BUILD_ARTIFACT}",
        run_id=run_id,
        tags={
            REGISTRY_TAG: contents.model_version,
            "nb2prod_notebook_sha256": contents.tags.get("nb2prod.notebook_sha256", ""),
        },
        description=f"nb2prod model version {contents.model_version}",
        # A new version of an OSS registry is READY at once; a hosted one (Databricks) may
        # take minutes, which the build need not wait for.
        await_creation_for=0,
    )
    return str(created.version)


def _probe(uri: str, options: TrackOptions) -> None:
    """Fail fast when an HTTP tracking server does not answer at all (any reply will do).

    The probe sends no credentials, so it need not verify the server's certificate: MLflow
    does that with its own settings (MLFLOW_TRACKING_SERVER_CERT_PATH, REQUESTS_CA_BUNDLE,
    MLFLOW_TRACKING_INSECURE_TLS), which a team server with a private CA needs.
    """
    if not _is_server(uri):
        return
    import httpx

    url = httpx.URL(uri).copy_with(userinfo=b"")
    health = url.copy_with(path=url.path.rstrip("/") + "/health")
    try:
        httpx.get(health, timeout=_PROBE_SECONDS, follow_redirects=False, verify=False)  # noqa: S501
    except httpx.HTTPError as err:
        raise _tracking_error(
            f"cannot reach the MLflow tracking server at {redact(uri)} "
            f"({err or type(err).__name__})",
            options,
        ) from err


@contextmanager
def _refusals(shown: str, options: TrackOptions) -> Iterator[None]:
    """Turn what MLflow and the network raise into one TrackingError."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except TrackingError:
        raise
    except MlflowException as err:
        message = " ".join(str(err.message).split())[:400].rstrip(".")
        if _is_server(options.tracking_uri):
            what, fix = f"MLflow at {shown} refused: {message}", _FIX
        else:
            what, fix = f"MLflow at {shown} failed: {message}", _FIX_LOCAL
        raise _tracking_error(what, options, fix) from err
    except OSError as err:  # artifact stores reached directly (a path, a bucket)
        raise _tracking_error(f"MLflow at {shown} failed: {err}", options) from err
    except ImportError as err:  # mlflow-skinny has no store for sqlite:// or file: URIs
        raise _tracking_error(
            f"MLflow at {shown} needs a library that is not installed ({err})",
            options,
            "For a local database or file store, pip install mlflow (the whole package), "
            "then log it",
        ) from err


@contextmanager
def _failed_on_error(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Mark the run FAILED when logging it did not finish (best effort: the server may be
    the thing that failed)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            client.set_terminated(run_id, "FAILED")
        raise


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _tracking_error(what: str, options: TrackOptions, fix: str = "") -> TrackingError:
    directory = options.build_dir
    what = scrub(what, options.tracking_uri)  # MLflow's and httpx's messages may quote the URI
    return TrackingError(
        f"{what}. The build directory {directory} is complete and kept; only the MLflow "
        "run is missing",
        hint=f"{fix or 'Once the server answers, log it'} again: nb2prod track {directory} "
        f"--mlflow {redact(options.tracking_uri)}",
    )
