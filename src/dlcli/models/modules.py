"""The few modules PyTorch lacks for Keras's layers, each the code a person would write by hand.

Imported only when a model is built (it imports torch); planning never needs it.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Transpose(nn.Module):
    """Swaps steps and channels of a sequence: embeddings and recurrent layers read
    (batch, steps, channels), convolutions and batch norm (batch, channels, steps)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class GlobalPool(nn.Module):
    """Mean or max over the steps (sequences) or the pixels (images): one value per channel."""

    def __init__(self, dims: tuple[int, ...], op: str) -> None:
        super().__init__()
        self.dims = dims
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "mean":
            return x.mean(self.dims)
        return x.amax(self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, op={self.op}"


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Residual(nn.Module):
    """body(x) + x, or + shortcut(x) (a 1x1 projection) where the shapes differ."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return self.body(x) + x
        return self.body(x) + self.shortcut(x)


def _last_state(h: torch.Tensor) -> torch.Tensor:
    """The final hidden state from h_n (directions, batch, units): a view for one direction,
    forward and backward concatenated (as Keras's Bidirectional does) for two. Reading h_n
    rather than output[:, -1] is also what is right for the backward direction, whose last
    state sits at the first step of the output."""
    if h.shape[0] == 1:
        return h[0]
    return torch.cat((h[0], h[1]), dim=1)


class LSTM(nn.LSTM):
    """nn.LSTM on (batch, steps, features) that returns the sequence or only the last state,
    as Keras's `return_sequences` chooses; its weights are nn.LSTM's own."""

    def __init__(self, input_size: int, units: int, bidirectional: bool, return_sequences: bool) -> None:
        super().__init__(input_size, units, batch_first=True, bidirectional=bidirectional)
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        output, (h, _) = super().forward(x)
        return output if self.return_sequences else _last_state(h)


class GRU(nn.GRU):
    """nn.GRU on (batch, steps, features), returning the sequence or only the last state."""

    def __init__(self, input_size: int, units: int, bidirectional: bool, return_sequences: bool) -> None:
        super().__init__(input_size, units, batch_first=True, bidirectional=bidirectional)
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        output, h = super().forward(x)
        return output if self.return_sequences else _last_state(h)
