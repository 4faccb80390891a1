"""TensorBoard event files in the run folder, laid out as Keras's TensorBoard callback does.

`tensorboard/train/` holds epoch_loss, epoch_<metric> and epoch_learning_rate per epoch (the
epoch as step) and batch_loss, batch_<metric> a few times a second (the running means the
progress display shows, the optimisation step as step); `tensorboard/validation/` holds the
validation epoch_ scalars under the same names, so that TensorBoard draws training and
validation in one chart. `tensorboard/` itself gets the hparams of a completed run: the
flattened config, and its final metrics as hparams/<name>.

A resumed run continues its curves: each writer reopens with a purge step, at which
TensorBoard drops whatever the interrupted process had logged beyond the last complete epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from ..engine import Trainer
from ..rundir import RESULTS_FILE
from .base import Tracker

TENSORBOARD_DIR = "tensorboard"


class TensorBoardTracker(Tracker):
    backend = "TensorBoard"

    def __init__(self, run_dir: Path, hparams: dict[str, Any], *, resumed: bool, warn: Callable[[str], None]) -> None:
        super().__init__(warn)
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / TENSORBOARD_DIR
        self.hparams = hparams
        self.resumed = resumed
        self.continuing = False  # resumed, with curves from before to continue
        self.start_epoch = 0
        self.writers: dict[str, Any] = {}
        self.last_logs: dict[str, float] = {}

    # -- hooks ---------------------------------------------------------------------

    def on_train_begin(self, trainer: Trainer) -> None:
        self._guard(self._begin, trainer)

    def on_progress(self, trainer: Trainer) -> None:
        self._guard(self._log_progress, trainer)

    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        self._guard(self._log_epochs, rows, trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        self._guard(self._flush)

    # -- work ----------------------------------------------------------------------

    def _begin(self, trainer: Trainer) -> None:
        history = trainer.history
        self.start_epoch = int(history[-1]["epoch"]) if history else 0
        self.continuing = self.resumed and self.folder.exists()
        if history:
            self.last_logs = dict(history[-1])
        if history and not self.continuing:
            # TensorBoard turned on at a resumption: draw the epochs before it too.
            for row in history:
                self._write_epoch(row, trainer)
            self._flush()

    def _writer(self, name: str, trainer: Trainer) -> Any:
        writer = self.writers.get(name)
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter

            purge_step: Optional[int] = None
            if self.continuing:
                # Steps past the last complete epoch are stale: epochs for validation/, and
                # for train/ also the optimisation steps (its epoch steps are all below that).
                per_epoch = max(trainer.steps_per_epoch, 1) if name == "train" else 1
                purge_step = self.start_epoch * per_epoch + 1
            writer = SummaryWriter(str(self.folder / name), purge_step=purge_step, flush_secs=10)
            self.writers[name] = writer
        return writer

    def _log_progress(self, trainer: Trainer) -> None:
        logs = trainer.running_logs()
        if not logs:
            return
        step = (trainer.epoch - 1) * trainer.steps_per_epoch + trainer.running.step
        writer = self._writer("train", trainer)
        for key, value in logs.items():
            writer.add_scalar(f"batch_{key}", value, step)

    def _log_epochs(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        for logs in rows:
            self._write_epoch(logs, trainer)
        self.last_logs = dict(rows[-1])
        self._flush()  # a killed process must not take complete epochs with it

    def _write_epoch(self, logs: dict[str, Any], trainer: Trainer) -> None:
        epoch = int(logs["epoch"])
        for key, value in logs.items():
            if key in ("epoch", "seconds") or value is None:
                continue
            if key == "lr":
                split, tag = "train", "epoch_learning_rate"
            elif key.startswith("val_"):
                split, tag = "validation", "epoch_" + key[len("val_") :]
            else:
                split, tag = "train", "epoch_" + key
            self._writer(split, trainer).add_scalar(tag, float(value), epoch)

    def _flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def _finish(self, status: str) -> None:
        self._flush()
        if status == "completed" and self.last_logs:
            self._write_hparams()

    def _write_hparams(self) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        final = {k: v for k, v in self.last_logs.items() if k not in ("epoch", "seconds", "lr")}
        results_path = self.run_dir / RESULTS_FILE
        if results_path.exists():
            results = json.loads(results_path.read_text(encoding="utf-8"))
            final.update({k: v for k, v in results.items() if k.startswith("test_") and isinstance(v, float)})
        metrics = {f"hparams/{k}": float(v) for k, v in final.items()}
        experiment, start, end = hparams(self.hparams, metrics)
        epoch = int(self.last_logs["epoch"])
        # purge_step 0: a run extended by --resume replaces the hparams of its first ending.
        with SummaryWriter(str(self.folder), purge_step=0) as root:
            for summary in (experiment, start, end):
                root.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                root.add_scalar(tag, value, epoch)

    def _close(self) -> None:
        writers, self.writers = list(self.writers.values()), {}
        for writer in writers:
            try:
                writer.close()
            except Exception:
                pass
