"""The checkpoint format: what a checkpoint holds, writing it, reading it back, checking it,
and restoring it into the objects of a run. The one owner of `checkpoints/*.pt`.

`last.pt` holds everything a resumed run needs (model, optimizer, schedule, early-stopping
state, every random generator, the best value so far); `best.pt` holds the weights of the best
epoch. Both are plain dicts of tensors and JSON-able data, so they load with
`torch.load(weights_only=True)`: a checkpoint can never carry code.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .engine import EpochSaver, Trainer
from .errors import CheckpointError, RunDirError
from .metrics import infer_mode, is_improvement
from .rundir import CHECKPOINTS, atomic_write_bytes

# Bump when a key changes meaning; readers refuse newer formats instead of misreading them.
FORMAT_VERSION = 2  # 2: the schedule's state holds its update count and targets (optim.LrSchedule)
LAST = "last.pt"
BEST = "best.pt"


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{which}.pt"


def unwrap_model(model):
    """The plain model inside DDP and torch.compile wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def model_weights(model) -> dict:
    """The plain model's weights, copied to the CPU (so checkpoints load anywhere)."""
    return copied_to_cpu(unwrap_model(model).state_dict())


def copied_to_cpu(value: Any) -> Any:
    """A copy of a state dict (nested dicts and lists) whose tensors are copied to the CPU:
    it stays as it is while training goes on changing the originals in place."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: copied_to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(copied_to_cpu(v) for v in value)
    return value


def model_signature(model) -> list[list]:
    """Parameter names and shapes: a checkpoint must match them to be loaded."""
    return weights_signature(unwrap_model(model).state_dict())


def weights_signature(weights: dict) -> list[list]:
    """model_signature of a state dict (or a copy of one, as model_weights makes)."""
    return [[k, list(v.shape)] for k, v in weights.items()]


@dataclass
class TrainingState:
    """The stateful objects of a run that a checkpoint captures and restores."""

    model: Any
    optimizer: Any
    schedule: Any = None
    early: Any = None  # callbacks.EarlyStopping
    shuffle_gen: Any = None  # the torch.Generator that orders the training set
    device: Any = None
    config: Optional[dict] = None  # the resolved config, as plain data
    preprocessing: Optional[dict] = None  # the data's fitted preprocessing, as plain data
    fine_tuning: Any = None  # fine_tune.FineTuning: its phase decides the optimizer's groups

    def capture(self, epoch: int) -> dict[str, Any]:
        """Everything needed to resume after `epoch` (the best value is added by the Checkpointer),
        copied: it can be saved later, after more training."""
        import torch

        from . import __version__

        cuda = self.device is not None and self.device.type == "cuda"
        weights = model_weights(self.model)
        return {
            "format": FORMAT_VERSION,
            "dlcli": __version__,
            "epoch": epoch,
            "model": weights,
            "signature": weights_signature(weights),
            "optimizer": copied_to_cpu(self.optimizer.state_dict()),
            "schedule": copied_to_cpu(self.schedule.state_dict()) if self.schedule is not None else None,
            # A new dict; its best weights are replaced when they improve, never changed in place.
            "early_stopping": self.early.state_dict() if self.early is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": self.shuffle_gen.get_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            },
            "config": self.config,
            "preprocessing": self.preprocessing,
        }

    def restore(self, state: dict, path: Path) -> int:
        """Load a last.pt into every object; returns the epoch it was saved after."""
        import torch

        from .optim import load_optimizer_state

        check_signature(
            state, self.model, path, hint="Resume with the config the run was started with, or start a new run."
        )
        unwrap_model(self.model).load_state_dict(state["model"])
        tuning = self.fine_tuning
        if tuning is not None and tuning.due(int(state["epoch"]) - 1):
            # Saved after an unfrozen epoch: its optimizer already had the unfrozen group.
            tuning.unfreeze(self.optimizer, self.schedule)
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.schedule is not None and state.get("schedule") is not None:
            self.schedule.load_state_dict(state["schedule"])
        if self.early is not None and state.get("early_stopping") is not None:
            self.early.load_state_dict(state["early_stopping"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.shuffle_gen.set_state(rng["shuffle"])
        if self.device is not None and self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        return int(state["epoch"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: a crash leaves the previous checkpoint whole."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Read and check a checkpoint, with weights_only=True: tensors and plain data, never code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist.", hint="The run may have stopped before its first epoch ended."
        )
    try:
        with warnings.catch_warnings():
            # PyTorch warns at length about files it cannot read as weights; our message says it once.
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for damaged files
        first = load_failure_reason(exc)
        raise CheckpointError(
            f"Checkpoint {path} is damaged or not a dlcli checkpoint ({first}).",
            hint="Use the other checkpoint (--checkpoint best|last) or start a new run.",
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a dlcli checkpoint (it has no model weights).")
    version = state.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written in checkpoint format {version}, newer than this dlcli "
            f"reads (format {FORMAT_VERSION}).",
            hint="Upgrade dlcli to load it.",
        )
    return state


def load_failure_reason(exc: BaseException) -> str:
    """The part of torch.load's error a user can act on: its first sentence, or what the file
    is. (PyTorch's full text advises weights_only=False, which would run the file's code.)"""
    text = str(exc).strip()
    if "TorchScript" in text:
        return "it is a TorchScript archive, not a checkpoint"
    detail = text.split("WeightsUnpickler error:", 1)[1].strip() if "WeightsUnpickler error:" in text else ""
    if isinstance(exc, KeyError) or text.startswith("invalid load key") or detail.startswith("Unsupported operand"):
        return "it is not a file torch.save wrote"
    if detail:  # e.g. "Unsupported global: GLOBAL __main__.Foo was not an allowed global by default."
        return f"it holds more than tensors and plain data: {detail.splitlines()[0].split('. ')[0].rstrip('.')[:200]}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".")[:200]


def check_signature(state: dict, model, path: Path, hint: str) -> None:
    """Refuse weights of another architecture with one clear message (not a size-mismatch traceback)."""
    if state.get("signature") not in (None, model_signature(model)):
        raise CheckpointError(f"{path} holds weights of a different model than the run's config builds.", hint=hint)


@dataclass
class Resumed:
    """Where a resumed run picks up."""

    epoch: int = 0
    best_value: Optional[float] = None
    best_epoch: int = 0


def resume_training(run_dir: Path, parts: TrainingState, epochs: int, metric_rows: int) -> Resumed:
    """Restore last.pt into `parts`; a run stopped before its first checkpoint starts over.

    metrics.csv is written just before last.pt, so a run killed between the two at the end of
    its first epoch has one row and no checkpoint: that epoch is lost and the run starts over.
    More rows and no last.pt means the checkpoint was removed, which load_checkpoint reports.
    """
    path = checkpoint_path(run_dir, "last")
    if not path.exists() and metric_rows <= 1:
        return Resumed()
    state = load_checkpoint(path)
    epoch = parts.restore(state, path)
    early = parts.early
    if epoch >= epochs or (early is not None and early.stopped_epoch):
        raise RunDirError(
            f"{run_dir} has already finished ({epoch} of {epochs} epochs"
            f"{', stopped early' if early is not None and early.stopped_epoch else ''}).",
            hint="To train longer, resume with --set training.epochs=N for a larger N.",
        )
    return Resumed(epoch, state["best"]["value"], state["best"]["epoch"])


class Checkpointer(EpochSaver):
    """last.pt with everything needed to resume; best.pt with the weights of the epoch where
    `monitor` last improved. Each epoch is noted: training's state is captured (copied), so
    that a save, which may come epochs later or after an interrupt mid-epoch, writes the
    last epoch noted, and best.pt if a better epoch was noted since the last save."""

    def __init__(self, run_dir: Path, monitor: str, parts: TrainingState, resumed: Resumed) -> None:
        self.folder = Path(run_dir) / CHECKPOINTS
        self.monitor = monitor
        self.mode = infer_mode(monitor, "auto")
        self.parts = parts
        self.best = resumed.best_value
        self.best_epoch = resumed.best_epoch
        self._state: Optional[dict] = None  # the last epoch noted, captured
        self._unsaved_best: Optional[dict] = None  # the best epoch's weights, until best.pt has them

    def note(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        self._state = state = self.parts.capture(epoch)
        if is_improvement(logs[self.monitor], self.best, self.mode):
            self.best, self.best_epoch = logs[self.monitor], epoch
            self._unsaved_best = state["model"]
        state["best"] = {"monitor": self.monitor, "value": self.best, "epoch": self.best_epoch}

    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        state = self._state
        if state is None or state["epoch"] != rows[-1]["epoch"]:
            raise RuntimeError("Checkpointer.save: the epoch to save was not noted")  # a caller's bug
        save_checkpoint(self.folder / LAST, state)
        self._state = None  # not kept through the next epoch: a ResNet-18's is 130 MB
        best = self._unsaved_best
        if best is not None:
            save_checkpoint(
                self.folder / BEST,
                {
                    "format": FORMAT_VERSION,
                    "model": best,
                    "epoch": self.best_epoch,
                    "signature": state["signature"],
                    "best": state["best"],
                    "preprocessing": state["preprocessing"],
                },
            )
            self._unsaved_best = None
