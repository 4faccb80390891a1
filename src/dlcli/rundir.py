"""Run folders: creating them, writing their files atomically, reading them back.

Every write goes to a temporary file in the same folder, is flushed and fsynced, then
renamed over the target, so a crash at any instant leaves the old or the new version.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from .errors import RunDirError

METRICS_FILE = "metrics.csv"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.txt"
RESULTS_FILE = "results.json"
CHECKPOINTS = "checkpoints"
PREPROCESSING_FILE = "preprocessing.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` so that a crash (of the process or the machine) at any instant leaves its
    old or its new contents, never part of a file: the data goes to a temporary file in the
    same folder, fsynced, then renamed over the target.

    The folder is not fsynced after each rename: that only decides how soon the rename itself
    survives a power loss (until then the name still holds the old version, which is allowed),
    and it cost a third of each write on ext4 (a journal commit per file, four files per
    epoch). A run syncs its folders once when it finishes (`sync_folder`).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file -rw------- and the rename would carry that over; give it
        # the mode open() would: an existing file's own, else what the umask leaves of rw-rw-rw-.
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sync_folder(folder: Path) -> None:
    """Make the renames done in `folder` durable (fsync of the folder; a no-op where the OS
    cannot open or sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path} cannot be read as JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} does not hold a JSON object.")
    return data


def new_run_id(name: str, now: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{name}"


def create_run_dir(runs_root: Path, name: str) -> Path:
    """A new, never reused folder; two runs started in the same second get different ones."""
    runs_root = Path(runs_root)
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"Cannot create the runs folder {runs_root}: {exc.strerror or exc}.",
            hint="Choose a writable folder with --runs-dir PATH.",
        ) from None
    base = new_run_id(name)
    for attempt in range(1, 1000):
        run_id = base if attempt == 1 else f"{base}-{attempt}"
        path = runs_root / run_id
        try:
            path.mkdir()  # fails if it exists: that is what makes the id unique
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(
                f"Cannot create the run folder {path}: {exc.strerror or exc}.",
                hint="Choose a writable folder with --runs-dir PATH.",
            ) from None
        try:
            (path / CHECKPOINTS).mkdir()
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(
                f"The run folder {path} is not writable: {exc.strerror or exc}.",
                hint="Choose a writable folder with --runs-dir PATH.",
            ) from None
        return path
    raise RunDirError(f"Could not find a free run folder name under {runs_root}.")


def resolve_run(ref: str | Path, runs_root: Path) -> Path:
    """A run folder from a path, or from a bare id under the runs folder (which it cannot leave)."""
    path = Path(ref)
    if not path.exists():
        text = str(ref)
        if "/" not in text and "\\" not in text and text not in (".", ".."):
            path = Path(runs_root) / text
    if not path.is_dir():
        raise RunDirError(
            f"{str(ref)!r} is not a run folder (no such folder).",
            hint="Give a path such as runs/<id>; `dlcli runs` lists them.",
        )
    if not (path / RUN_FILE).is_file() and not (path / CONFIG_FILE).is_file():
        raise RunDirError(
            f"{str(ref)!r} is not a run folder: it has neither run.json nor config.yaml.",
            hint="Give a folder that `dlcli train` created, such as runs/<id>.",
        )
    return path


# -- metrics.csv ---------------------------------------------------------------------


def metrics_csv_text(rows: Iterable[dict[str, Any]], columns: list[str], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    return out.getvalue()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly, so reruns compare equal
    return "" if value is None else value


def write_metrics(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    atomic_write_text(path, metrics_csv_text(rows, columns))


def read_metrics(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows) of a metrics.csv; numbers as floats (epoch as int), blanks as None."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist.", hint="The run may not have finished an epoch yet.") from None
    except OSError as exc:
        raise RunDirError(f"Cannot read {path}: {exc}.") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    if "epoch" not in columns:
        raise RunDirError(f"{path} is not a dlcli metrics file (no epoch column).")
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key is None:
                raise RunDirError(f"{path}, line {line_no}: more values than columns.")
            if value in (None, ""):
                row[key] = None
                continue
            try:
                row[key] = int(value) if key == "epoch" else float(value)
            except ValueError:
                raise RunDirError(f"{path}, line {line_no}: {key} is {value!r}, not a number.") from None
        rows.append(row)
    return columns, rows


def update_run_json(run_dir: Path, **changes: Any) -> dict:
    path = Path(run_dir) / RUN_FILE
    data = read_json(path) if path.exists() else {}
    data.update(changes)
    write_json(path, data)
    return data


# -- one process per run folder --------------------------------------------------------

LOCK_FILE = ".lock"

# Locks this process holds, by folder. Training takes one and the CLI releases them all when
# the command ends; taking a folder this process already holds replaces the old handle (only
# another process is refused), so several trainings run one after another in one process
# (tests, notebooks) never lock themselves out.
_held_locks: dict[str, RunLock] = {}


class RunLock:
    """An exclusive flock(2) on `<run folder>/.lock`, which holds the owner's pid.

    The kernel drops the lock when its process ends, however it ends, so a lock whose process
    is gone is stale by construction; the file itself stays behind and is simply locked again.
    """

    def __init__(self, path: Path, fd: Optional[int]) -> None:
        self.path = path
        self.fd = fd  # None where the file system cannot lock: then the folder is unguarded

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
        if _held_locks.get(str(self.path)) is self:
            del _held_locks[str(self.path)]

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_run_dir(run_dir: Path) -> RunLock:
    """Hold the run folder for this process until it ends (or `release()`); a RunDirError naming
    the holder's pid if another live process holds it."""
    path = Path(run_dir) / LOCK_FILE
    key = str(path)
    if key in _held_locks:
        _held_locks[key].release()
    try:
        import fcntl
    except ImportError:  # not POSIX: no flock, no guard
        return RunLock(path, None)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(
            f"Cannot open the lock file {path}: {exc.strerror or exc}.", hint="Check that the run folder is writable."
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise RunDirError(
            f"The run folder {run_dir} is in use: {holder} is training in it, and two processes would "
            "overwrite each other's checkpoints and metrics.",
            hint="Wait until it finishes (or stop it), then resume; `dlcli runs` shows its status.",
        ) from None
    except OSError:  # a file system without flock (some network mounts): train unguarded
        os.close(fd)
        return RunLock(path, None)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{socket.gethostname()}\n".encode())
    lock = RunLock(path, fd)
    _held_locks[key] = lock
    return lock


def release_run_locks() -> None:
    """Release every run folder lock this process holds (the CLI does it when a command ends)."""
    for lock in list(_held_locks.values()):
        lock.release()


def _lock_holder(fd: int) -> str:
    """'process 1234' (on host h, when it is another machine) from a held lock file."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        lines = os.read(fd, 256).decode("utf-8", "replace").split()
    except OSError:
        lines = []
    if not lines or not lines[0].isdigit():
        return "another process"
    host = f" on {lines[1]}" if len(lines) > 1 and lines[1] != socket.gethostname() else ""
    return f"process {lines[0]}{host}"


def training_holder(run_dir: Path) -> Optional[str]:
    """'process 1234' when a live process holds the run folder's lock (it is training there),
    else None: for commands that read a run, to say why its files are not there yet."""
    path = Path(run_dir) / LOCK_FILE
    if str(path) in _held_locks or not path.exists():
        return None
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        return _lock_holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock taken to test it


# -- outputs that never destroy inputs ----------------------------------------------------


def check_output_file(
    path: Path,
    *,
    option: str,
    inputs: Iterable[Path] = (),
    run_dir: Optional[Path] = None,
    allowed_in_run: Iterable[str] = (),
    force: bool = False,
    written_by_dlcli: Optional[Any] = None,
) -> Path:
    """Where a command may write `path` (given with `option`, e.g. --out), or a RunDirError.

    Never one of the command's inputs (by any path or link to it), even with --force; never a
    file of a run folder other than those under `allowed_in_run` (its checkpoints, config and
    metrics are what every later command reads); an existing file only if dlcli wrote it
    (`written_by_dlcli(path)` says so) or with --force. A missing folder is created.
    """
    path = Path(path)
    if path.is_dir():
        raise RunDirError(f"{option} {path} is a folder.", hint=f"Give a file path such as {path / 'out'}.")
    target = path.resolve()
    for given in inputs:
        if Path(given).exists() and target.exists() and os.path.samefile(target, given):
            raise RunDirError(
                f"{option} {path} is the input {given}: writing there would replace it.",
                hint=f"Give {option} another file.",
            )
    if run_dir is not None:
        run = Path(run_dir).resolve()
        inside = target.is_relative_to(run) and not any(target.is_relative_to(run / a) for a in allowed_in_run)
        if inside:
            allowed = ", ".join(f"{run_dir}/{a}/" for a in allowed_in_run) or "nowhere in it"
            raise RunDirError(
                f"{option} {path} is inside the run folder {run_dir}, whose checkpoints, config and metrics later "
                "commands read.",
                hint=f"Write it outside the run folder, or under {allowed}.",
            )
    if target.exists() and not force and not (written_by_dlcli is not None and written_by_dlcli(target)):
        raise RunDirError(
            f"{option} {path} exists and was not written by dlcli.",
            hint="Pass --force to replace it, or give another file.",
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"Cannot create the folder {path.parent} for {option}: {exc.strerror or exc}.",
            hint="Check the path and its permissions.",
        ) from None
    return path
