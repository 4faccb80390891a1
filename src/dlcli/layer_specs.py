"""The options of each layer type: one frozen dataclass per type, registered under its YAML name.

`@layer_spec` adds a class to `LAYER_TYPES`, which the config's loader reads to turn
`- dense: {units: 10}` into `DenseLayer(units=10)`; the matching planner (shapes, counts, the
modules) is registered in `models/layers.py`. A new layer is a class here and a planner there.
Like `config`, this module imports no heavy package.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional, TypeVar, Union

Activation = Literal["linear", "sigmoid", "tanh", "relu", "softmax"]


def option(default: Any = dataclasses.MISSING, *, help: str = "", **limits: Any) -> Any:
    """A dataclass field with a help text and numeric limits (ge, gt, le, lt)."""
    meta = {"help": help, **limits}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


class LayerSpec:
    """Any layer's options; `kind` is its name in YAML (`- dense: {...}`)."""

    kind: ClassVar[str]


LAYER_TYPES: dict[str, type[LayerSpec]] = {}  # kind -> options class, in the order of this file

_Spec = TypeVar("_Spec", bound=type[LayerSpec])


def layer_spec(cls: _Spec) -> _Spec:
    """Register a layer's options class under its `kind`."""
    if cls.kind in LAYER_TYPES:
        raise ValueError(f"layer type {cls.kind!r} is registered twice")
    LAYER_TYPES[cls.kind] = cls
    return cls


# ----------------------------------------------------------------------------- the course's layers


@layer_spec
@dataclass(frozen=True)
class DenseLayer(LayerSpec):
    kind: ClassVar[str] = "dense"
    units: int = option(help="number of output units", ge=1)
    activation: Activation = option("linear", help="activation after the layer")
    use_bias: bool = option(True, help="add a bias vector")


@layer_spec
@dataclass(frozen=True)
class Conv2DLayer(LayerSpec):
    kind: ClassVar[str] = "conv2d"
    filters: int = option(help="number of output channels", ge=1)
    kernel_size: int = option(help="square kernel size", ge=1)
    strides: int = option(1, help="step of the kernel", ge=1)
    padding: Union[Literal["valid", "same"], int] = option(
        "valid", help="valid (none), same (keep size at stride 1) or a number of pixels"
    )
    activation: Activation = option("linear", help="activation after the layer")
    use_bias: bool = option(True, help="add a bias vector")


_POOL_PADDING_HELP = "pixels added on every side (PyTorch's padding; at most half the window)"
_CEIL_MODE_HELP = "count a last window that overhangs the edge, as Caffe and the papers of its time did"


@layer_spec
@dataclass(frozen=True)
class MaxPool2DLayer(LayerSpec):
    kind: ClassVar[str] = "maxpool2d"
    pool_size: int = option(2, help="square window size", ge=1)
    strides: Optional[int] = option(None, help="step of the window (default: pool_size)", ge=1)
    padding: int = option(0, help=_POOL_PADDING_HELP, ge=0)
    ceil_mode: bool = option(False, help=_CEIL_MODE_HELP)


@layer_spec
@dataclass(frozen=True)
class AvgPool2DLayer(LayerSpec):
    kind: ClassVar[str] = "avgpool2d"
    pool_size: int = option(2, help="square window size", ge=1)
    strides: Optional[int] = option(None, help="step of the window (default: pool_size)", ge=1)
    padding: int = option(0, help=_POOL_PADDING_HELP + "; averages leave the padding out", ge=0)
    ceil_mode: bool = option(False, help=_CEIL_MODE_HELP)


@layer_spec
@dataclass(frozen=True)
class FlattenLayer(LayerSpec):
    kind: ClassVar[str] = "flatten"


@layer_spec
@dataclass(frozen=True)
class DropoutLayer(LayerSpec):
    kind: ClassVar[str] = "dropout"
    rate: float = option(help="fraction of inputs zeroed during training", ge=0.0, lt=1.0)


@layer_spec
@dataclass(frozen=True)
class ActivationLayer(LayerSpec):
    kind: ClassVar[str] = "activation"
    activation: Activation = option(help="the activation function")


# ----------------------------------------------------------------------------- sequences, normalisation, structure


@layer_spec
@dataclass(frozen=True)
class EmbeddingLayer(LayerSpec):
    kind: ClassVar[str] = "embedding"
    output_dim: int = option(help="size of each word vector", ge=1)
    input_dim: Optional[int] = option(None, help="vocabulary size (default: the data's)", ge=1)
    mask_zero: bool = option(False, help="id 0 is padding: a fixed zero vector that is never trained")


@layer_spec
@dataclass(frozen=True)
class Conv1DLayer(LayerSpec):
    kind: ClassVar[str] = "conv1d"
    filters: int = option(help="number of output channels", ge=1)
    kernel_size: int = option(help="kernel length", ge=1)
    strides: int = option(1, help="step of the kernel", ge=1)
    padding: Union[Literal["valid", "same"], int] = option(
        "valid", help="valid (none), same (keep length at stride 1) or a number of steps"
    )
    activation: Activation = option("linear", help="activation after the layer")
    use_bias: bool = option(True, help="add a bias vector")


@layer_spec
@dataclass(frozen=True)
class MaxPool1DLayer(LayerSpec):
    kind: ClassVar[str] = "maxpool1d"
    pool_size: int = option(2, help="window length", ge=1)
    strides: Optional[int] = option(None, help="step of the window (default: pool_size)", ge=1)


@layer_spec
@dataclass(frozen=True)
class AvgPool1DLayer(LayerSpec):
    kind: ClassVar[str] = "avgpool1d"
    pool_size: int = option(2, help="window length", ge=1)
    strides: Optional[int] = option(None, help="step of the window (default: pool_size)", ge=1)


@layer_spec
@dataclass(frozen=True)
class GlobalAvgPoolLayer(LayerSpec):
    kind: ClassVar[str] = "global_avg_pool"


@layer_spec
@dataclass(frozen=True)
class GlobalMaxPoolLayer(LayerSpec):
    kind: ClassVar[str] = "global_max_pool"


@layer_spec
@dataclass(frozen=True)
class LSTMLayer(LayerSpec):
    kind: ClassVar[str] = "lstm"
    units: int = option(help="size of the hidden state", ge=1)
    bidirectional: bool = option(False, help="also read the sequence backwards and concatenate both")
    return_sequences: bool = option(False, help="output every step (for another recurrent layer) instead of the last")
    dropout: float = option(0.0, help="fraction of the layer's inputs dropped during training", ge=0.0, lt=1.0)


@layer_spec
@dataclass(frozen=True)
class GRULayer(LayerSpec):
    kind: ClassVar[str] = "gru"
    units: int = option(help="size of the hidden state", ge=1)
    bidirectional: bool = option(False, help="also read the sequence backwards and concatenate both")
    return_sequences: bool = option(False, help="output every step (for another recurrent layer) instead of the last")
    dropout: float = option(0.0, help="fraction of the layer's inputs dropped during training", ge=0.0, lt=1.0)


@layer_spec
@dataclass(frozen=True)
class BatchNormLayer(LayerSpec):
    kind: ClassVar[str] = "batchnorm"
    momentum: float = option(
        0.99, help="Keras's momentum of the running statistics (PyTorch's is 1 - this)", ge=0.0, lt=1.0
    )
    epsilon: float = option(0.001, help="added to the variance for stability", gt=0.0)


@layer_spec
@dataclass(frozen=True)
class LayerNormLayer(LayerSpec):
    kind: ClassVar[str] = "layernorm"
    epsilon: float = option(0.001, help="added to the variance for stability", gt=0.0)


@layer_spec
@dataclass(frozen=True)
class ReshapeLayer(LayerSpec):
    kind: ClassVar[str] = "reshape"
    target_shape: tuple[int, ...] = option(
        help="shape of one sample as the summary shows it (one entry may be -1)", ge=-1, min_items=1
    )


@layer_spec
@dataclass(frozen=True)
class ResidualLayer(LayerSpec):
    kind: ClassVar[str] = "residual"
    layers: tuple[LayerSpec, ...] = option(
        help="the block's layers; their output is added to the block's input", min_items=1
    )
    activation: Activation = option("linear", help="activation after the addition")


# ----------------------------------------------------------------------------- video: (frames, height, width, channels)

# A size along frames, height and width: one number for all three, or [frames, height, width].
Size3D = Union[int, tuple[int, ...]]


@layer_spec
@dataclass(frozen=True)
class Conv3DLayer(LayerSpec):
    kind: ClassVar[str] = "conv3d"
    filters: int = option(help="number of output channels", ge=1)
    kernel_size: Size3D = option(help="kernel size: one number, or [frames, height, width]", ge=1)
    strides: Size3D = option(1, help="step of the kernel: one number, or [frames, height, width]", ge=1)
    padding: Union[Literal["valid", "same"], int] = option(
        "valid", help="valid (none), same (keep the size at stride 1) or a number of frames and pixels"
    )
    activation: Activation = option("linear", help="activation after the layer")
    use_bias: bool = option(True, help="add a bias vector")


@layer_spec
@dataclass(frozen=True)
class MaxPool3DLayer(LayerSpec):
    kind: ClassVar[str] = "maxpool3d"
    pool_size: Size3D = option(2, help="window: one number, or [frames, height, width]", ge=1)
    strides: Optional[Size3D] = option(None, help="step of the window (default: pool_size)", ge=1)
    padding: int = option(0, help="frames and pixels added on every side (at most half the window)", ge=0)
    ceil_mode: bool = option(False, help=_CEIL_MODE_HELP)


@layer_spec
@dataclass(frozen=True)
class AvgPool3DLayer(LayerSpec):
    kind: ClassVar[str] = "avgpool3d"
    pool_size: Size3D = option(2, help="window: one number, or [frames, height, width]", ge=1)
    strides: Optional[Size3D] = option(None, help="step of the window (default: pool_size)", ge=1)
    padding: int = option(
        0, help="frames and pixels added on every side (at most half the window); averages leave it out", ge=0
    )
    ceil_mode: bool = option(False, help=_CEIL_MODE_HELP)


@layer_spec
@dataclass(frozen=True)
class TimeDistributedLayer(LayerSpec):
    kind: ClassVar[str] = "time_distributed"
    layers: tuple[LayerSpec, ...] = option(
        help="layers applied to every frame (or step) separately, with the same weights", min_items=1
    )


@layer_spec
@dataclass(frozen=True)
class ConvLSTM2DLayer(LayerSpec):
    kind: ClassVar[str] = "conv_lstm2d"
    filters: int = option(help="channels of the hidden state", ge=1)
    kernel_size: int = option(help="square kernel size of the input and recurrent convolutions", ge=1)
    padding: Literal["valid", "same"] = option(
        "valid", help="of the input convolution (the recurrent one keeps the size)"
    )
    activation: Activation = option("tanh", help="activation of the cell input and output")
    return_sequences: bool = option(False, help="output every frame (a video) instead of the last (an image)")
