"""Layer specs -> PyTorch modules, with shapes tracked analytically.

Each builder gets the input shape of one sample (channels first) and returns the modules,
the output shape and the multiply-adds, or raises a ConfigError that names the layer and
both shapes. No forward pass is needed, so the summary is instant and device-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..config import (
    ActivationLayer,
    AvgPool2DLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    MaxPool2DLayer,
)
from ..errors import ConfigError
from ..registry import Registry

# Keras's class names, which the course's summaries show.
TYPE_NAMES = {
    "dense": "Dense",
    "conv2d": "Conv2D",
    "maxpool2d": "MaxPooling2D",
    "avgpool2d": "AveragePooling2D",
    "flatten": "Flatten",
    "dropout": "Dropout",
    "activation": "Activation",
}


@dataclass
class Built:
    modules: list  # nn.Module instances, in order
    output_shape: tuple[int, ...]
    mult_adds: int = 0


LayerBuilder = Callable[[Any, tuple[int, ...], str], Built]
LAYER_BUILDERS: Registry[LayerBuilder] = Registry("layer type")


def shape_text(shape: tuple[int, ...]) -> str:
    """Channels-last text (H x W x C), as Keras and the course show image shapes."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}x{w}x{c}"
    return "x".join(str(s) for s in shape)


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


def _need_image(spec: Any, shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ConfigError(
            f"{where} needs an image input (height x width x channels), "
            f"but its input has shape {shape_text(shape)}.",
            hint="Image layers must come before flatten; for data of shape [N] use dense layers.",
        )
    return shape  # type: ignore[return-value]


@LAYER_BUILDERS.register("dense")
def build_dense(spec: DenseLayer, shape: tuple[int, ...], where: str) -> Built:
    import torch.nn as nn

    if len(shape) != 1:
        raise ConfigError(
            f"{where} needs a flat input, but its input has shape {shape_text(shape)}.",
            hint="Add `- flatten: {}` before it.",
        )
    (features,) = shape
    linear = nn.Linear(features, spec.units, bias=spec.use_bias)
    return Built(_with_activation([linear], spec.activation), (spec.units,), features * spec.units)


def _conv_padding(spec: Conv2DLayer, size: int) -> tuple[int, int]:
    """(before, after) padding along one side length."""
    if spec.padding == "valid":
        return 0, 0
    if spec.padding == "same":  # Keras: output = ceil(size / stride)
        out = math.ceil(size / spec.strides)
        total = max((out - 1) * spec.strides + spec.kernel_size - size, 0)
        return total // 2, total - total // 2
    return int(spec.padding), int(spec.padding)


@LAYER_BUILDERS.register("conv2d")
def build_conv2d(spec: Conv2DLayer, shape: tuple[int, ...], where: str) -> Built:
    import torch.nn as nn

    c, h, w = _need_image(spec, shape, where)
    (top, bottom), (left, right) = _conv_padding(spec, h), _conv_padding(spec, w)
    if h + top + bottom < spec.kernel_size or w + left + right < spec.kernel_size:
        raise ConfigError(
            f"{where}: a {spec.kernel_size}x{spec.kernel_size} kernel does not fit its input "
            f"of shape {shape_text(shape)}.",
            hint="Use a smaller kernel_size, padding: same, or fewer pooling layers before it.",
        )
    modules: list = []
    if top == bottom and left == right:
        conv = nn.Conv2d(c, spec.filters, spec.kernel_size, spec.strides, (top, left), bias=spec.use_bias)
    else:  # asymmetric "same" padding at stride > 1, as Keras pads (more at the end)
        modules.append(nn.ZeroPad2d((left, right, top, bottom)))
        conv = nn.Conv2d(c, spec.filters, spec.kernel_size, spec.strides, 0, bias=spec.use_bias)
    modules.append(conv)
    ho = (h + top + bottom - spec.kernel_size) // spec.strides + 1
    wo = (w + left + right - spec.kernel_size) // spec.strides + 1
    out = (spec.filters, ho, wo)
    macs = ho * wo * spec.kernel_size * spec.kernel_size * c * spec.filters
    return Built(_with_activation(modules, spec.activation), out, macs)


def _pool(spec: Any, shape: tuple[int, ...], where: str, module_cls: Any) -> Built:
    c, h, w = _need_image(spec, shape, where)
    stride = spec.strides or spec.pool_size
    if h < spec.pool_size or w < spec.pool_size:
        raise ConfigError(
            f"{where}: a {spec.pool_size}x{spec.pool_size} window does not fit its input "
            f"of shape {shape_text(shape)}.",
            hint="Use a smaller pool_size or remove a pooling layer.",
        )
    out = (c, (h - spec.pool_size) // stride + 1, (w - spec.pool_size) // stride + 1)
    return Built([module_cls(spec.pool_size, stride)], out)


@LAYER_BUILDERS.register("maxpool2d")
def build_maxpool2d(spec: MaxPool2DLayer, shape: tuple[int, ...], where: str) -> Built:
    import torch.nn as nn

    return _pool(spec, shape, where, nn.MaxPool2d)


@LAYER_BUILDERS.register("avgpool2d")
def build_avgpool2d(spec: AvgPool2DLayer, shape: tuple[int, ...], where: str) -> Built:
    import torch.nn as nn

    return _pool(spec, shape, where, nn.AvgPool2d)


@LAYER_BUILDERS.register("flatten")
def build_flatten(spec: FlattenLayer, shape: tuple[int, ...], where: str) -> Built:
    import torch.nn as nn

    return Built([nn.Flatten()], (math.prod(shape),))


@LAYER_BUILDERS.register("dropout")
def build_dropout(spec: DropoutLayer, shape: tuple[int, ...], where: str) -> Built:
    import torch.nn as nn

    return Built([nn.Dropout(spec.rate)], shape)


@LAYER_BUILDERS.register("activation")
def build_activation(spec: ActivationLayer, shape: tuple[int, ...], where: str) -> Built:
    return Built(_with_activation([], spec.activation), shape)
