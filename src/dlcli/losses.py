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


def make_objective(loss_name: str, task: str, num_classes: int, label_smoothing: float = 0.0) -> Objective:
    spec = LOSSES.get(loss_name)
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
