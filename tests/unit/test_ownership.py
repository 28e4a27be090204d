"""Owner tokens: what tells a leftover of a killed run from one of a run still going."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from nb2prod.build.output import remove_abandoned_staging
from nb2prod.ownership import is_alive, owner_token


def finished_pid() -> int:
    """The pid of a process that has already exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_this_process_is_alive_and_a_finished_one_is_not() -> None:
    assert owner_token().split(":")[:2] == [socket.gethostname(), str(os.getpid())]
    assert is_alive(owner_token())
    assert not is_alive(f"{socket.gethostname()}:{finished_pid()}:")


def test_a_reused_pid_is_not_the_owner() -> None:
    host, pid, started = owner_token().split(":")
    assert started, "Linux's /proc gives every process a start time"
    assert not is_alive(f"{host}:{pid}:{int(started) - 1}")


def test_another_hosts_or_an_unreadable_token_counts_as_alive() -> None:
    assert is_alive(f"not-{socket.gethostname()}:{finished_pid()}:1")
    assert is_alive("garbage")


def test_only_abandoned_staging_holders_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "build" / "nb"
    dead = target.parent / ".nb.dead1"
    emptied = target.parent / ".nb.empty1"  # what Docker recreates for a late bind mount
    running = target.parent / ".nb.live1"
    unmarked = target.parent / ".nb.nomark"
    other = target.parent / ".nbx.dead2"
    gone = f"{socket.gethostname()}:{finished_pid()}:"
    for holder, token in [
        (dead, gone),
        (emptied, None),
        (running, owner_token()),
        (unmarked, None),
        (other, gone),
    ]:
        (holder / "nb").mkdir(parents=True)
        if holder != emptied:
            (holder / "nb" / "train.py").write_text("print()\n")
        if token is not None:
            (holder / ".owner").write_text(token + "\n")

    assert sorted(remove_abandoned_staging(target)) == sorted([dead, emptied])
    assert not dead.exists() and not emptied.exists()
    assert running.is_dir() and unmarked.is_dir() and other.is_dir()
