"""The dlcli command line: the only place that prints errors and chooses exit codes.

One Typer app; its commands live by theme in `train.py` (train) and `inspect.py` (summary,
plot, runs, compare, evaluate), and this module holds what they share. Heavy modules
(torch, matplotlib) are imported inside the commands that need them, so `dlcli --help`
answers at once.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Literal, NoReturn, Optional

import typer

app = typer.Typer(
    name="dlcli",
    help="Train, inspect and compare deep-learning experiments described in YAML files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds the run folders.")]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key by dotted path, e.g. training.epochs=1 (repeatable).",
    ),
]


def _stdout_console(wide: bool = False):
    """Console for results; `wide` tables are not squeezed to 80 columns in a pipe."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if wide and not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=160)
    return console


def _error_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one paragraph to stderr and exit; never a traceback for a user's mistake."""
    import os

    from rich.text import Text

    rank = os.environ.get("RANK", "0")
    # Under torchrun every process reports; say which one, so repeated lines read as such.
    prefix = f"[rank {rank}] " if rank != "0" and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    # from_ansi: a library's own colour codes in a message (torch.export's) become styles, which
    # a terminal shows and a pipe or log file drops, instead of raw escape sequences.
    _error_console().print(Text.from_ansi(f"{prefix}Error: {message}"))
    raise typer.Exit(code)


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


def handle_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import DlcliError

        try:
            return fn(*args, **kwargs)
        except DlcliError as exc:
            fail(exc.full_message(), exc.exit_code)
        except KeyboardInterrupt:
            _error_console().print("Interrupted.")
            raise typer.Exit(130) from None
        except MemoryError:
            fail("Out of memory. Use a smaller training.batch_size or data.max_train_samples.", 1)
        except RuntimeError as exc:  # PyTorch's allocators (CPU and CUDA) raise RuntimeErrors
            from ..errors import is_allocation_failure

            if not is_allocation_failure(exc):
                raise
            first = str(exc).strip().splitlines()[0][:300]
            fail(
                f"Out of memory ({first}). Use a smaller training.batch_size, a smaller model "
                "(dlcli summary shows its parameters) or data.max_train_samples.",
                1,
            )
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                fail(
                    f"The disk is full ({exc.filename or 'writing the run folder'}). Free some space; "
                    "files already written in the run folder are complete.",
                    1,
                )
            raise

    return wrapper


def _load(config: Optional[Path], overrides: Optional[list[str]]):
    from ..config import load_config

    return load_config(config, tuple(overrides or ()))


def _located(config):
    """Adds the file and line (or --set) to config errors found after loading, such as an
    unknown dataset name or a loss that does not fit the data."""
    return _Located(config)


class _Located:
    def __init__(self, config) -> None:
        self.config = config

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> Literal[False]:
        from ..config import locate
        from ..errors import ConfigError

        if isinstance(exc, ConfigError):
            locate(self.config, exc)
        return False


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

    After torch (and the torch._dynamo that any optimizer imports) that teardown took 1 to 2 s
    on the two-core machine, and 0.15 s with `os._exit`: time a user waits for nothing, as the
    OS frees the memory anyway. What an exit does that matters still happens first: the exit
    handlers run (logging, MLflow, coverage, temporary folders) and stdout and stderr are
    flushed. Returns instead (a normal exit follows) for an exit message, under a profiler,
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


# Registering order is the order `dlcli --help` lists the commands in: train first, then the
# commands that look inside runs, use them, and sweep (a sub-app that registers itself).
# isort: off
from . import train  # noqa: E402,F401
from . import inspect  # noqa: E402,F401
from . import use  # noqa: E402,F401
from . import sweep  # noqa: E402,F401
# isort: on

if __name__ == "__main__":
    main()
