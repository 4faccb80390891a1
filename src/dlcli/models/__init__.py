"""Models in two steps: an analytic plan, then the modules.

`plan_model` walks a config's layer list and computes every layer's output shape, parameter
count and multiply-adds from the specs alone: no torch import, no allocation. That is all
`dlcli summary` needs, and what the memory check reads before anything is built.
`build_model(plan)` then builds one flat nn.Sequential of PyTorch modules (no wrapper per
layer), so its forward pass costs exactly what a hand-written one does. When the loss
consumes logits, the final softmax or sigmoid is left out of the network and kept as
`output_activation`. Torchvision models (`model: {torchvision: NAME}`) are planned on the
meta device and built by `torchvision_models`.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from .layers import LAYER_PLANNERS, Flow, shape_text
from .plan import LayerRecord, ModelPlan, running_statistics
from .presets import expand

if TYPE_CHECKING:
    from ..layer_specs import Activation

__all__ = [
    "LayerRecord",
    "ModelPlan",
    "plan_model",
    "build_model",
    "use_channels_last",
    "shape_text",
    "expand",
    "parameter_counts",
    "keras_initialization",
    "plan_network",
]


def _plan_layers(
    specs: tuple, flow: Flow, counts: dict[str, int], where_prefix: str, key_prefix: str
) -> tuple[list[LayerRecord], Flow]:
    """Plan each layer with its type's registered planner, passing what flows out of one into the next."""
    records: list[LayerRecord] = []
    for index, spec in enumerate(specs):
        n = counts.get(spec.kind, 0)
        counts[spec.kind] = n + 1
        name = spec.kind if n == 0 else f"{spec.kind}_{n}"
        where = f"{where_prefix}layer {index + 1} ({name})"
        key = f"{key_prefix}.{index}"
        try:
            layer = LAYER_PLANNERS.get(spec.kind)
            if flow.ids and not layer.reads_ids:
                raise ConfigError(
                    f"{where} gets the data's integer word ids (shape {shape_text(flow.shape)}), which only an "
                    "embedding can read.",
                    hint="Start the layer list with `- embedding: {output_dim: 32}`, or use data.output_mode: "
                    "multi_hot for dense layers.",
                )
            if layer.nested:  # a block's layers see no padding mask: it ends at the block
                inner = functools.partial(
                    _plan_layers, counts=counts, where_prefix=f"{where}, its ", key_prefix=f"{key}.{spec.kind}.layers"
                )
                planned = layer.plan(spec, replace(flow, masked=False), where, inner)
            else:
                planned = layer.plan(spec, flow, where)
        except ConfigError as exc:
            exc.key = exc.key or key
            raise
        records.append(
            LayerRecord(
                name,
                layer.type_name(spec, flow.shape),
                spec,
                flow.shape,
                planned.output.shape,
                planned.mult_adds,
                planned.params,
                planned.frozen,
                planned.children,
                planned.make,
                takes_mask=flow.masked and layer.uses_mask,
                details=layer.details(spec),
            )
        )
        after = flow.after if layer.transparent else spec
        masked = layer.makes_mask(spec) or (flow.masked and layer.keeps_mask and len(planned.output.shape) == 2)
        flow = replace(planned.output, after=after, masked=masked)
    return records, flow


def plan_model(
    specs: tuple, input_shape: tuple[int, ...], absorb: tuple[str, ...] = (), vocab_size: Optional[int] = None
) -> ModelPlan:
    """Plan the layers without building them; `absorb` lists final activations the loss applies
    itself; `vocab_size` says the inputs are integer word ids below it (sequence data)."""
    if not specs:
        raise ConfigError(
            "model.layers: the list is empty.", hint="Add at least one layer, e.g. `- dense: {units: 10}`."
        )
    flow = Flow(tuple(input_shape), ids=vocab_size is not None, vocab_size=vocab_size)
    records, _ = _plan_layers(tuple(specs), flow, {}, "model ", "model.layers")
    output_activation = getattr(specs[-1], "activation", "linear")
    absorbed = output_activation in absorb and output_activation != "linear"
    return ModelPlan(tuple(input_shape), records, output_activation, absorbed)


# ----------------------------------------------------------------------------- building


def build_model(plan: ModelPlan, initial_weights: bool = True, progress=None):
    """The model of a plan; it carries the plan as `.plan` for the summary, and what
    `model.weights` loaded as `.weights_report` (models.weights.WeightsReport, or None).

    `initial_weights=False` skips reading the `weights:`, for callers that load a checkpoint
    over the weights anyway (resume, evaluate, predict). `progress(description, done, total)`
    is told how a download of torchvision's weights goes.

    Refuses (ResourceError, exit code 1) before allocating when the weights alone cannot fit in
    this machine's memory, and turns an allocation failure into the same clear error.
    """
    from .memory import allocation_guard, check_fits

    check_fits(plan, "cpu")
    with allocation_guard(plan, "cpu"):
        if plan.torchvision is not None:
            from .torchvision_models import build_torchvision

            model, report = build_torchvision(plan, initial_weights, progress)
            model.layer_ranges = None  # type: ignore[attr-defined]
        else:
            model, report = _build_sequential(plan), None
    model.plan = plan  # type: ignore[attr-defined]
    if plan.weights and initial_weights:
        from .weights import load_weights

        report = load_weights(model, plan.weights)
    model.weights_report = report  # type: ignore[attr-defined]
    return model


def _build_sequential(plan: ModelPlan):
    import torch
    import torch.nn as nn

    modules: list = []
    ranges: list[tuple[int, int]] = []
    last = len(plan.layers) - 1
    # Built on the meta device, then given memory once: PyTorch's default initialisation would
    # only be overwritten (and would consume the seeded random stream first).
    with torch.device("meta"):
        for i, record in enumerate(plan.layers):
            built = record.make() if record.make else []
            if i == last and plan.absorbed_activation:  # the loss applies it stably on the logits
                built = built[:-1]
            ranges.append((len(modules), len(modules) + len(built)))
            modules.extend(built)
        mask_users = [end - 1 for (_, end), record in zip(ranges, plan.layers) if record.takes_mask]
        model: nn.Sequential
        if mask_users:
            from .modules import MaskedSequential

            model = MaskedSequential(*modules, mask_users=mask_users)
        else:
            model = nn.Sequential(*modules)
    model = model.to_empty(device="cpu")
    keras_initialization(model)
    model.layer_ranges = ranges  # type: ignore[attr-defined,assignment]
    return model


_CONVOLUTIONS = ("Conv2D", "Conv3D", "ConvLSTM2D")


def has_convolutions(plan: ModelPlan) -> bool:
    if plan.torchvision is not None:
        return True

    def walk(records: list[LayerRecord]) -> bool:
        return any(r.type_name in _CONVOLUTIONS or walk(r.children) for r in records)

    return walk(plan.layers)


def use_channels_last(model, setting) -> bool:
    """Store 4-D weights (and so the activations between convolutions) channels-last, and 5-D
    ones (Conv3d's, of video models) in PyTorch's channels-last-3d.

    Convolutions run faster in that layout on the CPU (oneDNN) and on tensor-core GPUs: the
    course's MNIST CNN took 18 to 25 % less time per epoch on two CPU cores. Flatten and Dense
    are unaffected (they see the same logical shape), so results match the default layout
    up to float rounding. `setting` is training.channels_last: true, false or "auto".
    """
    import torch

    wanted = has_convolutions(model.plan) if setting == "auto" else bool(setting)
    if wanted:

        def channels_last(tensor):
            layout = {4: torch.channels_last, 5: torch.channels_last_3d}.get(tensor.dim())
            if layout is None:
                return tensor
            # Not tensor.contiguous(memory_format=...): a kernel over ONE input channel (a gray
            # image's first convolution) is contiguous in both layouts, so that keeps its
            # channels-first strides; oneDNN then ran the whole first block channels-first and
            # copied every activation and gradient between it and the next convolution (the
            # MNIST CNN: five copies of 128x32x26x26 or 13x13 a step, a fifth of its CPU time).
            return torch.empty_like(tensor, memory_format=layout).copy_(tensor)

        model._apply(channels_last)  # what model.to(memory_format=...) does, which takes one format
    return wanted


def keras_initialization(model) -> None:
    """Keras's initial weights for the layers Keras has: Glorot-uniform kernels and zero biases
    for Dense and convolutions, U(-0.05, 0.05) embeddings, orthogonal recurrent kernels and a
    forget-gate bias of 1 for LSTMs and ConvLSTM2D (normalisation layers start at 1 and 0 in both).

    PyTorch's default draws from U(+-1/sqrt(fan_in)), which for IMDB's 10,000 inputs is 2.5
    times narrower and visibly slows the first epochs; the course's results assume Keras's.
    Every parameter and buffer is set here, so the model may come from `to_empty`.
    """
    import torch
    import torch.nn as nn

    from .modules import ConvLSTM2d

    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, ConvLSTM2d)):
            module.reset_parameters()  # ones and zeros (and fresh running statistics); ConvLSTM2d: Keras's
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -0.05, 0.05)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            units = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(param)
                else:
                    nn.init.zeros_(param)
                    if isinstance(module, nn.LSTM) and name.startswith("bias_ih"):
                        with torch.no_grad():
                            param[units : 2 * units].fill_(1.0)  # gates i, f, g, o: Keras's unit_forget_bias


def training_step_gflop(model, input_shape: tuple[int, ...], token_ids: bool, batch_size: int) -> Optional[float]:
    """Floating-point operations of one training step's forward and backward, in GFLOP, counted
    by torch.utils.flop_counter on a copy of the model on the meta device (no memory, no
    arithmetic) at batch 2 and scaled to `batch_size` (every counted operation is linear in the
    batch). None when the model cannot run on the meta device."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        ghost = copy.deepcopy(model).to("meta")
        shape = (2, *input_shape)
        x = torch.zeros(shape, dtype=torch.long, device="meta") if token_ids else torch.zeros(shape, device="meta")
        with FlopCounterMode(display=False) as counter:
            ghost(x).float().sum().backward()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return None
    return counter.get_total_flops() / 2 * batch_size / 1e9


def parameter_counts(model) -> list[tuple[int, int]]:
    """(trainable, non-trainable) parameters of each top-level LayerRecord, counted on the built
    modules (batch norm's running mean and variance as non-trainable, as Keras counts them)."""
    import torch.nn as nn

    def count(modules) -> tuple[int, int]:
        trainable = frozen = 0
        for top in modules:
            for m in top.modules():
                for p in m.parameters(recurse=False):
                    if p.requires_grad:
                        trainable += p.numel()
                    else:
                        frozen += p.numel()
                frozen += running_statistics(m)
        return trainable, frozen

    if getattr(model, "layer_ranges", None) is None:  # a torchvision model: its top-level children
        parts = [getattr(model, r.name, None) for r in model.plan.layers]
        return [
            (part.numel(), 0) if isinstance(part, nn.Parameter) else count([part] if part is not None else [])
            for part in parts
        ]
    mods = list(model)
    return [count(mods[a:b]) for a, b in model.layer_ranges]


def plan_network(
    model_config: Any,
    input_shape: tuple[int, ...],
    output_units: int,
    output_activation: Activation,
    absorb: tuple[str, ...] = (),
    vocab_size: Optional[int] = None,
) -> ModelPlan:
    """The plan of any model config: a preset or layer list (analytic, no torch), or a torchvision
    model (planned on the meta device). `output_*` size a preset's or torchvision model's last layer."""
    from ..config import TorchvisionModel

    if isinstance(model_config, TorchvisionModel):
        from .torchvision_models import plan_torchvision

        return plan_torchvision(model_config, tuple(input_shape), output_units, output_activation, absorb)
    plan = plan_model(expand(model_config, output_units, output_activation), input_shape, absorb, vocab_size)
    plan.weights = getattr(model_config, "weights", None)
    return plan
