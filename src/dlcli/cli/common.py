"""What the command files of the CLI share: common options, the consoles, one-paragraph errors
and the closed choices of options, each validated once, by its type."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Literal, NoReturn, Optional

import typer

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


def stdout_console(wide: bool = False):
    """Console for results; `wide` tables are not squeezed to 80 columns in a pipe."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if wide and not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=160)
    return console


def error_console():
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
    from ..errors import printable

    # A file name whose bytes are not UTF-8 must not make the message itself fail to print.
    error_console().print(Text.from_ansi(f"{prefix}Error: {printable(message)}"))
    raise typer.Exit(code)


# What to lower when a command runs out of memory: its own option where it has one.
_MEMORY_ADVICE = {
    "train": "Use a smaller training.batch_size, a smaller model (dlcli summary shows its parameters) or "
    "data.max_train_samples.",
    "predict": "Use a smaller --batch-size, or predict on fewer inputs at a time.",
    "evaluate": "Use a smaller --batch-size.",
}


def handle_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..errors import DlcliError

        try:
            return fn(*args, **kwargs)
        except DlcliError as exc:
            fail(exc.full_message(), exc.exit_code)
        except KeyboardInterrupt:
            error_console().print("Interrupted.")
            raise typer.Exit(130) from None
        except (MemoryError, RuntimeError) as exc:  # PyTorch's allocators (CPU and CUDA) raise RuntimeErrors
            from ..errors import is_allocation_failure

            if not is_allocation_failure(exc):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            fail(f"Out of memory ({first}). {_MEMORY_ADVICE.get(fn.__name__, _MEMORY_ADVICE['train'])}", 1)
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                fail(
                    f"The disk is full ({exc.filename or 'writing the run folder'}). Free some space; "
                    "files already written in the run folder are complete.",
                    1,
                )
            raise

    return wrapper


def load_experiment(config: Optional[Path], overrides: Optional[list[str]]):
    from ..config import load_config

    return load_config(config, tuple(overrides or ()))


def located(config):
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


# -- closed choices ---------------------------------------------------------------------


class Checkpoint(str, Enum):
    """Which checkpoint of a run: best.pt or last.pt."""

    best = "best"
    last = "last"


class Split(str, Enum):
    test = "test"
    val = "val"


class ExportFormat(str, Enum):
    onnx = "onnx"
    pt2 = "pt2"


def choice(kind: type[Enum], option: str, note: str = "") -> Callable[[object], str]:
    """An option's parser for the values of `kind`: anything else is a usage error (exit 2) that
    names the valid values in one paragraph, e.g. `--checkpoint must be best or last, not 'x'.`

    The option is typed `str` and gets the plain value: typer before 0.29 runs its own Enum
    conversion after a custom parser and turned every default into None (found on the GPU
    machine, whose typer is older; `dlcli evaluate` failed there)."""
    values = [str(member.value) for member in kind]
    valid = " or ".join(values) if len(values) < 3 else ", ".join(values[:-1]) + " or " + values[-1]

    def parse(value: object) -> str:
        try:
            return str(kind(value).value)
        except ValueError:
            raise typer.BadParameter(f"{option} must be {valid}, not {value!r}{note}.") from None

    return parse


CheckpointOption = Annotated[
    str,
    typer.Option("--checkpoint", "-c", help="best or last.", parser=choice(Checkpoint, "--checkpoint")),
]
