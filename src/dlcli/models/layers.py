"""Layer specs -> analytic plans (shapes, parameters, multiply-adds) and the modules to build.

Each planner gets what flows into one layer (`Flow`: one sample's shape, and for sequences
whether the tensor is channels-first at run time) and returns a `Planned`: the output, the
counts, and a `make` function that builds the PyTorch modules later. Planning imports no
torch, so `dlcli summary` and the memory check run before anything is allocated; a shape
that does not fit is a ConfigError naming the layer, its input shape and what it needs.

Shapes of one sample: flat (features,), sequences (steps, channels) as Keras shows them,
images (channels, height, width) as PyTorch stores them (shown channels-last). Embeddings
and recurrent layers read sequences as (batch, steps, channels); convolutions, pooling and
batch norm as (batch, channels, steps): a transpose is built only where the two meet, as a
person would write it by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from ..errors import ConfigError
from ..layer_specs import (
    ActivationLayer,
    AvgPool2DLayer,
    BatchNormLayer,
    Conv1DLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    EmbeddingLayer,
    FlattenLayer,
    LayerNormLayer,
    MaxPool2DLayer,
    ReshapeLayer,
)
from ..registry import Registry

# Keras's class names, which the course's summaries show (some depend on the input's rank).
TYPE_NAMES = {
    "dense": "Dense",
    "conv2d": "Conv2D",
    "maxpool2d": "MaxPooling2D",
    "avgpool2d": "AveragePooling2D",
    "flatten": "Flatten",
    "dropout": "Dropout",
    "activation": "Activation",
    "embedding": "Embedding",
    "conv1d": "Conv1D",
    "maxpool1d": "MaxPooling1D",
    "avgpool1d": "AveragePooling1D",
    "global_avg_pool": "GlobalAveragePooling{d}D",
    "global_max_pool": "GlobalMaxPooling{d}D",
    "lstm": "LSTM",
    "gru": "GRU",
    "batchnorm": "BatchNormalization",
    "layernorm": "LayerNormalization",
    "reshape": "Reshape",
    "residual": "Residual",
}


def type_name(spec: Any, input_shape: tuple[int, ...]) -> str:
    name = TYPE_NAMES[spec.kind].format(d=max(len(input_shape) - 1, 1))
    if getattr(spec, "bidirectional", False):
        return f"Bidirectional({name})"
    return name


@dataclass(frozen=True)
class Flow:
    """What flows between two layers, for one sample."""

    shape: tuple[int, ...]
    channels_first: bool = False  # sequences: (batch, channels, steps) at run time
    ids: bool = False  # integer token ids straight from the data (only an embedding reads them)
    vocab_size: Optional[int] = None
    after: Any = None  # the spec of the layer that produced it, for hints
    # Steps whose word id was 0 are padding that later layers skip (embedding mask_zero).
    masked: bool = False


@dataclass
class Planned:
    output: Flow
    make: Callable[[], list]  # -> the layer's nn.Modules, in order (imports torch)
    mult_adds: int = 0
    params: int = 0  # trainable
    frozen: int = 0  # non-trainable: batch norm's running mean and variance, as Keras counts them
    children: list = field(default_factory=list)  # a residual block's LayerRecords


Planner = Callable[[Any, Flow, str], Planned]
LAYER_PLANNERS: Registry[Planner] = Registry("layer type")


def shape_text(shape: tuple[int, ...]) -> str:
    """Channels-last text (H x W x C), as Keras and the course show image shapes."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}x{w}x{c}"
    return "x".join(str(s) for s in shape)


def _described(flow: Flow) -> str:
    rank = len(flow.shape)
    kind = {1: "flat", 2: "a sequence", 3: "an image"}.get(rank, f"rank {rank}")
    after = f", after {flow.after.kind}" if flow.after is not None else ""
    return f"{shape_text(flow.shape)} ({kind}{after})"


def activation_module(name: str):
    import torch.nn as nn

    return {
        "linear": None,
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "softmax": lambda: nn.Softmax(dim=1),
    }[name]


def _with_activation(modules: list, activation: str) -> list:
    factory = activation_module(activation)
    return modules + ([factory()] if factory else [])


def _transpose():
    from .modules import Transpose

    return Transpose()


def _to_channels_first(flow: Flow) -> list:
    return [_transpose()] if len(flow.shape) == 2 and not flow.channels_first else []


def _to_steps_first(flow: Flow) -> list:
    return [_transpose()] if len(flow.shape) == 2 and flow.channels_first else []


def _need_image(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(
            f"{where} needs an image input (height x width x channels), but its input has shape {shape_text(shape)}.",
            hint="Image layers must come before flatten; for data of shape [N] use dense layers.",
        )
    return shape  # type: ignore[return-value]


def _need_sequence(flow: Flow, where: str, what: str) -> tuple[int, int]:
    """(steps, channels), or an error saying what the layer needs and what it got."""
    if len(flow.shape) == 2:
        return flow.shape  # type: ignore[return-value]
    rank = len(flow.shape)
    if rank == 1 and flow.after is not None and flow.after.kind == "flatten":
        hint = "Remove the flatten before it: flatten turns the sequence into one vector."
    elif rank == 1:
        hint = (
            "Start with an embedding (with data.output_mode: sequence), or reshape the features into "
            "steps x channels, e.g. `- reshape: {target_shape: [-1, 1]}`."
        )
    else:
        hint = "For images use conv2d and maxpool2d, or reshape them into steps x channels first."
    raise ConfigError(
        f"{where} needs a sequence input of shape steps x {what} (a rank-3 batch: batch, steps, {what}), "
        f"but its input has shape {_described(flow)}.",
        hint=hint,
    )


def _padding(padding: Any, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding along one length."""
    if padding == "valid":
        return 0, 0
    if padding == "same":  # Keras: output = ceil(size / stride), the extra pixel at the end
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    return int(padding), int(padding)


# ----------------------------------------------------------------------------- the course's layers


@LAYER_PLANNERS.register("dense")
def plan_dense(spec: DenseLayer, flow: Flow, where: str) -> Planned:
    if len(flow.shape) != 1:
        after = flow.after
        if after is not None and getattr(after, "return_sequences", False):
            hint = (
                f"The {after.kind} before it returns every step (return_sequences: true): set "
                "return_sequences: false on the last recurrent layer, or add `- global_max_pool: {}` "
                "or `- flatten: {}` before the dense layer."
            )
        elif len(flow.shape) == 2:
            hint = "Add `- global_max_pool: {}`, `- global_avg_pool: {}` or `- flatten: {}` before it."
        else:
            hint = "Add `- flatten: {}` before it."
        raise ConfigError(f"{where} needs a flat input, but its input has shape {_described(flow)}.", hint=hint)
    (features,) = flow.shape

    def make() -> list:
        import torch.nn as nn

        return _with_activation([nn.Linear(features, spec.units, bias=spec.use_bias)], spec.activation)

    params = features * spec.units + (spec.units if spec.use_bias else 0)
    return Planned(Flow((spec.units,)), make, features * spec.units, params)


@LAYER_PLANNERS.register("conv2d")
def plan_conv2d(spec: Conv2DLayer, flow: Flow, where: str) -> Planned:
    c, h, w = _need_image(flow.shape, where)
    k, s = spec.kernel_size, spec.strides
    (top, bottom), (left, right) = _padding(spec.padding, h, k, s), _padding(spec.padding, w, k, s)
    if h + top + bottom < k or w + left + right < k:
        raise ConfigError(
            f"{where}: a {k}x{k} kernel does not fit its input of shape {shape_text(flow.shape)}.",
            hint="Use a smaller kernel_size, padding: same, or fewer pooling layers before it.",
        )
    ho = (h + top + bottom - k) // s + 1
    wo = (w + left + right - k) // s + 1

    def make() -> list:
        import torch.nn as nn

        if top == bottom and left == right:
            return _with_activation(
                [nn.Conv2d(c, spec.filters, k, s, (top, left), bias=spec.use_bias)], spec.activation
            )
        # asymmetric "same" padding at stride > 1, as Keras pads (more at the end)
        return _with_activation(
            [nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(c, spec.filters, k, s, 0, bias=spec.use_bias)],
            spec.activation,
        )

    params = k * k * c * spec.filters + (spec.filters if spec.use_bias else 0)
    macs = ho * wo * k * k * c * spec.filters
    return Planned(Flow((spec.filters, ho, wo)), make, macs, params)


def _pool2d(spec: Any, flow: Flow, where: str, module: str) -> Planned:
    c, h, w = _need_image(flow.shape, where)
    stride = spec.strides or spec.pool_size
    if h < spec.pool_size or w < spec.pool_size:
        raise ConfigError(
            f"{where}: a {spec.pool_size}x{spec.pool_size} window does not fit its input "
            f"of shape {shape_text(flow.shape)}.",
            hint="Use a smaller pool_size or remove a pooling layer.",
        )
    out = (c, (h - spec.pool_size) // stride + 1, (w - spec.pool_size) // stride + 1)

    def make() -> list:
        import torch.nn as nn

        return [getattr(nn, module)(spec.pool_size, stride)]

    return Planned(Flow(out), make)


@LAYER_PLANNERS.register("maxpool2d")
def plan_maxpool2d(spec: MaxPool2DLayer, flow: Flow, where: str) -> Planned:
    return _pool2d(spec, flow, where, "MaxPool2d")


@LAYER_PLANNERS.register("avgpool2d")
def plan_avgpool2d(spec: AvgPool2DLayer, flow: Flow, where: str) -> Planned:
    return _pool2d(spec, flow, where, "AvgPool2d")


@LAYER_PLANNERS.register("flatten")
def plan_flatten(spec: FlattenLayer, flow: Flow, where: str) -> Planned:
    def make() -> list:
        import torch.nn as nn

        # Rows that are flat already (a table's) need no view and no autograd node per step:
        # Identity keeps the layer's place, so parameter names stay those of the layer list.
        return [nn.Identity() if len(flow.shape) == 1 else nn.Flatten()]

    return Planned(Flow((math.prod(flow.shape),)), make)


@LAYER_PLANNERS.register("dropout")
def plan_dropout(spec: DropoutLayer, flow: Flow, where: str) -> Planned:
    def make() -> list:
        import torch.nn as nn

        return [nn.Dropout(spec.rate)]

    return Planned(flow, make)


@LAYER_PLANNERS.register("activation")
def plan_activation(spec: ActivationLayer, flow: Flow, where: str) -> Planned:
    if spec.activation == "softmax" and len(flow.shape) == 2 and not flow.channels_first:
        # softmax runs over dim 1: make that the channels, as Keras's runs over the last axis
        return Planned(
            replace(flow, channels_first=True), lambda: _to_channels_first(flow) + _with_activation([], spec.activation)
        )
    return Planned(flow, lambda: _with_activation([], spec.activation))


# ----------------------------------------------------------------------------- sequences


@LAYER_PLANNERS.register("embedding")
def plan_embedding(spec: EmbeddingLayer, flow: Flow, where: str) -> Planned:
    if not flow.ids:
        if flow.after is None:
            problem = f"this data gives float features of shape {shape_text(flow.shape)}"
            hint = (
                "Use integer word ids: data.output_mode: sequence (IMDB, text folders); "
                "for float features use dense or conv layers instead."
            )
        else:
            problem = f"its input is the float output of the layer before it ({_described(flow)})"
            hint = "An embedding must be the first layer: it reads the data's word ids."
        raise ConfigError(f"{where} needs integer word ids, but {problem}.", hint=hint)
    if len(flow.shape) != 1:
        raise ConfigError(
            f"{where} needs one sequence of word ids per sample, but its input has shape {shape_text(flow.shape)}."
        )
    input_dim = spec.input_dim or flow.vocab_size
    if input_dim is None:
        raise ConfigError(
            f"{where} needs input_dim: the data does not say its vocabulary size.",
            hint="Set input_dim to the largest word id plus one.",
        )
    if flow.vocab_size is not None and input_dim < flow.vocab_size:
        raise ConfigError(
            f"{where}: input_dim {input_dim} is smaller than the data's vocabulary ({flow.vocab_size} ids, "
            f"0 to {flow.vocab_size - 1}).",
            hint=f"Leave input_dim out (it defaults to {flow.vocab_size}) or lower data.num_words.",
        )
    (steps,) = flow.shape

    def make() -> list:
        import torch.nn as nn

        return [nn.Embedding(input_dim, spec.output_dim, padding_idx=0 if spec.mask_zero else None)]

    return Planned(Flow((steps, spec.output_dim)), make, 0, input_dim * spec.output_dim)


@LAYER_PLANNERS.register("conv1d")
def plan_conv1d(spec: Conv1DLayer, flow: Flow, where: str) -> Planned:
    steps, c = _need_sequence(flow, where, "channels")
    k, s = spec.kernel_size, spec.strides
    before, after = _padding(spec.padding, steps, k, s)
    if steps + before + after < k:
        raise ConfigError(
            f"{where}: a kernel of {k} steps does not fit its input of shape {shape_text(flow.shape)}.",
            hint="Use a smaller kernel_size, padding: same, or fewer pooling layers before it.",
        )
    out_steps = (steps + before + after - k) // s + 1

    def make() -> list:
        import torch.nn as nn

        modules = _to_channels_first(flow)
        if before == after:
            modules.append(nn.Conv1d(c, spec.filters, k, s, before, bias=spec.use_bias))
        else:
            modules += [nn.ConstantPad1d((before, after), 0.0), nn.Conv1d(c, spec.filters, k, s, 0, bias=spec.use_bias)]
        return _with_activation(modules, spec.activation)

    params = k * c * spec.filters + (spec.filters if spec.use_bias else 0)
    return Planned(Flow((out_steps, spec.filters), channels_first=True), make, out_steps * k * c * spec.filters, params)


def _pool1d(spec: Any, flow: Flow, where: str, module: str) -> Planned:
    steps, c = _need_sequence(flow, where, "channels")
    stride = spec.strides or spec.pool_size
    if steps < spec.pool_size:
        raise ConfigError(
            f"{where}: a window of {spec.pool_size} steps does not fit its input of shape {shape_text(flow.shape)}.",
            hint="Use a smaller pool_size or remove a pooling layer.",
        )

    def make() -> list:
        import torch.nn as nn

        return _to_channels_first(flow) + [getattr(nn, module)(spec.pool_size, stride)]

    return Planned(Flow(((steps - spec.pool_size) // stride + 1, c), channels_first=True), make)


@LAYER_PLANNERS.register("maxpool1d")
def plan_maxpool1d(spec: Any, flow: Flow, where: str) -> Planned:
    return _pool1d(spec, flow, where, "MaxPool1d")


@LAYER_PLANNERS.register("avgpool1d")
def plan_avgpool1d(spec: Any, flow: Flow, where: str) -> Planned:
    return _pool1d(spec, flow, where, "AvgPool1d")


def _global_pool(spec: Any, flow: Flow, where: str, op: str) -> Planned:
    rank = len(flow.shape)
    if rank not in (2, 3):
        raise ConfigError(
            f"{where} needs a sequence (steps x channels) or an image (height x width x channels), "
            f"but its input has shape {_described(flow)}.",
            hint="Global pooling replaces flatten: put it right after the last convolutional or recurrent layer.",
        )
    dims: tuple[int, ...]
    if rank == 3:
        dims, channels = (2, 3), flow.shape[0]
    else:
        dims, channels = ((2,) if flow.channels_first else (1,)), flow.shape[1]

    def make() -> list:
        from .modules import GlobalPool

        return [GlobalPool(dims, op)]

    return Planned(Flow((channels,)), make)


@LAYER_PLANNERS.register("global_avg_pool")
def plan_global_avg_pool(spec: Any, flow: Flow, where: str) -> Planned:
    return _global_pool(spec, flow, where, "mean")


@LAYER_PLANNERS.register("global_max_pool")
def plan_global_max_pool(spec: Any, flow: Flow, where: str) -> Planned:
    return _global_pool(spec, flow, where, "amax")


def _recurrent(spec: Any, flow: Flow, where: str, gates: int, module: str) -> Planned:
    steps, features = _need_sequence(flow, where, "features")
    directions = 2 if spec.bidirectional else 1
    units = spec.units

    def make() -> list:
        import torch.nn as nn

        from . import modules as m

        pre = _to_steps_first(flow) + ([nn.Dropout(spec.dropout)] if spec.dropout else [])
        return pre + [getattr(m, module)(features, units, spec.bidirectional, spec.return_sequences)]

    # PyTorch keeps two bias vectors per gate (Keras's LSTM one), hence 2 * gates * units.
    params = directions * (gates * units * (features + units) + 2 * gates * units)
    macs = directions * steps * gates * units * (features + units)
    out = Flow((steps, directions * units)) if spec.return_sequences else Flow((directions * units,))
    return Planned(out, make, macs, params)


@LAYER_PLANNERS.register("lstm")
def plan_lstm(spec: Any, flow: Flow, where: str) -> Planned:
    return _recurrent(spec, flow, where, 4, "LSTM")


@LAYER_PLANNERS.register("gru")
def plan_gru(spec: Any, flow: Flow, where: str) -> Planned:
    return _recurrent(spec, flow, where, 3, "GRU")


# ----------------------------------------------------------------------------- normalisation, reshape


@LAYER_PLANNERS.register("batchnorm")
def plan_batchnorm(spec: BatchNormLayer, flow: Flow, where: str) -> Planned:
    rank = len(flow.shape)
    if rank not in (1, 2, 3):
        raise ConfigError(f"{where} needs a flat, sequence or image input, but its input has shape {_described(flow)}.")
    channels = flow.shape[0] if rank in (1, 3) else flow.shape[1]
    momentum = round(1.0 - spec.momentum, 12)  # PyTorch weighs the new batch, Keras the running value

    def make() -> list:
        import torch.nn as nn

        if rank == 3:
            return [nn.BatchNorm2d(channels, eps=spec.epsilon, momentum=momentum)]
        return _to_channels_first(flow) + [nn.BatchNorm1d(channels, eps=spec.epsilon, momentum=momentum)]

    out = replace(flow, channels_first=rank == 2, after=None)
    return Planned(out, make, 0, 2 * channels, 2 * channels)


@LAYER_PLANNERS.register("layernorm")
def plan_layernorm(spec: LayerNormLayer, flow: Flow, where: str) -> Planned:
    rank = len(flow.shape)
    if rank not in (1, 2):
        raise ConfigError(
            f"{where} normalises the features of a flat or sequence input, but its input has shape {_described(flow)}.",
            hint="For images use batchnorm, or put layernorm after flatten or global pooling.",
        )
    features = flow.shape[-1]

    def make() -> list:
        import torch.nn as nn

        return _to_steps_first(flow) + [nn.LayerNorm(features, eps=spec.epsilon)]

    return Planned(replace(flow, channels_first=False, after=None), make, 0, 2 * features)


@LAYER_PLANNERS.register("reshape")
def plan_reshape(spec: ReshapeLayer, flow: Flow, where: str) -> Planned:
    target = list(spec.target_shape)
    total = math.prod(flow.shape)
    if 0 in target or target.count(-1) > 1:
        raise ConfigError(f"{where}: target_shape {target} may hold one -1 (inferred) and no 0.")
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if total % known:
            raise ConfigError(
                f"{where}: its input of shape {shape_text(flow.shape)} has {total} values, which do not "
                f"divide into target_shape {target}."
            )
        target[target.index(-1)] = total // known
    if math.prod(target) != total:
        raise ConfigError(
            f"{where}: target_shape {target} holds {math.prod(target)} values, but its input of shape "
            f"{shape_text(flow.shape)} has {total}.",
            hint="The product of target_shape must equal the input's size; one entry may be -1.",
        )
    if len(target) > 3:
        raise ConfigError(
            f"{where}: target_shape {target} has {len(target)} dimensions; dlcli's layers take 1 "
            "(features), 2 (steps, channels) or 3 (height, width, channels)."
        )
    # target_shape is written as the summary shows shapes: images as height x width x channels
    shape = (target[2], target[0], target[1]) if len(target) == 3 else tuple(target)

    def make() -> list:
        from .modules import Reshape

        return [Reshape(shape)]

    return Planned(Flow(shape), make)
