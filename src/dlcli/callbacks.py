"""Callbacks that keep the run folder current: metrics.csv, run.json, early stopping.

(The checkpointer lives with the checkpoint format, in checkpoint.py.)

Each writes through rundir's atomic helpers, so the folder is complete after every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .checkpoint import model_weights, unwrap_model
from .engine import Callback, Trainer
from .metrics import infer_mode, is_improvement
from .rundir import METRICS_FILE, atomic_write_text, metrics_csv_text, update_run_json


class MetricsLogger(Callback):
    """Rewrites metrics.csv after every epoch (atomically: a crash leaves the previous file).

    The text of the rows so far is kept, so an epoch formats only its own row: formatting
    all of them again took 1.7 ms an epoch on average over a 200-epoch table run (measured),
    whose epochs take 5 to 6 ms."""

    def __init__(self, run_dir: Path, columns: list[str], rows: Optional[list[dict]] = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.columns = columns
        self._text = metrics_csv_text(rows or [], columns)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        self._text += metrics_csv_text([logs], self.columns, header=False)
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


class RunRecorder(Callback):
    """Keeps run.json's progress fields current."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        update_run_json(self.run_dir, epochs_completed=epoch)
