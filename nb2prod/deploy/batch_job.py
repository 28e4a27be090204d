"""What a batch-scoring job runs, wherever it runs: the batch runtime's command line, and where
its files are inside the container.

A Cloud Run Job and an Indexed Kubernetes Job run the service's own image with
``python -m nb2prod_runtime.batch`` in place of the server. The image carries no Cloud
Storage client (it stays lean), so ``gs://BUCKET/PATH`` is read and written through the
bucket mounted as a volume at ``/gcs/BUCKET/PATH`` (Cloud Run's Cloud Storage volumes, GKE's
Cloud Storage FUSE CSI driver); on Kubernetes, other paths are on a PersistentVolumeClaim
mounted at ``/data``. Each task scores its share of the input files into its own output
(the runtime reads its index and the task count from the environment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ConfigError
from ..models import BatchJobSpec
from ..naming import dns_label
from ..runtime.batch import shard_name
from ..runtime.batch_files import FORMATS

GCS_ROOT = PurePosixPath("/gcs")
CLAIM_ROOT = PurePosixPath("/data")
RUNTIME_COMMAND = ("python", "-m", "nb2prod_runtime.batch")
#: Cloud Storage lists a prefix's objects without folder objects; gcsfuse shows such a
#: prefix as a folder only with this option, and an input is usually such a prefix.
MOUNT_OPTIONS = ("implicit-dirs",)
MAX_TASKS = 10_000  # Cloud Run's limit
MAX_RETRIES = 10  # Cloud Run's limit
MAX_TASK_TIMEOUT = 7 * 24 * 3600  # Cloud Run's limit (168 hours)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


@dataclass(frozen=True)
class BucketMount:
    """A Cloud Storage bucket the job mounts, under which volume name, and whether it writes."""

    volume: str
    bucket: str
    read_only: bool

    @property
    def path(self) -> str:
        """Where the bucket is in the container: ``/gcs/BUCKET``."""
        return str(GCS_ROOT / self.bucket)


@dataclass(frozen=True)
class BatchPlan:
    """The container's side of a batch job: its arguments, and what they need mounted."""

    args: tuple[str, ...]  # after RUNTIME_COMMAND
    buckets: tuple[BucketMount, ...]
    uses_claim: bool  # some path is on the PersistentVolumeClaim at /data
    outputs: str  # where the predictions land, as the user named the place
    notes: tuple[str, ...] = ()


def plan_batch(spec: BatchJobSpec, *, target: str, claim: str | None = None) -> BatchPlan:
    """The runtime's arguments for ``spec``, with each path as the container sees it.

    ``target`` is ``cloudrun-job`` (gs:// only: the job can't see this machine's disk) or
    ``kubernetes`` (gs:// or, with ``claim``, paths on the claim). Raises ConfigError naming
    every unusable setting.
    """
    check_spec(spec)
    named = {"--input": spec.input, "--output": spec.output, "--rejects": spec.rejects}
    places = {flag: url for flag, url in named.items() if url is not None}
    buckets = {
        flag: _split_gs(flag, url) for flag, url in places.items() if url.startswith("gs://")
    }
    written = {buckets[flag][0] for flag in ("--output", "--rejects") if flag in buckets}
    mounts: dict[str, BucketMount] = {}
    paths: dict[str, str] = {}
    for flag, url in places.items():
        if flag not in buckets:
            paths[flag] = _local_path(flag, url, target, claim)
            continue
        bucket, inside = buckets[flag]
        if bucket not in mounts:
            mounts[bucket] = BucketMount(_volume(bucket, mounts), bucket, bucket not in written)
        paths[flag] = str(GCS_ROOT / bucket / inside) + ("/" if url.endswith("/") else "")
    args = [paths["--input"], "-o", paths["--output"]]
    # A job runs again and again (nightly, or re-executed after a failure): each run replaces
    # the outputs of the one before. The runtime still refuses a file it did not write.
    args.append("--force")
    if spec.input_format:
        args += ["--format", spec.input_format]
    for column in spec.keep:
        args += ["--keep", column]
    if spec.chunk_rows is not None:
        args += ["--chunk-rows", str(spec.chunk_rows)]
    if spec.rejects:
        args += ["--rejects", paths["--rejects"]]
    return BatchPlan(
        args=tuple(args),
        buckets=tuple(mounts.values()),
        uses_claim=len(buckets) < len(places),
        outputs=describe_outputs(spec.output, spec.tasks),
        notes=_parquet_note(spec),
    )


def check_spec(spec: BatchJobSpec) -> None:
    """Refuse a spec the platforms or the runtime would refuse, all problems in one error."""
    problems = []
    if not 1 <= spec.tasks <= MAX_TASKS:
        problems.append(f"--tasks must be between 1 and {MAX_TASKS}")
    if not 0 <= spec.parallelism <= spec.tasks:
        problems.append("--parallelism must be between 0 (as many as allowed) and --tasks")
    if not 0 <= spec.max_retries <= MAX_RETRIES:
        problems.append(f"--max-retries must be between 0 and {MAX_RETRIES}")
    if not 1 <= spec.task_timeout_seconds <= MAX_TASK_TIMEOUT:
        problems.append(f"--task-timeout must be between 1 and {MAX_TASK_TIMEOUT} seconds")
    if spec.chunk_rows is not None and spec.chunk_rows < 1:
        problems.append("--chunk-rows must be at least 1")
    if any(not column.strip() for column in spec.keep):
        problems.append("--keep needs a column name")
    name = spec.output.rstrip("/").rsplit("/", 1)[-1]
    if spec.output.endswith("/") or PurePosixPath(name).suffix.lower() not in FORMATS:
        problems.append(
            f"--output {spec.output} must name the output file, e.g. "
            f"{spec.output.rstrip('/')}/scored.csv (.csv, .parquet or .jsonl); with several "
            "tasks each writes its own file beside it"
        )
    if spec.rejects is not None and spec.rejects.endswith("/"):
        problems.append(f"--rejects {spec.rejects} must name a file, e.g. rejects.csv")
    if problems:
        raise ConfigError("; ".join(problems))


def describe_outputs(output: str, tasks: int) -> str:
    """The output a run writes, or the first and last of its tasks' outputs."""
    if tasks == 1:
        return output
    folder, _, name = output.rpartition("/")
    first, last = (shard_name(Path(name), index, tasks).name for index in (0, tasks - 1))
    return f"{folder}/{first} ... {last}"


def _split_gs(flag: str, url: str) -> tuple[str, str]:
    """``gs://BUCKET/PATH`` as (BUCKET, PATH); a ConfigError for a URL that isn't one."""
    bucket, _, inside = url[len("gs://") :].partition("/")
    parts = PurePosixPath(inside).parts
    if not _BUCKET.fullmatch(bucket) or ".." in parts:
        raise ConfigError(f"{flag} {url} is not a gs://BUCKET/PATH URL")
    return bucket, inside.rstrip("/")


def _volume(bucket: str, known: dict[str, BucketMount]) -> str:
    """A volume name (a DNS label) for ``bucket``, unlike the names given so far."""
    name = dns_label(f"gcs-{bucket}", 60)
    taken = {mount.volume for mount in known.values()}
    return name if name not in taken else f"{name}-{len(known) + 1}"


def _local_path(flag: str, path: str, target: str, claim: str | None) -> str:
    """A path that is not on gs://, as the container sees it on the claim (or a refusal)."""
    if "://" in path:
        raise ConfigError(
            f"{flag} {path}: only gs:// URLs can be mounted into the job",
            hint="Copy the files to a Cloud Storage bucket and pass gs://BUCKET/PATH.",
        )
    if target == "cloudrun-job":
        raise ConfigError(
            f"{flag} {path} is on this machine: a Cloud Run Job can't see your disk",
            hint=f"Upload it first (gcloud storage cp -r {path} gs://BUCKET/PATH) and pass "
            f"{flag} gs://BUCKET/PATH.",
        )
    if claim is None:
        raise ConfigError(
            f"{flag} {path} is not on gs://: the Job's pods can't see this machine's disk",
            hint="Pass --claim PVC, a PersistentVolumeClaim holding the files (mounted at "
            "/data; paths are relative to it), or use gs:// URLs on GKE.",
        )
    inside = PurePosixPath(path)
    if inside.is_absolute():
        if not inside.is_relative_to(CLAIM_ROOT):
            raise ConfigError(
                f"{flag} {path}: a path on --claim {claim} is relative to it, or under /data"
            )
        inside = inside.relative_to(CLAIM_ROOT)
    if ".." in inside.parts:
        raise ConfigError(f"{flag} {path} leaves the claim (..)")
    return str(CLAIM_ROOT / inside) + ("/" if path.endswith("/") else "")


def _parquet_note(spec: BatchJobSpec) -> tuple[str, ...]:
    """The image leaves pyarrow out; say so when the job reads or writes Parquet."""
    parquet = spec.input_format == "parquet" or any(
        (name or "").lower().endswith((".parquet", ".pq")) for name in (spec.input, spec.output)
    )
    if not parquet:
        return ()
    return (
        "Parquet needs pyarrow, which the image leaves out unless the notebook imports it; "
        "without it the tasks fail with exit 2. CSV and JSON Lines need nothing more.",
    )
