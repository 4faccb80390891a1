"""Errors that dlcli raises for problems a user can fix.

Only the CLI catches these: it prints the message as one paragraph and exits with
``exit_code``. Everything else (a bug) keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional


class DlcliError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message.rstrip()
        self.hint = hint
        super().__init__(self.full_message())

    def full_message(self) -> str:
        if self.hint:
            text = self.message if self.message.endswith((".", "?", "!", ":")) else self.message + "."
            return f"{text} {self.hint}"
        return self.message


class ConfigError(DlcliError):
    """The experiment file or a --set override is wrong.

    `key` is the dotted key path at fault, when the error is found after loading (an unknown
    dataset name, a loss that does not fit): the CLI layer then adds the file and line.
    """

    def __init__(self, message: str, *, hint: str | None = None, key: str | None = None) -> None:
        self.key = key
        super().__init__(message, hint=hint)


class DataError(DlcliError):
    """The dataset cannot be found, read or used as configured."""


class RunDirError(DlcliError):
    """A run folder cannot be created, read or resumed."""


class CheckpointError(RunDirError):
    """A checkpoint is missing, corrupted or belongs to another model."""


class DeviceError(DlcliError):
    """The requested device or a device-only option is not available."""


class TrainingDiverged(DlcliError):
    """The loss became NaN or infinite; the run stops and is marked failed."""

    exit_code = 1

    def __init__(self, epoch: int, step: int, value: float) -> None:
        self.epoch = epoch
        self.step = step
        self.value = value
        super().__init__(
            f"Training diverged: the loss became {value} at epoch {epoch}, step {step}.",
            hint="Lower the learning rate (for example --set optimizer.lr=0.0001) or check the "
            "data for NaN values; the last good checkpoint is kept in the run folder.",
        )


class TrainingInterrupted(Exception):
    """Training was asked to stop by a signal; carries the exit code the shell expects, and,
    once training has a run folder, that folder (to resume) and, under torchrun, the failure of
    another process that stopped this one (None when a person stopped it)."""

    def __init__(self, signal_name: str, run_dir: Optional[Path] = None, failure: Optional[str] = None) -> None:
        self.signal_name = signal_name
        self.exit_code = 143 if signal_name == "SIGTERM" else 130
        self.run_dir = run_dir
        self.failure = failure
        super().__init__(f"interrupted by {signal_name}")


# -- the machine's limits: sizes that cannot be allocated ----------------------------------------


class WorkerFailed(DlcliError):
    """A process that dlcli started (a data-parallel rank) failed and has printed its own
    message; this one says where to look. Not the user's typo: exit 1."""

    exit_code = 1


class ResourceError(DlcliError):
    """The machine cannot hold what the config asks for (memory); not the user's typo, so exit 1."""

    exit_code = 1


# How the allocators word a failure: the CPU allocator (glibc's and Windows'), CUDA's caching allocator.
_ALLOCATION_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def is_allocation_failure(exc: BaseException) -> bool:
    """True for PyTorch's and Python's out-of-memory errors (CPU allocator, CUDA caching allocator)."""
    if isinstance(exc, MemoryError) or any(t.__name__ == "OutOfMemoryError" for t in type(exc).__mro__):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(words in text for words in _ALLOCATION_WORDS)


def printable(text: str) -> str:
    """Text as UTF-8 can hold it: bytes of a file name that are not UTF-8 (which Python keeps as
    lone surrogates, and which no UTF-8 terminal or file takes) written as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
