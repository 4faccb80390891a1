"""Presets expand into plain layer lists, so they build, summarise and save like any other."""

from __future__ import annotations

from ..config import (
    BinaryModel,
    CnnModel,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    LayersModel,
    MaxPool2DLayer,
)


def expand(model, output_units: int, output_activation: str) -> tuple:
    """The layer list of a model config; `output_*` size the last layer of a preset."""
    if isinstance(model, LayersModel):
        return tuple(model.layers)
    layers: list = []
    if isinstance(model, CnnModel):
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
