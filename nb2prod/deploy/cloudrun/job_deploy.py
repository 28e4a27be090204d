"""``deploy --target cloudrun-job``: create or update DIR's batch-scoring job, run it, wait.

The steps: check the options and the batch spec (gs:// only: the job can't see this
machine's disk), find the pushed image, resolve where the job goes, write ``DIR/job.yaml``,
send one ``UpdateJobRequest(allow_missing=True)``, then (unless told not to) start an
execution and read it until its tasks are done, saying how many succeeded and failed.
``DIR/.nb2prod/job.json`` records the job and its last execution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from google.cloud import run_v2

from ...builddir import BuildDir
from ...errors import ConfigError, DeployError
from ...models import BatchJobSpec, CloudRunJobDeployment, CloudRunJobOptions
from ..batch_job import plan_batch
from . import api
from .job import build_job, knative_job, render_requests, write_job_yaml
from .rollout import deployable_image
from .settings import JobLocation, check_job_options, resolve_job_location

Progress = Callable[[str], None]
#: Seconds between looks at a running execution grow to this.
MAX_POLL_SECONDS = 30.0
#: Time for Cloud Run to start the tasks, on top of what the tasks themselves may take.
_SCHEDULING_SECONDS = 600
_COMPLETED = "Completed"


def deploy_job(
    options: CloudRunJobOptions, progress: Progress | None = None
) -> CloudRunJobDeployment:
    """Create or update the Cloud Run Job for DIR and run it (or show what would be sent).

    Raises ConfigError for unusable options or paths, a missing card or an image not pushed
    yet; DeployError when credentials are missing, access is denied, the project or region
    does not exist, or the execution fails.
    """
    say = progress or (lambda _: None)
    build_dir = Path(options.build_dir)
    spec = options.batch
    if spec is None:
        raise ConfigError(
            "--target cloudrun-job needs --input and --output",
            hint="e.g. --input gs://BUCKET/in/ --output gs://BUCKET/out/scored.csv --tasks 4",
        )
    check_job_options(options)
    plan = plan_batch(spec, target="cloudrun-job")
    card = BuildDir(build_dir).card()
    location = resolve_job_location(options.project, options.region, options.job, card.name)
    image, notes = deployable_image(build_dir, card, options.dry_run)
    job = build_job(options, spec, plan, location, image, card)
    job_yaml = write_job_yaml(BuildDir(build_dir).job_yaml, knative_job(job, location.region))
    result = CloudRunJobDeployment(
        project=location.project,
        region=location.region,
        job=location.job,
        image=image,
        tasks=spec.tasks,
        outputs=plan.outputs,
        job_yaml=job_yaml,
        dry_run=options.dry_run,
        notes=notes + plan.notes,
    )
    if options.dry_run:
        return replace(result, request=render_requests(job, options.endpoint, options.execute))
    jobs, executions = api.make_job_clients(options.endpoint)
    say(f"creating or updating job {location.job} in {location.project}/{location.region}")
    api.send_job(jobs, job, location, wait_seconds=900.0)
    state = {"target": "cloudrun-job", **asdict(location), "image": image, **asdict(spec)}
    BuildDir(build_dir).write_job_deployment(state)
    if not options.execute:
        return result
    name = api.run_job(jobs, location)
    say(f"started execution {_short(name)} of {spec.tasks} task(s)")
    execution = _wait(executions, name, location, _wait_seconds(options, spec), options, say)
    BuildDir(build_dir).write_job_deployment(
        {**state, "execution": name, "succeeded": execution.succeeded_count}
    )
    _insist_succeeded(execution, location)
    return replace(
        result, execution=name, succeeded=execution.succeeded_count, log_uri=execution.log_uri
    )


def _wait(
    client: run_v2.ExecutionsClient,
    name: str,
    location: JobLocation,
    wait_seconds: float,
    options: CloudRunJobOptions,
    say: Progress,
) -> run_v2.Execution:
    """Read the execution until it completes, with a line whenever its task counts change."""
    deadline = time.monotonic() + wait_seconds
    pause = options.poll_seconds
    seen: tuple[int, ...] = ()
    describe = (
        f"gcloud run jobs executions describe {_short(name)} --region {location.region} "
        f"--project {location.project}"
    )
    try:
        while True:
            execution = api.get_execution(client, name, location)
            counts = (
                execution.succeeded_count,
                execution.failed_count,
                execution.running_count,
                execution.retried_count,
            )
            if counts != seen:
                seen = counts
                say(_progress_line(execution))
            if run_v2.Execution.pb(execution).HasField("completion_time"):
                return execution
            if time.monotonic() > deadline:
                raise DeployError(
                    f"execution {_short(name)} was still running after {wait_seconds:.0f} s",
                    hint=f"It goes on without nb2prod. Watch it: {describe}",
                )
            time.sleep(pause)
            pause = min(pause * 1.5, MAX_POLL_SECONDS)
    except KeyboardInterrupt:
        say(f"stopped waiting; execution {_short(name)} goes on in Cloud Run: {describe}")
        raise


def _progress_line(execution: run_v2.Execution) -> str:
    line = (
        f"execution {_short(execution.name)}: {execution.succeeded_count}/"
        f"{execution.task_count} tasks succeeded, {execution.failed_count} failed, "
        f"{execution.running_count} running"
    )
    return line + (f", {execution.retried_count} retried" if execution.retried_count else "")


def _insist_succeeded(execution: run_v2.Execution, location: JobLocation) -> None:
    """A DeployError with Cloud Run's own reason unless every task succeeded."""
    if execution.succeeded_count >= execution.task_count:
        return
    reasons = [
        condition.message
        for condition in execution.conditions
        if condition.message and condition.state == run_v2.Condition.State.CONDITION_FAILED
    ]
    completed = [c.message for c in execution.conditions if c.type_ == _COMPLETED and c.message]
    reason = " ".join(dict.fromkeys(completed + reasons)) or "no reason given"
    logs = execution.log_uri or (
        f"gcloud run jobs executions describe {_short(execution.name)} --region {location.region}"
    )
    raise DeployError(
        f"execution {_short(execution.name)} of {location.what} failed: "
        f"{execution.failed_count} of {execution.task_count} tasks failed ({reason})",
        hint=f"The tasks that succeeded kept their outputs; each task's log says why it "
        f"failed: {logs}. Run again with: gcloud run jobs execute {location.job} "
        f"--region {location.region} --wait",
    )


def _wait_seconds(options: CloudRunJobOptions, spec: BatchJobSpec) -> float:
    """As long as the tasks may take: their timeout, retries and waves, plus scheduling."""
    if options.wait_seconds is not None:
        return options.wait_seconds
    waves = math.ceil(spec.tasks / (spec.parallelism or spec.tasks))
    return float(spec.task_timeout_seconds * (spec.max_retries + 1) * waves + _SCHEDULING_SECONDS)


def _short(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]
