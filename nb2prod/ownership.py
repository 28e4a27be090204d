"""Which nb2prod process owns a leftover, and whether that process is still alive.

A run that is killed outright (SIGKILL, a lost machine) cannot clean up after itself: its
staging directory stays beside the target and its containers keep running. Each run marks
what it creates with ``owner_token()``; the next run removes what ``is_alive`` says belongs
to a dead process. The token holds the host name, the pid and the process's start time, so
a pid reused by a later process, or a run on another machine sharing the folder or the
Docker engine, is never mistaken for the owner.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), "" where /proc has none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count from its last ")".
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def owner_token(pid: int | None = None) -> str:
    """``host:pid:start-time`` of this process (or ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def is_alive(token: str) -> bool:
    """False only when ``token`` names a process on this host that no longer runs.

    A token from another host, or one that cannot be parsed, counts as alive: nb2prod
    removes only what it knows to be abandoned.
    """
    host, _, rest = token.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    # The pid runs, but it is another process if it started at another time.
    return not started or _start_time(pid) in ("", started)
