"""Losses by name, matched against the data's task and the model's last layer.

Each loss is computed stably on logits: a final softmax or sigmoid that the user wrote is
"absorbed" (left out of the network, applied inside the loss), because the log of a
probability that rounded to 0 or 1 is infinite, where log-softmax and the logits form of
binary cross-entropy stay finite. Each loss says which tasks it fits, which final activations
may precede it and which of them it absorbs (`LossSpec`).
Metrics are returned as on-device sums so the engine never syncs per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    import torch

    from .layer_specs import Activation


@dataclass(frozen=True)
class LossSpec:
    tasks: tuple[str, ...]  # data tasks it fits
    last_activations: tuple[str, ...]  # final activations it accepts (the first is the natural one)
    absorbs: tuple[str, ...]  # final activations it applies itself on logits
    make: Callable[[], Callable]  # -> loss_fn(outputs, targets) -> mean loss


def _cross_entropy():
    import torch.nn.functional as F

    return F.cross_entropy


def _bce():
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits


def _mse():
    import torch.nn.functional as F

    return F.mse_loss


def _mae():
    import torch.nn.functional as F

    return F.l1_loss


LOSSES: Registry[LossSpec] = Registry("loss", "losses")
# One-hot and integer targets give the same cross-entropy: integer labels are used for both.
LOSSES.add(
    "categorical_crossentropy", LossSpec(("multiclass", "binary"), ("softmax", "linear"), ("softmax",), _cross_entropy)
)
LOSSES.add(
    "sparse_categorical_crossentropy",
    LossSpec(("multiclass", "binary"), ("softmax", "linear"), ("softmax",), _cross_entropy),
)
LOSSES.add("binary_crossentropy", LossSpec(("binary", "multilabel"), ("sigmoid", "linear"), ("sigmoid",), _bce))
LOSSES.add("mse", LossSpec(("regression",), ("linear", "relu", "tanh", "sigmoid"), (), _mse))
LOSSES.add("mae", LossSpec(("regression",), ("linear", "relu", "tanh", "sigmoid"), (), _mae))

AUTO_LOSS = {
    "multiclass": "sparse_categorical_crossentropy",
    "binary": "binary_crossentropy",
    "multilabel": "binary_crossentropy",
    "regression": "mse",
}


def resolve_loss_name(loss: Any, task: str) -> str:
    """The loss's name for this data: `loss` is the config's plain name or its LossConfig."""
    name = loss if isinstance(loss, str) else loss.name
    return AUTO_LOSS[task] if name == "auto" else name


def label_smoothing_of(loss: Any) -> float:
    """The config's loss.label_smoothing (0 for a plain loss name)."""
    return 0.0 if isinstance(loss, str) else float(loss.label_smoothing)


SMOOTHABLE = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")


def with_label_smoothing(loss_fn: Callable, loss_name: str, label_smoothing: float) -> Callable:
    """Keras's label smoothing: cross-entropy's targets become (1 - s) * one_hot + s / classes
    (PyTorch's cross_entropy(label_smoothing=s), class indices included); binary targets
    become (1 - s) * y + s / 2. A regression loss has no classes to smooth over."""
    if not label_smoothing:
        return loss_fn
    if loss_name not in SMOOTHABLE:
        raise ConfigError(
            f"loss.label_smoothing: smooths class targets, and {loss_name} is a regression loss.",
            hint="Remove loss.label_smoothing, or use it with a cross-entropy loss.",
            key="loss.label_smoothing",
        )
    if loss_name == "binary_crossentropy":

        def smoothed_bce(out, y):
            return loss_fn(out, y * (1.0 - label_smoothing) + 0.5 * label_smoothing)

        return smoothed_bce

    def smoothed_cross_entropy(out, y):
        return loss_fn(out, y, label_smoothing=label_smoothing)

    return smoothed_cross_entropy


def loss_spec(name: str, task: str) -> LossSpec:
    spec = LOSSES.get(name, key="loss")
    if task not in spec.tasks:
        fitting = [n for n in LOSSES.names() if task in LOSSES.get(n).tasks]
        raise ConfigError(
            f"loss: {name} does not fit this data, whose targets are {_task_words(task)}; "
            f"losses that fit are: {', '.join(fitting)}.",
            hint=f"Use loss: {AUTO_LOSS[task]} (or loss: auto).",
            key="loss",
        )
    return spec


def _task_words(task: str) -> str:
    return {
        "multiclass": "integer class labels",
        "binary": "0/1 labels",
        "multilabel": "several 0/1 labels per sample",
        "regression": "real numbers",
    }[task]


def output_layer(loss_name: str, task: str, num_classes: int) -> tuple[int, Activation]:
    """(units, activation) of a preset's last layer for this loss and data."""
    if loss_name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        return num_classes, "softmax"
    if task == "binary":
        return 1, "sigmoid"
    if task == "multilabel":
        return num_classes, "sigmoid"
    return num_classes, "linear"


def check_last_layer(loss_name: str, task: str, num_classes: int, units: int, activation: str) -> None:
    """The last layer must produce what the loss and the targets need."""
    spec = LOSSES.get(loss_name)
    if activation not in spec.last_activations:
        natural = spec.last_activations[0]
        raise ConfigError(
            f"loss: {loss_name} does not fit the last layer, which applies {activation} over {units} "
            f"unit{'s' if units != 1 else ''}; {loss_name} expects a {natural} (or linear) last layer.",
            hint=_fix_hint(task, num_classes),
            key="loss",
        )
    want, _ = output_layer(loss_name, task, num_classes)
    if units != want:
        raise ConfigError(
            f"The last layer has {units} unit{'s' if units != 1 else ''}, but {loss_name} on this data "
            f"({_task_words(task)}, {num_classes} {'classes' if task in ('multiclass', 'binary') else 'outputs'}) "
            f"needs {want}.",
            hint=_fix_hint(task, num_classes),
            key="model",
        )


def _fix_hint(task: str, n: int) -> str:
    return {
        "multiclass": f"For {n} classes end with `dense: {{units: {n}, activation: softmax}}` and "
        "loss: sparse_categorical_crossentropy.",
        "binary": "For two classes end with `dense: {units: 1, activation: sigmoid}` and loss: binary_crossentropy, "
        "or with 2 softmax units and loss: sparse_categorical_crossentropy.",
        "multilabel": f"For {n} labels end with `dense: {{units: {n}, activation: sigmoid}}` and loss: binary_crossentropy.",
        "regression": f"For {n} outputs end with `dense: {{units: {n}}}` (no activation) and loss: mse.",
    }[task]


@dataclass(frozen=True)
class Objective:
    """What the engine needs: the loss, a metric as an on-device sum, and target preparation."""

    loss_fn: Callable[[Any, Any], Any]
    metric_name: str  # accuracy or mae
    metric_sum: Callable[[Any, Any], Any]  # (outputs, targets) -> tensor sum over the batch
    metric_per_sample: int  # how many metric terms one sample contributes


def class_weights(setting: Any, class_names: Sequence[str], train_labels: Any, task: str) -> Optional[list[float]]:
    """training.class_weight as one weight per class (None without it): "balanced" is
    scikit-learn's n / (classes x count) on the training split's labels; a mapping names some
    classes, the others weigh 1. A class with no training sample weighs 1 (nothing to weigh)."""
    if setting is None:
        return None
    if task not in ("binary", "multiclass"):
        raise ConfigError(
            f"training.class_weight: weighs classes of a single-label task, and this data's targets are "
            f"{_task_words(task)}.",
            hint="Remove training.class_weight.",
            key="training.class_weight",
        )
    names = [str(n) for n in class_names]
    if setting == "balanced":
        import torch

        labels = torch.as_tensor(train_labels).reshape(-1).long()
        counts = torch.bincount(labels, minlength=len(names)).tolist()
        n, k = len(labels), len(names)
        return [n / (k * c) if c else 1.0 for c in counts]
    from .registry import suggest

    unknown = [name for name in setting if name not in names]
    if unknown:
        hint = suggest(unknown[0], names)
        raise ConfigError(
            f"training.class_weight: {', '.join(repr(u) for u in unknown)} "
            f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of this data; its classes are: "
            f"{', '.join(names)}.",
            hint=hint or "Name classes as the data names them (the class_names of preprocessing.json).",
            key="training.class_weight",
        )
    return [float(setting.get(name, 1.0)) for name in names]


def with_class_weights(loss_name: str, label_smoothing: float, weights: Sequence[float]) -> Callable:
    """The loss with each sample's term multiplied by its class's weight, then averaged over the
    batch (Keras's class_weight; PyTorch's `weight=` would divide by the weights' sum instead)."""
    import torch
    import torch.nn.functional as F

    table = torch.tensor(list(weights), dtype=torch.float32)
    on_device: dict = {}

    def weight_of(device):
        found = on_device.get(device)
        if found is None:
            found = on_device[device] = table.to(device)
        return found

    if loss_name == "binary_crossentropy":

        def weighted_bce(out, y):
            w = weight_of(out.device)
            soft = y * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y
            per = F.binary_cross_entropy_with_logits(out, soft, reduction="none")
            return (per * (w[0] + (w[1] - w[0]) * y)).mean()

        return weighted_bce

    def weighted_cross_entropy(out, y):
        per = F.cross_entropy(out, y, reduction="none", label_smoothing=label_smoothing)
        return (per * weight_of(out.device)[y]).mean()

    return weighted_cross_entropy


def per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor, loss_name: str) -> torch.Tensor:
    """Each sample's loss (unweighted, unsmoothed), from the outputs the loss takes: what
    `dlcli evaluate --top-losses` ranks by."""
    import torch.nn.functional as F

    if loss_name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        return F.cross_entropy(outputs, targets, reduction="none")
    if loss_name == "binary_crossentropy":
        return F.binary_cross_entropy_with_logits(outputs, targets, reduction="none").mean(1)
    if loss_name == "mae":
        return (outputs - targets).abs().mean(1)
    return ((outputs - targets) ** 2).mean(1)


def make_objective(
    loss_name: str,
    task: str,
    num_classes: int,
    label_smoothing: float = 0.0,
    weights: Optional[Sequence[float]] = None,
) -> Objective:
    """`weights`: one per class (training.class_weight), applied in the loss."""
    spec = LOSSES.get(loss_name)
    if weights is not None:
        with_label_smoothing(spec.make(), loss_name, label_smoothing)  # its checks
        loss_fn = with_class_weights(loss_name, label_smoothing, weights)
    else:
        loss_fn = with_label_smoothing(spec.make(), loss_name, label_smoothing)
    if task in ("multiclass",) or (task == "binary" and loss_name != "binary_crossentropy"):

        def correct(out, y):
            return (out.detach().argmax(1) == y).sum()

        return Objective(loss_fn, "accuracy", correct, 1)
    if task in ("binary", "multilabel"):

        def correct_bits(out, y):
            return ((out.detach() > 0) == (y > 0.5)).sum()

        return Objective(loss_fn, "accuracy", correct_bits, 1 if task == "binary" else num_classes)

    def abs_error(out, y):
        return (out.detach() - y).abs().sum()

    return Objective(loss_fn, "mae", abs_error, num_classes)


def in_target_units(objective: Objective, scale: Optional[Sequence[float]]) -> Objective:
    """The objective with its MAE in the targets' own units, for data whose targets are scaled
    for training (a time series: each output's units = scaled value * scale + shift). The loss
    stays on the scaled targets; without a scale the objective is returned as it is."""
    if scale is None or objective.metric_name != "mae":
        return objective
    import torch

    if len(set(scale)) == 1:
        factor = float(scale[0])

        def abs_error_in_units(out, y):
            return (out.detach() - y).abs().sum() * factor

    else:
        factors = torch.tensor(list(scale), dtype=torch.float32)
        on_device: dict = {}

        def abs_error_in_units(out, y):
            weights = on_device.get(out.device)
            if weights is None:
                weights = on_device[out.device] = factors.to(out.device)
            return ((out.detach() - y).abs() * weights).sum()

    return replace(objective, metric_sum=abs_error_in_units)


def prepare_targets(y, loss_name: str, task: str):
    """Targets in the form the loss wants: class indices, or float 0/1 columns."""
    import torch

    if y is None:
        return None
    if task == "binary" and loss_name == "binary_crossentropy":
        return y.to(torch.float32).reshape(-1, 1)
    if task in ("multiclass", "binary"):
        return y.to(torch.int64)
    y = y.to(torch.float32)
    return y.reshape(len(y), math.prod(y.shape[1:]))  # not -1: an empty split has no size to infer


def class_probabilities(outputs: torch.Tensor, task: str, logits: bool) -> torch.Tensor:
    """The model's outputs as probabilities: one column per class (a binary task's two, whether
    the model ends in one sigmoid unit or two softmax units) or per label. `logits`: the final
    activation was absorbed into the loss, so the outputs are before it."""
    import torch

    if task == "binary" and outputs.shape[1] == 1:
        p1 = torch.sigmoid(outputs[:, 0]) if logits else outputs[:, 0]
        return torch.stack([1 - p1, p1], 1)
    if task in ("binary", "multiclass"):
        return torch.softmax(outputs, 1) if logits else outputs
    if task == "multilabel":
        return torch.sigmoid(outputs) if logits else outputs
    raise ValueError(f"no classes in a {task} task")


def predicted_classes(outputs: torch.Tensor, task: str, logits: bool) -> torch.Tensor:
    """The class index per sample (binary, multiclass), or 0/1 per label (multilabel): what the
    accuracy metrics count as the prediction, computed from the outputs without rounding them
    through probabilities (a logit above 0 is a probability above one half)."""
    if task == "multilabel":
        return (outputs > 0).long() if logits else (outputs > 0.5).long()
    if task == "binary" and outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long() if logits else (outputs[:, 0] > 0.5).long()
    return outputs.argmax(1)
