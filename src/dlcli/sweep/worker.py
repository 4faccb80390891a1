"""Running a sweep's trials: each one an ordinary `dlcli train` in a process of its own.

A `SweepRun` runs N worker threads in this process; each claims an enqueued trial from the
study, prepares its run folder (config.yaml, trial.json), starts
`python -m dlcli train <folder>/config.yaml --sweep-trial <folder>` with its share of the CPU
threads and its own GPU, waits for it, and tells the study how it ended. A trial that crashes,
diverges or runs out of memory fails alone, with its message recorded.

Stopping: Ctrl-C (or SIGTERM) is forwarded once to every running trial, which stops at the end
of its step exactly like `dlcli train` does (its folder keeps every complete epoch) and stays
`running` in the study; a second Ctrl-C stops them at once. `dlcli sweep resume` continues
such trials, and trials whose processes were killed outright, in their own folders.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import dump_config
from ..errors import DlcliError
from ..rundir import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FILE,
    atomic_write_text,
    read_json,
    read_metrics,
    write_json,
)
from ..runs import process_alive
from .spec import (
    TRIAL_FILE,
    TRIALS_DIR,
    SweepSpec,
    best_value,
    check_config,
    cpu_count,
    trial_dir_name,
    unfit_trial_message,
)

HEARTBEAT_S = 30.0  # a running trial's worker writes a heartbeat this often
STALE_AFTER_S = 300.0  # a trial of another machine whose heartbeat is this old is considered dead
LOG_FILE = "output.log"  # the trial process's stdout and stderr, in its run folder
POLL_S = 0.25


@dataclass
class RunOptions:
    workers: int = 1
    max_failures: Optional[int] = None
    fail_fast: bool = False
    # How to start `dlcli`; the tests and benchmarks use this interpreter and its path.
    python: list[str] = field(default_factory=lambda: [sys.executable, "-m", "dlcli"])
    gpus: Optional[list[str]] = None  # None: found out (CUDA_VISIBLE_DEVICES, else all GPUs)
    recover_stale: bool = False  # `resume`: continue trials whose process is gone


@dataclass
class TrialView:
    """What the display and the summary show of a trial while this process runs it."""

    number: int
    trial_id: int
    params: dict[str, Any]
    folder: Path
    status: str = "running"
    started: float = field(default_factory=time.time)
    finished: Optional[float] = None
    value: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_done: int = 0
    epochs: Optional[int] = None
    error: Optional[str] = None
    slot: int = 0
    resumed: bool = False


@dataclass
class SweepOutcome:
    counts: dict[str, int]
    planned: int
    stopped: Optional[str] = None  # why the sweep stopped early: "interrupted" or a failure message
    signal_name: Optional[str] = None


def detect_gpus() -> list[str]:
    """The GPUs trials may use: those CUDA_VISIBLE_DEVICES names, else all that torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def last_error_line(log: Path) -> Optional[str]:
    """The error a trial process printed last (dlcli's `Error: ...` line, or a traceback's last)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 20_000))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if line.startswith("Error: "):
            return line[len("Error: ") :]
    return lines[-1] if lines else None


def describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        if name == "SIGKILL":
            return "the trial process was killed by SIGKILL (out of memory, or killed by hand)"
        return f"the trial process was killed by {name}"
    return f"the trial process exited with code {code}"


def trial_epochs(folder: Path) -> Optional[int]:
    """training.epochs of the trial prepared in this folder."""
    import yaml

    try:
        return int(yaml.safe_load((folder / CONFIG_FILE).read_text())["training"]["epochs"])
    except Exception:
        return None


def finished_unrecorded(folder: Path) -> Optional[str]:
    """How a trial ended whose process finished (or was pruned) before its sweep could record
    it: completed or pruned, else None."""
    try:
        info = read_json(folder / RUN_FILE)
    except DlcliError:
        return None
    status = info.get("status")
    if status in ("completed", "pruned"):
        return status
    if info.get("pruned_at_epoch") is not None:
        return "pruned"
    epochs, done = info.get("epochs"), info.get("epochs_completed") or 0
    if status in ("running", "interrupted") and epochs and done >= epochs:
        return "completed"  # killed after its last epoch, while testing or plotting
    return None


def wait_for_orphan(folder: Path, host: str, stopping: Callable[[], bool]) -> None:
    """A killed sweep's trial notices within a step and stops; wait for it before going on."""
    try:
        info = read_json(folder / RUN_FILE)
    except DlcliError:
        return
    pid = info.get("pid")
    if info.get("status") != "running" or info.get("host") != host or not pid:
        return
    deadline = time.monotonic() + 120
    while process_alive(int(pid)) and time.monotonic() < deadline and not stopping():
        time.sleep(POLL_S)


def write_trial_file(folder: Path, sweep_dir: Path, spec: SweepSpec, view: TrialView, storage_url: str) -> None:
    """trial.json: what the trial's process needs to report to its sweep."""
    write_json(
        folder / TRIAL_FILE,
        {
            "sweep": spec.id,
            "sweep_dir": str(sweep_dir.resolve()),
            "number": view.number,
            "trial_id": view.trial_id,
            "params": view.params,
            "metric": spec.metric,
            "direction": spec.direction,
            "prune": spec.prune,
            "prune_startup_trials": spec.prune_startup_trials,
            "prune_warmup_epochs": spec.prune_warmup_epochs,
            "storage": storage_url,
        },
    )


class TrialProcesses:
    """The trial processes this sweep process runs: each `dlcli train` started in a session of
    its own with its share of the CPU threads and one GPU, its heartbeat kept in the study, and
    all of them told to stop at once. None starts after a stop."""

    def __init__(self, options: RunOptions, gpus: list[str]) -> None:
        self.options = options
        self.gpus = gpus
        self.lock = threading.Lock()
        self.stopped = False
        self.running: dict[int, subprocess.Popen] = {}

    def stop_all(self, signal_name: str) -> None:
        with self.lock:
            self.stopped = True
            procs = list(self.running.values())
        for proc in procs:
            try:
                proc.send_signal(signal.SIGINT if signal_name == "SIGINT" else signal.SIGTERM)
            except ProcessLookupError:
                pass

    def environment(self, slot: int) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        workers = max(1, self.options.workers)
        if "OMP_NUM_THREADS" not in os.environ:
            # torch sizes its CPU thread pool from OMP_NUM_THREADS: the cores are shared out
            # instead of every trial taking all of them and all running slower.
            threads = str(max(1, cpu_count() // workers))
            env["OMP_NUM_THREADS"] = threads
            env["MKL_NUM_THREADS"] = threads
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        return env

    def run(self, slot: int, folder: Path, trial_id: int, study: Any) -> tuple[int, float]:
        """Run the trial prepared in `folder` to its end: (exit code, seconds)."""
        cmd = [*self.options.python, "train", str(folder / CONFIG_FILE), "--sweep-trial", str(folder)]
        started = time.monotonic()
        with open(folder / LOG_FILE, "ab") as log:
            with self.lock:
                if self.stopped:
                    return 130, 0.0
                # A session of its own: a Ctrl-C on the terminal reaches the sweep alone, which
                # forwards it exactly once (twice would stop the trial mid-step).
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(slot),
                    start_new_session=True,
                )
                self.running[trial_id] = proc
        try:
            study.set_attrs(trial_id, pid=proc.pid)
            code = self._wait(proc, trial_id, study)
        finally:
            with self.lock:
                self.running.pop(trial_id, None)
        return code, time.monotonic() - started

    def _wait(self, proc: subprocess.Popen, trial_id: int, study: Any) -> int:
        next_beat = time.monotonic() + HEARTBEAT_S
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_S
                try:
                    study.set_attrs(trial_id, heartbeat=time.time())
                except Exception:
                    pass  # a missed heartbeat is not worth a trial


class SweepRun:
    def __init__(
        self,
        sweep_dir: Path,
        spec: SweepSpec,
        study: Any,
        storage_url: str,
        options: RunOptions,
        on_event: Optional[Callable[[str, TrialView], None]] = None,
    ) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.spec = spec
        self.study = study
        self.storage_url = storage_url
        self.options = options
        self.views: dict[int, TrialView] = {}
        self.events: queue.Queue[tuple[str, TrialView]] = queue.Queue()
        self.on_event = on_event
        self.lock = threading.Lock()
        self.summary_lock = threading.Lock()
        self.stop_reason: Optional[str] = None
        self.signal_name: Optional[str] = None
        self.stop_requests = 0
        self._stale: list[int] = []
        self.host = socket.gethostname()
        self.failures_seen = 0
        device = str(spec.base.get("device", "auto"))
        if options.gpus is not None:
            gpus = list(options.gpus)
        elif device in ("auto", "cuda"):
            gpus = detect_gpus()
        else:
            gpus = []  # the CPU, or a GPU the config names itself (cuda:N)
        self.processes = TrialProcesses(options, gpus)

    # -- stopping --------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop_requests > 0

    def request_stop(self, reason: str, signal_name: str = "SIGINT") -> None:
        """First call: running trials stop at the end of their step; second: at once."""
        with self.lock:
            self.stop_requests += 1
            if self.stop_reason is None:
                self.stop_reason, self.signal_name = reason, signal_name
        self.processes.stop_all(signal_name)

    # -- finding work --------------------------------------------------------------------

    def find_stale(self) -> list[int]:
        """Trials the study says are running but whose worker is gone: killed on this machine
        (its process id no longer exists), or silent elsewhere for STALE_AFTER_S."""
        stale = []
        now = time.time()
        for t in self.study.trials():
            if t.state != "running":
                continue
            host, pid = t.attrs.get("host"), t.attrs.get("worker_pid")
            if host == self.host and pid:
                if int(pid) == os.getpid() or process_alive(int(pid)):
                    continue
            elif host is not None:
                if now - float(t.attrs.get("heartbeat", 0)) < STALE_AFTER_S:
                    continue
            elif t.started is not None and now - t.started < 60:
                continue  # claimed a moment ago by a worker that has not written its name yet
            stale.append(t.trial_id)
        return stale

    def _next_trial(self) -> Optional[int]:
        with self.lock:
            if self._stale:
                return self._stale.pop(0)
        return self.study.claim_waiting()

    # -- running -------------------------------------------------------------------------

    def run(self, refresh: Optional[Callable[[], None]] = None) -> SweepOutcome:
        if self.options.recover_stale:
            self._stale = self.find_stale()
        threads = []
        for slot in range(max(1, self.options.workers)):
            thread = threading.Thread(target=self._worker, args=(slot,), name=f"sweep-worker-{slot}", daemon=True)
            thread.start()
            threads.append(thread)
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=POLL_S / len(threads))
            self._drain_events()
            if refresh is not None:
                refresh()
        self._drain_events()
        counts: dict[str, int] = {}
        for t in self.study.trials():
            state = t.state
            if state == "running" and t.attrs.get("status") == "interrupted":
                state = "interrupted"
            counts[state] = counts.get(state, 0) + 1
        return SweepOutcome(counts, self.study.planned(), self.stop_reason, self.signal_name)

    def _drain_events(self) -> None:
        while True:
            try:
                kind, view = self.events.get_nowait()
            except queue.Empty:
                return
            if self.on_event is not None:
                self.on_event(kind, view)

    def _emit(self, kind: str, view: TrialView) -> None:
        self.events.put((kind, view))

    def _worker(self, slot: int) -> None:
        while not self.stopping:
            try:
                trial_id = self._next_trial()
            except Exception as exc:  # the storage is away: stop this worker, say why
                self.request_stop(f"the sweep's storage failed: {exc}")
                return
            if trial_id is None:
                return
            try:
                self._run_trial(slot, trial_id)
            except Exception as exc:  # a bug or a storage failure: record it, keep the others going
                self._record_failure(trial_id, f"{type(exc).__name__}: {exc}")
            self._write_summary()

    def _write_summary(self) -> None:
        """summary.csv and best.yaml stay current while the sweep runs, not only at its end."""
        from .results import rows_from_study, write_summaries

        try:
            with self.summary_lock:
                write_summaries(
                    self.sweep_dir, self.spec, rows_from_study(self.sweep_dir, self.spec, self.study.trials())
                )
        except Exception:
            pass  # written again when the sweep ends; never worth a trial

    def _record_failure(self, trial_id: int, message: str, view: Optional[TrialView] = None) -> None:
        try:
            self.study.set_attrs(trial_id, status="failed", error=message)
            self.study.finish(trial_id, "failed")
        except Exception:
            pass
        if view is not None:
            view.status, view.error, view.finished = "failed", message, time.time()
            self._emit("finished", view)
        self._after_failure(message)

    def _after_failure(self, message: str) -> None:
        with self.lock:
            self.failures_seen += 1
        limit = 1 if self.options.fail_fast else self.options.max_failures
        if limit is None:
            return
        failed = sum(1 for t in self.study.trials() if t.state == "failed")
        if failed >= limit:
            flag = "--fail-fast" if self.options.fail_fast else f"--max-failures {limit}"
            self.request_stop(f"{failed} trial(s) failed ({flag}); the last: {message}")

    def _run_trial(self, slot: int, trial_id: int) -> None:
        spec = self.spec
        number = self.study.trial_number(trial_id)
        folder = self.sweep_dir / TRIALS_DIR / trial_dir_name(number, spec.name)
        params = self.study.suggest(trial_id, spec.space)
        view = TrialView(number, trial_id, params, folder, slot=slot)
        with self.lock:
            self.views[number] = view
        self.study.set_attrs(
            trial_id,
            folder=str(folder.relative_to(self.sweep_dir)),
            host=self.host,
            worker_pid=os.getpid(),
            heartbeat=time.time(),
            status="running",
        )
        if (folder / CONFIG_FILE).is_file():
            view.resumed = True
            done = finished_unrecorded(folder)
            if done is not None:
                self._emit("started", view)
                self._finish_from_folder(view, done)
                return
            wait_for_orphan(folder, self.host, lambda: self.stopping)
        else:
            try:
                config = spec.trial_config(params)
                check_config(config)
            except DlcliError as exc:
                self._emit("started", view)
                self._record_failure(trial_id, unfit_trial_message(params, exc), view)
                return
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CHECKPOINTS).mkdir(exist_ok=True)
            atomic_write_text(folder / CONFIG_FILE, dump_config(config))
        view.epochs = trial_epochs(folder)
        write_trial_file(folder, self.sweep_dir, spec, view, self.storage_url)
        self._emit("started", view)
        code, seconds = self.processes.run(slot, folder, trial_id, self.study)
        previous = float(self._attr(trial_id, "seconds", 0.0) or 0.0)
        self.study.set_attrs(trial_id, seconds=round(previous + seconds, 3))
        self._conclude(view, code)

    def _attr(self, trial_id: int, key: str, default: Any = None) -> Any:
        try:
            return self.study.trial(trial_id).attrs.get(key, default)
        except StopIteration:
            return default

    def _conclude(self, view: TrialView, code: int) -> None:
        folder = view.folder
        try:
            info = read_json(folder / RUN_FILE)
        except DlcliError:
            info = {}
        status = info.get("status")
        if code == 0 and status in ("completed", "pruned"):
            self._finish_from_folder(view, status)
            return
        interrupted = code in (130, 143, -signal.SIGINT, -signal.SIGTERM)
        if interrupted and self.stopping:
            view.status, view.finished = "interrupted", time.time()
            self.study.set_attrs(view.trial_id, status="interrupted")
            self._emit("finished", view)  # stays running in the study: `dlcli sweep resume` continues it
            return
        if status == "failed" and info.get("error"):
            message = str(info["error"])
        else:
            line = last_error_line(folder / LOG_FILE)
            message = line if code > 0 and line else describe_exit(code)
        if "has already finished" in message:  # e.g. it had stopped early before a kill
            self._finish_from_folder(view, "completed")
            return
        view.epochs_done = int(info.get("epochs_completed") or 0)
        self._record_failure(view.trial_id, message, view)

    def _finish_from_folder(self, view: TrialView, status: str) -> None:
        """Tell the study a trial's end as its run folder records it."""
        spec = self.spec
        try:
            _, rows = read_metrics(view.folder / METRICS_FILE)
        except DlcliError:
            rows = []
        value, epoch = best_value(rows, spec.metric, spec.direction)
        view.value, view.best_epoch = value, epoch
        view.epochs_done = int(rows[-1]["epoch"]) if rows else 0
        view.finished = time.time()
        attrs = {"status": status, "best_value": value, "best_epoch": epoch, "epochs": view.epochs_done}
        if status == "completed" and value is None:
            self._record_failure(view.trial_id, f"the run logged no finite value of {spec.metric}", view)
            return
        self.study.set_attrs(view.trial_id, **attrs)
        self.study.finish(view.trial_id, status, value)
        if status == "pruned":
            from ..rundir import update_run_json

            update_run_json(view.folder, status="pruned")
        view.status = status
        self._emit("finished", view)
