"""The checks every built service must pass, shared by ``nb2prod build`` and the generated tests.

``nb2prod.smoke`` runs them against the container it starts; the build context's
``tests/test_container.py`` runs the same functions against the docker-compose
service. Keeping one copy means the two can never drift apart.

Standard library only (urllib, json, socket): the generated tests load this file
by path, so it must not need FastAPI or anything else from the serving stack.
Every check raises ``ContractCheckFailed`` with a message a CI log can show as is.
"""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: Relative tolerance for float predictions (labels compare exactly).
REL_TOL = 1e-6


class ContractCheckFailed(AssertionError):
    """Raised when the service answers differently from what its contract promises."""


class ParityMismatch(ContractCheckFailed):
    """Raised when served predictions differ from the model card's golden predictions."""

    def __init__(self, message: str, mismatches: list[tuple[int, Any, Any]]) -> None:
        super().__init__(message)
        self.mismatches = mismatches


def request_json(
    base_url: str, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any, str]:
    """Send one request; return (status, decoded JSON or None, raw text), also for 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 - base_url is the service under test
        base_url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode("utf-8", "replace")
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    return status, decoded, text


def wait_until_ready(
    base_url: str,
    *,
    timeout: float = 60.0,
    request_timeout: float = 0.5,
    interval: float = 0.05,
    still_running: Callable[[], bool] | None = None,
) -> float:
    """Poll ``/readyz`` until it answers 200; return the seconds it took.

    ``still_running`` is asked on every poll, so a service that died fails at once
    instead of after ``timeout``.
    """
    started = time.monotonic()
    last = "no answer yet"
    while time.monotonic() - started < timeout:
        if still_running is not None and not still_running():
            raise ContractCheckFailed(f"the service stopped before it was ready ({last})")
        try:
            status, _, text = request_json(base_url, "GET", "/readyz", timeout=request_timeout)
            if status == 200:
                return time.monotonic() - started
            last = f"/readyz answered {status}: {text[:200]}"
        except (OSError, urllib.error.URLError) as err:  # refused, reset, timed out
            last = f"/readyz: {err}"
        time.sleep(interval)
    raise ContractCheckFailed(f"not ready after {timeout:.0f} s ({last})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_prediction(expected: Any, got: Any, rel_tol: float = REL_TOL) -> bool:
    """Labels (str, int, bool) compare exactly, floats within ``rel_tol``, vectors elementwise."""
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(
            same_prediction(e, g, rel_tol) for e, g in zip(expected, got, strict=True)
        )
    if (
        _is_number(expected)
        and _is_number(got)
        and (isinstance(expected, float) or isinstance(got, float))
    ):
        if math.isnan(expected) or math.isnan(got):
            return math.isnan(expected) and math.isnan(got)
        return math.isclose(expected, got, rel_tol=rel_tol, abs_tol=1e-12)
    return bool(expected == got)


def compare_predictions(
    expected: Sequence[Any], got: Sequence[Any], rel_tol: float = REL_TOL
) -> list[tuple[int, Any, Any]]:
    """The (row, expected, got) triples that differ; a length mismatch counts the missing rows."""
    mismatches = []
    for row in range(max(len(expected), len(got))):
        want = expected[row] if row < len(expected) else "<missing>"
        have = got[row] if row < len(got) else "<missing>"
        if row >= len(expected) or row >= len(got) or not same_prediction(want, have, rel_tol):
            mismatches.append((row, want, have))
    return mismatches


def format_mismatches(mismatches: Sequence[tuple[int, Any, Any]], total: int) -> str:
    """A side-by-side table of mismatching rows: row, expected (notebook), got (service)."""
    cells = [("row", "expected (notebook)", "got (service)")]
    cells += [(str(row), json.dumps(want), json.dumps(have)) for row, want, have in mismatches]
    widths = [max(len(line[i]) for line in cells) for i in range(3)]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in cells
    ]
    header = f"{len(mismatches)} of {total} golden rows differ:"
    return "\n".join([header, *("  " + line.rstrip() for line in lines)])


def check_golden(
    base_url: str, card: Mapping[str, Any], golden: Mapping[str, Any], timeout: float = 30.0
) -> int:
    """POST the golden rows (model/golden.json) to /predict; ``ParityMismatch`` unless all match."""
    status, body, text = request_json(
        base_url, "POST", "/predict", {"instances": golden["rows"]}, timeout=timeout
    )
    if status != 200 or not isinstance(body, dict) or "predictions" not in body:
        raise ContractCheckFailed(
            f"POST /predict with the golden rows answered {status}: {text[:500]}"
        )
    mismatches = compare_predictions(golden["predictions"], body["predictions"])
    if mismatches:
        raise ParityMismatch(format_mismatches(mismatches, len(golden["rows"])), mismatches)
    if body.get("model_version") not in (None, card.get("model_version")):
        raise ContractCheckFailed(
            f"/predict reports model_version {body.get('model_version')!r}, "
            f"the card says {card.get('model_version')!r}"
        )
    return len(golden["rows"])


def _malformed_requests(
    card: Mapping[str, Any], golden: Mapping[str, Any]
) -> list[tuple[str, Any, str | None]]:
    """(what, body, field the answer must name) for requests the service must refuse with 422."""
    columns = card["input_schema"]["columns"]
    row = dict(golden["rows"][0])
    first = columns[0]["name"]
    missing = {k: v for k, v in row.items() if k != first}
    cases: list[tuple[str, Any, str | None]] = [
        ("an empty body", {}, None),
        (f"a row without column {first!r}", {"instances": [missing]}, first),
    ]
    numeric = [c["name"] for c in columns if c.get("kind") in ("number", "integer")]
    if numeric:
        cases.append(
            (
                f"a string in numeric column {numeric[0]!r}",
                {"instances": [{**row, numeric[0]: "not-a-number"}]},
                numeric[0],
            )
        )
    return cases


def check_typed_422(
    base_url: str, card: Mapping[str, Any], golden: Mapping[str, Any], timeout: float = 10.0
) -> int:
    """Malformed requests must get a 422 that names the field (never a 500); return how many."""
    cases = _malformed_requests(card, golden)
    for what, body, field in cases:
        status, decoded, text = request_json(base_url, "POST", "/predict", body, timeout=timeout)
        if status != 422:
            raise ContractCheckFailed(
                f"POST /predict with {what} answered {status}, not 422: {text[:300]}"
            )
        # compare decoded text: JSON escapes non-ASCII column names
        readable = text if decoded is None else json.dumps(decoded, ensure_ascii=False)
        if field is not None and field not in readable:
            raise ContractCheckFailed(f"the 422 for {what} does not name {field!r}: {text[:300]}")
    return len(cases)


def check_metrics(base_url: str, timeout: float = 5.0) -> None:
    """``/metrics`` must answer 200 in the Prometheus text format."""
    status, _, text = request_json(base_url, "GET", "/metrics", timeout=timeout)
    if status != 200 or "# TYPE" not in text:
        raise ContractCheckFailed(f"GET /metrics answered {status}: {text[:200]}")


def check_healthz(base_url: str, timeout: float = 5.0) -> None:
    """``/healthz`` (liveness) must answer 200."""
    status, _, text = request_json(base_url, "GET", "/healthz", timeout=timeout)
    if status != 200:
        raise ContractCheckFailed(f"GET /healthz answered {status}: {text[:200]}")


def check_graceful_shutdown(
    base_url: str,
    golden: Mapping[str, Any],
    send_sigterm: Callable[[], None],
    wait_for_exit: Callable[[float], int | None],
    grace_seconds: float = 10.0,
) -> float:
    """SIGTERM with a request in flight: the request completes, the service exits 0 in time.

    The request is truly in flight: its headers and half its body are sent before
    SIGTERM, the rest after. ``wait_for_exit(timeout)`` returns the exit code, or
    None if the service is still running. Returns the seconds from SIGTERM to exit.
    """
    parsed = urllib.parse.urlsplit(base_url)
    body = json.dumps({"instances": golden["rows"]}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {parsed.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    half = len(body) // 2
    with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), 10) as sock:
        sock.sendall(head + body[:half])
        time.sleep(0.2)  # let the server start the request before the signal arrives
        signalled = time.monotonic()
        send_sigterm()
        time.sleep(0.5)  # the server is shutting down now, with our request open
        sock.sendall(body[half:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    if status_line.split(" ")[1:2] != ["200"]:
        raise ContractCheckFailed(
            "the request in flight at SIGTERM did not complete: "
            f"{status_line or 'connection closed without an answer'}"
        )
    code = wait_for_exit(max(0.0, grace_seconds - (time.monotonic() - signalled)))
    took = time.monotonic() - signalled
    if code is None:
        raise ContractCheckFailed(f"still running {grace_seconds:.0f} s after SIGTERM")
    if code != 0:
        raise ContractCheckFailed(f"exited with code {code} after SIGTERM, not 0")
    return took
