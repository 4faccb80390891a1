"""Layer specs -> analytic plans (shapes, parameters, multiply-adds) and the modules to build.

Each planner gets what flows into one layer (`Flow`: one sample's shape, and for sequences
whether the tensor is channels-first at run time) and returns a `Planned`: the output, the
counts, and a `make` function that builds the PyTorch modules later. Planning imports no
torch, so `dlcli summary` and the memory check run before anything is allocated; a shape
that does not fit is a ConfigError naming the layer, its input shape and what it needs.

Shapes of one sample: flat (features,), sequences (steps, channels) as Keras shows them,
images (channels, height, width) and videos (channels, frames, height, width) as PyTorch
stores them (both shown channels-last, as Keras shows them). Embeddings
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
    Conv3DLayer,
    ConvLSTM2DLayer,
    DenseLayer,
    DropoutLayer,
    EmbeddingLayer,
    FlattenLayer,
    LayerNormLayer,
    MaxPool2DLayer,
    ReshapeLayer,
    ResidualLayer,
    TimeDistributedLayer,
)
from ..registry import Registry
from .plan import LayerRecord


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


# (spec, flow, where) -> Planned; a block's planner also gets `plan_layers` (see LayerPlanner.nested)
Planner = Callable[..., Planned]
# (the block's layer specs, the flow into them) -> (their records, the flow out of the last)
PlanLayers = Callable[[tuple, Flow], tuple[list[LayerRecord], Flow]]


def activation_details(spec: Any) -> dict[str, Any]:
    """`summary --verbose`'s columns of most layers: the activation, where the layer has one."""
    return {"activation": getattr(spec, "activation", None)}


def _never(spec: Any) -> bool:
    return False


@dataclass(frozen=True)
class LayerPlanner:
    """A layer type's planner and everything else dlcli asks about the type.

    The padding mask of an embedding's mask_zero works as in Keras: recurrent layers skip the
    padding steps and global pooling leaves them out. It passes through the layers that keep
    every step where it is, and ends at the first that does not (convolution, pooling, flatten,
    reshape, a residual block, a recurrent layer that returns only its last state).
    """

    plan: Planner
    keras_name: str  # Keras's class name, which summaries show; {d} is the input's rank less one
    details: Callable[[Any], dict[str, Any]] = activation_details  # --verbose: kernel, stride, padding, activation
    reads_ids: bool = False  # it reads the data's integer word ids (only an embedding can)
    transparent: bool = False  # hints about the next layer name the layer before it ("after flatten")
    makes_mask: Callable[[Any], bool] = _never  # whether its output carries a padding mask
    uses_mask: bool = False  # its last module is called with the mask
    keeps_mask: bool = False  # the mask passes on where its output is still a sequence
    nested: bool = False  # a block: called as plan(spec, flow, where, plan_layers) to plan its own layers

    def type_name(self, spec: Any, input_shape: tuple[int, ...]) -> str:
        name = self.keras_name.format(d=max(len(input_shape) - 1, 1))
        if getattr(spec, "bidirectional", False):
            return f"Bidirectional({name})"
        return name


LAYER_PLANNERS: Registry[LayerPlanner] = Registry("layer type")


def layer_planner(kind: str, keras_name: str, **declared: Any) -> Callable[[Planner], Planner]:
    """Register the planner of the layer type `kind` (whose options class is in layer_specs),
    with its Keras name and what `declared` says about it (the fields of LayerPlanner)."""

    def add(plan: Planner) -> Planner:
        LAYER_PLANNERS.add(kind, LayerPlanner(plan, keras_name, **declared))
        return plan

    return add


def shape_text(shape: tuple[int, ...]) -> str:
    """Channels-last text (H x W x C, T x H x W x C for a video), as Keras and the course show shapes."""
    if len(shape) in (3, 4):
        return "x".join(str(s) for s in (*shape[1:], shape[0]))
    return "x".join(str(s) for s in shape)


def _described(flow: Flow) -> str:
    rank = len(flow.shape)
    kind = {1: "flat", 2: "a sequence", 3: "an image", 4: "a video"}.get(rank, f"rank {rank}")
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


_VIDEO_HINT = (
    "This is a video (frames x height x width x channels): use conv3d, maxpool3d and avgpool3d on it, or "
    "apply 2-D layers to every frame inside `- time_distributed: {layers: [...]}`."
)


def _need_image(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(
            f"{where} needs an image input (height x width x channels), but its input has shape {shape_text(shape)}"
            f"{' (a video)' if len(shape) == 4 else ''}.",
            hint=_VIDEO_HINT
            if len(shape) == 4
            else "Image layers must come before flatten; for data of shape [N] use dense layers.",
        )
    return shape  # type: ignore[return-value]


def _need_video(flow: Flow, where: str) -> tuple[int, int, int, int]:
    """(channels, frames, height, width), or an error saying that the layer needs frames."""
    rank = len(flow.shape)
    if rank == 4:
        return flow.shape  # type: ignore[return-value]
    if rank == 3:
        hint = (
            "Give it clips (data.dataset: video_folder, or an npz array of rank 5); for images use conv2d, "
            "maxpool2d and avgpool2d."
        )
    elif rank == 1 and flow.after is not None and flow.after.kind == "flatten":
        hint = "Remove the flatten before it: flatten turns the video into one vector."
    else:
        hint = "3-D layers read clips; give video data, or reshape into [frames, height, width, channels] first."
    raise ConfigError(
        f"{where} needs frames: a video input (frames x height x width x channels, a rank-5 batch), but its "
        f"input has shape {_described(flow)}.",
        hint=hint,
    )


def _triple(value: Any, name: str, where: str) -> tuple[int, int, int]:
    """A size along (frames, height, width) from one number or three."""
    if isinstance(value, int):
        return value, value, value
    if len(value) == 1:
        return value[0], value[0], value[0]
    if len(value) == 3:
        return tuple(value)  # type: ignore[return-value]
    raise ConfigError(
        f"{where}: {name} {list(value)} needs one number or three ([frames, height, width]).",
        hint=f"For example `{name}: 3` or `{name}: [1, 3, 3]`.",
    )


def _size_text(value: Any, dims: int) -> str:
    """A kernel or window as the summary writes it: 3x3 (2-D), 3x3x3 or 1x3x3 (3-D, frames first)."""
    sizes = (value,) * dims if isinstance(value, int) else tuple(value) * (dims if len(value) == 1 else 1)
    return "x".join(str(s) for s in sizes)


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


def _dims(kind: str) -> int:
    """Dimensions a kernel spans: conv2d and conv_lstm2d 2, conv3d 3, conv1d 1."""
    return 3 if "3d" in kind else 2 if "2d" in kind else 1


def _conv_details(spec: Any) -> dict[str, Any]:
    dims = _dims(spec.kind)
    kernel = _size_text(spec.kernel_size, dims)
    strides = getattr(spec, "strides", 1)
    stride = strides if isinstance(strides, int) else _size_text(strides, dims)
    return {"kernel": kernel, "stride": stride, "padding": spec.padding, "activation": spec.activation}


def _pool_details(spec: Any) -> dict[str, Any]:
    dims = _dims(spec.kind)
    strides = spec.strides or spec.pool_size
    padding: Any = getattr(spec, "padding", 0) or "valid"
    if getattr(spec, "ceil_mode", False):  # a last window over the edge counts
        padding = "ceil" if padding == "valid" else f"{padding}+ceil"
    return {
        "kernel": _size_text(spec.pool_size, dims),
        "stride": strides if isinstance(strides, int) else _size_text(strides, dims),
        "padding": padding,
        "activation": None,
    }


def _dropout_details(spec: Any) -> dict[str, Any]:
    return {"rate": spec.rate}


def _mask_zero(spec: Any) -> bool:
    return spec.mask_zero


# ----------------------------------------------------------------------------- the course's layers


@layer_planner("dense", "Dense")
def plan_dense(spec: DenseLayer, flow: Flow, where: str) -> Planned:
    if len(flow.shape) != 1:
        after = flow.after
        if after is not None and getattr(after, "return_sequences", False):
            hint = (
                f"The {after.kind} before it returns every step (return_sequences: true): set "
                "return_sequences: false on the last recurrent layer, or add `- global_max_pool: {}` "
                "or `- flatten: {}` before the dense layer."
            )
        elif len(flow.shape) in (2, 4):
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


@layer_planner("conv2d", "Conv2D", details=_conv_details)
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


def _pooled(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's output length of a pooling window (its pooling_output_shape): with ceil_mode a
    last window that overhangs the end counts, unless it would start in the padding alone."""
    span = size + 2 * padding - window
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool_sizes(
    spec: Any, sizes: tuple[int, ...], windows: tuple[int, ...], strides: tuple[int, ...], flow: Flow, where: str
) -> tuple[int, ...]:
    """The pooled lengths, or an error for a window that does not fit or padding PyTorch refuses."""
    window_text = "x".join(map(str, windows))
    if any(spec.padding > w // 2 for w in windows):
        raise ConfigError(
            f"{where}: padding {spec.padding} is more than half its {window_text} window; PyTorch pads a window "
            f"by at most half its size ({min(windows) // 2} here).",
            hint="Use a smaller padding or a larger pool_size.",
        )
    if any(n + 2 * spec.padding < w for n, w in zip(sizes, windows)):
        raise ConfigError(
            f"{where}: a {window_text} window does not fit its input of shape {shape_text(flow.shape)}.",
            hint="Use a smaller pool_size or remove a pooling layer.",
        )
    return tuple(_pooled(n, w, s, spec.padding, spec.ceil_mode) for n, w, s in zip(sizes, windows, strides))


def _pool_module(module: str, window: Any, stride: Any, spec: Any):
    import torch.nn as nn

    if module.startswith("Avg"):  # the average of the input's own values, as Keras's padding="same" takes it
        return getattr(nn, module)(window, stride, spec.padding, spec.ceil_mode, count_include_pad=False)
    return getattr(nn, module)(window, stride, spec.padding, ceil_mode=spec.ceil_mode)


def _pool2d(spec: Any, flow: Flow, where: str, module: str) -> Planned:
    c, h, w = _need_image(flow.shape, where)
    stride = spec.strides or spec.pool_size
    k = spec.pool_size
    ho, wo = _pool_sizes(spec, (h, w), (k, k), (stride, stride), flow, where)

    def make() -> list:
        return [_pool_module(module, k, stride, spec)]

    return Planned(Flow((c, ho, wo)), make)


@layer_planner("maxpool2d", "MaxPooling2D", details=_pool_details)
def plan_maxpool2d(spec: MaxPool2DLayer, flow: Flow, where: str) -> Planned:
    return _pool2d(spec, flow, where, "MaxPool2d")


@layer_planner("avgpool2d", "AveragePooling2D", details=_pool_details)
def plan_avgpool2d(spec: AvgPool2DLayer, flow: Flow, where: str) -> Planned:
    return _pool2d(spec, flow, where, "AvgPool2d")


@layer_planner("flatten", "Flatten")
def plan_flatten(spec: FlattenLayer, flow: Flow, where: str) -> Planned:
    def make() -> list:
        import torch.nn as nn

        # Rows that are flat already (a table's) need no view and no autograd node per step:
        # Identity keeps the layer's place, so parameter names stay those of the layer list.
        return [nn.Identity() if len(flow.shape) == 1 else nn.Flatten()]

    return Planned(Flow((math.prod(flow.shape),)), make)


@layer_planner("dropout", "Dropout", details=_dropout_details, transparent=True, keeps_mask=True)
def plan_dropout(spec: DropoutLayer, flow: Flow, where: str) -> Planned:
    def make() -> list:
        import torch.nn as nn

        return [nn.Dropout(spec.rate)]

    return Planned(flow, make)


@layer_planner("activation", "Activation", transparent=True, keeps_mask=True)
def plan_activation(spec: ActivationLayer, flow: Flow, where: str) -> Planned:
    if spec.activation == "softmax" and len(flow.shape) == 2 and not flow.channels_first:
        # softmax runs over dim 1: make that the channels, as Keras's runs over the last axis
        return Planned(
            replace(flow, channels_first=True), lambda: _to_channels_first(flow) + _with_activation([], spec.activation)
        )
    return Planned(flow, lambda: _with_activation([], spec.activation))


# ----------------------------------------------------------------------------- sequences


@layer_planner("embedding", "Embedding", reads_ids=True, makes_mask=_mask_zero)
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


@layer_planner("conv1d", "Conv1D", details=_conv_details)
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


@layer_planner("maxpool1d", "MaxPooling1D", details=_pool_details)
def plan_maxpool1d(spec: Any, flow: Flow, where: str) -> Planned:
    return _pool1d(spec, flow, where, "MaxPool1d")


@layer_planner("avgpool1d", "AveragePooling1D", details=_pool_details)
def plan_avgpool1d(spec: Any, flow: Flow, where: str) -> Planned:
    return _pool1d(spec, flow, where, "AvgPool1d")


def _global_pool(spec: Any, flow: Flow, where: str, op: str) -> Planned:
    rank = len(flow.shape)
    if rank not in (2, 3, 4):
        raise ConfigError(
            f"{where} needs a sequence (steps x channels), an image (height x width x channels) or a video "
            f"(frames x height x width x channels), but its input has shape {_described(flow)}.",
            hint="Global pooling replaces flatten: put it right after the last convolutional or recurrent layer.",
        )
    dims: tuple[int, ...]
    if rank == 4:  # over frames and pixels
        dims, channels = (2, 3, 4), flow.shape[0]
    elif rank == 3:
        dims, channels = (2, 3), flow.shape[0]
    else:
        dims, channels = ((2,) if flow.channels_first else (1,)), flow.shape[1]

    def make() -> list:
        from .modules import GlobalPool

        return [GlobalPool(dims, op)]

    return Planned(Flow((channels,)), make)


@layer_planner("global_avg_pool", "GlobalAveragePooling{d}D", uses_mask=True)
def plan_global_avg_pool(spec: Any, flow: Flow, where: str) -> Planned:
    return _global_pool(spec, flow, where, "mean")


@layer_planner("global_max_pool", "GlobalMaxPooling{d}D", uses_mask=True)
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


@layer_planner("lstm", "LSTM", uses_mask=True, keeps_mask=True)
def plan_lstm(spec: Any, flow: Flow, where: str) -> Planned:
    return _recurrent(spec, flow, where, 4, "LSTM")


@layer_planner("gru", "GRU", uses_mask=True, keeps_mask=True)
def plan_gru(spec: Any, flow: Flow, where: str) -> Planned:
    return _recurrent(spec, flow, where, 3, "GRU")


# ----------------------------------------------------------------------------- normalisation, reshape


@layer_planner("batchnorm", "BatchNormalization", keeps_mask=True)
def plan_batchnorm(spec: BatchNormLayer, flow: Flow, where: str) -> Planned:
    rank = len(flow.shape)
    if rank not in (1, 2, 3, 4):
        raise ConfigError(
            f"{where} needs a flat, sequence, image or video input, but its input has shape {_described(flow)}."
        )
    channels = flow.shape[1] if rank == 2 else flow.shape[0]
    momentum = round(1.0 - spec.momentum, 12)  # PyTorch weighs the new batch, Keras the running value

    def make() -> list:
        import torch.nn as nn

        if rank == 4:
            return [nn.BatchNorm3d(channels, eps=spec.epsilon, momentum=momentum)]
        if rank == 3:
            return [nn.BatchNorm2d(channels, eps=spec.epsilon, momentum=momentum)]
        return _to_channels_first(flow) + [nn.BatchNorm1d(channels, eps=spec.epsilon, momentum=momentum)]

    out = replace(flow, channels_first=rank == 2, after=None)
    return Planned(out, make, 0, 2 * channels, 2 * channels)


@layer_planner("layernorm", "LayerNormalization", keeps_mask=True)
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


@layer_planner("reshape", "Reshape")
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
    if len(target) > 4:
        raise ConfigError(
            f"{where}: target_shape {target} has {len(target)} dimensions; dlcli's layers take 1 "
            "(features), 2 (steps, channels), 3 (height, width, channels) or 4 (frames, height, width, channels)."
        )
    # target_shape is written as the summary shows shapes: channels last
    shape = (target[-1], *target[:-1]) if len(target) >= 3 else tuple(target)

    def make() -> list:
        from .modules import Reshape

        return [Reshape(shape)]

    return Planned(Flow(shape), make)


# ----------------------------------------------------------------------------- blocks


def _projection_stride(size: int, out: int) -> Optional[int]:
    """The stride of a 1x1 convolution that maps `size` steps or pixels to `out`, if any."""
    for stride in range(1, size + 1):
        if (size - 1) // stride + 1 == out:
            return stride
    return None


Shortcut = tuple[Optional[LayerRecord], Optional[Callable[[], list]]]


def _shortcut(flow: Flow, out: Flow, where: str) -> Shortcut:
    """How a block's input reaches the addition: (None, None) unchanged, else the projection's
    record (None for a mere transpose) and what builds the shortcut's modules."""
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
        lengths = list(zip(src[1:], dst[1:])) if len(src) >= 3 else [(src[0], dst[0])]
        strides = {_projection_stride(a, b) for a, b in lengths}
        if None in strides or len(strides) != 1:
            sizes = " x ".join(f"{a} -> {b}" for a, b in lengths)
            raise ConfigError(
                f"{cannot}: no 1x1 projection with one stride maps its {'pixels' if len(src) >= 3 else 'steps'} "
                f"({sizes}).",
                hint="Use padding: same in the block's convolutions, and strides only where the size halves.",
            )
        stride = next(s for s in strides if s is not None)
        if len(src) == 4:
            c_in, c_out, positions = src[0], dst[0], math.prod(dst[1:])
            projection = LayerRecord(
                "projection", "Conv3D", None, src, dst, positions * c_in * c_out, c_in * c_out + c_out
            )

            def make_shortcut() -> list:
                import torch.nn as nn

                return [nn.Conv3d(c_in, c_out, 1, stride)]
        elif len(src) == 3:
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

    return projection, make_shortcut


@layer_planner("residual", "Residual", nested=True)
def plan_residual(spec: ResidualLayer, flow: Flow, where: str, plan_layers: PlanLayers) -> Planned:
    children, out = plan_layers(spec.layers, replace(flow, after=None))
    projection, make_shortcut = _shortcut(flow, out, where)
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


# ----------------------------------------------------------------------------- video: (channels, frames, height, width)


@layer_planner("conv3d", "Conv3D", details=_conv_details)
def plan_conv3d(spec: Conv3DLayer, flow: Flow, where: str) -> Planned:
    c, t, h, w = _need_video(flow, where)
    k, s = _triple(spec.kernel_size, "kernel_size", where), _triple(spec.strides, "strides", where)
    pads = [_padding(spec.padding, n, kn, sn) for n, kn, sn in zip((t, h, w), k, s)]
    if any(n + before + after < kn for n, (before, after), kn in zip((t, h, w), pads, k)):
        raise ConfigError(
            f"{where}: a {'x'.join(map(str, k))} kernel (frames x height x width) does not fit its input of shape "
            f"{shape_text(flow.shape)}.",
            hint="Use a smaller kernel_size, padding: same, or fewer pooling layers before it.",
        )
    out = tuple((n + before + after - kn) // sn + 1 for n, (before, after), kn, sn in zip((t, h, w), pads, k, s))

    def make() -> list:
        import torch.nn as nn

        if all(before == after for before, after in pads):
            padding = (pads[0][0], pads[1][0], pads[2][0])
            return _with_activation([nn.Conv3d(c, spec.filters, k, s, padding, bias=spec.use_bias)], spec.activation)
        # asymmetric "same" padding at stride > 1, as Keras pads (more at the end); width's pair first
        (tf, tb), (ht, hb), (wl, wr) = pads
        return _with_activation(
            [nn.ConstantPad3d((wl, wr, ht, hb, tf, tb), 0.0), nn.Conv3d(c, spec.filters, k, s, 0, bias=spec.use_bias)],
            spec.activation,
        )

    # Keras's Conv3D: k_t * k_h * k_w * c_in * filters weights, plus a bias per filter
    params = math.prod(k) * c * spec.filters + (spec.filters if spec.use_bias else 0)
    macs = math.prod(out) * math.prod(k) * c * spec.filters
    return Planned(Flow((spec.filters, *out)), make, macs, params)


def _pool3d(spec: Any, flow: Flow, where: str, module: str) -> Planned:
    c, t, h, w = _need_video(flow, where)
    window = _triple(spec.pool_size, "pool_size", where)
    stride = _triple(spec.strides, "strides", where) if spec.strides is not None else window
    out = _pool_sizes(spec, (t, h, w), window, stride, flow, where)

    def make() -> list:
        return [_pool_module(module, window, stride, spec)]

    return Planned(Flow((c, *out)), make)


@layer_planner("maxpool3d", "MaxPooling3D", details=_pool_details)
def plan_maxpool3d(spec: Any, flow: Flow, where: str) -> Planned:
    return _pool3d(spec, flow, where, "MaxPool3d")


@layer_planner("avgpool3d", "AveragePooling3D", details=_pool_details)
def plan_avgpool3d(spec: Any, flow: Flow, where: str) -> Planned:
    return _pool3d(spec, flow, where, "AvgPool3d")


@layer_planner("conv_lstm2d", "ConvLSTM2D", details=_conv_details)
def plan_conv_lstm2d(spec: ConvLSTM2DLayer, flow: Flow, where: str) -> Planned:
    c, t, h, w = _need_video(flow, where)
    k, f = spec.kernel_size, spec.filters
    (top, bottom), (left, right) = _padding(spec.padding, h, k, 1), _padding(spec.padding, w, k, 1)
    if h + top + bottom < k or w + left + right < k:
        raise ConfigError(
            f"{where}: a {k}x{k} kernel does not fit the frames of its input of shape {shape_text(flow.shape)}.",
            hint="Use a smaller kernel_size, padding: same, or fewer pooling layers before it.",
        )
    ho, wo = h + top + bottom - k + 1, w + left + right - k + 1

    def make() -> list:
        from .modules import ConvLSTM2d

        return [ConvLSTM2d(c, f, k, (left, right, top, bottom), spec.activation, spec.return_sequences)]

    # Keras's ConvLSTM2D: four gates, each an input kernel (k x k x c_in), a recurrent kernel
    # (k x k x filters) and a bias, per filter.
    params = 4 * f * (k * k * (c + f)) + 4 * f
    macs = t * ho * wo * 4 * f * k * k * (c + f)
    out = (f, t, ho, wo) if spec.return_sequences else (f, ho, wo)
    return Planned(Flow(out), make, macs, params)


@layer_planner("time_distributed", "TimeDistributed", nested=True)
def plan_time_distributed(spec: TimeDistributedLayer, flow: Flow, where: str, plan_layers: PlanLayers) -> Planned:
    """Keras's TimeDistributed: the same layers on every frame of a video (every step of a
    sequence); frames become a batch of images for them, and their outputs a video again (each
    frame still an image) or a sequence of steps x features (each frame flat: for an lstm)."""
    rank = len(flow.shape)
    if rank == 4:
        c, steps, h, w = flow.shape
        one = Flow((c, h, w))
        unit = "frame"
    elif rank == 2:
        steps, features = flow.shape
        one = Flow((features,))
        unit = "step"
    else:
        raise ConfigError(
            f"{where} needs frames to apply its layers to: a video (frames x height x width x channels) or a "
            f"sequence (steps x features), but its input has shape {_described(flow)}.",
            hint="For images, use the layers without time_distributed.",
        )
    try:
        children, out = plan_layers(spec.layers, one)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message.rstrip('.')} (time_distributed applies its layers to each {unit} on its own: one "
            f"{unit} of its input {shape_text(flow.shape)} is {shape_text(one.shape)}).",
            hint=exc.hint,
            key=exc.key,
        ) from None
    inner = len(out.shape)
    if inner == 1:
        output = Flow((steps, out.shape[0]))
    elif inner == 3 and rank == 4:
        output = Flow((out.shape[0], steps, *out.shape[1:]))
    else:
        wanted = "an image or flat features" if rank == 4 else "flat features"
        raise ConfigError(
            f"{where}: its layers turn each {unit} ({shape_text(one.shape)}) into {_described(out)}; "
            f"time_distributed needs each {unit} to end as {wanted}.",
            hint="End its layers with flatten or global pooling (for an lstm after it), or with a 2-D layer.",
        )

    def make() -> list:
        import torch.nn as nn

        from .modules import TimeDistributed

        body = nn.Sequential(*[m for child in children if child.make for m in child.make()])
        return _to_steps_first(flow) + [TimeDistributed(body, video_in=rank == 4, video_out=len(output.shape) == 4)]

    return Planned(
        output,
        make,
        steps * sum(child.mult_adds for child in children),
        sum(child.params for child in children),
        sum(child.frozen for child in children),
        children,
    )
