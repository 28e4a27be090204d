"""Plain frozen records passed from one stage to the next.

Nothing here imports from the rest of nb2prod: stages depend on these records,
never on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runtime's typed card; models itself imports nothing from nb2prod
    from .runtime.card import GoldenSet, ModelCard

#: Roles nb2prod acts on, in the order a reader meets them.
ROLES = (
    *("parameters", "definitions", "load", "preprocess", "train", "evaluate", "predict"),
    *("monitor", "skip"),
)
#: Roles whose cells run, in notebook order, in the training script. ``definitions``: cells
#: that only define functions, classes and constants other cells use (Kale's ``imports`` and
#: ``functions``, and untagged cells nb2prod includes by itself).
TRAINING_ROLES = ("parameters", "definitions", "load", "preprocess", "train", "evaluate", "predict")
#: Roles whose cells run in the service.
SERVING_ROLES = ("preprocess", "predict", "monitor")


@dataclass(frozen=True)
class ImportBinding:
    """One name an import statement binds, e.g. ``np`` from ``import numpy as np``."""

    name: str
    statement: str  # a normalized one-name import statement, e.g. "import numpy as np"
    module: str  # top-level module, e.g. "numpy"
    cell: int


@dataclass(frozen=True)
class Cell:
    """One code cell of the notebook, with its role and the names it reads and binds."""

    number: int  # 1-based position among all cells, as Jupyter shows them top to bottom
    role: str | None  # None: untagged (never run)
    source: str  # the cell as written
    code: str  # runnable Python: magics, shell lines and imports removed (line numbers kept)
    # Names read before the cell binds them (including globals its functions read).
    reads: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()  # names bound at top level (imports excluded)
    defines: tuple[str, ...] = ()  # functions and classes defined at top level
    result: str | None = (
        None  # script style: last assigned name; None when it ends in an expression
    )
    ends_with_expression: bool = False
    # `# nb2prod: strict` or --strict: no record/replay here; a fit on the serving path is refused
    strict: bool = False
    # Where the role comes from: "tag" (a Jupyter tag), "directive" (`# nb2prod: <role>`),
    # "kale" (a Kubeflow Kale tag), "definition" (an untagged cell nb2prod includes); None.
    origin: str | None = None

    @property
    def first_line(self) -> str:
        """The first non-blank line, used to name the cell in messages."""
        for line in self.source.splitlines():
            if line.strip():
                return line.strip()[:80]
        return "(empty cell)"

    @property
    def label(self) -> str:
        """How messages name this cell: number, role and first line."""
        role = self.role or "untagged"
        return f"cell {self.number} [{role}] ({self.first_line!r})"


@dataclass(frozen=True)
class SensitiveColumn:
    """An input column the prediction log must never write, and who marked it."""

    name: str
    source: str  # the directive's "cell 2 [parameters] (...), line 3", or "--sensitive"


@dataclass(frozen=True)
class KaleBlock:
    """One Kubeflow Kale block (or special tag) and the role nb2prod gives its cells."""

    name: str  # the block's name, or the special tag (``imports``, ``pipeline-metrics``, ...)
    role: str
    cells: tuple[int, ...]
    how: str  # "kale tag", "analysis" or "--role-map"


@dataclass(frozen=True)
class NotebookSpec:
    """What nb2prod read from a notebook: cells by role, imports, parameters, hints."""

    path: Path
    name: str  # notebook stem, used for the build dir, image name and service name
    sha256: str
    cells: tuple[Cell, ...]
    imports: tuple[ImportBinding, ...]
    parameters: dict[str, Any]
    parameter_overrides: dict[str, Any]
    pip_hints: tuple[str, ...]
    preprocess_style: str  # "function" | "script" | "none"
    predict_style: str  # "function" | "script"
    serving_reads: tuple[
        str, ...
    ]  # names serving code reads that training binds (state + raw input)
    notices: tuple[str, ...] = ()
    kale_blocks: tuple[KaleBlock, ...] = ()  # how Kubeflow Kale's blocks were read
    #: ``build --batch-dependent``: a row's answer may depend on its request's other rows.
    batch_dependent: bool = False
    #: ``# nb2prod: sensitive=a,b`` in the parameters cell and ``--sensitive``: never logged.
    sensitive_columns: tuple[SensitiveColumn, ...] = ()

    def cells_with_role(self, role: str) -> tuple[Cell, ...]:
        """The cells tagged ``role``, in notebook order."""
        return tuple(cell for cell in self.cells if cell.role == role)

    def cells_with_roles(self, roles: tuple[str, ...]) -> tuple[Cell, ...]:
        """The cells whose role is one of ``roles``, in notebook order."""
        return tuple(cell for cell in self.cells if cell.role in roles)


@dataclass(frozen=True)
class Requirement:
    """One pinned distribution for requirements.txt."""

    distribution: str
    version: str | None
    reason: str  # e.g. "import sklearn", "serving stack", "%pip hint"
    serving: bool  # needed by the image, not only by training

    @property
    def line(self) -> str:
        """The requirements.txt line."""
        return f"{self.distribution}=={self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class BuildContext:
    """A rendered build directory."""

    path: Path
    spec: NotebookSpec
    requirements: tuple[Requirement, ...]


@dataclass(frozen=True)
class TrainedArtifact:
    """The model/ directory train.py wrote, with its card and golden set."""

    context: BuildContext
    model_dir: Path
    card: ModelCard
    golden: GoldenSet
    seconds: float

    @property
    def model_version(self) -> str:
        """The content-derived model version from the card."""
        return self.card.model_version


@dataclass(frozen=True)
class ParityReport:
    """Result of comparing served predictions with the golden set."""

    rows: int
    mismatches: tuple[tuple[int, Any, Any], ...] = ()  # (row, expected, got)

    @property
    def ok(self) -> bool:
        """True when every row matched."""
        return not self.mismatches


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``nb2prod build`` can be asked to do, independent of the CLI."""

    notebook: Path
    output: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    template: Path | None = None
    strict: bool = False  # refuse fits on the serving path instead of recording them
    batch_dependent: bool = False  # answers may depend on the request's rows: never batch them
    sensitive: tuple[str, ...] = ()  # input columns the prediction log never writes
    role_map: dict[str, str] = field(default_factory=dict)  # Kale block -> role (--role-map)
    docker: bool = True
    train_on_host: bool = False
    base_image: str | None = None
    tags: tuple[str, ...] = ()
    quiet: bool = False
    json_path: Path | None = None
    junit_path: Path | None = None
    #: Seconds after which training is stopped (TrainingError); None: no limit.
    train_timeout: float | None = None
    #: Log the finished build to this MLflow tracking URI (None: no tracking).
    mlflow_uri: str | None = None
    #: The MLflow experiment; None: the notebook's name.
    mlflow_experiment: str | None = None


@dataclass(frozen=True)
class ImageResult:
    """A built image."""

    image_id: str
    tags: tuple[str, ...]
    size_bytes: int
    seconds: float
    log_path: Path


@dataclass(frozen=True)
class ImageRecord:
    """The image the last build made (``DIR/.nb2prod/image.json``)."""

    image_id: str
    tags: list[str]
    size_bytes: int
    base_image: str
    built_at: str  # ISO 8601, UTC
    seconds: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SmokeCheck:
    """One smoke check against the running container."""

    name: str
    passed: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class SmokeReport:
    """All smoke checks of one container run."""

    checks: tuple[SmokeCheck, ...]
    ready_seconds: float | None = None

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(check.passed for check in self.checks)


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` produced, stage by stage (later stages None when skipped)."""

    context: BuildContext
    artifact: TrainedArtifact
    parity: ParityReport
    image: ImageResult | None = None
    smoke: SmokeReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tracking: TrackRecord | None = None  # the MLflow run, with --mlflow


# -- experiment tracking ------------------------------------------------------------------


@dataclass(frozen=True)
class TrackOptions:
    """Log a build directory to MLflow (``build --mlflow``, ``nb2prod track``)."""

    build_dir: Path
    tracking_uri: str
    experiment: str | None = None  # None: the notebook's name


@dataclass(frozen=True)
class TrackRecord:
    """Where a build went in MLflow (``DIR/.nb2prod/mlflow.json``)."""

    tracking_uri: str  # without a password
    experiment: str
    experiment_id: str
    run_id: str
    artifact_uri: str
    registered_model: str
    registered_version: str  # the registry's version number, as a string
    model_version: str  # nb2prod's model version (the version's nb2prod_model_version tag)

    def to_json(self) -> dict[str, str]:
        """The record as plain JSON."""
        return {name: str(getattr(self, name)) for name in self.__dataclass_fields__}


# -- push and deploy ----------------------------------------------------------------------


@dataclass(frozen=True)
class PushRecord:
    """An image pushed to a registry and pinned by digest (``DIR/.nb2prod/push.json``)."""

    registry: str  # e.g. "europe-west1-docker.pkg.dev/my-project/models"
    repository: str  # REGISTRY/name
    tag: str  # the model version
    digest: str  # "sha256:..." as the registry computed it
    image: str  # REGISTRY/name@sha256:..., the only reference deployments use
    image_id: str = ""  # the local image id pushed, to notice a rebuild since


@dataclass(frozen=True)
class CloudRunOptions:
    """Everything ``nb2prod deploy --target cloudrun`` can be asked to do."""

    build_dir: Path
    project: str | None = None  # None: GOOGLE_CLOUD_PROJECT, CLOUDSDK_CORE_PROJECT, gcloud config
    region: str | None = None  # None: CLOUDSDK_RUN_REGION, gcloud config run/region
    service: str | None = None  # None: the model card's name, fitted to Cloud Run's rules
    canary: int | None = None  # percent of traffic for a new revision tagged "canary"
    concurrency: int = 80
    cpu: str = "1"
    memory: str = "512Mi"
    cpu_idle: bool = True  # CPU only during requests (request-based billing)
    startup_cpu_boost: bool = True
    min_instances: int = 0
    max_instances: int = 100
    timeout_seconds: int = 300
    service_account: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    drift_webhook: str | None = None  # set as NB2PROD_DRIFT_WEBHOOK
    dry_run: bool = False
    endpoint: str | None = None  # None: Google's; "http://127.0.0.1:PORT" for a local fake
    wait_seconds: float = 900.0
    #: Print the gcloud commands that push this Pub/Sub topic's messages to POST /pubsub.
    pubsub_topic: str | None = None
    pubsub_dead_letter_topic: str | None = None  # the subscription's dead-letter topic


@dataclass(frozen=True)
class TrafficOptions:
    """What ``nb2prod promote DIR`` and ``nb2prod rollback DIR`` need."""

    build_dir: Path
    endpoint: str | None = None
    wait_seconds: float = 600.0


@dataclass(frozen=True)
class TrafficSplit:
    """One traffic target: a revision (None: the latest ready one), its share and tag."""

    revision: str | None
    percent: int
    tag: str = ""


@dataclass(frozen=True)
class CloudRunDeployment:
    """What a deploy, promote or rollback did on Cloud Run (or would do, on a dry run)."""

    project: str
    region: str
    service: str  # the service id
    revision: str  # the revision this deploy made, or the one traffic now goes to
    image: str
    traffic: tuple[TrafficSplit, ...]
    service_yaml: Path
    url: str = ""
    dry_run: bool = False
    request: str = ""  # dry run: the exact request, method and URL as a comment, body as YAML
    notes: tuple[str, ...] = ()
    #: The gcloud commands that subscribe the service to ``pubsub_topic`` (push to /pubsub).
    pubsub_commands: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchJobSpec:
    """What a batch-scoring job runs: ``python -m nb2prod_runtime.batch`` over its share of the
    input files, in a Cloud Run Job or an Indexed Kubernetes Job alike."""

    input: str  # gs://BUCKET/PATH: a file, a folder or a glob (Kubernetes: or a path on --claim)
    output: str  # gs://BUCKET/PATH/NAME.EXT; with N tasks, task i writes NAME-0000i-of-0000N.EXT
    tasks: int = 1
    parallelism: int = 0  # tasks running at once; 0: as many as the platform allows
    max_retries: int = 3  # per task (Kubernetes: backoffLimitPerIndex)
    task_timeout_seconds: int = 3600
    input_format: str | None = None  # None: from each file's extension
    keep: tuple[str, ...] = ()  # input columns copied beside the predictions (ids)
    chunk_rows: int | None = None  # None: the batch runtime's default
    rejects: str | None = None  # None: OUTPUT_STEM.rejects.csv beside each output


@dataclass(frozen=True)
class CloudRunJobOptions:
    """Everything ``nb2prod deploy --target cloudrun-job`` can be asked to do."""

    build_dir: Path
    batch: BatchJobSpec | None = None  # from --input and --output (required) and batch flags
    project: str | None = None  # None: as for CloudRunOptions
    region: str | None = None
    job: str | None = None  # None: the model card's name, fitted to Cloud Run's rules
    cpu: str = "1"
    #: A chunk of rows and the model, and Cloud Storage FUSE stages each written file in memory.
    memory: str = "2Gi"
    service_account: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    execute: bool = True  # run the job once it is created or updated, and wait for it
    dry_run: bool = False
    endpoint: str | None = None  # None: Google's; "http://127.0.0.1:PORT" for a local fake
    wait_seconds: float | None = None  # None: as long as the tasks may take, retries included
    poll_seconds: float = 2.0  # the first pause between looks at the execution; it grows


@dataclass(frozen=True)
class CloudRunJobDeployment:
    """What ``deploy --target cloudrun-job`` did (or would do, on a dry run)."""

    project: str
    region: str
    job: str
    image: str
    tasks: int
    outputs: str  # where the predictions go, e.g. gs://b/scored-NNNNN-of-00004.csv
    job_yaml: Path
    dry_run: bool = False
    request: str = ""  # dry run: the exact request(s), method and URL as comments
    execution: str = ""  # the execution's resource name; "" when the job was not run
    succeeded: int = 0  # tasks
    log_uri: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class KubernetesOptions:
    """Everything ``nb2prod deploy --target kubernetes`` can be asked to do."""

    build_dir: Path
    namespace: str | None = None
    name: str | None = None  # None: the model card's name, fitted to DNS label rules
    min_replicas: int = 2  # two, so the PodDisruptionBudget never blocks a node drain
    max_replicas: int = 10
    cpu: str = "1"  # limit
    memory: str = "1Gi"  # limit, and request: memory is not compressible
    cpu_request: str = "500m"
    target_cpu_utilization: int = 70
    env: dict[str, str] = field(default_factory=dict)
    drift_webhook: str | None = None
    kserve: bool = False
    apply: bool = False
    context: str | None = None  # kubeconfig context; None: the current one
    #: --input/--output: also write k8s/job.yaml, an Indexed Job that scores files in batch.
    batch: BatchJobSpec | None = None
    claim: str | None = None  # a PersistentVolumeClaim mounted at /data, for non-gs:// paths


@dataclass(frozen=True)
class KubernetesManifests:
    """The manifests written into ``DIR/k8s/`` (and what was applied)."""

    directory: Path
    files: tuple[Path, ...]
    image: str
    applied: tuple[str, ...] = ()  # "Kind/namespace/name"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreprocessCheck:
    """What ``nb2prod check --run`` ran and found (a failure raised the build's error instead)."""

    #: The cells that ran, in order, and the train cell it stopped before (None: ran them all).
    cells: tuple[int, ...]
    stopped_before: int | None
    #: Train cells that ran: a preprocess cell follows them, or preprocess reads what they bind.
    trained: tuple[int, ...]
    #: The names preprocess reads that only those train cells bind, with the cell binding each.
    needs: dict[str, int]
    #: False when there was nothing to run on sample rows before training (``reason`` says why).
    ran: bool
    reason: str | None
    seconds: float
    #: The probe's findings: raw input, rows, feature shapes, what was compared.
    findings: dict[str, Any] = field(default_factory=dict)
    #: The fits and statistics recorded on the way, as the model card lists them.
    recorded: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``run`` object of ``check --run --json``."""
        return {
            "ran": self.ran,
            "reason": self.reason,
            "cells": list(self.cells),
            "stopped_before": self.stopped_before,
            "trained": list(self.trained),
            "needs": self.needs,
            "seconds": self.seconds,
            **self.findings,
            "recorded": list(self.recorded),
        }


@dataclass(frozen=True)
class CompareOptions:
    """What ``nb2prod compare CHAMPION CHALLENGER`` is asked to check."""

    champion: Path
    challenger: Path
    #: Gate on this metric only; None: on every metric both report whose direction is known.
    metric: str | None = None
    #: The direction of "better" for ``metric``; None: known from its name.
    higher_is_better: bool | None = None
    tolerance: float = 0.0  # absolute, in the metric's units
    #: Compare even when the evaluation data differ (a retrain on fresh data).
    allow_different_data: bool = False


@dataclass(frozen=True)
class GateOptions:
    """What ``nb2prod promote DIR --gate`` needs: the logged traffic, its labels, the test."""

    build_dir: Path
    predictions: str
    labels: str
    key: str = "request_id"
    alpha: float = 0.05
    #: The smallest worsening worth detecting; None: 0.02 accuracy, 10% of the stable error.
    min_effect: float | None = None
    #: accuracy, mae or rmse; None: accuracy for a label output, mae for a number.
    metric: str | None = None
    dry_run: bool = False
    endpoint: str | None = None


@dataclass(frozen=True)
class CiOptions:
    """What ``nb2prod ci init`` writes: which provider's workflow, where, with which defaults."""

    root: Path  # the repository root: the default output and the notebook search start here
    provider: str = "github"
    output: Path | None = None  # None: the provider's usual place under ``root``
    force: bool = False  # overwrite a workflow nb2prod wrote that was edited since
    notebook: str | None = None  # relative to ``root``; None: the one notebook found there
    champion_dir: str = "builds/champion"
    schedule: str = "0 6 * * 1"
    canary: int = 10
    wait_minutes: int = 60


@dataclass(frozen=True)
class CiWorkflow:
    """The workflow ``nb2prod ci init`` wrote."""

    path: Path
    notebook: str
    edited_copy: Path | None = None  # the user's edited version, kept aside by --force


@dataclass(frozen=True)
class ComparedModel:
    """One side of a comparison: its build directory and what its model card says."""

    directory: Path
    name: str
    model_version: str
    data_fingerprint: dict[str, Any]  # sha256, rows, columns of the raw training frame

    def to_json(self) -> dict[str, Any]:
        """This side as ``compare --json`` prints it."""
        return {
            "directory": str(self.directory),
            "name": self.name,
            "model_version": self.model_version,
            "data_fingerprint": self.data_fingerprint,
        }


@dataclass(frozen=True)
class MetricComparison:
    """One metric in a comparison: both values, the direction of "better" and the verdict."""

    name: str
    champion: float
    challenger: float
    direction: str | None  # "higher" | "lower"; None: unknown, so the metric is not gated
    direction_from: str  # "name" (a common metric name), "flag", or "unknown"
    verdict: str  # "better" | "same" | "within tolerance" | "worse" | "not gated"

    @property
    def difference(self) -> float:
        """Challenger minus champion."""
        return self.challenger - self.champion

    def to_json(self) -> dict[str, Any]:
        """This metric as ``compare --json`` prints it."""
        return {
            "name": self.name,
            "champion": self.champion,
            "challenger": self.challenger,
            "difference": self.difference,
            "direction": self.direction,
            "direction_from": self.direction_from,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class ComparisonReport:
    """What ``nb2prod compare`` found: the challenger passes unless a gated metric is worse."""

    champion: ComparedModel
    challenger: ComparedModel
    metrics: tuple[MetricComparison, ...]
    tolerance: float
    same_data: bool  # False only with allow_different_data
    summary: str  # the one-line verdict
    #: Parameters whose values differ: name -> (champion's, challenger's).
    changed_parameters: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def worse(self) -> tuple[MetricComparison, ...]:
        """The gated metrics on which the challenger is worse beyond the tolerance."""
        return tuple(m for m in self.metrics if m.verdict == "worse")

    @property
    def passed(self) -> bool:
        """True when the challenger is at least as good, within the tolerance, on each gated
        metric."""
        return not self.worse

    def to_json(self) -> dict[str, Any]:
        """The report ``compare --json`` prints."""
        return {
            "passed": self.passed,
            "summary": self.summary,
            "tolerance": self.tolerance,
            "same_data": self.same_data,
            "champion": self.champion.to_json(),
            "challenger": self.challenger.to_json(),
            "metrics": [metric.to_json() for metric in self.metrics],
            "changed_parameters": {
                name: {"champion": old, "challenger": new}
                for name, (old, new) in self.changed_parameters.items()
            },
            "notes": list(self.notes),
        }
