"""Callbacks that keep the run folder current: metrics.csv, run.json, early stopping, and the
writer that decides when the folder catches up with training.

(The checkpointer lives with the checkpoint format, in checkpoint.py.)

Each writes through rundir's atomic helpers, so the folder is always whole, at a complete epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .checkpoint import model_weights, unwrap_model
from .engine import Callback, EpochSaver, Trainer
from .metrics import infer_mode, is_improvement
from .rundir import METRICS_FILE, atomic_write_text, metrics_csv_text, update_run_json


class MetricsLogger(EpochSaver):
    """Rewrites metrics.csv with the new epochs' rows (atomically: a crash leaves the previous file).

    The text of the rows so far is kept, so a save formats only its new rows: formatting
    all of them again would cost more with every epoch, a large share of a small table's
    millisecond epochs in a long run."""

    def __init__(self, run_dir: Path, columns: list[str], rows: Optional[list[dict]] = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.columns = columns
        self._text = metrics_csv_text(rows or [], columns)

    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        self._text += metrics_csv_text(rows, self.columns, header=False)
        atomic_write_text(self.path, self._text)


LR_STEPS_FILE = "lr_steps.csv"


class LrStepsLogger(EpochSaver):
    """Writes lr_steps.csv (epoch, step, lr: the learning rate of every optimizer update) for a
    per-step schedule (one_cycle, warm-up), saved with metrics.csv; the rates are written with
    repr, exactly. A resumed run keeps the rows of the epochs it resumes after."""

    def __init__(self, run_dir: Path, schedule, resumed_epoch: int = 0) -> None:
        self.path = Path(run_dir) / LR_STEPS_FILE
        self.schedule = schedule
        self._text = "epoch,step,lr\n"
        if resumed_epoch and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()[1:]
                if line and int(line.split(",", 1)[0]) <= resumed_epoch
            ]
            self._text += "".join(line + "\n" for line in kept)
        self._pending: list[str] = []

    def note(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        lrs = self.schedule.take_step_lrs()
        first = self.schedule.steps - len(lrs) + 1
        self._pending += [f"{epoch},{first + i},{lr!r}\n" for i, lr in enumerate(lrs)]

    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        self._text += "".join(self._pending)
        self._pending = []
        atomic_write_text(self.path, self._text)


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved for `patience` epochs; always ends on the best weights."""

    def __init__(self, monitor: str, mode: str = "auto", patience: int = 5, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = infer_mode(monitor, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.best: Optional[float] = None
        self.best_epoch = 0
        self.wait = 0
        self.best_weights: Optional[dict] = None
        self.stopped_epoch = 0
        # What happened, not what was meant to: True only once on_train_end has loaded the
        # best weights back into the model (results.json reports it).
        self.restored_best_weights = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        value = logs[self.monitor]
        if is_improvement(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = model_weights(trainer.model)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.best_weights is not None:
            unwrap_model(trainer.model).load_state_dict(self.best_weights)
            self.restored_best_weights = True

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_weights": self.best_weights,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.best_weights = state["best_weights"]
        self.stopped_epoch = state.get("stopped_epoch", 0)


class RunRecorder(EpochSaver):
    """Keeps run.json's progress fields current."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        update_run_json(self.run_dir, epochs_completed=int(rows[-1]["epoch"]))


class SaveSchedule:
    """When the run folder catches up with training: after the first epoch a process trains,
    after the last, when training stops, and otherwise once the time since the last save is
    `cost_multiple` times what that save took (saving then costs at most 1/cost_multiple of
    the time: 2 %), or `max_unsaved_s`, whichever comes first.

    A run whose epochs take seconds saves after every one. A run whose epochs take a few
    milliseconds, about what writing metrics.csv, last.pt and run.json takes, saves a few
    times a second instead: a run killed without warning loses at most that much training,
    and the writes neither double the run's time nor slow the epochs after them."""

    def __init__(
        self, cost_multiple: float = 50.0, max_unsaved_s: float = 10.0, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.cost_multiple = cost_multiple
        self.max_unsaved_s = max_unsaved_s
        self.clock = clock
        self.saved_at: Optional[float] = None  # when the last save ended
        self.cost = 0.0  # how long it took

    def due(self, final: bool) -> bool:
        if final or self.saved_at is None:
            return True
        return self.clock() - self.saved_at >= min(self.cost_multiple * self.cost, self.max_unsaved_s)

    def timed(self, save: Callable[[], None]) -> None:
        started = self.clock()
        save()
        self.saved_at = self.clock()
        self.cost = self.saved_at - started


class RunFolderWriter(Callback):
    """Drives the savers of the run folder (metrics.csv, checkpoints, run.json, dashboards), in
    that order, so that no file is ever ahead of last.pt: each notes every epoch, and all save
    together when the schedule says, with the epochs since the last save. Their other hooks
    are passed on. At the end of training the epochs not yet saved are saved (the checkpointer
    saves the state it noted when the last epoch ended, whatever was done to the model since:
    early stopping's restoring the best weights)."""

    def __init__(self, savers: Sequence[EpochSaver], schedule: Optional[SaveSchedule] = None) -> None:
        self.savers = list(savers)
        self.schedule = schedule or SaveSchedule()
        self.pending: list[dict[str, float]] = []

    def on_train_begin(self, trainer: Trainer) -> None:
        for saver in self.savers:
            saver.on_train_begin(trainer)

    def on_epoch_begin(self, epoch: int, trainer: Trainer) -> None:
        for saver in self.savers:
            saver.on_epoch_begin(epoch, trainer)

    def on_progress(self, trainer: Trainer) -> None:
        for saver in self.savers:
            saver.on_progress(trainer)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        self.pending.append(logs)
        for saver in self.savers:
            saver.note(epoch, logs, trainer)
        if self.schedule.due(final=trainer.stop_training or epoch >= trainer.epochs):
            self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        """Write every saver's epochs noted since the last save (nothing if there are none)."""
        if not self.pending:
            return
        rows, self.pending = self.pending, []

        def save_all() -> None:
            for saver in self.savers:
                saver.save(rows, trainer)

        self.schedule.timed(save_all)

    def on_train_end(self, trainer: Trainer) -> None:
        self.save(trainer)  # stopped by a callback after this one (a sweep's pruner)
        for saver in self.savers:
            saver.on_train_end(trainer)


class Unfreeze(Callback):
    """training.fine_tune's phase change: at the start of the epoch after freeze_epochs, the
    frozen part named by `unfreeze` joins the optimizer (fine_tune.FineTuning.unfreeze). At an
    epoch's start, so a checkpoint of the last frozen epoch still holds the frozen phase, and
    a run resumed from it unfreezes here exactly as the uninterrupted run did."""

    def __init__(self, fine_tuning, schedule) -> None:
        self.fine_tuning = fine_tuning
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, trainer: Trainer) -> None:
        if self.fine_tuning.due(epoch - 1):
            self.fine_tuning.unfreeze(trainer.optimizer, self.schedule)
