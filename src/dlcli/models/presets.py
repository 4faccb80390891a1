"""Presets expand into plain layer lists, so they build, summarise and save like any other."""

from __future__ import annotations

from ..config import BinaryModel, CnnModel, LayersModel, LeNet5Model, ZFNetModel
from ..layer_specs import (
    Activation,
    AvgPool2DLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    MaxPool2DLayer,
)


def expand(model, output_units: int, output_activation: Activation) -> tuple:
    """The layer list of a model config; `output_*` size the last layer of a preset."""
    if isinstance(model, LayersModel):
        return tuple(model.layers)
    layers: list = []
    if isinstance(model, LeNet5Model):
        # LeNet-5 (LeCun et al., 1998): C1 6@5x5, S2, C3 16@5x5, S4, then 120, 84 and the output.
        # "same" padding on C1 gives the original's 28x28 maps from MNIST's 28x28 digits.
        pool = MaxPool2DLayer if model.pooling == "max" else AvgPool2DLayer
        layers += [
            Conv2DLayer(filters=6, kernel_size=5, padding="same", activation=model.activation),
            pool(pool_size=2),
            Conv2DLayer(filters=16, kernel_size=5, activation=model.activation),
            pool(pool_size=2),
            FlattenLayer(),
            DenseLayer(units=120, activation=model.activation),
            DenseLayer(units=84, activation=model.activation),
        ]
    elif isinstance(model, ZFNetModel):
        layers += zfnet_layers(model.activation, model.dropout)
    elif isinstance(model, CnnModel):
        for filters in model.filters:
            layers.append(Conv2DLayer(filters=filters, kernel_size=model.kernel_size, activation=model.activation))
            layers.append(MaxPool2DLayer(pool_size=model.pool_size))
        layers.append(FlattenLayer())
        for units in model.hidden:
            layers.append(DenseLayer(units=units, activation=model.activation))
        if model.dropout:
            layers.append(DropoutLayer(rate=model.dropout))
    else:  # mlp and binary: flatten, hidden dense layers, each optionally followed by dropout
        layers.append(FlattenLayer())
        for units in model.hidden:
            layers.append(DenseLayer(units=units, activation=model.activation))
            if model.dropout:
                layers.append(DropoutLayer(rate=model.dropout))
    if isinstance(model, BinaryModel):
        output_units, output_activation = 1, "sigmoid"
    elif getattr(model, "output_activation", "auto") != "auto":
        output_activation = model.output_activation
    layers.append(DenseLayer(units=output_units, activation=output_activation))
    return tuple(layers)


def zfnet_layers(activation: Activation = "relu", dropout: float = 0.5) -> list:
    """ZFNet's layers before its output layer, from the table of Figure 3 of Zeiler and Fergus,
    "Visualizing and Understanding Convolutional Networks" (arXiv:1311.2901, 2013; ECCV 2014),
    for 224x224x3 inputs:

    | layer   | the figure                        | here                                 | output     |
    |---------|-----------------------------------|--------------------------------------|------------|
    | conv 1  | 96 filters 7x7, stride 2          | conv2d 96@7x7, stride 2, padding 1   | 110x110x96 |
    | pool 1  | 3x3 max pool, stride 2            | maxpool2d 3, stride 2, ceil_mode     | 55x55x96   |
    | conv 2  | 256 filters 5x5, stride 2         | conv2d 256@5x5, stride 2             | 26x26x256  |
    | pool 2  | 3x3 max pool, stride 2            | maxpool2d 3, stride 2, ceil_mode     | 13x13x256  |
    | conv 3  | 384 filters 3x3, stride 1         | conv2d 384@3x3, padding 1            | 13x13x384  |
    | conv 4  | 384 filters 3x3, stride 1         | conv2d 384@3x3, padding 1            | 13x13x384  |
    | conv 5  | 256 filters 3x3, stride 1         | conv2d 256@3x3, padding 1            | 13x13x256  |
    | pool 5  | 3x3 max pool, stride 2            | maxpool2d 3, stride 2, ceil_mode     | 6x6x256    |
    | fc 6, 7 | 4096 units (dropout 0.5, sec. 3)  | dense 4096, dropout                  | 4096       |
    | output  | C-way softmax                     | dense, sized from the data           | classes    |

    The figure gives the sizes; the padding of conv 1 and the rounding up of the pools (Caffe's
    pooling, which the paper's code base used) are what reproduce them. ReLU after every
    convolution and hidden dense layer, as in the paper. Left out: the local contrast
    normalisation after pools 1 and 2 (no parameters; later work found it of little use) and
    the paper's renormalisation of conv filters whose RMS exceeds 0.1 (a training rule).
    """
    pool = MaxPool2DLayer(pool_size=3, strides=2, ceil_mode=True)
    layers: list = [
        Conv2DLayer(filters=96, kernel_size=7, strides=2, padding=1, activation=activation),
        pool,
        Conv2DLayer(filters=256, kernel_size=5, strides=2, activation=activation),
        pool,
        Conv2DLayer(filters=384, kernel_size=3, padding=1, activation=activation),
        Conv2DLayer(filters=384, kernel_size=3, padding=1, activation=activation),
        Conv2DLayer(filters=256, kernel_size=3, padding=1, activation=activation),
        pool,
        FlattenLayer(),
    ]
    for _ in range(2):
        layers.append(DenseLayer(units=4096, activation=activation))
        if dropout:
            layers.append(DropoutLayer(rate=dropout))
    return layers
