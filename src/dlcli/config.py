"""The typed experiment config: YAML in, frozen dataclasses out, YAML back.

Frozen dataclasses plus a small validator of our own (rather than pydantic) so that every
error can name the file, the line, the key path, what was found, what was expected and the
nearest valid name, and so that the CLI does not pay for a heavy import. Precedence is
defaults < file < ``--set a.b=value`` overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Collection, Literal, Optional, Union

from .errors import ConfigError
from .layer_specs import LAYER_TYPES, Activation, LayerSpec, option

OutputActivation = Literal["auto", "linear", "sigmoid", "tanh", "relu", "softmax"]

ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)
_WEIGHTS_HELP = (
    "weights to start from: a dlcli run folder (runs/<id>: its best.pt, every tensor whose name and shape match) "
    "or a state-dict file"
)

# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class MlpModel:
    """Flatten, then Dense layers, then an output layer sized from the data."""

    preset: Literal["mlp"] = "mlp"
    hidden: tuple[int, ...] = option((64, 64), help="units of each hidden Dense layer", ge=1)
    activation: Activation = option("relu", help="activation of the hidden layers")
    dropout: float = option(0.0, help="dropout after each hidden layer", ge=0.0, lt=1.0)
    output_activation: OutputActivation = option("auto", help="auto picks it from the loss")
    weights: Optional[str] = option(None, help=_WEIGHTS_HELP)


@dataclass(frozen=True)
class CnnModel:
    """Conv+MaxPool blocks, Flatten, Dropout, optional hidden Dense layers, output layer."""

    preset: Literal["cnn"] = "cnn"
    filters: tuple[int, ...] = option((32, 64), help="filters of each Conv2D block", ge=1)
    kernel_size: int = option(3, help="kernel size of every Conv2D", ge=1)
    pool_size: int = option(2, help="MaxPool2D window after every Conv2D", ge=1)
    activation: Activation = option("relu", help="activation of the hidden layers")
    hidden: tuple[int, ...] = option((), help="units of Dense layers after Flatten", ge=1)
    dropout: float = option(0.5, help="dropout before the output layer", ge=0.0, lt=1.0)
    output_activation: OutputActivation = option("auto", help="auto picks it from the loss")
    weights: Optional[str] = option(None, help=_WEIGHTS_HELP)


@dataclass(frozen=True)
class BinaryModel:
    """The IMDB-style classifier: Dense hidden layers and one sigmoid unit."""

    preset: Literal["binary"] = "binary"
    hidden: tuple[int, ...] = option((16, 16), help="units of each hidden Dense layer", ge=1)
    activation: Activation = option("relu", help="activation of the hidden layers")
    dropout: float = option(0.0, help="dropout after each hidden layer", ge=0.0, lt=1.0)
    weights: Optional[str] = option(None, help=_WEIGHTS_HELP)


@dataclass(frozen=True)
class LayersModel:
    """A general list of layers, applied in order."""

    layers: tuple[LayerSpec, ...] = option(help="the layers, each `- type: {options}`")
    weights: Optional[str] = option(None, help=_WEIGHTS_HELP)


@dataclass(frozen=True)
class LeNet5Model:
    """LeCun's LeNet-5 for 28x28 inputs: the first convolution pads (same), as MNIST's 28x28
    digits were centred in 32x32 for the original."""

    preset: Literal["lenet5"] = "lenet5"
    activation: Activation = option("tanh", help="activation of the hidden layers (the original: tanh)")
    pooling: Literal["avg", "max"] = option("avg", help="subsampling layers: avg (the original) or max")
    output_activation: OutputActivation = option("auto", help="auto picks it from the loss")
    weights: Optional[str] = option(None, help=_WEIGHTS_HELP)


@dataclass(frozen=True)
class TorchvisionModel:
    """A classification model of torchvision.models, adapted to the data's channels and classes."""

    torchvision: str = option(help="the model's name in torchvision.models, e.g. resnet18")
    weights: Optional[str] = option(
        None, help=_WEIGHTS_HELP + ", or one of torchvision's weight names for the model (DEFAULT, IMAGENET1K_V1, ...)"
    )


@dataclass(frozen=True)
class ZFNetModel:
    """Zeiler and Fergus's ZFNet (2013) for 224x224 images: AlexNet with a 7x7 stride-2 first
    convolution and 3x3 stride-2 pooling (the layer table of the paper's Figure 3)."""

    preset: Literal["zfnet"] = "zfnet"
    activation: Activation = option("relu", help="activation of the hidden layers (the original: relu)")
    dropout: float = option(0.5, help="dropout after each of the two 4096-unit layers", ge=0.0, lt=1.0)
    output_activation: OutputActivation = option("auto", help="auto picks it from the loss")
    weights: Optional[str] = option(None, help=_WEIGHTS_HELP)


PRESETS: dict[str, type] = {
    "mlp": MlpModel,
    "cnn": CnnModel,
    "binary": BinaryModel,
    "lenet5": LeNet5Model,
    "zfnet": ZFNetModel,
}
ModelConfig = Union[MlpModel, CnnModel, BinaryModel, LeNet5Model, ZFNetModel, LayersModel, TorchvisionModel]

# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes to each training batch of images, on the device, seeded per batch."""

    horizontal_flip: bool = option(False, help="mirror half of the images left to right")
    crop_padding: int = option(0, help="pad by N pixels (zeros) and crop back at a random offset", ge=0)
    rotation: float = option(0.0, help="rotate by a random angle of at most this many degrees", ge=0.0, le=180.0)
    shift: float = option(0.0, help="shift by at most this fraction of the height and width", ge=0.0, lt=1.0)

    @property
    def enabled(self) -> bool:
        return self.horizontal_flip or self.crop_padding > 0 or self.rotation > 0 or self.shift > 0


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """The keys every dataset kind shares, with one meaning each.

    Each kind's module in data/ subclasses this with its own keys (help, defaults, limits and
    `check`) and registers the subclass (registry.DATASETS); a `data:` mapping is built as the
    class of the kind it names, so a key of another kind is an error that names its owner.
    """

    dataset: str = option(help="the kind of data: a built-in dataset or a kind of your own files (docs/config.md)")
    validation_split: float = option(
        0.0,
        help="fraction of the training set held out (timeseries: of the rows, before the test rows; 0.25)",
        ge=0.0,
        lt=1.0,
    )
    validation_size: Optional[int] = option(None, help="number of training samples held out", ge=1)
    validation_from: Literal["start", "end"] = option("end", help="hold out from the start or end")
    max_train_samples: Optional[int] = option(None, help="use only the first N training samples", ge=1)
    test_split: Optional[float] = option(
        None,
        help="users' files without a test file or folder: fraction held out for testing (default 0.2; timeseries: "
        "the last 0.25 of the rows)",
        ge=0.0,
        lt=1.0,
    )
    augment: AugmentConfig = field(
        default_factory=AugmentConfig,
        metadata={"help": "random image augmentation of training batches (off by default)"},
    )
    folds_file: Optional[str] = option(
        None, help="dlcli cv: the folds.csv whose fold `fold` is this run's validation data (written by dlcli cv)"
    )
    fold: Optional[int] = option(
        None, help="dlcli cv: which fold of folds_file validates (0-based, repeats follow)", ge=0
    )

    # Keys whose default changed: {key: the default older dlcli wrote into config.yaml}, so a run
    # saved then still loads as another kind (see _without_other_kinds_defaults).
    FORMER_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def check(self) -> None:
        """Refuse keys that do not fit together: a ConfigError whose `key` names the key at fault
        (data.<key>); the loader adds the file and line. Kinds extend it."""
        if self.validation_split and self.validation_size:
            raise ConfigError("give validation_split or validation_size, not both.", key="data.validation_size")
        if (self.folds_file is None) != (self.fold is None):
            missing = "fold" if self.fold is None else "folds_file"
            raise ConfigError(f"folds_file and fold go together; {missing} is missing.", key=f"data.{missing}")
        if self.fold is not None and (self.validation_split or self.validation_size):
            raise ConfigError(
                "a cross-validation fold is the validation data: set validation_split to 0 and leave validation_size out.",
                key="data.validation_split",
            )

    def has_validation(self) -> bool:
        """Whether runs of this data hold out validation data, known without loading it (so a
        sweep knows its default objective is val_loss): rows held out here; kinds with more
        ways (a val/ folder) extend it."""
        return bool(self.validation_split or self.validation_size or self.fold is not None)

    def defaults_for(self, given: Collection[str]) -> dict[str, Any]:
        """Shared keys whose default depends on the kind, for those not in `given` (the keys the
        file wrote), so the run's saved config.yaml states them. None by default."""
        return {}


def data_config(dataset: str, **keys: Any) -> DataConfig:
    """The data config of kind `dataset` built in code (as a YAML mapping would be, without the
    file's checks): `data_config("csv", path="iris.csv", target="species")`."""
    from .registry import DATASETS

    cls = DATASETS.get(dataset, key="data.dataset").config if dataset in DATASETS else DataConfig
    return cls(dataset=dataset, **keys)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class OptimizerConfig:
    """Unset options take the optimizer's default (Keras's defaults, as the course used)."""

    name: str = option("adam", help="sgd, adam, adamw or rmsprop")
    lr: Optional[float] = option(None, help="learning rate", gt=0.0)
    momentum: Optional[float] = option(None, help="sgd momentum", ge=0.0)
    nesterov: Optional[bool] = option(None, help="sgd Nesterov momentum")
    weight_decay: Optional[float] = option(None, help="L2 penalty (decoupled for adamw)", ge=0.0)
    beta_1: Optional[float] = option(None, help="adam/adamw first-moment decay", ge=0.0, lt=1.0)
    beta_2: Optional[float] = option(None, help="adam/adamw second-moment decay", ge=0.0, lt=1.0)
    eps: Optional[float] = option(None, help="numerical-stability term", gt=0.0)
    rho: Optional[float] = option(None, help="rmsprop decay of the squared-gradient average", ge=0.0, lt=1.0)
    centered: Optional[bool] = option(None, help="rmsprop centered variant")
    clipnorm: Optional[float] = option(None, help="clip each weight tensor's gradient to this norm (Keras)", gt=0.0)
    global_clipnorm: Optional[float] = option(
        None, help="clip all gradients together to this global norm (Keras; torch's clip_grad_norm_)", gt=0.0
    )
    clipvalue: Optional[float] = option(None, help="clip each gradient value to [-clipvalue, clipvalue]", gt=0.0)

    # Keys every optimizer takes (the others are the optimizer's own, checked against its defaults).
    CLIP_KEYS: ClassVar[tuple[str, ...]] = ("clipnorm", "global_clipnorm", "clipvalue")

    def check(self) -> None:
        """Keras refuses clipnorm with global_clipnorm and silently ignores clipvalue beside either:
        one clipping at a time, so what is applied is what is written."""
        given = [k for k in self.CLIP_KEYS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(
                f"optimizer.{given[1]}: set one way of clipping gradients, not {' and '.join(given)} "
                "(Keras rejects or ignores the second).",
                hint="Keep optimizer.global_clipnorm (the usual choice), optimizer.clipnorm or optimizer.clipvalue, "
                "and remove the others.",
                key=f"optimizer.{given[1]}",
            )


@dataclass(frozen=True)
class EarlyStoppingConfig:
    monitor: str = option("val_loss", help="metric watched, a metrics.csv column")
    mode: Literal["auto", "min", "max"] = option(
        "auto", help="auto: max for accuracy, precision, recall, f1, auc, pr_auc and r2, min otherwise"
    )
    patience: int = option(5, help="epochs without improvement before stopping", ge=0)
    min_delta: float = option(0.0, help="smallest change that counts as improvement", ge=0.0)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = option(help="step, cosine, reduce_on_plateau, one_cycle or constant")
    step_size: int = option(10, help="step: epochs between decays", ge=1)
    gamma: float = option(0.1, help="step: factor applied at each decay", gt=0.0, le=1.0)
    min_lr: float = option(0.0, help="cosine, reduce_on_plateau: lowest learning rate", ge=0.0)
    factor: float = option(0.1, help="reduce_on_plateau: factor applied on a plateau", gt=0.0, lt=1.0)
    patience: int = option(5, help="reduce_on_plateau: epochs without improvement", ge=0)
    monitor: str = option("val_loss", help="reduce_on_plateau: metric watched")
    mode: Literal["auto", "min", "max"] = option("auto", help="reduce_on_plateau: direction")
    max_lr: Optional[float] = option(None, help="one_cycle: peak learning rate (default: optimizer.lr)", gt=0.0)
    pct_start: float = option(0.25, help="one_cycle: share of the steps spent rising to max_lr", gt=0.0, lt=1.0)
    div_factor: float = option(25.0, help="one_cycle: the first learning rate is max_lr / div_factor", gt=0.0)
    final_div_factor: float = option(
        1e4, help="one_cycle: the last learning rate is the first / final_div_factor", gt=0.0
    )
    cycle_momentum: bool = option(
        True,
        help="one_cycle: cycle the momentum (Adam's beta_1) inversely to the rate, from max_momentum down to "
        "base_momentum and back, as PyTorch's OneCycleLR does; optimizers without momentum are left as they are",
    )
    base_momentum: float = option(0.85, help="one_cycle: the momentum at the peak rate", ge=0.0, lt=1.0)
    max_momentum: float = option(0.95, help="one_cycle: the momentum at the first and last steps", ge=0.0, lt=1.0)
    warmup_steps: int = option(0, help="optimizer steps of linear warm-up to the schedule's rate", ge=0)
    warmup_epochs: int = option(0, help="epochs of linear warm-up, stepped per batch", ge=0)

    def check(self) -> None:
        if self.warmup_steps and self.warmup_epochs:
            raise ConfigError(
                "training.schedule.warmup_epochs: give the warm-up in steps or in epochs, not both.",
                hint="Remove training.schedule.warmup_steps or training.schedule.warmup_epochs.",
                key="training.schedule.warmup_epochs",
            )
        if self.base_momentum > self.max_momentum:
            raise ConfigError(
                f"training.schedule.base_momentum ({self.base_momentum:g}) is above max_momentum "
                f"({self.max_momentum:g}): one_cycle lowers the momentum from max_momentum to base_momentum.",
                hint="Swap the two values (PyTorch's defaults are base_momentum: 0.85, max_momentum: 0.95).",
                key="training.schedule.base_momentum",
            )
        if self.name == "one_cycle" and (self.warmup_steps or self.warmup_epochs):
            raise ConfigError(
                "training.schedule.warmup_steps: one_cycle warms up by itself, over pct_start of the steps.",
                hint="Remove the warm-up key and set training.schedule.pct_start instead.",
                key="training.schedule.warmup_steps" if self.warmup_steps else "training.schedule.warmup_epochs",
            )

    @property
    def per_step(self) -> bool:
        """Whether the learning rate changes every optimizer step (not only between epochs)."""
        return self.name == "one_cycle" or bool(self.warmup_steps or self.warmup_epochs)


# training.metrics: Keras's names (scikit-learn's definitions); each logs a val_<name> column.
MetricName = Literal["accuracy", "precision", "recall", "f1", "auc", "pr_auc", "top_k_accuracy", "mae", "rmse", "r2"]


@dataclass(frozen=True)
class TopKOptions:
    k: int = option(5, help="a prediction is right when the true class is among the k highest scores", ge=1)


@dataclass(frozen=True)
class TopKAccuracy:
    """`{top_k_accuracy: {k: 5}}` in training.metrics: the column val_top_5_accuracy."""

    top_k_accuracy: TopKOptions = field(default_factory=TopKOptions, metadata={"help": "its k"})


@dataclass(frozen=True)
class FineTuneConfig:
    """Training a network that starts from trained weights: a frozen part first, then (optionally) all of it."""

    freeze: Union[Literal["backbone"], tuple[str, ...]] = option(
        "backbone", help="backbone (all but the last layer, the head) or a list of layer names or name prefixes"
    )
    freeze_epochs: Optional[int] = option(
        None, help="epochs with the frozen part frozen, then it trains too (null: never, feature extraction)", ge=1
    )
    unfreeze: Union[Literal["all"], tuple[str, ...]] = option(
        "all", help="what unfreezes after freeze_epochs: all, or a list of layer names or name prefixes"
    )
    backbone_lr_mult: float = option(
        0.01,
        help="the unfrozen part's learning rate as a multiple of the optimizer's (its own parameter group)",
        gt=0.0,
    )


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = option(10, help="passes over the training set", ge=1)
    batch_size: int = option(32, help="samples per step (the global batch under torchrun)", ge=1)
    shuffle: bool = option(True, help="reshuffle the training set every epoch")
    precision: Literal["fp32", "bf16", "auto"] = option(
        "fp32",
        help="bf16 autocast: on a GPU that supports it, or a CPU with native bf16 (dlcli info); auto: bf16 "
        "where it is native and the step does enough work to pay, else fp32 (run.json says which and why)",
    )
    compile: Union[bool, Literal["auto", "default", "reduce-overhead", "max-autotune"]] = option(
        "auto",
        help="torch.compile the whole step (model, loss, metric, optimizer): true (default mode) or a mode; "
        "auto: only where it pays back its compile time (a small model's long run on the CPU), else eager",
    )
    cuda_graph: bool = option(
        False, help="record each training step as one CUDA graph and replay it (CUDA only; for small models)"
    )
    channels_last: Union[bool, Literal["auto"]] = option(
        "auto", help="keep convolution weights and activations channels-last (auto: when the model has Conv2D)"
    )
    deterministic: bool = option(False, help="use only PyTorch's deterministic algorithms")
    monitor: str = option("auto", help="metric that picks best.pt (auto: val_loss, else loss)")
    early_stopping: Optional[EarlyStoppingConfig] = option(None, help="stop when a metric stops improving")
    schedule: Optional[ScheduleConfig] = option(
        None, help="learning-rate schedule: per epoch, or per step for one_cycle and warm-up"
    )
    gradient_accumulation_steps: int = option(
        1, help="micro-batches of batch_size per optimizer step (the effective batch is batch_size x this)", ge=1
    )
    metrics: tuple[Union[MetricName, TopKAccuracy], ...] = option(
        (),
        help="validation metrics beyond the loss and accuracy (mae), each a val_<name> column: accuracy, precision, "
        "recall, f1, auc, pr_auc, {top_k_accuracy: {k: 5}}; regression: mae, rmse, r2",
    )
    class_weight: Union[Literal["balanced"], dict[str, float], None] = option(
        None,
        help="weigh each class's samples in the loss: balanced (n / (classes x count) on the training split) or "
        "{class name: weight} (classes not named weigh 1)",
    )
    decision_threshold: Union[float, Literal["auto"], None] = option(
        None,
        help="binary tasks: a probability above it is the positive class (default 0.5); auto: the one that "
        "maximises F1 on the validation split, chosen after training",
        gt=0.0,
        lt=1.0,
    )
    fine_tune: Optional[FineTuneConfig] = option(
        None, help="freeze part of a network that starts from trained weights (model.weights), then unfreeze it"
    )

    @property
    def compile_forced(self) -> bool:
        """compile set to true or a mode: compiled whatever the run (auto decides per run)."""
        return self.compile not in (False, "auto")

    def check(self) -> None:
        if self.schedule is not None:
            self.schedule.check()
        if isinstance(self.class_weight, dict):
            negative = {k: v for k, v in self.class_weight.items() if v < 0}
            if negative:
                listed = ", ".join(f"{k}: {v:g}" for k, v in negative.items())
                raise ConfigError(
                    # ctx.error puts the key in front (check()'s errors are located by their key)
                    f"a class's weight multiplies its samples' loss and cannot be negative ({listed}).",
                    hint="Use weights of 0 or more (1 leaves a class as it is), or class_weight: balanced.",
                    key="training.class_weight",
                )
        if self.fine_tune is not None and self.fine_tune.freeze_epochs is not None and self.compile_forced:
            raise ConfigError(
                "training.fine_tune.freeze_epochs: a compiled step keeps the parameters it was compiled with, "
                "and unfreezing adds some mid-run.",
                hint="Use training.compile: false with freeze_epochs, or leave freeze_epochs out (feature extraction).",
                key="training.fine_tune.freeze_epochs",
            )
        if self.cuda_graph and self.gradient_accumulation_steps > 1:
            raise ConfigError(
                "training.gradient_accumulation_steps: a recorded CUDA graph holds one whole step, "
                "not a window of micro-batches.",
                hint="Use training.cuda_graph: false with gradient accumulation (training.compile still works).",
                key="training.gradient_accumulation_steps",
            )
        if self.cuda_graph and self.schedule is not None and self.schedule.per_step:
            raise ConfigError(
                "training.schedule: a recorded CUDA graph keeps the learning rate it was recorded with, "
                "and one_cycle and warm-up change it every step.",
                hint="Use training.cuda_graph: false with a per-step schedule, or a per-epoch schedule.",
                key="training.schedule",
            )


@dataclass(frozen=True)
class LossConfig:
    """`loss: {name: ..., label_smoothing: 0.1}`; a plain `loss: NAME` means this with no smoothing."""

    name: str = option("auto", help="the loss (auto picks one from the data)")
    label_smoothing: float = option(
        0.0, help="cross-entropy: share of each target spread over all classes (Keras)", ge=0.0, lt=1.0
    )

    def check(self) -> None:
        if self.label_smoothing and self.name in ("mse", "mae"):
            raise ConfigError(
                f"loss.label_smoothing: smooths class targets, and {self.name} is a regression loss.",
                hint="Remove loss.label_smoothing, or use it with a cross-entropy loss.",
                key="loss.label_smoothing",
            )


# ----------------------------------------------------------------------------- tracking


@dataclass(frozen=True)
class MlflowConfig:
    uri: Optional[str] = option(
        None,
        help="tracking URI: a folder, sqlite:///file.db or http://host:port "
        "(default: $MLFLOW_TRACKING_URI, else MLflow's own default, sqlite:///mlflow.db)",
    )
    experiment: Optional[str] = option(None, help="experiment name, created when missing (default: the config's name)")
    log_checkpoints: bool = option(False, help="also upload checkpoints/ as artifacts at the end of the run")
    timeout: int = option(10, help="seconds one request to a tracking server may take", ge=1)
    retries: int = option(2, help="retries of a failed request before MLflow logging stops for the run", ge=0)


@dataclass(frozen=True)
class TrackingConfig:
    tensorboard: bool = option(False, help="write TensorBoard event files into the run folder's tensorboard/")
    mlflow: Optional[MlflowConfig] = option(None, help="log the run to MLflow: params, metrics, status, artifacts")


@dataclass(frozen=True)
class Config:
    data: DataConfig = option(help="the dataset")
    model: ModelConfig = option(
        help="a preset (mlp, cnn, binary, lenet5, zfnet), a list of layers or a torchvision model"
    )
    name: str = option("experiment", help="used in the run folder's name")
    seed: int = option(0, help="seed of every random generator", ge=0)
    device: str = option("auto", help="auto, cpu, cuda or cuda:N")
    loss: Union[str, LossConfig] = option(
        "auto", help="the loss (auto picks one from the data): a name, or {name, label_smoothing}"
    )
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"help": "the optimizer"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"help": "the training loop"})
    tracking: TrackingConfig = field(
        default_factory=TrackingConfig, metadata={"help": "TensorBoard and MLflow logging"}
    )


# Top-level keys first in the dumped YAML, in the order a person reads them.
_TOP_ORDER = ("name", "seed", "device", "data", "model", "loss", "optimizer", "training", "tracking")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


# ----------------------------------------------------------------------------- loading


class _Context:
    """Where values came from, so errors can name the file and line."""

    def __init__(self, source: str | None, lines: dict[tuple, int], overridden: set[tuple]) -> None:
        self.source = source
        self.lines = lines
        self.overridden = overridden

    def where(self, path: tuple) -> str:
        """'FILE, line N: ' or '--set ' for a key path: where the user can fix it."""
        if any(path[: len(o)] == o or o[: len(path)] == path for o in self.overridden if path):
            return "--set "
        if self.source:
            for cut in range(len(path), -1, -1):  # nearest enclosing key with a known line
                if path[:cut] in self.lines:
                    return f"{self.source}, line {self.lines[path[:cut]]}: "
            return f"{self.source}: "
        return ""

    def error(self, path: tuple, problem: str, hint: str | None = None) -> ConfigError:
        dotted = ".".join(str(p) for p in path)
        subject = f"{dotted}: " if dotted else ""
        return ConfigError(f"{self.where(path)}{subject}{problem}", hint=hint)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a text"
    if tp is LayerSpec:
        return "a layer"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0]).replace('a ', '', 1)}s"
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1])}"
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        if bool in args and len(args) == 2 and literals:  # e.g. true, false or 'auto'
            return (
                "true, false, "
                + ", ".join(repr(v) for v in literals[:-1])
                + (", " if len(literals) > 1 else "")
                + f"or {literals[-1]!r}"
            )
        return " or ".join(_type_name(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _coerce(tp: Any, value: Any, path: tuple, ctx: _Context) -> Any:
    from .registry import suggest

    origin = typing.get_origin(tp)
    if tp is ModelConfig:
        return _build_model(value, path, ctx)
    if tp is DataConfig:
        return _build_data(value, path, ctx)
    if tp is LayerSpec:
        return _build_layer(value, path, ctx)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        alts = [a for a in args if a is not type(None)]
        if isinstance(value, dict) and any(dataclasses.is_dataclass(a) for a in alts):
            alts = [a for a in alts if dataclasses.is_dataclass(a)]  # a mapping is the mapping's form
        elif isinstance(value, str) and not all(dataclasses.is_dataclass(a) for a in alts):
            alts = [a for a in alts if not dataclasses.is_dataclass(a)]  # a name is a name's form
        for alt in alts:
            try:
                return _coerce(alt, value, path, ctx)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ctx.error(path, f"expected {_type_name(tp)}, found {_describe(value)}.")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None and _all_default(tp) else value, path, ctx)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and not isinstance(value, bool):
            return value
        hint = suggest(str(value), [str(c) for c in choices]) if isinstance(value, str) else ""
        raise ctx.error(path, f"expected {_type_name(tp)}, found {_describe(value)}.", hint=hint or None)
    if origin is dict:  # a mapping of names to values, e.g. data.column_types
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected {_type_name(tp)}, found {_describe(value)}.")
        # YAML reads a class named 1 as a number; as a key of names it means the name "1".
        named = {
            str(k) if key_tp is str and isinstance(k, int) and not isinstance(k, bool) else k: v
            for k, v in value.items()
        }
        return {_coerce(key_tp, k, path, ctx): _coerce(value_tp, v, path + (k,), ctx) for k, v in named.items()}
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and item_tp is int:
                value = [value]  # `hidden: 64` means one hidden layer of 64
            else:
                raise ctx.error(path, f"expected {_type_name(tp)}, found {_describe(value)}.")
        return tuple(_coerce(item_tp, v, path + (i,), ctx) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ctx.error(path, f"expected true or false, found {_describe(value)}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ctx.error(path, f"expected a whole number, found {_describe(value)}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads `1e-3` (no dot) as text; accept it as the number it means
                return float(value)
            except ValueError:
                pass
        raise ctx.error(path, f"expected a number, found {_describe(value)}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ctx.error(path, f"expected a text, found {_describe(value)}.")
    raise TypeError(f"unsupported config type {tp!r}")


def _all_default(cls: type) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
    )


def _check_limits(f: dataclasses.Field, value: Any, path: tuple, ctx: _Context) -> None:
    if value is None or isinstance(value, (bool, str, tuple)):
        return
    limits, ok = [], True
    for key, word, test in (
        ("ge", "at least", operator.ge),
        ("gt", "greater than", operator.gt),
        ("le", "at most", operator.le),
        ("lt", "less than", operator.lt),
    ):
        if key in f.metadata:
            limits.append(f"{word} {f.metadata[key]}")
            ok = ok and test(value, f.metadata[key])
    if not ok:
        help_text = f.metadata.get("help", "")
        raise ctx.error(path, f"must be {' and '.join(limits)}, found {value} ({help_text}).")


def _build(cls: type, raw: Any, path: tuple, ctx: _Context) -> Any:
    from .registry import suggest

    if not isinstance(raw, dict):
        raise ctx.error(path, f"expected a mapping of options, found {_describe(raw)}.")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    for key in raw:
        if key not in names:
            hint = suggest(str(key), names)
            valid = ", ".join(names) if names else "none"
            raise ctx.error(
                path + (key,),
                f"unknown key {str(key)!r}{' in ' + '.'.join(map(str, path)) if path else ''}; valid keys are: {valid}.",
                hint=hint or None,
            )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields:
        if f.name in raw:
            value = _coerce(hints[f.name], raw[f.name], path + (f.name,), ctx)
            if isinstance(value, tuple):
                if len(value) < f.metadata.get("min_items", 0):
                    raise ctx.error(
                        path + (f.name,),
                        f"needs at least {f.metadata['min_items']} item(s), found none ({f.metadata.get('help', '')}).",
                    )
                for i, item in enumerate(value):
                    _check_limits(f, item, path + (f.name, i), ctx)
            else:
                _check_limits(f, value, path + (f.name,), ctx)
            kwargs[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            help_text = f.metadata.get("help", "")
            raise ctx.error(path + (f.name,), f"is required ({help_text}).")
    return cls(**kwargs)


def _build_model(raw: Any, path: tuple, ctx: _Context) -> Any:
    from .registry import suggest

    if not isinstance(raw, dict):
        raise ctx.error(path, f"expected a mapping with `preset:` or `layers:`, found {_describe(raw)}.")
    given = [k for k in ("preset", "layers", "torchvision") if k in raw]
    if len(given) > 1:
        raise ctx.error(path, f"give one of `preset:`, `layers:` or `torchvision:`, not {' and '.join(given)}.")
    if "layers" in raw:
        return _build(LayersModel, raw, path, ctx)
    if "torchvision" in raw:
        return _build(TorchvisionModel, raw, path, ctx)
    if "preset" not in raw:
        raise ctx.error(
            path,
            f"needs `preset:` ({', '.join(PRESETS)}), `layers:` (a list of layers) or `torchvision:` (a model name).",
            hint="For example `model: {preset: mlp, hidden: [64, 64]}`.",
        )
    preset = raw["preset"]
    if not isinstance(preset, str) or preset not in PRESETS:
        hint = suggest(str(preset), PRESETS)
        raise ctx.error(
            path + ("preset",),
            f"unknown preset {preset!r}; valid presets are: {', '.join(PRESETS)}.",
            hint=hint or None,
        )
    return _build(PRESETS[preset], raw, path, ctx)


def _build_layer(raw: Any, path: tuple, ctx: _Context) -> Any:
    from .registry import suggest

    if isinstance(raw, str):
        raw = {raw: {}}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ctx.error(
            path,
            f"each layer is one `type: {{options}}` entry, found {_describe(raw)}.",
            hint="For example `- dense: {units: 10, activation: softmax}`.",
        )
    ((kind, options),) = raw.items()
    if kind not in LAYER_TYPES:
        hint = suggest(str(kind), LAYER_TYPES)
        raise ctx.error(
            path,
            f"unknown layer type {kind!r}; valid layer types are: {', '.join(LAYER_TYPES)}.",
            hint=hint or None,
        )
    return _build(LAYER_TYPES[kind], options if options is not None else {}, path + (kind,), ctx)


# ----------------------------------------------------------------------------- hostile YAML
# PyYAML accepts files that no one means: a key given twice (the last one silently wins) and
# aliases that expand to billions of values, or refer to themselves (the expansion costs
# minutes, or a RecursionError, in every walk over the data). The loader refuses both, and
# bounds the file's size and nesting, before anything walks the expanded data.

MAX_CONFIG_BYTES = 256 * 1024  # a config is a few kB; even a long layer list stays far below
MAX_YAML_VALUES = 10_000  # values (scalars, lists, mappings) after expanding every alias
MAX_YAML_DEPTH = 32  # levels of nesting after expanding aliases; a config needs about 6


def _yaml_where(source: str, mark: Any) -> str:
    return f"{source}, line {mark.line + 1}" if mark is not None else source


@functools.cache
def _config_loader_class() -> type:
    """A SafeLoader that stops composing past MAX_YAML_DEPTH levels or MAX_YAML_VALUES nodes.

    Duplicate keys are found on the composed graph (`_check_node_graph`), not in
    construct_mapping: PyYAML flattens `<<: *base` merges into the merged node itself, so a
    check at construction would mistake a merged key for a repeated one.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        source = "the config"

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.depth = 0
            self.composed = 0

        # The scanner looks up to 1024 characters ahead for every open `[` or `{` (each could
        # start a key), which is quadratic in a line of thousands of brackets: stop it early too.
        def fetch_flow_collection_start(self, token_class: Any) -> None:
            if self.flow_level >= MAX_YAML_DEPTH:
                raise _too_deep(self.source, self.get_mark())
            super().fetch_flow_collection_start(token_class)

        def add_indent(self, column: int) -> bool:
            if len(self.indents) >= MAX_YAML_DEPTH:
                raise _too_deep(self.source, self.get_mark())
            return super().add_indent(column)

        def compose_node(self, parent: Any, index: Any) -> Any:
            # Counted here, while composing, so a deep or huge file is refused before PyYAML's
            # recursive composer overflows the stack or builds it all.
            self.depth += 1
            self.composed += 1
            try:
                if self.depth > MAX_YAML_DEPTH:
                    raise _too_deep(self.source, self.peek_event().start_mark)
                if self.composed > MAX_YAML_VALUES:
                    raise _too_large(self.source, self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return ConfigLoader


def _too_deep(source: str, mark: Any, expanded: bool = False) -> ConfigError:
    through = " once its aliases (*name) are expanded" if expanded else ""
    return ConfigError(
        f"{_yaml_where(source, mark)}: the config is nested more than {MAX_YAML_DEPTH} levels deep{through}.",
        hint="A dlcli config needs about 6 levels"
        + ("; write the values out instead of nesting aliases." if expanded else "."),
    )


def _too_large(source: str, mark: Any, expanded: bool = False) -> ConfigError:
    through = " once its aliases (*name) are expanded" if expanded else ""
    return ConfigError(
        f"{_yaml_where(source, mark)}: the config holds more than {MAX_YAML_VALUES:,} values{through}.",
        hint="A dlcli config needs a few hundred"
        + ("; write the values out instead of repeating nested aliases." if expanded else "."),
    )


def _check_node_graph(root: Any, source: str, key_of: Callable[[Any], Any]) -> None:
    """Refuse duplicate keys, and alias expansions that are too large, too deep or cyclic.

    Runs on the composed node graph before anything is constructed. Aliases make that graph a
    DAG (or a cycle) that later walks expand into a tree; its expanded size and depth are
    counted on the DAG with memoisation, iteratively, so a bomb of 9^9 values is measured in
    microseconds. `key_of` turns a scalar key node into the value it means (so `yes` and `true`
    are the same key, as PyYAML would make them).
    """
    import yaml

    def children(node: Any) -> list:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, depth)
    open_: set[int] = set()  # nodes on the current path: meeting one again is a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            kids = [done[id(c)] for c in children(node)]
            size = 1 + sum(k[0] for k in kids)
            depth = 1 + max((k[1] for k in kids), default=0)
            if depth > MAX_YAML_DEPTH:
                raise _too_deep(source, node.start_mark, expanded=True)
            if size > MAX_YAML_VALUES:
                raise _too_large(source, node.start_mark, expanded=True)
            if isinstance(node, yaml.MappingNode):
                _check_duplicate_keys(node, source, key_of)
            done[id(node)] = (size, depth)
            open_.discard(id(node))
            continue
        if id(node) in done:
            continue
        if id(node) in open_:
            raise ConfigError(
                f"{_yaml_where(source, node.start_mark)}: an alias refers to the value that contains it, "
                "so the config would never end.",
                hint="Remove the *alias from inside its own &anchor.",
            )
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in done)


def _check_duplicate_keys(node: Any, source: str, key_of: Callable[[Any], Any]) -> None:
    import yaml

    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged in by `<<: *base` are meant to be overridden by the mapping's own
        key = key_of(key_node)
        line = key_node.start_mark.line + 1
        try:
            seen = key in first_line
        except TypeError:
            continue  # unhashable: PyYAML's own error says so
        if seen:
            earlier = first_line[key]
            where = f"twice on line {line}" if earlier == line else f"on lines {earlier} and {line}"
            raise ConfigError(
                f"{source}, line {line}: the key {str(key_node.value)!r} is given {where} of the same "
                "mapping; YAML would silently keep only the last one.",
                hint=f"Keep one `{key_node.value}:` and merge what the two hold into it.",
            )
        first_line[key] = line


def parse_yaml(text: str, source: str) -> tuple[Any, Any]:
    """(data, node) of one YAML document, refusing duplicate keys and alias bombs.

    `source` names where the text came from in messages ("FILE" or "--set KEY=VALUE"). Syntax
    errors are left to the caller as yaml.YAMLError; the limits raise ConfigError.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: {len(text):,} characters is more than a config may hold ({MAX_CONFIG_BYTES:,}).",
            hint="Check that this is the experiment file you meant.",
        )
    loader = _config_loader_class()(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_node_graph(node, source, loader.construct_object)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _line_map(node: Any, path: tuple = ()) -> dict[tuple, int]:
    """Key path -> 1-based line, from PyYAML's node tree."""
    import yaml

    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = path + (key_node.value,)
            lines[key_path] = key_node.start_mark.line + 1
            lines.update(_line_map(value_node, key_path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            lines.update(_line_map(item, path + (i,)))
    return lines


def _parse_override(text: str) -> tuple[tuple, Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(
            f"--set {text!r}: expected KEY=VALUE with a dotted key path.",
            hint="For example --set training.epochs=1 --set optimizer.lr=0.01.",
        )
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: the key path {key!r} is empty or has an empty part.")
    try:
        value = parse_yaml(value_text, f"--set {text!r}")[0] if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({exc.problem}).") from None
    path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    return path, value


def _apply_override(raw: dict, path: tuple, value: Any) -> None:
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise ConfigError(
                    f"--set {'.'.join(map(str, path))}: {'.'.join(map(str, path[:i]))} has "
                    f"{len(node)} items; use an index from 0 to {len(node) - 1}."
                )
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(map(str, path))}: {'.'.join(map(str, path[:i]))} is not a mapping.")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise ConfigError(f"--set {'.'.join(map(str, path))}: no list item {last}.")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {'.'.join(map(str, path))}: {'.'.join(map(str, path[:-1]))} is not a mapping.")


def read_config_file(path: str | Path) -> tuple[dict, dict[tuple, int]]:
    """The raw mapping of a YAML file and its key-path -> line map."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"Config file {str(p)!r} does not exist.",
            hint="Check the path, or start from one of the files in configs/.",
        )
    if p.is_dir():
        if (p / "config.yaml").is_file():
            return read_config_file(p / "config.yaml")
        raise ConfigError(f"{str(p)!r} is a folder, not a config file.", hint="Give the path of a .yaml file.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read config file {str(p)!r}: {exc}.") from None
    try:
        raw, node = parse_yaml(text, str(p))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{p}{where}: this is not valid YAML ({problem}).",
            hint="Check the indentation and that every `key: value` has a space after the colon.",
        ) from None
    if raw is None:
        raise ConfigError(
            f"Config file {str(p)!r} is empty.",
            hint="It needs at least `data: {dataset: ...}` and `model: ...`; see configs/ for examples.",
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, found {_describe(raw)}.")
    return raw, _line_map(node)


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), raw: dict | None = None
) -> Config:
    """Read, override and validate an experiment; every problem is a ConfigError."""
    lines: dict[tuple, int] = {}
    source: Optional[str]
    if raw is None:
        if path is None:
            raise ValueError("load_config needs a path or a raw mapping")
        raw, lines = read_config_file(path)
        source = str(path if not Path(path).is_dir() else Path(path) / "config.yaml")
    else:
        source = str(path) if path else None
        raw = _deep_copy(raw)
    # A `sweep:` section belongs to `dlcli sweep` (a search around this experiment); training
    # and every other command read the experiment alone.
    raw = {k: v for k, v in raw.items() if k != "sweep"}
    overridden: set[tuple] = set()
    for text in overrides:
        key_path, value = _parse_override(text)
        _apply_override(raw, key_path, value)
        overridden.add(key_path)
    ctx = _Context(source, lines, overridden)
    config = _build(Config, raw, (), ctx)
    _check_semantics(config, ctx)
    object.__setattr__(config, "_origin", ctx)  # not a field: equality and dumps ignore it
    return config


def locate(config: Config, error: ConfigError) -> ConfigError:
    """Prefix an error found after loading with the file and line (or --set) of its key."""
    ctx = getattr(config, "_origin", None)
    if ctx is None or not error.key or getattr(error, "located", False):
        return error
    path = tuple(int(p) if p.isdigit() else p for p in error.key.split("."))
    error.message = ctx.where(path) + error.message
    error.located = True  # type: ignore[attr-defined]
    error.args = (error.full_message(),)
    return error


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _check_semantics(config: Config, ctx: _Context) -> None:
    if not _NAME_PATTERN.match(config.name):
        raise ctx.error(
            ("name",),
            f"{config.name!r} cannot be used in a folder name.",
            hint="Use letters, digits, '_', '-' and '.', starting with a letter or digit (64 at most).",
        )
    if not _DEVICE_PATTERN.match(config.device):
        raise ctx.error(("device",), f"expected auto, cpu, cuda or cuda:N, found {config.device!r}.")
    try:
        config.data.check()
        config.optimizer.check()
        config.training.check()
        if isinstance(config.loss, LossConfig):
            config.loss.check()
    except ConfigError as exc:
        if not exc.key:
            raise
        raise ctx.error(_key_path(exc.key), exc.message, exc.hint) from None


def _key_path(dotted: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _build_data(raw: Any, path: tuple, ctx: _Context) -> DataConfig:
    """`data:` built as the class of the kind that `dataset:` names (its module loaded on first use)."""
    from .registry import DATASETS

    if not isinstance(raw, dict):
        raise ctx.error(path, f"expected a mapping of options, found {_describe(raw)}.")
    if "dataset" not in raw:
        raise ctx.error(path + ("dataset",), f"is required ({_field_help(DataConfig, 'dataset')}).")
    name = raw["dataset"]
    if not isinstance(name, str):
        raise ctx.error(path + ("dataset",), f"expected a text, found {_describe(name)}.")
    try:
        cls = DATASETS.get(name).config
    except ConfigError as exc:
        raise ctx.error(path + ("dataset",), exc.message, exc.hint) from None
    own = {f.name for f in dataclasses.fields(cls) if f.init}
    foreign = [key for key in raw if key not in own]
    if foreign:
        raw = _without_other_kinds_defaults(raw, foreign, name, path, ctx)
    data = _build(cls, raw, path, ctx)
    defaults = data.defaults_for(raw.keys())
    return dataclasses.replace(data, **defaults) if defaults else data


def _field_help(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def _without_other_kinds_defaults(raw: dict, foreign: list, name: str, path: tuple, ctx: _Context) -> dict:
    """`raw` less the keys of other kinds that hold those kinds' defaults: the config.yaml of a
    run saved before each kind had its own keys lists every kind's keys at their defaults. A key
    of another kind set to anything else is an error that says whose key it is."""
    from .registry import DATASETS, suggest

    owners: dict[str, list[str]] = {}
    defaults: dict[str, list[Any]] = {}
    for kind, source in sorted(DATASETS.loaded().items()):
        for f in dataclasses.fields(source.config):
            if f.init and f.name in foreign:
                owners.setdefault(f.name, []).append(kind)
                if f.default is not dataclasses.MISSING:
                    defaults.setdefault(f.name, []).append(config_to_dict(f.default))
                elif f.default_factory is not dataclasses.MISSING:
                    defaults.setdefault(f.name, []).append(config_to_dict(f.default_factory()))
                if f.name in source.config.FORMER_DEFAULTS:  # what older dlcli wrote as the default
                    defaults.setdefault(f.name, []).append(source.config.FORMER_DEFAULTS[f.name])
    for key in foreign:
        if key in owners and raw[key] in defaults.get(key, []):
            continue
        if key in owners:
            kinds = ", ".join(owners[key])
            raise ctx.error(
                path + (key,),
                f"is a key of {kinds} data, and data.dataset is {name}.",
                hint=f"Remove it, or check data.dataset. Keys of {name} data: {', '.join(_keys_of(DATASETS.get(name).config))}.",
            )
        own = _keys_of(DATASETS.get(name).config)
        hint = suggest(str(key), own)
        raise ctx.error(
            path + (key,),
            f"unknown key {str(key)!r} in {'.'.join(map(str, path))}; keys of {name} data are: {', '.join(own)}.",
            hint=hint or None,
        )
    return {key: value for key, value in raw.items() if key not in foreign}


def _keys_of(cls: type) -> list[str]:
    """The keys of a kind's data config: its own first, then the shared ones."""
    shared = [f.name for f in dataclasses.fields(DataConfig)]
    own = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in shared]
    return own + shared


# ----------------------------------------------------------------------------- dumping


def config_to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML or JSON, in a readable key order."""
    if dataclasses.is_dataclass(config):
        kind = getattr(type(config), "kind", None)
        body = {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}
        if kind is not None:  # a layer: `- dense: {units: 10}`
            return {kind: body}
        if isinstance(config, Config):
            body = {k: body[k] for k in _TOP_ORDER}
        elif isinstance(config, DataConfig):  # the kind, its own keys, then the shared ones
            shared = [f.name for f in dataclasses.fields(DataConfig)]
            order = ["dataset", *(k for k in body if k not in shared), *(k for k in shared if k != "dataset")]
            body = {k: body[k] for k in order}
        return body
    if isinstance(config, (tuple, list)):
        return [config_to_dict(v) for v in config]
    return config


def dump_config(config: Config) -> str:
    """Block-style YAML, with short leaf lists and mappings on one line (as people write layers)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def is_scalar(v: Any) -> bool:
        return not isinstance(v, (dict, list))

    def represent_list(dumper, data):
        flow = all(is_scalar(v) for v in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    def represent_dict(dumper, data):
        flow = len(data) <= 4 and all(is_scalar(v) for v in data.values())
        return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)

    Dumper.add_representer(list, represent_list)
    Dumper.add_representer(dict, represent_dict)
    return yaml.dump(config_to_dict(config), Dumper=Dumper, sort_keys=False, width=100)
