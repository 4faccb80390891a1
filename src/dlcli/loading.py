"""A trained run loaded into a ready model: its config, its data preprocessing and a checkpoint.

`dlcli evaluate`, `predict` and `export` all start here, so they see the model exactly as
training left it (same plan, weights, memory layout and preprocessing), never a re-fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import Config
from .errors import RunDirError
from .plan import Plan, build_network, load_run_config, plan_experiment, resolve_device, saved_preprocessing


@dataclass
class LoadedRun:
    run_dir: Path
    config: Config
    plan: Plan
    model: Any  # in eval mode, on `device`
    device: Any
    checkpoint: str  # best or last
    epoch: Optional[int]
    preprocessing: Optional[dict]  # the data's fitted state, None for data that fits nothing


def load_run(run_dir: Path, checkpoint: str = "best", device: Optional[str] = None) -> LoadedRun:
    """Build the run's model and load a checkpoint's weights into it.

    `device`: None keeps the run's own choice (a GPU when there is one, unless it trained on the CPU).
    """
    import torch

    from .checkpoint import check_signature, checkpoint_path, load_checkpoint, unwrap_model

    config = load_run_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    if not path.is_file():
        from .rundir import training_holder

        holder = training_holder(run_dir)
        if holder is not None:
            raise RunDirError(
                f"The run {Path(run_dir).name} is still training ({holder}) and has not saved its {checkpoint} "
                "checkpoint yet: it is written when an epoch ends.",
                hint="Wait for the first epoch to end (`dlcli runs` shows its progress), then try again.",
            )
    state = load_checkpoint(path)
    # The checkpoint's own copy first: it is the state these weights were trained with.
    preprocessing = state.get("preprocessing") or saved_preprocessing(run_dir)
    plan = plan_experiment(config, preprocessing)
    if device is not None:
        target = resolve_device(device)
    else:
        target = torch.device("cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu")
    model = build_network(
        plan, target, config.training.channels_last, initial_weights=False
    )  # the layout it trained in
    check_signature(
        state, model, path, hint="The config may have been edited after training; restore it or train again."
    )
    unwrap_model(model).load_state_dict(state["model"])
    model.eval()
    return LoadedRun(run_dir, config, plan, model, target, checkpoint, state.get("epoch"), preprocessing)
