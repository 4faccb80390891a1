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

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..errors import ConfigError
from .layers import LAYER_PLANNERS, Flow, Planned, shape_text, type_name
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

# Layers that pass their input's story on (for hints such as "after flatten").
_TRANSPARENT = ("dropout", "activation")
# An embedding's mask_zero, as in Keras: recurrent layers skip the padding steps and global
# pooling leaves them out. The mask passes through layers that keep every step where it is
# and ends at the first that does not (convolution, pooling, flatten, reshape, a residual
# block, a recurrent layer that returns only its last state).
_MASK_USERS = ("lstm", "gru", "global_avg_pool", "global_max_pool")
_MASK_KEEPERS = ("dropout", "activation", "batchnorm", "layernorm", "lstm", "gru")


def _plan_layers(
    specs: tuple, flow: Flow, counts: dict[str, int], where_prefix: str, key_prefix: str
) -> tuple[list[LayerRecord], Flow]:
    records: list[LayerRecord] = []
    for index, spec in enumerate(specs):
        n = counts.get(spec.kind, 0)
        counts[spec.kind] = n + 1
        name = spec.kind if n == 0 else f"{spec.kind}_{n}"
        where = f"{where_prefix}layer {index + 1} ({name})"
        key = f"{key_prefix}.{index}"
        try:
            if flow.ids and spec.kind != "embedding":
                raise ConfigError(
                    f"{where} gets the data's integer word ids (shape {shape_text(flow.shape)}), which only an "
                    "embedding can read.",
                    hint="Start the layer list with `- embedding: {output_dim: 32}`, or use data.output_mode: "
                    "multi_hot for dense layers.",
                )
            if spec.kind == "residual":
                planned = _plan_residual(spec, replace(flow, masked=False), where, counts, key)
            else:
                planned = LAYER_PLANNERS.get(spec.kind)(spec, flow, where)
        except ConfigError as exc:
            exc.key = exc.key or key
            raise
        records.append(
            LayerRecord(
                name,
                type_name(spec, flow.shape),
                spec,
                flow.shape,
                planned.output.shape,
                planned.mult_adds,
                planned.params,
                planned.frozen,
                planned.children,
                planned.make,
                takes_mask=flow.masked and spec.kind in _MASK_USERS,
            )
        )
        after = flow.after if spec.kind in _TRANSPARENT else spec
        masked = (spec.kind == "embedding" and spec.mask_zero) or (
            flow.masked and spec.kind in _MASK_KEEPERS and len(planned.output.shape) == 2
        )
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


# ----------------------------------------------------------------------------- residual blocks


def _projection_stride(size: int, out: int) -> Optional[int]:
    """The stride of a 1x1 convolution that maps `size` steps or pixels to `out`, if any."""
    for stride in range(1, size + 1):
        if (size - 1) // stride + 1 == out:
            return stride
    return None


def _plan_residual(spec: Any, flow: Flow, where: str, counts: dict[str, int], key: str) -> Planned:
    from .layers import _to_channels_first, _transpose, _with_activation

    inner_flow = replace(flow, after=None)
    children, out = _plan_layers(spec.layers, inner_flow, counts, f"{where}, its ", f"{key}.residual.layers")
    src, dst = flow.shape, out.shape
    cannot = (
        f"{where}: its layers turn {shape_text(src)} into {shape_text(dst)}, which cannot be added to the block's input"
    )
    projection: Optional[LayerRecord] = None
    make_shortcut: Optional[Callable[[], list]] = None
    if src == dst and (len(src) != 2 or flow.channels_first == out.channels_first):
        pass  # identity shortcut
    elif len(src) != len(dst):
        raise ConfigError(
            f"{cannot}: a 1x1 projection keeps the rank ({len(src)} dimensions here, {len(dst)} after).",
            hint="Keep flatten, global pooling and reshape outside the residual block.",
        )
    elif src == dst:  # a sequence whose layout changed inside the block

        def make_shortcut() -> list:
            return [_transpose()]
    elif len(src) == 1:
        (f_in,), (f_out,) = src, dst
        projection = LayerRecord("projection", "Dense", None, src, dst, f_in * f_out, f_in * f_out + f_out)

        def make_shortcut() -> list:
            import torch.nn as nn

            return [nn.Linear(f_in, f_out)]
    else:
        lengths = list(zip(src[1:], dst[1:])) if len(src) == 3 else [(src[0], dst[0])]
        strides = {_projection_stride(a, b) for a, b in lengths}
        if None in strides or len(strides) != 1:
            sizes = " x ".join(f"{a} -> {b}" for a, b in lengths)
            raise ConfigError(
                f"{cannot}: no 1x1 projection with one stride maps its {'pixels' if len(src) == 3 else 'steps'} "
                f"({sizes}).",
                hint="Use padding: same in the block's convolutions, and strides only where the size halves.",
            )
        stride = next(s for s in strides if s is not None)
        if len(src) == 3:
            c_in, c_out, positions = src[0], dst[0], dst[1] * dst[2]
            projection = LayerRecord(
                "projection", "Conv2D", None, src, dst, positions * c_in * c_out, c_in * c_out + c_out
            )

            def make_shortcut() -> list:
                import torch.nn as nn

                return [nn.Conv2d(c_in, c_out, 1, stride)]
        else:
            c_in, c_out, steps = src[1], dst[1], dst[0]
            projection = LayerRecord("projection", "Conv1D", None, src, dst, steps * c_in * c_out, c_in * c_out + c_out)

            def make_shortcut() -> list:
                import torch.nn as nn

                back = [] if out.channels_first else [_transpose()]
                return _to_channels_first(flow) + [nn.Conv1d(c_in, c_out, 1, stride)] + back

    if projection is not None:
        children = children + [projection]

    def make() -> list:
        import torch.nn as nn

        from .modules import Residual

        body = nn.Sequential(*[m for child in children if child.make for m in child.make()])
        shortcut = None
        if make_shortcut is not None:
            parts = make_shortcut()
            shortcut = parts[0] if len(parts) == 1 else nn.Sequential(*parts)
        return _with_activation([Residual(body, shortcut)], spec.activation)

    return Planned(
        replace(out, after=None),
        make,
        sum(c.mult_adds for c in children),
        sum(c.params for c in children),
        sum(c.frozen for c in children),
        children,
    )


# ----------------------------------------------------------------------------- building


def build_model(plan: ModelPlan, initial_weights: bool = True):
    """The model of a plan; it carries the plan as `.plan` for the summary.

    `initial_weights=False` skips reading a torchvision model's `weights:` file, for callers
    that load a checkpoint over the weights anyway (resume, evaluate, predict).

    Refuses (ResourceError, exit code 1) before allocating when the weights alone cannot fit in
    this machine's memory, and turns an allocation failure into the same clear error.
    """
    from .memory import allocation_guard, check_fits

    check_fits(plan, "cpu")
    with allocation_guard(plan, "cpu"):
        if plan.torchvision is not None:
            from .torchvision_models import build_torchvision

            model = build_torchvision(plan, initial_weights)
            model.layer_ranges = None  # type: ignore[attr-defined]
        else:
            model = _build_sequential(plan)
    model.plan = plan  # type: ignore[attr-defined]
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


def has_convolutions(plan: ModelPlan) -> bool:
    if plan.torchvision is not None:
        return True

    def walk(records: list[LayerRecord]) -> bool:
        return any(r.type_name == "Conv2D" or walk(r.children) for r in records)

    return walk(plan.layers)


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
    """Keras's initial weights for the layers Keras has: Glorot-uniform kernels and zero biases
    for Dense and convolutions, U(-0.05, 0.05) embeddings, orthogonal recurrent kernels and a
    forget-gate bias of 1 for LSTMs (normalisation layers start at 1 and 0 in both).

    PyTorch's default draws from U(+-1/sqrt(fan_in)), which for IMDB's 10,000 inputs is 2.5
    times narrower and visibly slows the first epochs; the course's results assume Keras's.
    Every parameter and buffer is set here, so the model may come from `to_empty`.
    """
    import torch
    import torch.nn as nn

    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            module.reset_parameters()  # ones and zeros, and fresh running statistics, in both
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
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
    return plan_model(expand(model_config, output_units, output_activation), input_shape, absorb, vocab_size)
