"""The one exit path: an Nb2ProdError becomes ``Error: ...`` on stderr and its exit code.

Tracebacks only with ``--debug``; Ctrl-C exits 130 and SIGTERM 143, after every
``finally`` (staging directories, containers) has run.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ..errors import INTERRUPTED_EXIT_CODE, Nb2ProdError, Terminated
from .group import STATE, cli


def _raise_terminated(signum: int, frame: object) -> None:
    # A second SIGTERM must not cut the cleanup the first one started short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While nb2prod runs, SIGTERM raises Terminated (so every ``finally`` cleans up)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(err: BaseException) -> None:
    """Exit 130 after Ctrl-C, 143 after SIGTERM, with one line saying which."""
    if isinstance(err, Terminated):
        click.echo("Terminated.", err=True)
        sys.exit(Terminated.exit_code)
    click.echo("Interrupted.", err=True)
    sys.exit(INTERRUPTED_EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to exit codes."""
    with _sigterm_unwinds():
        _run(argv)


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="nb2prod", standalone_mode=False)
    except Nb2ProdError as err:
        if STATE["debug"]:
            traceback.print_exc()
        click.echo(f"Error: {err.message}", err=True)
        if err.hint:
            click.echo(f"Hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort as err:
        # click turns Ctrl-C (and Terminated) inside a command into Abort.
        if isinstance(err.__cause__, KeyboardInterrupt):
            _interrupted(err.__cause__)
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt as err:
        _interrupted(err)
    except Exception as err:  # a bug in nb2prod: still one line unless --debug
        if STATE["debug"]:
            raise
        click.echo(f"Error: unexpected {type(err).__name__}: {err}", err=True)
        click.echo("Hint: this is a bug in nb2prod; rerun with --debug and report it.", err=True)
        sys.exit(1)
    sys.exit(0)
