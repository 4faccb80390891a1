"""Callbacks that keep the run folder current: metrics.csv, checkpoints, early stopping.

Each writes through rundir's atomic helpers, so the folder is complete after every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from .engine import Callback, Trainer
from .metrics import infer_mode, is_improvement
from .rundir import CHECKPOINTS, METRICS_FILE, save_checkpoint, update_run_json, write_metrics


class MetricsLogger(Callback):
    """Rewrites metrics.csv after every epoch (atomically: a crash leaves the previous file)."""

    def __init__(self, run_dir: Path, columns: list[str], rows: Optional[list[dict]] = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.columns = columns
        self.rows = list(rows or [])

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        self.rows.append(dict(logs))
        write_metrics(self.path, self.rows, self.columns)


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
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_weights": self.best_weights, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = state["wait"]
        self.best_weights = state["best_weights"]
        self.stopped_epoch = state.get("stopped_epoch", 0)


class Checkpointer(Callback):
    """After every epoch: last.pt with everything needed to resume; best.pt when `monitor` improves."""

    def __init__(self, run_dir: Path, monitor: str, mode: str, state_fn: Callable[[Trainer], dict[str, Any]],
                 best: Optional[float] = None, best_epoch: int = 0) -> None:
        self.folder = Path(run_dir) / CHECKPOINTS
        self.monitor = monitor
        self.mode = infer_mode(monitor, mode)
        self.state_fn = state_fn
        self.best = best
        self.best_epoch = best_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        improved = is_improvement(logs[self.monitor], self.best, self.mode)
        if improved:
            self.best, self.best_epoch = logs[self.monitor], epoch
        state = self.state_fn(trainer)
        state["best"] = {"monitor": self.monitor, "value": self.best, "epoch": self.best_epoch}
        save_checkpoint(self.folder / "last.pt", state)
        if improved:
            save_checkpoint(self.folder / "best.pt", {"model": state["model"], "epoch": epoch,
                                                      "signature": state.get("signature"),
                                                      "best": state["best"]})


class RunRecorder(Callback):
    """Keeps run.json's progress fields current."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        update_run_json(self.run_dir, epochs_completed=epoch)


def unwrap_model(model):
    """The plain model inside DDP and torch.compile wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def model_weights(model) -> dict:
    """The plain model's weights, copied to the CPU (so checkpoints load anywhere)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap_model(model).state_dict().items()}
