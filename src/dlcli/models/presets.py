"""Presets expand into plain layer lists, so they build, summarise and save like any other."""

from __future__ import annotations

from ..config import BinaryModel, CnnModel, LayersModel, LeNet5Model
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
