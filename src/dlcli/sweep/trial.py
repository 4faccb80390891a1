"""Inside a trial's `dlcli train` process: the callback that ties the run to its sweep.

`dlcli train CONFIG --sweep-trial FOLDER` (a hidden option, used only by the sweep's workers)
trains in exactly FOLDER, continuing from its last checkpoint when it holds one, and adds
`SweepTrialCallback` after the built-in callbacks. The callback
- records the sweep id, trial number and values in run.json,
- reports each epoch's value to Optuna and stops the run at the end of an epoch when the
  pruner says so (the run folder is kept and marked `pruned`),
- stops the run cleanly (as an interrupt, resumable) when the sweep process that started it
  has disappeared, so a killed sweep leaves no orphan trials training on.
Optuna is imported only when the sweep prunes, so a trial costs what `dlcli train` costs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

from ..engine import Callback, Trainer
from ..rundir import CHECKPOINTS, read_json, update_run_json
from .spec import TRIAL_FILE, SweepError


class SweepTrialCallback(Callback):
    def __init__(self, run_dir: Path, info: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.info = info
        self.metric: str = info["metric"]
        self.prune: str = info.get("prune", "none")
        self.pruned_epoch: Optional[int] = None
        self._reporter: Any = None
        self._parent = os.getppid()

    def on_train_begin(self, trainer: Trainer) -> None:
        changes: dict[str, Any] = {
            "sweep": {
                "id": self.info["sweep"],
                "trial": self.info["number"],
                "params": self.info["params"],
                "folder": self.info.get("sweep_dir"),
            }
        }
        if not trainer.history:
            changes["resumed_from_epoch"] = None  # a trial's first start, in its prepared folder
        update_run_json(self.run_dir, **changes)

    def on_progress(self, trainer: Trainer) -> None:
        if trainer.control.signal is None and os.getppid() != self._parent:
            # The sweep process is gone (killed): stop at the end of this step, as Ctrl-C does,
            # so the folder keeps every complete epoch for `dlcli sweep resume`.
            trainer.control.signal = "SIGHUP"

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        self.on_progress(trainer)
        if self.prune == "none" or self.prune is None:
            return
        try:
            if self._reporter is None:
                from .study import TrialReporter

                self._reporter = TrialReporter(
                    self.info["sweep"],
                    self.info["storage"],
                    int(self.info["trial_id"]),
                    self.prune,
                    int(self.info.get("prune_startup_trials", 5)),
                    int(self.info.get("prune_warmup_epochs", 0)),
                )
            stop = self._reporter.report(logs.get(self.metric), epoch)
        except Exception as exc:  # the storage is away: train on without pruning, never lose the run
            print(
                f"Warning: cannot report epoch {epoch} to the sweep's storage ({type(exc).__name__}: {exc}); "
                "this trial continues without pruning.",
                file=sys.stderr,
            )
            self.prune = "none"
            return
        if stop:
            self.pruned_epoch = epoch
            update_run_json(self.run_dir, pruned_at_epoch=epoch)
            trainer.stop_training = True

    def finish(self) -> None:
        """After `training.train` returned: a pruned run says so in run.json."""
        if self.pruned_epoch is not None:
            update_run_json(self.run_dir, status="pruned", pruned_at_epoch=self.pruned_epoch)


def trial_run(folder: Path) -> tuple[Path, SweepTrialCallback]:
    """The run folder to train in (prepared by the sweep) and the callback to attach."""
    folder = Path(folder)
    try:
        info = read_json(folder / TRIAL_FILE)
    except Exception as exc:
        raise SweepError(
            f"--sweep-trial {folder}: {exc}",
            hint="This option is for dlcli sweep's own use; train with dlcli train CONFIG.",
        ) from None
    (folder / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    return folder, SweepTrialCallback(folder, info)
