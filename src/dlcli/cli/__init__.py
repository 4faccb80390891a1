"""The dlcli command line: the only place that prints errors and chooses exit codes.

The root Typer app; each command file has its own and is added here: `train.py` (train),
`inspect.py` (summary, plot, runs, compare, evaluate, info), `use.py` (predict, export) and
`sweep.py` (the `sweep` group), `share.py` (schema, report), `cache.py` (the `cache` group); what they share is in `common.py`. Heavy modules (torch,
matplotlib) are imported inside the commands that need them, so `dlcli --help` answers at once.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from . import cache, cv, inspect, share, sweep, train, tune, use
from .common import fail, handle_errors

__all__ = ["app", "fail", "handle_errors", "main"]

app = typer.Typer(
    name="dlcli",
    help="Train, inspect and compare deep-learning experiments described in YAML files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# The order they are added is the order `dlcli --help` lists the commands in: train first, then
# the commands that look inside runs, use them, and sweep.
app.add_typer(train.app)
app.add_typer(inspect.app)
app.add_typer(use.app)
app.add_typer(sweep.app, name="sweep")
app.add_typer(cv.app, name="cv")
app.add_typer(tune.app)
app.add_typer(share.app)
app.add_typer(cache.app, name="cache")


def _print_version(value: bool) -> None:
    if value:
        import platform

        from .. import __version__

        typer.echo(f"dlcli {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print dlcli's version and exit."),
    ] = None,
) -> None:
    """Train, inspect and compare deep-learning experiments described in YAML files."""


def main() -> None:
    # One program name however it is started (`dlcli` or `python -m dlcli`): usage lines and
    # shell completion (which reads _DLCLI_COMPLETE) depend on it.
    caller = sys._getframe(1)  # the program itself (`dlcli`, `python -m dlcli`), not a function calling main()
    as_program = caller.f_code.co_name == "<module>" and caller.f_globals.get("__name__") == "__main__"
    try:
        app(prog_name="dlcli")
    except SystemExit as exc:
        if as_program:
            _exit_without_teardown(exc.code)
        raise


def _exit_without_teardown(code: object) -> None:
    """End the process now, skipping the interpreter's teardown of every module and object.

    After torch (and the torch._dynamo that any optimizer imports) that teardown takes seconds
    (benchmarks/RESULTS.md): time a user waits for nothing, as the OS frees the memory anyway.
    What an exit does that matters still happens first: the exit handlers run (logging, MLflow,
    coverage, temporary folders) and stdout and stderr are flushed. Returns instead (a normal exit follows) for an exit message, under a profiler,
    tracer or coverage, while a non-daemon thread still runs, or when flushing fails.
    """
    import atexit
    import os
    import threading

    if code is not None and not isinstance(code, int):
        return
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    atexit._run_exitfuncs()  # runs each handler once and clears them, as the normal exit would
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return  # Python reports a closed pipe as it always does
    os._exit(code or 0)
