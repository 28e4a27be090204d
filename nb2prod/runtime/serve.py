"""The container's entry point: serve ``serving:app`` on ``0.0.0.0:$PORT``.

The Dockerfile runs ``python -m nb2prod_runtime.serve`` in exec form, so Python is
PID 1 and receives SIGTERM itself; reading ``PORT`` here (default 8080) is what
Cloud Run and Knative require, and what an exec-form CMD cannot expand.
``python -m nb2prod_runtime.serve --healthcheck`` is the image's HEALTHCHECK: the
image has no curl, so it asks ``/healthz`` with urllib and exits 0 or 1.
"""

from __future__ import annotations

import gc
import os
import sys
import urllib.request

#: Seconds uvicorn waits for requests in flight after SIGTERM; below Cloud Run's 10 s grace.
GRACEFUL_SHUTDOWN_SECONDS = 8


def port() -> int:
    """The port to listen on: ``$PORT``, 8080 when unset."""
    return int(os.environ.get("PORT", "8080"))


def healthcheck(timeout: float = 2.0) -> int:
    """Exit status for Docker's HEALTHCHECK: 0 when ``/healthz`` answers 200, else 1."""
    url = f"http://127.0.0.1:{port()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return 0 if resp.status == 200 else 1
    except OSError:
        return 1


def main(argv: list[str] | None = None) -> int:
    """Run the service (or the healthcheck with ``--healthcheck``)."""
    args = sys.argv[1:] if argv is None else argv
    if "--healthcheck" in args:
        return healthcheck()
    # Start-up imports the model's libraries and loads the model: about a million objects
    # that live as long as the process. Collecting them while they are created costs
    # ~0.2 s of start-up (measured in the image); the app's lifespan turns the collector
    # back on once the model is loaded.
    gc.disable()
    import uvicorn  # only the server path needs it; the healthcheck stays fast

    uvicorn.run(
        "serving:app",
        host="0.0.0.0",
        port=port(),
        access_log=False,  # the app logs each request as one JSON line itself
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
