"""Assembling and running an experiment: config -> data -> model -> engine -> run folder.

This is the one place that knows all the layers; it writes the run folder but prints only
through the Console it is given, and raises DlcliErrors for the CLI to report.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from . import __version__
from .config import Config, config_to_dict, dump_config
from .distributed import Distributed
from .errors import (
    ConfigError,
    DeviceError,
    DlcliError,
    ResourceError,
    RunDirError,
    TrainingDiverged,
    TrainingInterrupted,
    is_allocation_failure,
)
from .plan import (
    Plan,
    build_network,
    metric_columns,
    plan_experiment,
    resolve_device,
    saved_preprocessing,
)
from .rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    PREPROCESSING_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    atomic_write_text,
    create_run_dir,
    lock_run_dir,
    read_json,
    read_metrics,
    update_run_json,
    write_json,
    write_metrics,
)

if TYPE_CHECKING:  # checkpoint imports torch; `dlcli summary` must not pay for it
    from .checkpoint import Resumed, TrainingState

# Training batches gathered ahead of the step from inputs memory-mapped from a disk cache: two
# keep the read-ahead thread busy through a slow page fault without holding more than two batches.
READ_AHEAD = 2


def check_device_options(config: Config, device) -> None:
    import torch

    if config.training.precision == "bf16":
        if device.type == "cpu":
            from .devices import cpu_bf16_native, cpu_capability

            if not cpu_bf16_native():
                raise DeviceError(
                    f"training.precision: bf16 on the CPU needs native bfloat16 instructions (AVX512-BF16 or AMX), "
                    f"and this CPU has none (PyTorch reports capability {cpu_capability()}, no oneDNN bf16); "
                    "emulated bf16 would be slower than fp32.",
                    hint="Use training.precision: fp32 here; `dlcli info` shows what this machine supports.",
                )
        elif not torch.cuda.is_bf16_supported():
            raise DeviceError(
                f"training.precision: bf16 needs a GPU with bfloat16 support (Ampere or newer); "
                f"{torch.cuda.get_device_name(device)} has none.",
                hint="Use training.precision: fp32.",
            )
    if config.training.cuda_graph:
        if config.training.compile_forced:
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
    if config.training.compile_forced and device.type == "cpu":
        from .devices import cpp_compiler_found

        if not cpp_compiler_found():
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
            no_val = (
                " There is no validation set: set data.validation_split to get val_ metrics."
                if name.startswith("val_") and "val_loss" not in logged
                else ""
            )
            raise ConfigError(
                f"{key}: {name!r} is not a logged metric; logged are: {', '.join(logged)}.{no_val}",
                hint=hint or None,
                key=key,
            )


def check_world_size(config: Config, world_size: int) -> None:
    """What several processes need: no CUDA-graph recording, and a global batch that splits
    evenly across them."""
    batch = config.training.batch_size
    tuning = config.training.fine_tune
    if world_size > 1 and tuning is not None and tuning.freeze_epochs is not None:
        raise ConfigError(
            "training.fine_tune.freeze_epochs: under torchrun the data-parallel wrapper fixes the parameters "
            "it synchronises when it starts, so a part cannot unfreeze mid-run.",
            hint="Train the frozen phase as one run and fine-tune from it (model.weights: runs/<id>) as another.",
            key="training.fine_tune.freeze_epochs",
        )
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


@dataclass
class Outcome:
    run_dir: Path
    status: str
    history: list[dict] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    compiled: Optional[str] = None  # a compiled run: how, why and the seconds spent compiling


def _fits_on_device(tensors: list, device) -> bool:
    import torch

    if device.type != "cuda":
        return True
    need = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    free, _ = torch.cuda.mem_get_info(device)
    return need < 0.5 * free


# -- phase 1: resolve ---------------------------------------------------------------------


def choose_device(config: Config, dist: Distributed):
    """The run's device: under data parallelism each process takes its local GPU (or the CPU)."""
    import torch

    if dist.world_size > 1 and torch.cuda.is_available() and config.device in ("auto", "cuda"):
        device = torch.device("cuda", dist.local_rank)
    elif dist.world_size > 1 and config.device == "auto":
        device = torch.device("cpu")
    else:
        device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    check_device_options(config, device)
    return device


# -- phase 2: build -----------------------------------------------------------------------


@dataclass
class Experiment:
    """Everything a run is made of between its config and its fit: data, model, optimizer..."""

    config: Config
    plan: Plan
    device: Any
    data: Any  # data.Dataset
    objective: Any  # losses.Objective
    columns: list[str]  # metrics.csv's columns
    monitor: str  # what picks best.pt
    model: Any
    optimizer: Any
    schedule: Any
    early: Any  # callbacks.EarlyStopping or None
    shuffle_gen: Any
    eval_metrics: Any = None  # metrics.ValidationMetrics: training.metrics and the decision threshold
    class_weight: Optional[dict[str, float]] = None  # training.class_weight resolved, per class name
    fine_tuning: Any = None  # fine_tune.FineTuning of training.fine_tune, or None
    precision: Any = None  # devices.PrecisionChoice: what training.precision (auto too) means here
    compile: Any = None  # devices.CompileChoice: what training.compile (auto too) means here

    def training_state(self) -> TrainingState:
        from .checkpoint import TrainingState

        return TrainingState(
            self.model,
            self.optimizer,
            self.schedule,
            self.early,
            self.shuffle_gen,
            self.device,
            config_to_dict(self.config),
            getattr(self.data, "preprocessing", None),
            self.fine_tuning,
        )

    def batches(self, dist: Distributed):
        """Training, validation and test batches (the last two None where the data has no such split)."""
        from .data.augment import make_augmenter
        from .engine import Batches
        from .losses import prepare_targets

        config, data, loss, task = self.config, self.data, self.plan.loss_name, self.plan.info.task
        bs = config.training.batch_size
        eval_bs = max(bs, 512)
        common = dict(input_scale=data.input_scale, device=self.device, rank=dist.rank, world_size=dist.world_size)
        augment = make_augmenter(config.data.augment, config.seed, dist.rank)  # None unless asked for
        train = Batches(
            data.x_train,
            prepare_targets(data.y_train, loss, task),
            bs,
            shuffle=config.training.shuffle,
            generator=self.shuffle_gen,
            transform=augment,
            # memory-mapped inputs: gather training batches ahead, on a thread (not evaluation's,
            # whose batches of 512 would hold too much memory waiting)
            read_ahead=READ_AHEAD if data.inputs_on_disk else 0,
            **common,
        )
        val = (
            Batches(data.x_val, prepare_targets(data.y_val, loss, task), eval_bs, **common)
            if data.has_validation
            else None
        )
        test = (
            Batches(data.x_test, prepare_targets(data.y_test, loss, task), eval_bs, **common) if data.has_test else None
        )
        device = self.device
        if device.type == "cuda" and _fits_on_device([data.x_train, data.x_val, data.x_test], device):
            for b in (train, val, test):
                if b is not None:
                    b.to_device()
        elif config.training.cuda_graph and device.type == "cuda":
            raise DeviceError(
                "training.cuda_graph: a recorded step reads its batches from the training set on the GPU, "
                "and this data does not fit in half of the GPU's free memory.",
                hint="Use training.cuda_graph: false for data this large.",
            )
        return train, val, test


def objective_in_target_units(objective, preprocessing: Optional[dict]):
    """The objective whose MAE is in the targets' own units when the data trains on scaled targets."""
    from .data.preprocessing import output_scaling
    from .losses import in_target_units

    scaling = output_scaling(preprocessing)
    return in_target_units(objective, scaling[1] if scaling else None)


def build_experiment(
    config: Config,
    plan: Plan,
    device,
    dist: Distributed,
    preprocessing: Optional[dict] = None,
    resuming: bool = False,
    progress=None,
    download_progress=None,
) -> Experiment:
    """Load the data and build the model, optimizer, schedule and early stopping of a run.
    `progress(description, done, total)` is told how a long data load goes, and
    `download_progress` how a download of the model's starting weights goes."""
    import torch

    from .callbacks import EarlyStopping
    from .data import load_dataset
    from .devices import choose_precision
    from .fine_tune import prepare_fine_tuning
    from .losses import class_weights, label_smoothing_of, make_objective
    from .metrics import validation_columns
    from .optim import LrSchedule, build_optimizer

    seed_everything(config.seed, config.training.deterministic)
    data = load_dataset(config.data, config.seed, preprocessing, progress)
    info = plan.info
    names = class_names_of(info)
    weights = class_weights(config.training.class_weight, names, data.y_train, info.task)
    objective = objective_in_target_units(
        make_objective(plan.loss_name, info.task, info.num_classes, label_smoothing_of(config.loss), weights),
        getattr(data, "preprocessing", None),
    )
    eval_metrics = validation_metrics(plan, getattr(data, "preprocessing", None), dist)
    extra = validation_columns(eval_metrics.requests) if eval_metrics is not None else []
    columns = metric_columns(objective.metric_name, data.has_validation, extra)
    check_monitors(config, [c for c in columns if c not in ("epoch", "lr", "seconds")])

    model = build_network(
        plan, device, config.training.channels_last, initial_weights=not resuming, progress=download_progress
    )
    fine_tuning = prepare_fine_tuning(model, config.training.fine_tune)  # the frozen part stays out of the optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    recorded = config.training.cuda_graph and device.type == "cuda"
    optimizer = build_optimizer(config.optimizer, trainable, device.type, capturable=recorded)
    training = config.training
    step_gflop = step_work_counter(config, plan, model)
    precision = choose_precision(training.precision, device, recorded, step_gflop)
    compiling = choose_run_compile(config, device, model, optimizer, len(data.x_train), dist, step_gflop)
    if compiling.mode is not None:  # compiled, the update is fused where PyTorch has the kernel
        optimizer = build_optimizer(config.optimizer, trainable, device.type, capturable=recorded, compiled=True)
    schedule = (
        LrSchedule(training.schedule, optimizer, training.epochs, updates_per_epoch(training, len(data.x_train)))
        if training.schedule
        else None
    )
    early = None
    if training.early_stopping:
        es = training.early_stopping
        early = EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta)
    monitor = training.monitor if training.monitor != "auto" else ("val_loss" if data.has_validation else "loss")
    return Experiment(
        config,
        plan,
        device,
        data,
        objective,
        columns,
        monitor,
        model,
        optimizer,
        schedule,
        early,
        torch.Generator().manual_seed(config.seed),
        eval_metrics,
        dict(zip(names, weights)) if weights is not None else None,
        fine_tuning,
        precision,
        compiling,
    )


def step_work_counter(config: Config, plan: Plan, model) -> Callable[[], Optional[float]]:
    """The GFLOP of one training step (models.training_step_gflop), counted on the first call
    only: precision: auto and compile: auto may both ask, and most runs ask neither."""
    from .models import training_step_gflop

    info = plan.info
    shape, token_ids, batch = tuple(info.input_shape), bool(info.token_ids), config.training.batch_size
    return functools.cache(lambda: training_step_gflop(model, shape, token_ids, batch))


def choose_run_compile(
    config: Config, device, model, optimizer, train_samples: int, dist, step_gflop: Callable[[], Optional[float]]
):
    """training.compile resolved for this run (devices.choose_compile): auto looks at the run's
    length, whether the step can be one graph and the step's work, all before compiling."""
    from .devices import choose_compile
    from .one_graph_step import one_graph_blocker
    from .optim import make_clipper
    from .steps import UpdateOptions

    training = config.training
    world = dist.world_size if dist is not None else 1
    updates = UpdateOptions(clip=make_clipper(config.optimizer), accumulation=training.gradient_accumulation_steps)
    unfreezing = training.fine_tune is not None and training.fine_tune.freeze_epochs is not None

    def blocker() -> Optional[str]:
        if unfreezing:  # config.py refuses an explicit compile with it
            return "unfreezing adds parameters mid-run"
        return one_graph_blocker(model, optimizer, device, world, updates)

    total_steps = training.epochs * updates_per_epoch(training, train_samples)
    return choose_compile(training.compile, device, total_steps, blocker, step_gflop)


def class_names_of(info) -> list[str]:
    """The data's class (or label, or output) names; numbered where the data names none."""
    count = 2 if info.task == "binary" else info.num_classes
    names = [str(n) for n in info.class_names] if info.class_names else []
    return names[:count] if len(names) >= count else [str(i) for i in range(count)]


def validation_metrics(plan: Plan, preprocessing: Optional[dict], dist: Optional[Distributed] = None, threshold=None):
    """The metrics.ValidationMetrics of training.metrics and the binary decision threshold (None
    when the run asks for neither: evaluation then runs as it always has)."""
    import torch

    from .data.preprocessing import output_scaling
    from .losses import class_probabilities, predicted_classes
    from .metrics import TaskOutputs, ValidationMetrics, check_training_metrics

    config, info = plan.config, plan.info
    requests = check_training_metrics(config.training, info.task, info.num_classes, True)
    setting = config.training.decision_threshold
    if not requests and setting is None and threshold is None:
        return None
    task, logits = info.task, plan.model_plan.absorbed_activation
    scaling = output_scaling(preprocessing) if task == "regression" else None

    def values(out):
        if scaling is None:
            return out
        return out * torch.tensor(scaling[1], device=out.device) + torch.tensor(scaling[0], device=out.device)

    outputs = TaskOutputs(
        task,
        info.num_classes,
        lambda out: class_probabilities(out, task, logits),
        lambda out: predicted_classes(out, task, logits),
        values,
    )
    # auto starts at 0.5: the threshold is chosen on the validation split once training ends.
    start = threshold if threshold is not None else setting if isinstance(setting, float) else 0.5
    dist = dist or Distributed()
    return ValidationMetrics(requests, outputs, class_names_of(info), start, dist.rank, dist.world_size)


def updates_per_epoch(training, train_samples: int) -> int:
    """Optimizer updates in an epoch: its batches, in windows of gradient_accumulation_steps."""
    batches = math.ceil(train_samples / training.batch_size)
    return max(math.ceil(batches / training.gradient_accumulation_steps), 1)


# -- phase 3: open the run folder ---------------------------------------------------------


@dataclass
class RunFolder:
    """The run folder being trained in, and where a resumed run picks up."""

    path: Path
    resumed: Resumed
    previous_rows: list[dict]  # metrics.csv rows kept from before a resume
    is_resume: bool
    started: float = field(default_factory=time.time)
    trackers: list = field(default_factory=list)  # TensorBoard / MLflow callbacks, told how the run ended
    writer: Any = None  # callbacks.RunFolderWriter of the main process
    weights: Optional[dict] = None  # what model.weights loaded (models.weights.WeightsReport), for results.json
    finished: bool = False  # run.json holds the final status

    def save_noted_epochs(self, trainer) -> None:
        """Training stopped mid-epoch (an interrupt, a divergence, an error): the complete
        epochs the writer has noted but not yet saved go into the folder before its status."""
        if self.writer is not None:
            self.writer.save(trainer)

    def finish(self, status: str, **extra: Any) -> None:
        """run.json's final status; then the trackers mirror it (after results.json and plots)."""
        finished = time.time()
        update_run_json(
            self.path,
            status=status,
            finished_at=_iso(finished),
            duration_seconds=round(finished - self.started, 3),
            **extra,
        )
        self.finished = True
        for tracker in self.trackers:
            tracker.finish(status)


def open_run_folder(
    exp: Experiment, runs_dir: Path, resume_dir: Optional[Path], dist: Distributed, command: Optional[list[str]]
) -> RunFolder:
    """Create the run folder (or restore a resumed one's state) and write what is known before training."""
    from .checkpoint import Resumed, resume_training

    resumed, rows = Resumed(), []
    run_dir = resume_dir
    if resume_dir is not None:
        if dist.is_main:
            lock_run_dir(resume_dir)  # one process per run folder; released when the process ends
        metrics = resume_dir / METRICS_FILE
        resumed = resume_training(resume_dir, exp.training_state(), exp.config.training.epochs, _metric_rows(metrics))
        if resumed.epoch:  # a crash can leave one row ahead of last.pt
            rows = [r for r in (read_metrics(metrics)[1] if metrics.exists() else []) if r["epoch"] <= resumed.epoch]
        if dist.is_main:
            write_metrics(resume_dir / METRICS_FILE, rows, exp.columns)
    elif dist.is_main:
        run_dir = create_run_dir(runs_dir, exp.config.name)
        lock_run_dir(run_dir)
    if dist.world_size > 1:
        run_dir = _share_run_dir(run_dir, dist)
    dist.run_dir = run_dir
    assert run_dir is not None  # every rank has one by now
    folder = RunFolder(run_dir, resumed, rows, resume_dir is not None)
    if dist.is_main:
        _write_run_start(exp, folder, dist, command)
    return folder


def _write_run_start(exp: Experiment, folder: RunFolder, dist: Distributed, command: Optional[list[str]]) -> None:
    from .summary import summary_text

    config, run_dir = exp.config, folder.path
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))
    phases = exp.fine_tuning.phases(exp.model, config.training.epochs) if exp.fine_tuning is not None else None
    atomic_write_text(run_dir / SUMMARY_FILE, summary_text(exp.model, exp.plan, phases=phases))
    state = getattr(exp.data, "preprocessing", None)
    if state is not None:  # what was fitted on the training split, for evaluate, resume, predict, export
        from .data.preprocessing import preprocessing_files, state_json

        atomic_write_text(run_dir / PREPROCESSING_FILE, state_json(state))
        for name, text in preprocessing_files(state).items():
            atomic_write_text(run_dir / name, text)
    previous = read_json(run_dir / RUN_FILE) if folder.is_resume and (run_dir / RUN_FILE).exists() else {}
    report = getattr(exp.model, "weights_report", None)
    folder.weights = report.as_dict() if report is not None else previous.get("weights")  # a resume loads none
    transfer = {"weights": folder.weights} if folder.weights is not None else {}
    if exp.fine_tuning is not None:
        transfer["fine_tune"] = exp.fine_tuning.phases(exp.model, config.training.epochs)
    write_json(
        run_dir / RUN_FILE,
        {
            "id": run_dir.name,
            "name": config.name,
            "status": "running",
            "created_at": previous.get("created_at", _iso(folder.started)),
            "started_at": _iso(folder.started),
            "finished_at": None,
            "epochs": config.training.epochs,
            "epochs_completed": folder.resumed.epoch,
            "seed": config.seed,
            "world_size": dist.world_size,
            **environment_info(exp.device),
            "command": command if command is not None else sys.argv,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "resumed_from_epoch": folder.resumed.epoch if folder.is_resume else None,
            "monitor": exp.monitor,
            "precision": exp.precision.precision,
            "precision_reason": exp.precision.reason,
            "compile": exp.compile.mode or False,
            "compile_reason": exp.compile.reason,
            **transfer,
        },
    )


# -- phase 4: fit -------------------------------------------------------------------------


def make_trainer(
    exp: Experiment,
    folder: RunFolder,
    dist: Distributed,
    *,
    console,
    control,
    live,
    quiet,
    extra_callbacks: Sequence = (),
):
    """The engine's Trainer with the run's callbacks: display, early stopping, the run folder's
    writer (metrics.csv, checkpoints, run.json, dashboards), then any extra ones (a sweep's
    trial). Returns (trainer, display, checkpointer)."""

    from .callbacks import LrStepsLogger, MetricsLogger, RunFolderWriter, RunRecorder
    from .checkpoint import Checkpointer
    from .engine import RunControl, Trainer
    from .optim import make_clipper
    from .progress import ProgressDisplay
    from .tracking import tracking_callbacks

    config = exp.config
    model = exp.model
    if dist.wrap is not None:
        model = dist.wrap(model, exp.device)

    display = checkpointer = None
    callbacks: list = _phase_change(exp)  # first: the epoch's display shows its phase
    if dist.is_main:
        if not quiet:
            display = ProgressDisplay(console, live=live)
            callbacks.append(display)
        if exp.early is not None:
            callbacks.append(exp.early)  # before the writer, so last.pt holds this epoch's state
        checkpointer = Checkpointer(folder.path, exp.monitor, exp.training_state(), folder.resumed)
        # Dashboards after the checkpointer: they never show an epoch that last.pt lacks.
        folder.trackers = tracking_callbacks(
            config,
            folder.path,
            resumed=folder.is_resume,
            world_rank=dist.rank,
            world_size=dist.world_size,
            device=exp.device,
            warn=_warn_on_stderr,  # never mixed into standard output, which may be piped
        )
        savers = [MetricsLogger(folder.path, exp.columns, folder.previous_rows), checkpointer, RunRecorder(folder.path)]
        if exp.schedule is not None and exp.schedule.per_step:
            savers.insert(1, LrStepsLogger(folder.path, exp.schedule, folder.resumed.epoch))
        if not quiet:
            _note_batch_norm_under_accumulation(config, model, console)
            _note_auto_choices(exp, console)
        folder.writer = RunFolderWriter([*savers, *folder.trackers])
        callbacks.append(folder.writer)
    elif exp.early is not None:
        callbacks.append(exp.early)  # every rank must stop at the same epoch
    callbacks += list(extra_callbacks)
    objective = exp.objective
    trainer = Trainer(
        model,
        exp.optimizer,
        objective.loss_fn,
        objective.metric_sum,
        metric_name=objective.metric_name,
        metric_per_sample=objective.metric_per_sample,
        device=exp.device,
        precision=exp.precision.precision,
        schedule=exp.schedule,
        callbacks=callbacks,
        control=control or RunControl(),
        all_reduce=dist.all_reduce,
        world_size=dist.world_size,
        cuda_graph=config.training.cuda_graph,
        compile_mode=exp.compile.mode,
        clip=make_clipper(config.optimizer),
        accumulation=config.training.gradient_accumulation_steps,
        eval_metrics=exp.eval_metrics,
    )
    trainer.history = list(folder.previous_rows)
    return trainer, display, checkpointer


def _phase_change(exp: Experiment) -> list:
    """training.fine_tune's unfreezing callback, when the run has one."""
    tuning = exp.fine_tuning
    if tuning is None or tuning.config.freeze_epochs is None:
        return []
    from .callbacks import Unfreeze

    return [Unfreeze(tuning, exp.schedule)]


def _note_auto_choices(exp: Experiment, console) -> None:
    """What training.precision: auto and training.compile: auto took here, and why, said before
    the first epoch."""
    if exp.config.training.precision == "auto":
        choice = exp.precision
        console.print(f"training.precision: auto chose {choice.precision}: {choice.reason.removeprefix('auto: ')}")
    if exp.config.training.compile == "auto" and exp.compile.mode is not None:  # eager needs no note
        console.print(f"training.compile: {exp.compile.reason}")


def _note_batch_norm_under_accumulation(config: Config, model, console) -> None:
    """Said once per run: accumulation cannot make batch norm see the effective batch."""
    import torch

    if config.training.gradient_accumulation_steps > 1 and any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        console.print(
            "Note: with training.gradient_accumulation_steps, batch norm's statistics are those of "
            f"each micro-batch of {config.training.batch_size}, not of the effective batch.",
            highlight=False,
            markup=False,
        )


def run_fit(
    trainer, train_batches, val_batches, exp: Experiment, folder: RunFolder, dist: Distributed, display
) -> list[dict]:
    """The fit, and its three unhappy endings: interrupted, diverged, crashed (run.json says which)."""
    import torch

    from .devices import keep_freed_memory_for_reuse

    try:
        # A recurrent layer's step allocates workspaces above the size glibc keeps for reuse, so
        # each step would fault them in anew; other models gain nothing from keeping freed
        # memory and some lose memory to fragmentation (benchmarks/RESULTS.md). After the data
        # is built, before the first step.
        if any(isinstance(m, torch.nn.RNNBase) for m in trainer.model.modules()):
            keep_freed_memory_for_reuse()
        return trainer.fit(train_batches, val_batches, exp.config.training.epochs, folder.resumed.epoch)
    except BaseException as exc:
        if display:
            display.close()
        _end_fit_early(exc, trainer, folder, dist)
        raise


def _end_fit_early(exc: BaseException, trainer, folder: RunFolder, dist: Distributed) -> None:
    """Training stopped before its last epoch: the complete epochs noted but not yet saved go
    into the folder, then run.json says how the run ended. When that save fails after an
    interrupt or a divergence, as when the final save of a normal ending fails, the run has
    failed with the save's error, which is raised (the folder lacks epochs training completed)."""
    failure = dist.failure_message()  # torchrun stopped this process because another one failed
    ending: dict[str, Any]
    if isinstance(exc, TrainingInterrupted):
        exc.run_dir, exc.failure = folder.path, failure
        ending = (
            {"status": "failed", "error": failure}
            if failure
            else {"status": "interrupted", "stopped_by": exc.signal_name}
        )
    elif isinstance(exc, TrainingDiverged):
        ending = {"status": "failed", "error": exc.full_message()}
    else:
        ending = {"status": "failed", "error": failure or f"{type(exc).__name__}: {exc}"}
    try:
        folder.save_noted_epochs(trainer)
    except Exception as save_error:
        if isinstance(exc, (TrainingInterrupted, TrainingDiverged)):
            if dist.is_main:
                folder.finish("failed", error=f"{type(save_error).__name__}: {save_error}")
            raise save_error from exc
        # A crash, perhaps the disk's own: its error is the one to report.
    if dist.is_main:
        folder.finish(**ending)


# -- phase 5: finish ----------------------------------------------------------------------


def finish_run(
    trainer,
    test_batches,
    exp: Experiment,
    folder: RunFolder,
    history: list[dict],
    checkpointer,
    dist: Distributed,
    *,
    console,
    draw_plots: bool,
    val_batches=None,
) -> Outcome:
    """Evaluate on the test split with the final (or restored best) weights; write results, plots, run.json."""
    from .data import baseline_results

    results: dict[str, Any] = {}
    if exp.class_weight is not None:
        results["class_weight"] = exp.class_weight
    results.update(choose_decision_threshold(trainer, val_batches, exp))
    if test_batches is not None:
        results.update(trainer.evaluate(test_batches, prefix="test_"))
        details = trainer.metric_details.get("test_", {})
        results.update({f"test_{key}": value for key, value in details.items() if key != "threshold"})
        results["test_samples"] = len(exp.data.x_test)
        results.update(
            baseline_results(exp.config.data, exp.data.x_test, exp.data.preprocessing, results.get("test_mae"), "test_")
        )
        if exp.plan.info.task == "multilabel":
            logits = exp.plan.model_plan.absorbed_activation
            results["test_per_label_accuracy"] = _per_label_accuracy(exp.model, test_batches, logits)
    best = {
        "monitor": exp.monitor,
        "value": checkpointer.best if checkpointer else None,
        "epoch": checkpointer.best_epoch if checkpointer else None,
    }
    early = exp.early
    if early is not None:
        best["early_stopping"] = {
            "monitor": early.monitor,
            "best": early.best,
            "best_epoch": early.best_epoch,
            "stopped_epoch": early.stopped_epoch or None,
            "restored_best_weights": early.restored_best_weights,
        }
    if dist.is_main:
        run_dir = folder.path
        weights = (
            f"best weights (epoch {early.best_epoch})"
            if early is not None and early.restored_best_weights
            else "final weights"
        )
        started_from = {"weights": folder.weights} if folder.weights is not None else {}
        write_json(run_dir / RESULTS_FILE, {"checkpoint": weights, **results, "best": best, **started_from})
        if draw_plots:
            from .plots import plot_run

            try:
                plot_run(run_dir)
            except Exception as exc:  # a plot must never cost a finished run its status
                console.print(f"(plots not drawn: {exc})", highlight=False)
        compiled = (
            {"compile_seconds": round(trainer.compile_seconds, 3), "compiled_step": trainer.compiled_step}
            if trainer.compile_mode
            else {}
        )
        folder.finish(
            "completed",
            epochs_completed=history[-1]["epoch"] if history else folder.resumed.epoch,
            best=best,
            results=results,
            **compiled,
        )
        from .rundir import CHECKPOINTS, sync_folder

        for synced in (run_dir / CHECKPOINTS, run_dir):  # every rename durable once the run is complete
            sync_folder(synced)
    return Outcome(folder.path, "completed", history, results, best, _compile_cost(trainer, exp))


def _compile_cost(trainer, exp: Experiment) -> Optional[str]:
    """A compiled run's last line: how and why it compiled and the seconds it spent (they count)."""
    if not trainer.compile_mode:
        return None
    why = exp.compile.reason.removeprefix("auto: ")
    return f"compiled ({trainer.compile_mode}, {why}): {trainer.compile_seconds:.1f} s compiling"


def choose_decision_threshold(trainer, val_batches, exp: Experiment) -> dict[str, Any]:
    """training.decision_threshold for results.json (where evaluate and predict read it): auto
    is the probability cut with the highest F1 on the validation split, for the weights the run
    ends with; the test metrics then use it."""
    setting = exp.config.training.decision_threshold
    metrics = exp.eval_metrics
    if setting is None or metrics is None:
        return {}
    if setting != "auto":
        return {"decision_threshold": float(setting), "decision_threshold_source": "training.decision_threshold"}
    if val_batches is None:
        return {}
    keep, metrics.keep_scores, metrics.threshold = metrics.keep_scores, True, 0.5
    try:
        trainer.evaluate(val_batches, prefix="val_")
        threshold, f1 = metrics.best_threshold(trainer.all_reduce)
    finally:
        metrics.keep_scores = keep
    metrics.threshold = threshold
    return {
        "decision_threshold": threshold,
        "decision_threshold_source": "auto: the highest F1 on the validation split",
        "decision_threshold_val_f1": f1,
    }


def saved_decision_threshold(run_dir: Path, config: Optional[Config] = None) -> Optional[float]:
    """The binary decision threshold evaluate and predict use: the one the run saved in
    results.json, else a number its config gives (a run that has not finished); None: the
    default, 0.5 (`auto` before the run chose one)."""
    path = run_dir / RESULTS_FILE
    value = read_json(path).get("decision_threshold") if path.is_file() else None
    if value is None and config is not None:
        value = config.training.decision_threshold
    return float(value) if isinstance(value, (int, float)) else None


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
    extra_callbacks: Sequence = (),
) -> Outcome:
    """One run, start to finish: resolve, build, open the run folder, fit, finish.

    run.json's final status is written here whatever ends the run, never by the caller. An
    allocation failure becomes a ResourceError that says what to change; a DlcliError that
    ends a run with a folder names the folder; a TrainingInterrupted carries the folder (and,
    under torchrun, the other process's failure that stopped this one)."""
    from .data.augment import check_augmentation
    from .models.memory import check_fits
    from .progress import LoadProgress
    from .tracking import require_tracking_packages

    dist = dist or Distributed()
    folder: Optional[RunFolder] = None
    try:
        saved = saved_preprocessing(resume_dir) if resume_dir is not None else None
        plan = plan_experiment(config, saved)
        require_tracking_packages(config.tracking)  # before any run folder is made
        check_world_size(config, dist.world_size)
        check_augmentation(config.data.augment, plan.info.input_shape, config.training.cuda_graph)
        device = choose_device(config, dist)
        check_fits(plan.model_plan, device, config.optimizer)  # before any data or weights are allocated
        progress = LoadProgress(console, live=live) if dist.is_main and not quiet else None
        exp = build_experiment(
            config,
            plan,
            device,
            dist,
            preprocessing=saved,
            resuming=resume_dir is not None,
            progress=progress,
            download_progress=_download_progress(live) if dist.is_main and not quiet else None,
        )
        if dist.is_main and not quiet:
            from .data.checks import dataset_notes

            for note in [*dataset_notes(exp.data), *weights_notes(exp)]:  # e.g. an empty test split
                console.print(note, highlight=False, markup=False)  # notes quote [shapes] and paths
        folder = open_run_folder(exp, runs_dir, resume_dir, dist, command)
        train_batches, val_batches, test_batches = exp.batches(dist)
        trainer, display, checkpointer = make_trainer(
            exp, folder, dist, console=console, control=control, live=live, quiet=quiet, extra_callbacks=extra_callbacks
        )
        if not quiet and dist.is_main and folder.resumed.epoch:
            console.print(f"Resuming {folder.path} after epoch {folder.resumed.epoch}.", highlight=False)
        history = run_fit(trainer, train_batches, val_batches, exp, folder, dist, display)
        return finish_run(
            trainer,
            test_batches,
            exp,
            folder,
            history,
            checkpointer,
            dist,
            console=console,
            draw_plots=draw_plots,
            val_batches=val_batches,
        )
    except BaseException as exc:
        ended = _run_ended_by(exc, folder, dist)
        if ended is exc:
            raise
        raise ended from exc


def _run_ended_by(exc: BaseException, folder: Optional[RunFolder], dist: Distributed) -> BaseException:
    """What `train` raises for an error that ended the run: run.json marked failed if the fit
    did not already say how it ended (moving data to the GPU, the test evaluation), the folder
    named in a DlcliError, an allocation failure as a ResourceError."""
    allocation = isinstance(exc, (RuntimeError, MemoryError)) and is_allocation_failure(exc)
    main_folder = folder.path if folder is not None and dist.is_main else None
    if folder is not None and dist.is_main and not folder.finished:
        error = f"out of memory: {str(exc).splitlines()[0][:300]}" if allocation else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # a folder that cannot be updated must not hide the error
            folder.finish("failed", error=dist.failure_message() or error)
    if allocation:
        return ResourceError(out_of_memory_message(exc, main_folder))
    if isinstance(exc, DlcliError) and main_folder is not None:
        exc.message += f" (run folder: {main_folder})"
    return exc


def _download_progress(live: Optional[bool]):
    """A download's progress bar, on standard error (standard output may be piped)."""
    from rich.console import Console

    from .progress import LoadProgress

    return LoadProgress(Console(stderr=True), live=live)


def weights_notes(exp: Experiment) -> list[str]:
    """What model.weights loaded and what starts fresh, the frozen layers, and a note when
    the weights were trained on another image size."""
    report = getattr(exp.model, "weights_report", None)
    notes = []
    if report is not None:
        name = f"{report.weights_name} " if report.weights_name else ""
        notes.append(f"Weights: {name}from {report.file} (sha256 {report.sha256[:12]}).")
        notes.append(f"  transferred: {', '.join(report.transferred) or 'nothing'}")
        notes.append(f"  starting fresh: {', '.join(report.fresh) or 'nothing'}")
        if report.mean is not None:
            notes.append(f"  inputs normalised in the model: mean {report.mean}, std {report.std}")
        size = exp.plan.info.input_shape[-1]
        if report.input_size and size != report.input_size:
            notes.append(
                f"Note: these weights were trained on {report.input_size}x{report.input_size} images and the data's "
                f"are {size} wide; data.image_size can change that, at the cost of more pixels."
            )
    if exp.fine_tuning is not None:
        for i, phase in enumerate(exp.fine_tuning.phases(exp.model, exp.config.training.epochs)):
            frozen = f", frozen: {', '.join(phase['frozen_layers'])}" if "frozen_layers" in phase else ""
            notes.append(
                f"Fine-tuning phase {i + 1} (epochs {phase['epochs']}): {phase['trainable']:,} trainable, "
                f"{phase['frozen']:,} frozen parameters{frozen}."
            )
    return notes


def _warn_on_stderr(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(text, highlight=False, markup=False, soft_wrap=True, style="yellow")


def out_of_memory_message(exc: BaseException, run_dir: Optional[Path]) -> str:
    """dlcli's paragraph for an allocation failure while training (torch.OutOfMemoryError, the
    CPU allocator's RuntimeError, MemoryError): how much could not be allocated, and where."""
    import re

    text = str(exc)
    found = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)  # the CPU allocator
    if found:
        amount = f" {_bytes_text(int(found.group(1)))}"
    else:
        found = re.search(r"tried to allocate ([\d.]+ [KMGT]?i?B)", text, re.IGNORECASE)  # CUDA's caching allocator
        amount = f" {found.group(1)}" if found else ""
    where = "the GPU" if "cuda" in text.lower() or "gpu" in text.lower() else "this machine"
    folder = f" (run folder: {run_dir})" if run_dir is not None else ""
    return (
        f"Out of memory: {where} could not allocate{amount or ' what training needed'} "
        f"while training{folder}. Use a smaller training.batch_size, a smaller model or "
        "data.max_train_samples; the run folder keeps every complete epoch."
    )


def _bytes_text(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _metric_rows(metrics: Path) -> int:
    try:
        return len(read_metrics(metrics)[1])
    except RunDirError:
        return 0


def _per_label_accuracy(model, batches, logits: bool) -> list[float]:
    from .engine import predict
    from .losses import predicted_classes

    outputs, targets = predict(model, batches)
    return (predicted_classes(outputs, "multilabel", logits) == (targets > 0.5)).float().mean(0).tolist()


def _share_run_dir(run_dir: Optional[Path], dist: Distributed) -> Path:
    """Every rank learns rank 0's run folder."""
    import torch.distributed as tdist

    box = [str(run_dir) if run_dir is not None else None]
    tdist.broadcast_object_list(box, src=0)
    assert box[0] is not None  # rank 0 always has its folder
    return Path(box[0])


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))
