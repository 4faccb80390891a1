"""Model building: a config's layer list -> one flat nn.Sequential plus a layer table.

The network is a plain `nn.Sequential` of PyTorch modules (no wrapper per layer), so its
forward pass costs exactly what a hand-written one does. `LayerRecord`s remember which
modules belong to which configured layer, for the summary. When the loss consumes logits,
the final softmax or sigmoid is left out of the network and kept as `output_activation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .layers import LAYER_BUILDERS, TYPE_NAMES, shape_text
from .presets import expand

__all__ = ["LayerRecord", "ModelPlan", "plan_model", "build_model", "use_channels_last", "shape_text", "expand"]


@dataclass
class LayerRecord:
    name: str  # e.g. conv2d_1
    type_name: str  # e.g. Conv2D
    spec: Any  # the layer's config
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    mult_adds: int
    first_module: int  # index range in the Sequential
    end_module: int


@dataclass
class ModelPlan:
    """Everything about the network except its weights."""

    input_shape: tuple[int, ...]
    layers: list[LayerRecord]
    modules: list
    output_activation: str  # what the last layer applies, as the user wrote it
    absorbed_activation: bool  # True: left out of the network, applied inside the loss


def plan_model(specs: tuple, input_shape: tuple[int, ...], absorb: tuple[str, ...] = ()) -> ModelPlan:
    """Build the modules layer by layer; `absorb` lists final activations the loss applies itself."""
    if not specs:
        raise ConfigError("model.layers: the list is empty.", hint="Add at least one layer, e.g. `- dense: {units: 10}`.")
    shape = tuple(input_shape)
    counts: dict[str, int] = {}
    records: list[LayerRecord] = []
    modules: list = []
    for index, spec in enumerate(specs):
        n = counts.get(spec.kind, 0)
        counts[spec.kind] = n + 1
        name = spec.kind if n == 0 else f"{spec.kind}_{n}"
        where = f"model layer {index + 1} ({name})"
        try:
            built = LAYER_BUILDERS.get(spec.kind)(spec, shape, where)
        except ConfigError as exc:
            exc.key = exc.key or f"model.layers.{index}"
            raise
        records.append(
            LayerRecord(name, TYPE_NAMES[spec.kind], spec, shape, built.output_shape, built.mult_adds,
                        len(modules), len(modules) + len(built.modules))
        )
        modules.extend(built.modules)
        shape = built.output_shape
    last = specs[-1]
    output_activation = getattr(last, "activation", "linear")
    absorbed = output_activation in absorb and output_activation != "linear"
    if absorbed:  # the loss applies it stably on the logits (log-softmax inside cross_entropy)
        modules.pop()
        records[-1].end_module -= 1
    return ModelPlan(tuple(input_shape), records, modules, output_activation, absorbed)


def build_model(plan: ModelPlan):
    """The nn.Sequential of a plan; it carries the plan as `.plan` for the summary."""
    import torch.nn as nn

    model = nn.Sequential(*plan.modules)
    keras_initialization(model)
    model.plan = plan  # type: ignore[attr-defined]
    return model


def has_convolutions(plan: ModelPlan) -> bool:
    return any(rec.type_name == "Conv2D" for rec in plan.layers)


def use_channels_last(model, setting) -> bool:
    """Store 4-D weights (and so the activations between convolutions) channels-last.

    Convolutions run faster in that layout on the CPU (oneDNN) and on tensor-core GPUs: the
    course's MNIST CNN took 18 to 25 % less time per epoch on two CPU cores. Flatten and Dense
    are unaffected (they see the same logical shape), so results match the default layout
    up to float rounding. `setting` is training.channels_last: true, false or "auto".
    """
    import torch

    wanted = has_convolutions(model.plan) if setting == "auto" else bool(setting)
    if wanted:
        model.to(memory_format=torch.channels_last)
    return wanted


def keras_initialization(model) -> None:
    """Glorot-uniform weights and zero biases, Keras's defaults for Dense and Conv2D.

    PyTorch's default draws from U(+-1/sqrt(fan_in)), which for IMDB's 10,000 inputs is 2.5
    times narrower and visibly slows the first epochs; the course's results assume Keras's.
    """
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def parameter_counts(model) -> list[tuple[int, int]]:
    """(trainable, non-trainable) parameters of each LayerRecord of a built model."""
    mods = list(model)
    counts = []
    for rec in model.plan.layers:
        trainable = frozen = 0
        for m in mods[rec.first_module: rec.end_module]:
            for p in m.parameters():
                if p.requires_grad:
                    trainable += p.numel()
                else:
                    frozen += p.numel()
        counts.append((trainable, frozen))
    return counts
