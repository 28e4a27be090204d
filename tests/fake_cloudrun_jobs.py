"""The local Cloud Run Admin API v2 fake (fake_cloudrun.py), with jobs and their executions.

It answers what ``run_v2.JobsClient`` and ``run_v2.ExecutionsClient`` (``transport="rest"``)
send: ``PATCH .../jobs/NAME?allowMissing=true``, ``POST .../jobs?jobId=``, ``GET
.../jobs/NAME``, ``POST .../jobs/NAME:run`` (a long-running operation whose metadata is the
Execution) and ``GET .../jobs/NAME/executions/ID``. An execution moves on each time it is
read: its tasks finish over ``polls_to_finish`` reads. ``fail_tasks(...)`` makes some of them
fail as Cloud Run reports it (failed count, retries, a ``Completed`` condition that failed
with the task's message); ``job_not_ready(message)`` fails a job's Ready condition. The fake
checks a job as the API does: a container with an image, every volume mount naming a
volume, ``parallelism <= taskCount``.
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fake_cloudrun import (
    CONDITION_FAILED,
    CONDITION_SUCCEEDED,
    PROJECT,
    REGION,
    FakeCloudRun,
    RecordedRequest,
    _error,
)

JOB_TYPE = "type.googleapis.com/google.cloud.run.v2.Job"
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
TIME = "2026-01-01T00:00:00Z"
_JOBS = re.compile(
    r"^/v2/projects/([^/]+)/locations/([^/]+)/jobs"
    r"(?:/([^/:]+)(?::(run)|/executions/([^/]+))?)?$"
)
#: Fields Cloud Run fills in on a job; a client sending them back has them ignored.
JOB_OUTPUT_ONLY = (
    "uid", "generation", "createTime", "updateTime", "creator", "lastModifier",
    "observedGeneration", "terminalCondition", "conditions", "executionCount",
    "latestCreatedExecution", "reconciling", "etag",
)  # fmt: skip


class FakeCloudRunJobs(FakeCloudRun):
    """The fake API with jobs; ``jobs`` and ``executions`` hold what it was sent and made."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: dict[str, dict[str, Any]] = {}  # full name -> job JSON
        self.executions: dict[str, dict[str, Any]] = {}  # full name -> execution JSON
        self.polls_to_finish = 2
        self._failing: tuple[frozenset[int], str] = (frozenset(), "")
        self._not_ready: str | None = None

    def fail_tasks(
        self, *indexes: int, message: str = "The container exited with an error."
    ) -> None:
        """Make the tasks with these indexes fail in the next executions."""
        self._failing = (frozenset(indexes), message)

    def job_not_ready(self, message: str) -> None:
        """Make the next job written end with a failed Ready condition carrying ``message``."""
        self._not_ready = message

    def job_requests(self) -> list[Any]:
        """The recorded job and execution requests, without operation polls."""
        return [r for r in self.requests if "/jobs" in r.path]

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        match = _JOBS.match(path)
        if not match:
            return super().handle(method, path, query, body)
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, body))
            project, region, job_id, run, execution_id = match.groups()
            if self._failure:
                status, message, permission = self._failure
                return _error(status, message, permission)
            if project not in self.projects:
                return _error(404, f"Project '{project}' not found or permission denied.")
            if region not in self.regions:
                return _error(404, f"Location '{region}' is not found.")
            parent = f"projects/{project}/locations/{region}"
            if job_id is None:
                if method != "POST":
                    return _error(405, f"{method} not supported by the fake")
                name = f"{parent}/jobs/{query.get('jobId', '')}"
                if name in self.jobs:
                    return _error(409, f"Resource '{name}' already exists.")
                return self._write_job(name, body)
            name = f"{parent}/jobs/{job_id}"
            if name not in self.jobs and not (method == "PATCH" and query.get("allowMissing")):
                return _error(404, f"Resource '{name}' was not found")
            if execution_id is not None and method == "GET":
                return self._read_execution(f"{name}/executions/{execution_id}")
            if run and method == "POST":
                return self._run(name)
            if method == "GET" and not run:
                return 200, self.jobs[name]
            if method == "PATCH" and not run:
                return self._write_job(name, body)
            return _error(405, f"{method} not supported by the fake")

    def _write_job(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        spec = {k: v for k, v in (body or {}).items() if k not in JOB_OUTPUT_ONLY}
        problem = _job_problem(spec)
        if problem:
            return _error(400, problem, status_name="INVALID_ARGUMENT")
        old = self.jobs.get(name)
        generation = int(old["generation"]) + 1 if old else 1
        ready: dict[str, Any] = {"type": "Ready", "state": CONDITION_SUCCEEDED}
        if self._not_ready:
            ready = {"type": "Ready", "state": CONDITION_FAILED, "message": self._not_ready}
            self._not_ready = None
        stored = {
            **spec,
            "name": name,
            "uid": old["uid"] if old else str(uuid.uuid4()),
            "generation": str(generation),
            "observedGeneration": str(generation),
            "terminalCondition": ready,
            "conditions": [ready],
            "executionCount": old.get("executionCount", 0) if old else 0,
            "etag": uuid.uuid4().hex,
        }
        self.jobs[name] = stored
        return self._operation(name, {"response": {"@type": JOB_TYPE, **stored}})

    def _run(self, job_name: str) -> tuple[int, Any]:
        job = self.jobs[job_name]
        job["executionCount"] = int(job.get("executionCount", 0)) + 1
        template = job.get("template", {})
        execution_id = f"{job_name.rsplit('/', 1)[1]}-{uuid.uuid4().hex[:5]}"
        name = f"{job_name}/executions/{execution_id}"
        failing, message = self._failing
        execution = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "job": job_name.rsplit("/", 1)[1],
            "taskCount": template.get("taskCount", 1),
            "parallelism": template.get("parallelism", 0),
            "template": copy.deepcopy(template.get("template", {})),
            "createTime": TIME,
            "logUri": f"https://console.cloud.google.com/logs/viewer?execution={execution_id}",
            "_reads": 0,
            "_failing": sorted(failing),
            "_message": message,
        }
        job["latestCreatedExecution"] = {"name": name, "createTime": TIME}
        self.executions[name] = execution
        return self._operation(name, None, metadata=_public(execution))

    def _read_execution(self, name: str) -> tuple[int, Any]:
        if name not in self.executions:
            return _error(404, f"Resource '{name}' was not found")
        execution = self.executions[name]
        count = int(execution["taskCount"])
        execution["_reads"] += 1
        done = min(count, execution["_reads"] * math.ceil(count / self.polls_to_finish))
        failed = [index for index in execution["_failing"] if index < done]
        retries = int(execution["template"].get("maxRetries", 3))
        execution.update(
            startTime=TIME,
            runningCount=count - done,
            succeededCount=done - len(failed),
            failedCount=len(failed),
            retriedCount=len(failed) * retries,
        )
        if done == count:
            execution["completionTime"] = TIME
            if failed:
                task = f"{execution['name'].rsplit('/', 1)[1]}-task{failed[0]}"
                completed = {
                    "type": "Completed",
                    "state": CONDITION_FAILED,
                    "message": f"Task {task} failed with message: {execution['_message']}",
                }
            else:
                completed = {"type": "Completed", "state": CONDITION_SUCCEEDED}
            execution["conditions"] = [completed]
            for op in self.operations.values():
                if op.get("metadata", {}).get("name") == execution["name"]:
                    op.update(done=True, response={"@type": EXECUTION_TYPE, **_public(execution)})
        return 200, _public(execution)

    def _operation(
        self, resource: str, done: dict[str, Any] | None, metadata: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        parent = "/".join(resource.split("/")[:4])
        op_name = f"{parent}/operations/{uuid.uuid4()}"
        answer: dict[str, Any] = {"name": op_name, "done": False}
        if metadata is not None:
            answer["metadata"] = {"@type": EXECUTION_TYPE, **metadata}
        self.operations[op_name] = {**answer, **({"done": True, **done} if done else {})}
        return 200, answer


def _public(execution: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in execution.items() if not k.startswith("_")}


def _job_problem(job: dict[str, Any]) -> str:
    """What the real API would refuse in a job body, or ""."""
    execution = job.get("template") or {}
    task = execution.get("template") or {}
    containers = task.get("containers") or []
    if not containers or not all(c.get("image") for c in containers):
        return "template.template.containers: a container with an image is required"
    volumes = {volume.get("name") for volume in task.get("volumes", [])}
    for container in containers:
        for mount in container.get("volumeMounts", []):
            if mount.get("name") not in volumes:
                return f"volume_mounts: volume '{mount.get('name')}' is not defined"
    count = int(execution.get("taskCount", 1))
    if count < 1 or int(execution.get("parallelism", 0)) > count:
        return "template.parallelism must be <= template.task_count"
    return ""


@pytest.fixture
def jobs_fake() -> Iterator[FakeCloudRunJobs]:
    """The fake Cloud Run API with jobs, knowing PROJECT and REGION, on a loopback port."""
    with FakeCloudRunJobs(projects=(PROJECT,), regions=(REGION,)) as server:
        yield server
