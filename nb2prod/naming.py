"""How a model's name becomes the names other systems accept.

One notebook stem turns into a Docker repository, an image tag, a Cloud Run
service id, a Kubernetes resource name and label values. Each system has its
own character rules; they live here, once, so the same notebook gets the same
names everywhere.
"""

from __future__ import annotations

import re

#: Cloud Run service ids and Kubernetes Service names are DNS-1035 labels.
DNS_LABEL_MAX = 63


def repository_name(name: str) -> str:
    """A Docker repository path component: lowercase ``[a-z0-9._-]``, no doubled separators."""
    value = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("._-")
    return re.sub(r"[._-]{2,}", "-", value) or "model"


def image_tag(version: str) -> str:
    """A Docker tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``), e.g. from a model version."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", version).lstrip(".-")
    return value[:128] or "latest"


def dns_label(name: str, max_length: int = DNS_LABEL_MAX) -> str:
    """A DNS-1035 label: lowercase letters, digits and ``-``, starting with a letter."""
    value = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]+", "-", name.lower())).strip("-")
    if not value[:1].isalpha():
        value = f"model-{value}".rstrip("-")
    return value[:max_length].rstrip("-")


def google_label_value(text: str) -> str:
    """A Google Cloud label value: lowercase ``[a-z0-9_-]``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower())[:63]


def mlflow_model_name(name: str) -> str:
    """An MLflow registered model name: no ``/`` or ``:`` (kept to ``[A-Za-z0-9_.-]``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("._-") or "model"


def kubernetes_label_value(text: str) -> str:
    """A Kubernetes label value: ``[A-Za-z0-9._-]``, alphanumeric at both ends, <= 63 chars."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63].strip("._-")
