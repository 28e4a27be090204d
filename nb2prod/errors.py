"""The one exception tree of nb2prod.

Every user-facing failure is an ``Nb2ProdError`` subclass. ``cli.main`` is the
only place that turns one into a message on stderr and an exit code, so each
class carries its ``exit_code`` and an optional ``hint`` saying what to do.
"""

from __future__ import annotations


class Nb2ProdError(Exception):
    """Raised when nb2prod cannot do what was asked; base of every error here."""

    exit_code = 1
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message


class NotebookError(Nb2ProdError):
    """Raised when the notebook breaks the nb2prod contract (tags, syntax, kernel, format)."""

    exit_code = 3


class OutputExistsError(Nb2ProdError):
    """Raised when -o would lose a user's file: it holds the notebook or its data, files nb2prod
    did not write, or (without --force) generated files edited since."""

    exit_code = 4


class ConfigError(Nb2ProdError):
    """Raised when a flag, parameter override or build directory is not usable."""

    exit_code = 2


class TrainingError(Nb2ProdError):
    """Raised when train.py fails, or its outputs are missing or unusable."""

    exit_code = 5


class ParityError(Nb2ProdError):
    """Raised when served predictions differ from the notebook's golden predictions."""

    exit_code = 6


class DockerUnavailableError(Nb2ProdError):
    """Raised when no Docker engine can be reached."""

    exit_code = 7
    default_hint = (
        "Start Docker (or point DOCKER_HOST at a running engine, e.g. "
        "DOCKER_HOST=unix:///var/run/docker.sock), or pass --no-docker to stop after "
        "training and the in-process parity check."
    )


class ImageBuildError(Nb2ProdError):
    """Raised when the docker image build fails."""

    exit_code = 8


class SmokeTestError(Nb2ProdError):
    """Raised when the built container fails a smoke check (start, contract, shutdown)."""

    exit_code = 9


class PushError(Nb2ProdError):
    """Raised when the image cannot be pushed to a registry."""

    exit_code = 10


class DeployError(Nb2ProdError):
    """Raised when a deployment is rejected, its revision does not become ready, or a Cloud Run
    Job's execution fails."""

    exit_code = 11


class MonitorError(Nb2ProdError):
    """Raised when a running service cannot be read for monitoring."""

    exit_code = 13


class MissingExtraError(Nb2ProdError):
    """Raised when a command needs an optional part of nb2prod that is not installed."""

    exit_code = 14

    def __init__(self, extra: str, what: str, err: ImportError) -> None:
        super().__init__(
            f"{what} needs the nb2prod[{extra}] extra ({err})",
            hint=f"pip install 'nb2prod[{extra}]'",
        )
        self.extra = extra


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when nb2prod receives SIGTERM.

    A KeyboardInterrupt, so it unwinds as Ctrl-C does: through every ``finally`` (the
    staging directory, the containers of the run) and past every ``except Exception``.
    """

    exit_code = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


#: Exit code after Ctrl-C (SIGINT): 128 + 2, as a shell reports it.
INTERRUPTED_EXIT_CODE = 130

#: Exit code of ``nb2prod monitor`` when drift is detected (not an error, a verdict).
DRIFT_EXIT_CODE = 12


class DriftDetected(Nb2ProdError):
    """Raised when ``nb2prod monitor`` finds drift: a verdict for CI to act on, not a failure."""

    exit_code = DRIFT_EXIT_CODE
    default_hint = "Retrain on recent data: nb2prod build NOTEBOOK, then deploy the new model."


#: Exit code of ``nb2prod compare`` when the challenger is worse (a verdict, not an error).
CHALLENGER_WORSE_EXIT_CODE = 15


class ChallengerWorse(Nb2ProdError):
    """Raised when ``nb2prod compare`` finds the challenger worse than the champion by more than
    the tolerance: a verdict for CI to act on, not a failure."""

    exit_code = CHALLENGER_WORSE_EXIT_CODE
    default_hint = "Keep the champion; deploy the challenger once it is at least as good."


class NotComparableError(Nb2ProdError):
    """Raised when two model cards cannot be compared: their metric names or evaluation data
    differ, or a metric's direction of "better" is unknown."""

    exit_code = 16


class QualityBelowThreshold(Nb2ProdError):
    """Raised when ``nb2prod quality`` finds a metric on the logged traffic beyond a threshold
    (``--min-accuracy``, ``--max-parity-difference``...): a verdict for CI, after the report."""

    exit_code = 17
    default_hint = "Look at the failing version's report (--html) before it serves more traffic."


class GateKeepWaiting(Nb2ProdError):
    """Raised when ``nb2prod promote --gate`` has too few labelled rows on a side to decide: run
    it again later (a verdict, not a failure; traffic is unchanged)."""

    exit_code = 18
    default_hint = "Run nb2prod promote --gate again once more labels have arrived."


class CanaryWorse(Nb2ProdError):
    """Raised when ``nb2prod promote --gate`` finds the canary significantly worse than the
    stable revision and has rolled its traffic back (or, with --dry-run, would)."""

    exit_code = 19
    default_hint = "The stable revision serves all traffic again; keep the champion."


class TrackingError(Nb2ProdError):
    """Raised when the MLflow tracking server cannot be reached or refuses a run, a metric,
    an artifact or the model version; the build directory is complete and kept."""

    exit_code = 20


EXIT_CODES: dict[str, int] = {
    "notebook breaks the contract": NotebookError.exit_code,
    "bad flag, parameter or build directory": ConfigError.exit_code,
    "output refused: it holds files nb2prod did not write": OutputExistsError.exit_code,
    "training failed": TrainingError.exit_code,
    "parity failed (served != notebook)": ParityError.exit_code,
    "no Docker engine": DockerUnavailableError.exit_code,
    "image build failed": ImageBuildError.exit_code,
    "smoke test failed": SmokeTestError.exit_code,
    "push failed": PushError.exit_code,
    "deploy failed (or a Cloud Run Job's execution)": DeployError.exit_code,
    "drift detected (monitor)": DRIFT_EXIT_CODE,
    "service unreachable (monitor)": MonitorError.exit_code,
    "optional part not installed (pip install 'nb2prod[EXTRA]')": MissingExtraError.exit_code,
    "challenger worse than champion (compare)": CHALLENGER_WORSE_EXIT_CODE,
    "models not comparable: metrics, data or direction (compare)": NotComparableError.exit_code,
    "quality below a threshold (quality)": QualityBelowThreshold.exit_code,
    "gate: keep waiting, too few labelled rows (promote --gate)": GateKeepWaiting.exit_code,
    "gate: canary worse, rolled back (promote --gate)": CanaryWorse.exit_code,
    "experiment tracking failed (MLflow); the build directory is kept": TrackingError.exit_code,
    "interrupted (Ctrl-C, SIGINT); containers and staging removed": INTERRUPTED_EXIT_CODE,
    "terminated (SIGTERM); containers and staging removed": Terminated.exit_code,
}
