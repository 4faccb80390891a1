"""What every tracker shares: hooks that cannot raise, one warning, then silence."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Optional

from ..engine import EpochSaver

STATUSES = ("completed", "failed", "interrupted")
PARENT_RUN_ENV = "DLCLI_MLFLOW_PARENT_RUN_ID"
"""A sweep sets this to its MLflow parent run's id; each trial's run becomes a child of it."""


class Tracker(EpochSaver):
    """An engine callback that logs to one backend and switches itself off at its first failure.
    Its `save` logs the epochs given, so that in a RunFolderWriter a dashboard is never ahead
    of last.pt (a resumed run would log those epochs twice).

    Subclasses do their work in methods run through `_guard`; any exception there becomes one
    line through `warn`, and every later hook does nothing, so a dead server costs at most one
    bounded wait, not one per epoch.
    """

    backend = "tracking"

    def __init__(self, warn: Callable[[str], None]) -> None:
        self.warn = warn
        self.failed = False
        self.finished = False

    def finish(self, status: str) -> None:
        """Called once when the run folder is final (results.json and plots written); `status`
        is completed, failed or interrupted."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if not self.finished:
            self.finished = True
            self._guard(self._finish, status)
            self._close()

    # -- for subclasses ------------------------------------------------------------

    def _finish(self, status: str) -> None: ...

    def _close(self) -> None:
        """Release files and connections; must not raise."""

    def _context(self) -> ContextManager[Any]:
        """Entered around every guarded call (MLflow's bounded timeouts, quiet loggers)."""
        return contextlib.nullcontext()

    def _describe_failure(self, exc: BaseException) -> str:
        return describe_os_error(exc) or f"{type(exc).__name__}: {exc}"

    def _guard(self, action: Callable[..., Any], *args: Any) -> None:
        if self.failed:
            return
        try:
            with self._context():
                action(*args)
        except Exception as exc:  # a tracker must never cost the run
            self.failed = True
            self._close()
            reason = " ".join(self._describe_failure(exc).split())  # one line, whatever the library said
            if len(reason) > 300:
                reason = reason[:297] + "..."
            self.warn(
                f"Warning: {self.backend} logging stopped for this run ({reason}). "
                "Training continues; the run folder keeps everything."
            )


def describe_os_error(exc: BaseException) -> Optional[str]:
    """A file system failure in the user's terms (which path, what is wrong), or None."""
    if isinstance(exc, NotADirectoryError):
        return f"a file is in the way where the folder {exc.filename or 'for the logs'} is needed"
    if isinstance(exc, PermissionError):
        return f"no permission to write {exc.filename or 'the log folder'}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return None
