"""Where a Cloud Run service or job goes, and whether its settings are usable, before any call.

Project and region come from the options, then the environment, then gcloud's own
configuration file (read as INI, never by running gcloud). Nothing here needs the
Google client libraries.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError
from ...models import CloudRunJobOptions, CloudRunOptions
from ...naming import dns_label

CANARY_TAG = "canary"
_RESERVED_ENV = frozenset(
    {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
    | {"CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_COUNT"}
    | {"CLOUD_RUN_TASK_ATTEMPT"}
)
_SERVICE_ID = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_MAX_SERVICE_ID = 49  # the API's limit
_DEFAULT_SERVICE_ID = 40  # leaves room for the "canary" tag: tag + service <= 46
_MAX_TAGGED = 46
#: Execution and task names add suffixes to the job's id; 49 leaves them room, as for services.
_MAX_JOB_ID = 49


@dataclass(frozen=True)
class ServiceLocation:
    """Where a service lives: project, region and service id."""

    project: str
    region: str
    service: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/R``."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def name(self) -> str:
        """The service's resource name."""
        return f"{self.parent}/services/{self.service}"

    @property
    def what(self) -> str:
        """How messages name the resource."""
        return f"service {self.service}"


@dataclass(frozen=True)
class JobLocation:
    """Where a Cloud Run Job lives: project, region and job id."""

    project: str
    region: str
    job: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/R``."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def name(self) -> str:
        """The job's resource name."""
        return f"{self.parent}/jobs/{self.job}"

    @property
    def what(self) -> str:
        """How messages name the resource."""
        return f"job {self.job}"


def gcloud_config(environ: dict[str, str] | None = None) -> configparser.ConfigParser:
    """gcloud's active configuration file, read as INI (never by running gcloud)."""
    env = os.environ if environ is None else environ
    base = Path(env["CLOUDSDK_CONFIG"]) if env.get("CLOUDSDK_CONFIG") else None
    if base is None:
        appdata = env.get("APPDATA") if os.name == "nt" else None
        base = Path(appdata) / "gcloud" if appdata else Path.home() / ".config" / "gcloud"
    active = env.get("CLOUDSDK_ACTIVE_CONFIG_NAME", "")
    if not active and (base / "active_config").is_file():
        active = (base / "active_config").read_text(encoding="utf-8").strip()
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(base / "configurations" / f"config_{active or 'default'}", encoding="utf-8")
    return parser


def resolve_location(
    project: str | None, region: str | None, service: str | None, model_name: str
) -> ServiceLocation:
    """Project, region and service id from the arguments, the environment, then gcloud."""
    project, region = _project_and_region(project, region)
    if service is None:
        service = service_id_for(model_name)
    elif len(service) > _MAX_SERVICE_ID or not _SERVICE_ID.fullmatch(service):
        raise ConfigError(
            f"--service {service!r} is not a Cloud Run service name",
            hint="Use lowercase letters, digits and '-', start with a letter, at most 49 chars.",
        )
    return ServiceLocation(project, region, service)


def resolve_job_location(
    project: str | None, region: str | None, job: str | None, model_name: str
) -> JobLocation:
    """Project, region and job id, found as :func:`resolve_location` finds them."""
    project, region = _project_and_region(project, region)
    if job is None:
        job = service_id_for(model_name)
    elif len(job) > _MAX_JOB_ID or not _SERVICE_ID.fullmatch(job):
        raise ConfigError(
            f"--job {job!r} is not a Cloud Run job name",
            hint=f"Use lowercase letters, digits and '-', start with a letter, at most "
            f"{_MAX_JOB_ID} chars.",
        )
    return JobLocation(project, region, job)


def _project_and_region(project: str | None, region: str | None) -> tuple[str, str]:
    """From the arguments, then the environment, then gcloud's configuration."""
    config: configparser.ConfigParser | None = None

    def from_gcloud(section: str, key: str) -> str | None:
        nonlocal config
        config = config or gcloud_config()
        return config.get(section, key, fallback=None)

    project = (
        project
        or os.environ.get("GOOGLE_CLOUD_PROJECT")
        or os.environ.get("CLOUDSDK_CORE_PROJECT")
        or from_gcloud("core", "project")
    )
    region = region or os.environ.get("CLOUDSDK_RUN_REGION") or from_gcloud("run", "region")
    if not project:
        raise ConfigError(
            "no Google Cloud project given",
            hint="Pass --project, set GOOGLE_CLOUD_PROJECT, or run: gcloud config set project P",
        )
    if not region:
        raise ConfigError(
            "no Cloud Run region given",
            hint="Pass --region, set CLOUDSDK_RUN_REGION, or run: gcloud config set run/region R",
        )
    return project, region


def service_id_for(name: str) -> str:
    """A model name fitted to Cloud Run's service naming rules."""
    return dns_label(name, _DEFAULT_SERVICE_ID)


def check_options(options: CloudRunOptions) -> None:
    """Refuse settings Cloud Run would reject, all problems in one ConfigError."""
    problems = _container_problems(options.cpu, options.memory, options.env)
    if not 1 <= options.concurrency <= 1000:
        problems.append("--concurrency must be between 1 and 1000")
    cpu = _cpu_value(options.cpu)
    if cpu is not None and cpu < 1 and options.concurrency > 1:
        problems.append("Cloud Run needs --concurrency 1 with less than one CPU")
    if not 0 <= options.min_instances <= options.max_instances or options.max_instances < 1:
        problems.append("need 0 <= --min-instances <= --max-instances and --max-instances >= 1")
    if not 1 <= options.timeout_seconds <= 3600:
        problems.append("--timeout must be between 1 and 3600 seconds")
    if options.canary is not None and not 1 <= options.canary <= 99:
        problems.append("--canary must be a percentage between 1 and 99")
    if problems:
        raise ConfigError("; ".join(problems))


def check_job_options(options: CloudRunJobOptions) -> None:
    """Refuse job settings Cloud Run would reject, all problems in one ConfigError."""
    problems = _container_problems(options.cpu, options.memory, options.env)
    if problems:
        raise ConfigError("; ".join(problems))


def _container_problems(cpu: str, memory: str, env: dict[str, str]) -> list[str]:
    """What Cloud Run would refuse in a container's CPU, memory and environment."""
    problems = []
    if _cpu_value(cpu) is None:
        problems.append(f"--cpu {cpu!r} is not a CPU amount (e.g. 1, 2, 0.5, 500m)")
    if not re.fullmatch(r"\d+(Mi|Gi|M|G)", memory):
        problems.append(f"--memory {memory!r} is not a memory amount (e.g. 512Mi, 2Gi)")
    for name in env:
        if name in _RESERVED_ENV or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"--env {name}: not a name Cloud Run accepts (reserved or invalid)")
    return problems


def check_canary_name(location: ServiceLocation) -> None:
    """A canary gets its own URL, ``canary---SERVICE``, which caps the service id's length."""
    if len(location.service) + len(CANARY_TAG) > _MAX_TAGGED:
        raise ConfigError(
            f"service name {location.service!r} is too long for a canary tag URL",
            hint=f"Use a --service of at most {_MAX_TAGGED - len(CANARY_TAG)} characters.",
        )


def _cpu_value(cpu: str) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", cpu)
    if not match:
        return None
    return float(match.group(1)) / (1000 if match.group(2) else 1)
