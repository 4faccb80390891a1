"""An experiment resolved without training it: the plan, the device, the network.

`plan_experiment` answers what `dlcli summary`, a sweep's checks and a trained run's loader
need from a config alone (the data's shapes and task, the loss, the model's analytic plan);
`build_network` makes the model of a plan; `load_run_config` and `saved_preprocessing` read
back what a run folder recorded of them. `training.py` builds a run on top of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import Config, load_config
from .errors import ConfigError, DeviceError, RunDirError
from .losses import check_last_layer, loss_spec, output_layer, resolve_loss_name
from .metrics import check_training_metrics, validation_columns
from .rundir import CONFIG_FILE, PREPROCESSING_FILE, read_json


@dataclass
class Plan:
    """An experiment resolved without loading any data: what `dlcli summary` needs."""

    config: Config
    info: Any  # data.DataInfo
    loss_name: str
    model_plan: Any  # models.ModelPlan


def plan_experiment(config: Config, preprocessing: Optional[dict] = None) -> Plan:
    """The model's plan from the config and the data's facts (for users' files, from a saved
    preprocessing state when one is given: no file is read and nothing is fitted again)."""
    from .data import dataset_info
    from .models import plan_network

    info = dataset_info(config.data, config.seed, preprocessing)
    loss_name = resolve_loss_name(config.loss, info.task)
    spec = loss_spec(loss_name, info.task)
    units, activation = output_layer(loss_name, info.task, info.num_classes)
    ids_vocab = info.vocab_size if info.token_ids else None  # inputs are word ids for an embedding
    model_plan = plan_network(config.model, info.input_shape, units, activation, spec.absorbs, ids_vocab)
    out = model_plan.layers[-1].output_shape
    if len(out) != 1:
        from .models import shape_text

        raise ConfigError(
            f"The model's output has shape {shape_text(out)}, but the loss needs a flat vector per sample.",
            hint="End the layer list with `- flatten: {}` and a dense layer.",
        )
    check_last_layer(loss_name, info.task, info.num_classes, out[0], model_plan.output_activation)
    check_training_metrics(config.training, info.task, info.num_classes, has_validation_data(config))
    return Plan(config, info, loss_name, model_plan)


def metric_columns(metric: str, has_val: bool, extra: Sequence[str] = ()) -> list[str]:
    """metrics.csv's columns for a run whose metric is `metric`, with or without validation data;
    `extra`: the val_ columns of training.metrics."""
    cols = ["epoch", "loss", metric]
    if has_val:
        cols += ["val_loss", f"val_{metric}", *extra]
    return cols + ["lr", "seconds"]


def logged_columns(plan: Plan) -> list[str]:
    """The metrics.csv columns a run of this plan logs, without epoch, lr and seconds: what
    early stopping, training.monitor and a sweep's --metric may watch."""
    metric = "mae" if plan.info.task == "regression" else "accuracy"
    requests = check_training_metrics(plan.config.training, plan.info.task, plan.info.num_classes, True)
    columns = metric_columns(metric, has_validation_data(plan.config), validation_columns(requests))
    return [c for c in columns if c not in ("epoch", "lr", "seconds")]


def has_validation_data(config: Config) -> bool:
    """Whether a run of this config will have validation data (and so log val_ metrics), known
    before its data is loaded: as its dataset kind says (DataConfig.has_validation)."""
    return config.data.has_validation()


def resolve_device(name: str):
    """auto -> the current CUDA GPU when there is one, else the CPU. A CUDA device always has
    its index: torch.cuda.set_device refuses a bare "cuda" (torch 2.11, found on the GPU machine,
    where `device: auto`, the default, stopped every run before it began)."""
    import torch

    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(
            f"device: {name} was asked for, but PyTorch sees no CUDA GPU here (torch {torch.__version__}, {build}).",
            hint="Use device: auto or device: cpu (--set device=cpu).",
        )
    index = int(name.split(":")[1]) if ":" in name else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"device: {name} does not exist; this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}."
        )
    return torch.device("cuda", index)


def build_network(plan: Plan, device, channels_last, initial_weights: bool = True, progress=None):
    """The model of a plan on its device, in the memory layout it trains in. Without
    `initial_weights` the weights are left uninitialised, for a checkpoint's to replace them;
    `progress` is told how a download of weights goes."""
    from .models import build_model, use_channels_last

    model = build_model(plan.model_plan, initial_weights=initial_weights, progress=progress).to(device)
    use_channels_last(model, channels_last)
    return model


def load_run_config(run_dir: Path, overrides: tuple[str, ...] = ()) -> Config:
    """The config saved in a run folder, which must still validate."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no config.yaml, so it cannot be resumed or evaluated.")
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        raise RunDirError(
            f"The config saved in {run_dir} no longer validates: {exc.full_message()}",
            hint="Start a new run from a corrected config instead.",
        ) from None


def check_resume_overrides(run_dir: Path, overrides: tuple[str, ...]) -> None:
    """Refuse --set overrides of a resume that change the model the checkpoints hold (a layer,
    its size, the number of classes), naming them; others (epochs, the learning rate) pass."""
    if not overrides:
        return
    preprocessing = saved_preprocessing(run_dir)

    def layers(config: Config) -> list[tuple]:
        plan = plan_experiment(config, preprocessing)
        return [(r.name, r.output_shape, r.params) for r in plan.model_plan.layers]

    saved = layers(load_run_config(run_dir))
    changing = [o for o in overrides if layers(load_run_config(run_dir, (o,))) != saved]
    if changing:
        listed = " ".join(f"--set {o}" for o in changing)
        raise ConfigError(
            f"{listed} changes the model of {run_dir} (its layers or their sizes), so its checkpoints cannot be "
            "resumed with it.",
            hint="Resume without it, or start a new run with the changed config: dlcli train CONFIG " + listed + ".",
        )


def saved_preprocessing(run_dir: Path) -> Optional[dict]:
    """The data preprocessing fitted when the run started (None for data that fits nothing).
    A damaged file is an error that says so, never a silent re-fit."""
    path = run_dir / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except RunDirError as exc:
        raise RunDirError(
            f"{path} is damaged: {exc.message}",
            hint="Restore it from a copy of the run folder; dlcli never fits the preprocessing again.",
        ) from None
