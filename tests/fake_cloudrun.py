"""A local stand-in for the Cloud Run Admin API v2, as the REST client speaks it.

It answers the calls ``google.cloud.run_v2.ServicesClient(transport="rest")``
makes: ``POST .../services?serviceId=``, ``PATCH .../services/NAME?allowMissing=
true[&updateMask=...]``, ``GET .../services/NAME`` and ``GET .../operations/ID``.
Every request is recorded with its decoded JSON body, so tests can assert the
exact service bodies nb2prod sends. Failure modes mimic Google's error bodies:
``fail(403)``/``fail(404)`` and ``revision_not_ready(message)``.

Enum values arrive as integers (the client sends ``$alt=json;enum-encoding=int``)
and are answered as integers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

LATEST, REVISION = 1, 2  # TrafficTargetAllocationType
CONDITION_FAILED, CONDITION_SUCCEEDED = 3, 4  # Condition.State
SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"

#: Fields Cloud Run fills in; a client sending them back has them ignored.
OUTPUT_ONLY = (
    "uid", "generation", "createTime", "updateTime", "creator", "lastModifier",
    "observedGeneration", "terminalCondition", "conditions", "latestReadyRevision",
    "latestCreatedRevision", "trafficStatuses", "uri", "urls", "reconciling", "etag",
)  # fmt: skip

_SERVICES = re.compile(r"^/v2/projects/([^/]+)/locations/([^/]+)/services(?:/([^/:]+))?$")
_OPERATION = re.compile(r"^/v2/(projects/([^/]+)/locations/([^/]+)/operations/[^/]+)$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None


class FakeCloudRun:
    """The fake API server; use as a context manager, point the client at ``endpoint``."""

    def __init__(
        self,
        projects: tuple[str, ...] = ("demo-project",),
        regions: tuple[str, ...] = ("europe-west1", "us-central1"),
    ) -> None:
        self.projects = set(projects)
        self.regions = set(regions)
        self.requests: list[RecordedRequest] = []
        self.services: dict[str, dict[str, Any]] = {}  # full name -> service JSON
        self.revisions: dict[str, dict[str, Any]] = {}  # revision name -> template JSON
        self.ready: set[str] = set()  # revisions that became ready
        self.operations: dict[str, dict[str, Any]] = {}
        self._failure: tuple[int, str, str] | None = None  # status, message, permission
        self._not_ready: tuple[str, bool] | None = None  # message, as operation error
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        """The ``api_endpoint`` to give the client."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeCloudRun:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- failure modes -------------------------------------------------------------------

    def fail(self, status: int, message: str | None = None, permission: str = "") -> None:
        """Answer every service call with ``status`` (403, 404, ...) until ``clear()``."""
        if message is None and status == 403:
            permission = permission or "run.services.update"
            message = f"Permission '{permission}' denied on resource (or it may not exist)."
        self._failure = (status, message or f"HTTP {status}", permission)

    def revision_not_ready(self, message: str, *, as_operation_error: bool = False) -> None:
        """Make the next revision fail to become ready with ``message``."""
        self._not_ready = (message, as_operation_error)

    def clear(self) -> None:
        """Stop failing."""
        self._failure = None
        self._not_ready = None

    def service_requests(self) -> list[RecordedRequest]:
        """The recorded requests, without operation polls."""
        return [r for r in self.requests if "/operations/" not in r.path]

    def bodies(self, method: str = "PATCH") -> list[dict[str, Any]]:
        """The bodies of the recorded requests with ``method``."""
        return [r.body or {} for r in self.requests if r.method == method]

    # -- the API -------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """Answer one request: (status, JSON body)."""
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, body))
            op = _OPERATION.match(path)
            if op and method == "GET":
                if op.group(1) not in self.operations:
                    return _error(404, f"Operation {op.group(1)} not found.")
                return 200, self.operations[op.group(1)]
            match = _SERVICES.match(path)
            if not match:
                return _error(404, f"No route for {method} {path}")
            project, region, service_id = match.groups()
            if self._failure:
                status, message, permission = self._failure
                return _error(status, message, permission)
            if project not in self.projects:
                return _error(404, f"Project '{project}' not found or permission denied.")
            if region not in self.regions:
                return _error(404, f"Location '{region}' is not found.")
            parent = f"projects/{project}/locations/{region}"
            if method == "POST" and service_id is None:
                name = f"{parent}/services/{query.get('serviceId', '')}"
                if name in self.services:
                    return _error(409, f"Resource '{name}' already exists.")
                return self._write(parent, name, body, update_mask=None)
            name = f"{parent}/services/{service_id}"
            if method == "GET":
                if name not in self.services:
                    return _error(404, f"Resource '{name}' was not found")
                return 200, self.services[name]
            if method == "PATCH":
                if name not in self.services and query.get("allowMissing") != "true":
                    return _error(404, f"Resource '{name}' was not found")
                return self._write(parent, name, body, update_mask=query.get("updateMask"))
            return _error(405, f"{method} not supported by the fake")

    def _write(
        self, parent: str, name: str, body: dict[str, Any], update_mask: str | None
    ) -> tuple[int, Any]:
        old = self.services.get(name)
        if old and body.get("etag") and body["etag"] != old["etag"]:
            return _error(409, "The resource was modified; etag mismatch.", status_name="ABORTED")
        spec = {k: v for k, v in body.items() if k not in OUTPUT_ONLY}
        if old and update_mask:
            spec = {k: v for k, v in old.items() if k not in OUTPUT_ONLY}
            for path in update_mask.split(","):
                top = path.strip().split(".")[0]
                spec[top] = copy.deepcopy(body.get(top))
        service_id = name.rsplit("/", 1)[1]
        generation = int(old["generation"]) + 1 if old else 1
        revision, problem = self._cut_revision(service_id, generation, spec.get("template", {}))
        if problem:
            return _error(409, problem)
        ready_before = old.get("latestReadyRevision") if old else None
        statuses = old.get("trafficStatuses", []) if old else []
        terminal = {"type": "Ready", "state": CONDITION_SUCCEEDED}
        not_ready = self._not_ready if revision not in self.ready else None
        latest_ready = ready_before
        if not_ready:
            self._not_ready = None
            terminal = {
                "type": "Ready",
                "state": CONDITION_FAILED,
                "message": not_ready[0],
                "severity": 1,
                "revisionReason": 0,
            }
        else:
            self.ready.add(revision)
            latest_ready = revision
            statuses, problem = self._route(service_id, spec.get("traffic", []), latest_ready)
            if problem:
                return _error(400, problem, status_name="INVALID_ARGUMENT")
        stored = {
            **spec,
            "name": name,
            "uid": old["uid"] if old else str(uuid.uuid4()),
            "generation": str(generation),
            "observedGeneration": str(generation),
            "latestCreatedRevision": f"{parent}/revisions/{revision}",
            "terminalCondition": terminal,
            "conditions": [terminal],
            "trafficStatuses": statuses,
            "uri": f"https://{service_id}-abc123-ew.a.run.app",
        }
        if latest_ready:
            stored["latestReadyRevision"] = latest_ready
        stored["etag"] = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()
        self.services[name] = stored
        op_name = f"{parent}/operations/{uuid.uuid4()}"
        if not_ready and not_ready[1]:
            done: dict[str, Any] = {"error": {"code": 9, "message": not_ready[0]}}
        else:
            done = {"response": {"@type": SERVICE_TYPE, **stored}}
        self.operations[op_name] = {"name": op_name, "done": True, **done}
        return 200, {"name": op_name, "done": False}

    def _cut_revision(
        self, service_id: str, generation: int, template: dict[str, Any]
    ) -> tuple[str, str]:
        """The revision a template makes: the named one, or a new one if it changed."""
        content = {k: v for k, v in template.items() if k != "revision"}
        name = template.get("revision")
        if name:
            if not name.startswith(f"{service_id}-"):
                return name, f"Revision name '{name}' must be prefixed by '{service_id}-'."
            known = self.revisions.get(name)
            if known is not None and known != content:
                return name, f"Revision named '{name}' with different configuration already exists."
        else:
            same = [rev for rev, tpl in self.revisions.items() if tpl == content]
            name = same[-1] if same else f"{service_id}-{generation:05d}-xyz"
        self.revisions[name] = content
        return name, ""

    def _route(
        self, service_id: str, traffic: list[dict[str, Any]], latest_ready: str
    ) -> tuple[list[dict[str, Any]], str]:
        statuses = []
        for target in traffic:
            kind = _enum(target.get("type"), "LATEST", LATEST)
            status: dict[str, Any] = {"type": kind, "percent": target.get("percent", 0)}
            if kind == REVISION:
                revision = target.get("revision", "")
                if revision not in self.ready:
                    return [], f"Revision '{revision}' is not ready or does not exist."
                status["revision"] = revision
            if target.get("tag"):
                status["tag"] = target["tag"]
                status["uri"] = f"https://{target['tag']}---{service_id}-abc123-ew.a.run.app"
            statuses.append(status)
        if traffic and sum(t.get("percent", 0) for t in traffic) != 100:
            return [], "Traffic percentages must add up to 100."
        if not traffic:
            statuses = [{"type": LATEST, "percent": 100}]
        return statuses, ""


def _enum(value: Any, name: str, number: int) -> int:
    if value in (number, f"TRAFFIC_TARGET_ALLOCATION_TYPE_{name}"):
        return number
    return REVISION if value in (REVISION, "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION") else 0


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
}


def _error(
    code: int, message: str, permission: str = "", status_name: str | None = None
) -> tuple[int, Any]:
    """Google's JSON error body (google.rpc.Status over HTTP)."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": status_name or _STATUS_NAMES.get(code, "UNKNOWN"),
    }
    if permission:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "run.googleapis.com",
                "metadata": {"permission": permission},
            }
        ]
    return code, {"error": error}


def _handler_class_for(fake: FakeCloudRun) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.handle(self.command, url.path, query, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

    return Handler


# --- fixtures the Cloud Run tests share ---------------------------------------------------------

PROJECT, REGION = "demo-project", "europe-west1"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/models/iris_classifier@{DIGEST}"


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """A built and pushed DIR, as the build and push stages leave it."""
    from fake_build import write_built_dir

    return write_built_dir(tmp_path / "iris_classifier", pushed_as=IMAGE)


@pytest.fixture
def fake() -> Iterator[FakeCloudRun]:
    """The fake Cloud Run API, knowing PROJECT and REGION, on a loopback port."""
    with FakeCloudRun(projects=(PROJECT,), regions=(REGION,)) as server:
        yield server
