"""Assembling and running an experiment: config -> data -> model -> engine -> run folder.

This is the one place that knows all the layers; it writes the run folder but prints only
through the Console it is given, and raises DlcliErrors for the CLI to report.
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import __version__
from .distributed import Distributed
from .config import Config, config_to_dict, dump_config, load_config
from .errors import CheckpointError, ConfigError, DeviceError, RunDirError, TrainingDiverged, TrainingInterrupted
from .losses import check_last_layer, loss_spec, output_layer, resolve_loss_name
from .rundir import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    atomic_write_text,
    create_run_dir,
    load_checkpoint,
    read_json,
    read_metrics,
    update_run_json,
    write_json,
    write_metrics,
)


@dataclass
class Plan:
    """An experiment resolved without loading any data: what `dlcli summary` needs."""

    config: Config
    info: Any  # data.DataInfo
    loss_name: str
    model_plan: Any  # models.ModelPlan


def plan_experiment(config: Config) -> Plan:
    from .data import dataset_info
    from .models import expand, plan_model

    info = dataset_info(config.data)
    loss_name = resolve_loss_name(config.loss, info.task)
    spec = loss_spec(loss_name, info.task)
    units, activation = output_layer(loss_name, info.task, info.num_classes)
    layers = expand(config.model, units, activation)
    model_plan = plan_model(layers, info.input_shape, absorb=spec.absorbs)
    out = model_plan.layers[-1].output_shape
    if len(out) != 1:
        from .models import shape_text

        raise ConfigError(
            f"The model's output has shape {shape_text(out)}, but the loss needs a flat vector per sample.",
            hint="End the layer list with `- flatten: {}` and a dense layer.",
        )
    check_last_layer(loss_name, info.task, info.num_classes, out[0], model_plan.output_activation)
    return Plan(config, info, loss_name, model_plan)


def resolve_device(name: str):
    """auto -> the first CUDA GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
        raise DeviceError(f"device: {name} does not exist; this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
    return torch.device("cuda", index)


def check_device_options(config: Config, device) -> None:
    import torch

    if config.training.precision == "bf16":
        if device.type != "cuda":
            raise DeviceError(
                "training.precision: bf16 autocast is only supported on a CUDA GPU, and this run uses the CPU.",
                hint="Use training.precision: fp32 on the CPU.",
            )
        if not torch.cuda.is_bf16_supported():
            raise DeviceError(
                f"training.precision: bf16 needs a GPU with bfloat16 support (Ampere or newer); "
                f"{torch.cuda.get_device_name(device)} has none.",
                hint="Use training.precision: fp32.",
            )
    if config.training.cuda_graph:
        if config.training.compile:
            raise ConfigError(
                "training.cuda_graph and training.compile cannot be combined: cuda_graph records the "
                "whole eager step itself, and torch.compile brings its own graphs.",
                hint="Keep one: training.compile: false, or training.cuda_graph: false "
                "(compile: reduce-overhead records the model's forward and backward).",
                key="training.cuda_graph",
            )
        if device.type != "cuda":
            raise DeviceError(
                "training.cuda_graph: CUDA graphs need a CUDA GPU, and this run uses the CPU.",
                hint="Use training.cuda_graph: false on the CPU.",
            )
    if config.training.compile and device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
            raise DeviceError(
                "training.compile: torch.compile on the CPU needs a C++ compiler, and none was found.",
                hint="Install one (apt-get install g++) or use training.compile: false.",
            )


def seed_everything(seed: int, deterministic: bool) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def metric_columns(metric: str, has_val: bool) -> list[str]:
    cols = ["epoch", "loss", metric]
    if has_val:
        cols += ["val_loss", f"val_{metric}"]
    return cols + ["lr", "seconds"]


def check_monitors(config: Config, logged: list[str]) -> None:
    """Every metric that early stopping, schedules and best.pt watch must be one that is logged."""
    from .registry import suggest

    training = config.training
    watched = []
    if training.monitor != "auto":
        watched.append(("training.monitor", training.monitor))
    if training.early_stopping:
        watched.append(("training.early_stopping.monitor", training.early_stopping.monitor))
    if training.schedule and training.schedule.name == "reduce_on_plateau":
        watched.append(("training.schedule.monitor", training.schedule.monitor))
    for key, name in watched:
        if name not in logged:
            hint = suggest(name, logged)
            no_val = " There is no validation set: set data.validation_split to get val_ metrics." if name.startswith("val_") and "val_loss" not in logged else ""
            raise ConfigError(f"{key}: {name!r} is not a logged metric; logged are: {', '.join(logged)}.{no_val}",
                              hint=hint or None, key=key)


def check_world_size(config: Config, world_size: int) -> None:
    """What several processes need: no CUDA-graph recording, and a global batch that splits
    evenly across them."""
    batch = config.training.batch_size
    if world_size > 1 and config.training.cuda_graph:
        raise ConfigError(
            f"training.cuda_graph: recording steps as CUDA graphs works in one process, and this run has {world_size}.",
            hint="Use training.cuda_graph: false with several processes.",
            key="training.cuda_graph",
        )
    if world_size > 1 and batch % world_size:
        raise ConfigError(
            f"training.batch_size: {batch} does not divide by the {world_size} processes; "
            "batch_size is the global batch, split evenly across processes.",
            hint=f"Use a multiple of {world_size}, e.g. --set training.batch_size={batch - batch % world_size or world_size}.",
            key="training.batch_size",
        )


def environment_info(device) -> dict[str, Any]:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dlcli": __version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def model_signature(model) -> list[list]:
    """Parameter names and shapes: a checkpoint must match them to be loaded."""
    from .callbacks import unwrap_model

    return [[k, list(v.shape)] for k, v in unwrap_model(model).state_dict().items()]


@dataclass
class Outcome:
    run_dir: Path
    status: str
    history: list[dict] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)


def _fits_on_device(tensors: list, device) -> bool:
    import torch

    if device.type != "cuda":
        return True
    need = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.5 * free


def train(
    config: Config,
    *,
    runs_dir: Path,
    console,
    resume_dir: Optional[Path] = None,
    control=None,
    live: Optional[bool] = None,
    quiet: bool = False,
    command: Optional[list[str]] = None,
    dist: Optional[Distributed] = None,
    draw_plots: bool = True,
) -> Outcome:
    import torch

    from .callbacks import Checkpointer, EarlyStopping, MetricsLogger, RunRecorder, model_weights
    from .data import load_dataset
    from .engine import Batches, RunControl, Trainer
    from .losses import make_objective, prepare_targets
    from .models import build_model, use_channels_last
    from .optim import LrSchedule, build_optimizer
    from .progress import ProgressDisplay
    from .tracking import require_tracking_packages, tracking_callbacks

    dist = dist or Distributed()
    plan = plan_experiment(config)
    require_tracking_packages(config.tracking)
    check_world_size(config, dist.world_size)
    if dist.world_size > 1 and torch.cuda.is_available() and config.device in ("auto", "cuda"):
        device = torch.device("cuda", dist.local_rank)
    elif dist.world_size > 1 and config.device == "auto":
        device = torch.device("cpu")
    else:
        device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    check_device_options(config, device)
    seed_everything(config.seed, config.training.deterministic)

    data = load_dataset(config.data, config.seed)
    info = plan.info
    objective = make_objective(plan.loss_name, info.task, info.num_classes)
    columns = metric_columns(objective.metric_name, data.has_validation)
    logged = [c for c in columns if c not in ("epoch", "lr", "seconds")]
    check_monitors(config, logged)

    model = build_model(plan.model_plan).to(device)
    use_channels_last(model, config.training.channels_last)
    optimizer = build_optimizer(config.optimizer, model.parameters(), device.type,
                                capturable=config.training.cuda_graph and device.type == "cuda")
    schedule = LrSchedule(config.training.schedule, optimizer, config.training.epochs) if config.training.schedule else None
    shuffle_gen = torch.Generator().manual_seed(config.seed)
    early = None
    if config.training.early_stopping:
        es = config.training.early_stopping
        early = EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta)
    monitor = config.training.monitor if config.training.monitor != "auto" else ("val_loss" if data.has_validation else "loss")

    # -- run folder (rank 0 only writes) ------------------------------------------------
    start_epoch, previous_rows, best_value, best_epoch = 0, [], None, 0
    run_dir = resume_dir
    if resume_dir is not None:
        start_epoch, previous_rows, best_value, best_epoch = _restore(
            resume_dir, config, model, optimizer, schedule, early, shuffle_gen, device)
        if dist.is_main:
            write_metrics(resume_dir / METRICS_FILE, previous_rows, columns)
    elif dist.is_main:
        run_dir = create_run_dir(runs_dir, config.name)
    if dist.world_size > 1:
        run_dir = _share_run_dir(run_dir, dist)
    dist.run_dir = run_dir

    started = time.time()
    if dist.is_main:
        from .summary import summary_text

        atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))
        atomic_write_text(run_dir / SUMMARY_FILE, summary_text(model, plan))
        previous = read_json(run_dir / RUN_FILE) if resume_dir is not None and (run_dir / RUN_FILE).exists() else {}
        write_json(run_dir / RUN_FILE, {
            "id": run_dir.name,
            "name": config.name,
            "status": "running",
            "created_at": previous.get("created_at", _iso(started)),
            "started_at": _iso(started),
            "finished_at": None,
            "epochs": config.training.epochs,
            "epochs_completed": start_epoch,
            "seed": config.seed,
            "world_size": dist.world_size,
            **environment_info(device),
            "command": command if command is not None else sys.argv,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "resumed_from_epoch": start_epoch if resume_dir is not None else None,
            "monitor": monitor,
        })

    if config.training.compile:
        mode = "default" if config.training.compile is True else config.training.compile
        model_for_training = torch.compile(model, mode=mode)
    else:
        model_for_training = model
    if dist.wrap is not None:
        model_for_training = dist.wrap(model_for_training, device)

    y_train = prepare_targets(data.y_train, plan.loss_name, info.task)
    y_val = prepare_targets(data.y_val, plan.loss_name, info.task)
    y_test = prepare_targets(data.y_test, plan.loss_name, info.task)
    bs = config.training.batch_size
    eval_bs = max(bs, 512)
    common = dict(input_scale=data.input_scale, device=device, rank=dist.rank, world_size=dist.world_size)
    train_batches = Batches(data.x_train, y_train, bs, shuffle=config.training.shuffle, generator=shuffle_gen, **common)
    val_batches = Batches(data.x_val, y_val, eval_bs, **common) if data.has_validation else None
    test_batches = Batches(data.x_test, y_test, eval_bs, **common) if data.has_test else None
    if device.type == "cuda" and _fits_on_device([data.x_train, data.x_val, data.x_test], device):
        for b in (train_batches, val_batches, test_batches):
            if b is not None:
                b.to_device()
    elif config.training.cuda_graph and device.type == "cuda":
        raise DeviceError(
            "training.cuda_graph: a recorded step reads its batches from the training set on the GPU, "
            "and this data does not fit in half of the GPU's free memory.",
            hint="Use training.cuda_graph: false for data this large.",
        )

    def checkpoint_state(trainer: Trainer) -> dict:
        state = {
            "format": 1,
            "dlcli": __version__,
            "epoch": trainer.epoch,
            "model": model_weights(model),
            "signature": model_signature(model),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else None,
            "early_stopping": early.state_dict() if early is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": shuffle_gen.get_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            "config": config_to_dict(config),
        }
        return state

    trackers = tracking_callbacks(config, run_dir, resumed=resume_dir is not None, world_rank=dist.rank,
                                  world_size=dist.world_size, device=device,
                                  warn=lambda text: console.print(text, highlight=False, markup=False, soft_wrap=True))
    display = None
    checkpointer = None
    callbacks: list = []
    if dist.is_main:
        if not quiet:
            display = ProgressDisplay(console, live=live)
            callbacks.append(display)
        callbacks.append(MetricsLogger(run_dir, columns, previous_rows))
        if early is not None:
            callbacks.append(early)  # before the checkpointer, so last.pt holds this epoch's state
        checkpointer = Checkpointer(run_dir, monitor, "auto", checkpoint_state, best_value, best_epoch)
        callbacks += [checkpointer, RunRecorder(run_dir), *trackers]
    elif early is not None:
        callbacks.append(early)  # every rank must stop at the same epoch
    trainer = Trainer(
        model_for_training,
        optimizer,
        objective.loss_fn,
        objective.metric_sum,
        metric_name=objective.metric_name,
        metric_per_sample=objective.metric_per_sample,
        device=device,
        precision=config.training.precision,
        schedule=schedule,
        callbacks=callbacks,
        control=control or RunControl(),
        all_reduce=dist.all_reduce,
        world_size=dist.world_size,
        cuda_graph=config.training.cuda_graph,
    )
    trainer.history = list(previous_rows)
    if not quiet and dist.is_main and start_epoch:
        console.print(f"Resuming {run_dir} after epoch {start_epoch}.", highlight=False)

    def finish(status: str, **extra: Any) -> None:
        if dist.is_main:
            finished = time.time()
            update_run_json(run_dir, status=status, finished_at=_iso(finished),
                            duration_seconds=round(finished - started, 3), **extra)
            for tracker in trackers:
                tracker.finish(status)

    try:
        history = trainer.fit(train_batches, val_batches, config.training.epochs, start_epoch)
    except TrainingInterrupted as exc:
        if display:
            display.close()
        failure = dist.failure_message()
        if failure:  # torchrun stopped us because another process failed
            finish("failed", error=failure)
            exc.failure = failure  # type: ignore[attr-defined]
        else:
            finish("interrupted", stopped_by=exc.signal_name)
        exc.run_dir = run_dir  # type: ignore[attr-defined]
        raise
    except TrainingDiverged as exc:
        if display:
            display.close()
        finish("failed", error=exc.full_message())
        exc.run_dir = run_dir  # type: ignore[attr-defined]
        raise
    except BaseException as exc:
        if display:
            display.close()
        finish("failed", error=dist.failure_message() or f"{type(exc).__name__}: {exc}")
        raise

    results: dict[str, Any] = {}
    if test_batches is not None:
        test_logs = trainer.evaluate(test_batches, prefix="test_")
        results = {k: v for k, v in test_logs.items()}
        results["test_samples"] = len(data.x_test)
        if info.task == "multilabel":
            results["test_per_label_accuracy"] = _per_label_accuracy(model, test_batches)
    best = {"monitor": monitor, "value": checkpointer.best if checkpointer else None,
            "epoch": checkpointer.best_epoch if checkpointer else None}
    if early is not None:
        best["early_stopping"] = {"monitor": early.monitor, "best": early.best, "best_epoch": early.best_epoch,
                                  "stopped_epoch": early.stopped_epoch or None, "restored_best_weights": True}
    if dist.is_main:
        write_json(run_dir / RESULTS_FILE, {"checkpoint": "final weights" if early is None else
                                            f"best weights (epoch {early.best_epoch})", **results, "best": best})
        if draw_plots:
            from .plots import plot_run

            try:
                plot_run(run_dir)
            except Exception as exc:  # a plot must never cost a finished run its status
                console.print(f"(plots not drawn: {exc})", highlight=False)
        finish("completed", epochs_completed=history[-1]["epoch"] if history else start_epoch,
               best=best, results=results)
    return Outcome(run_dir, "completed", history, results, best)


def _restore(resume_dir: Path, config: Config, model, optimizer, schedule, early, shuffle_gen, device):
    """Load last.pt into every stateful object; (start_epoch, metrics rows kept, best value, best epoch)."""
    import torch

    from .callbacks import unwrap_model
    from .optim import load_optimizer_state

    last_pt = resume_dir / CHECKPOINTS / "last.pt"
    if not last_pt.exists() and not _has_rows(resume_dir / METRICS_FILE):
        return 0, [], None, 0  # stopped before its first epoch ended: start over in the same folder
    ckpt = load_checkpoint(last_pt)
    if ckpt.get("signature") != model_signature(model):
        raise CheckpointError(
            f"{last_pt} holds weights of a different model than the run's config builds.",
            hint="Resume with the config the run was started with, or start a new run.",
        )
    start_epoch = int(ckpt["epoch"])
    if early is not None and ckpt.get("early_stopping") is not None:
        early.load_state_dict(ckpt["early_stopping"])
    if start_epoch >= config.training.epochs or (early is not None and early.stopped_epoch):
        raise RunDirError(
            f"{resume_dir} has already finished ({start_epoch} of {config.training.epochs} epochs"
            f"{', stopped early' if early is not None and early.stopped_epoch else ''}).",
            hint="To train longer, resume with --set training.epochs=N for a larger N.",
        )
    unwrap_model(model).load_state_dict(ckpt["model"])
    load_optimizer_state(optimizer, ckpt["optimizer"])
    if schedule is not None and ckpt.get("schedule") is not None:
        schedule.load_state_dict(ckpt["schedule"])
    rows = read_metrics(resume_dir / METRICS_FILE)[1] if (resume_dir / METRICS_FILE).exists() else []
    kept = [r for r in rows if r["epoch"] <= start_epoch]  # a crash can leave one row ahead of last.pt
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    shuffle_gen.set_state(rng["shuffle"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)
    return start_epoch, kept, ckpt["best"]["value"], ckpt["best"]["epoch"]


def _has_rows(metrics: Path) -> bool:
    try:
        return bool(read_metrics(metrics)[1])
    except RunDirError:
        return False


def _per_label_accuracy(model, batches) -> list[float]:
    from .engine import predict

    outputs, targets = predict(model, batches)
    return ((outputs > 0) == (targets > 0.5)).float().mean(0).tolist()


def _share_run_dir(run_dir: Optional[Path], dist: Distributed) -> Path:
    """Every rank learns rank 0's run folder."""
    import torch.distributed as tdist

    box = [str(run_dir) if run_dir is not None else None]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


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
