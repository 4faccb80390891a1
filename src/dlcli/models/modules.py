"""The few modules PyTorch lacks for Keras's layers, each the code a person would write by hand.

Imported only when a model is built (it imports torch); planning never needs it.
"""

from __future__ import annotations

from typing import Any, Callable

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            if self.op == "mean":
                return x.mean(self.dims)
            return x.amax(self.dims)
        # A sequence whose padding steps (mask False) are left out: (batch, steps) against
        # (batch, steps, channels), or (batch, channels, steps) when channels come first.
        keep = mask.unsqueeze(1 if self.dims == (2,) else -1)
        if self.op == "mean":
            return (x * keep).sum(self.dims) / keep.sum(self.dims).clamp(min=1)
        pooled = x.masked_fill(~keep, float("-inf")).amax(self.dims)
        return pooled.masked_fill(~mask.any(1, keepdim=True), 0.0)  # all padding: zeros, as Keras

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


def _steps_in_order(first: torch.Tensor) -> torch.Tensor:
    """Per row, the step indices with the steps where `first` is True ahead of the others, each
    group in its original order. Keys are unique, so a plain sort is stable (ONNX has no stable
    sort)."""
    steps = first.shape[1]
    key = (~first).to(torch.int64) * steps + torch.arange(steps, device=first.device)
    return torch.argsort(key, dim=1)


def _gather_steps(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x's steps (dim 1) in each row's `order`."""
    return x.gather(1, order.unsqueeze(-1).expand_as(x))


def _restore_steps(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The inverse of `_gather_steps`: each step back where `order` took it from."""
    return torch.zeros_like(x).scatter(1, order.unsqueeze(-1).expand_as(x), x)


def _final_hidden(state: Any) -> torch.Tensor:
    """h_n from a recurrent layer's state: an LSTM's (h_n, c_n), a GRU's h_n."""
    return state[0] if isinstance(state, tuple) else state


# Eager under torch.compile: the packed lengths differ from batch to batch, and a graph per
# set of lengths would recompile until dynamo's limit.
@torch.compiler.disable
def _masked_recurrence(run: Callable, x: torch.Tensor, mask: torch.Tensor, return_sequences: bool) -> torch.Tensor:
    """Run a recurrent layer (`run`: nn.LSTM's or nn.GRU's forward) over each sequence's
    unmasked steps only, as Keras's recurrent layers do with a mask: the steps are moved to the
    front in order (padding may sit before, after or between them) and packed, so PyTorch's
    kernel skips the rest. The outputs go back to the steps they came from; padding steps, and
    sequences that are all padding, give zeros."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    order = _steps_in_order(mask)  # real steps first
    lengths = mask.sum(1)
    gathered = _gather_steps(x, order)
    packed = pack_padded_sequence(gathered, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    output, state = run(packed)
    if not return_sequences:
        h = _final_hidden(state)
        return _last_state(h) * (lengths > 0).unsqueeze(1).to(h.dtype)
    padded, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
    restored = _restore_steps(padded, order)
    return restored * mask.unsqueeze(-1).to(restored.dtype)


def _masked_recurrence_unpacked(
    run: Callable, x: torch.Tensor, mask: torch.Tensor, return_sequences: bool, bidirectional: bool
) -> torch.Tensor:
    """The same as `_masked_recurrence`, in tensors of fixed shape that torch.export can trace
    (for export; it costs every step, and twice that for two directions). The forward
    direction reads the real steps moved to the front, so the padding after them never reaches
    its outputs; the backward direction reads them moved to the back, so it starts with them."""
    steps = x.shape[1]
    lengths = mask.sum(1)
    front = _steps_in_order(mask)
    output, _ = run(_gather_steps(x, front))
    units = output.shape[-1] // (2 if bidirectional else 1)
    forward_out = output[..., :units]
    if bidirectional:
        back = _steps_in_order(~mask)
        output_back, _ = run(_gather_steps(x, back))
        backward_out = output_back[..., units:]
    if not return_sequences:
        rows = torch.arange(x.shape[0], device=x.device)
        last = forward_out[rows, (lengths - 1).clamp(min=0)]
        if bidirectional:  # the backward direction's state after reading back to the first word
            last = torch.cat((last, backward_out[rows, (steps - lengths).clamp(max=steps - 1)]), dim=1)
        return last * (lengths > 0).unsqueeze(1).to(last.dtype)
    restored = _restore_steps(forward_out, front)
    if bidirectional:
        restored = torch.cat((restored, _restore_steps(backward_out, back)), dim=2)
    return restored * mask.unsqueeze(-1).to(restored.dtype)


def _keras_recurrent(layer: Any, run: Callable, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """What Keras's LSTM and GRU return, `run` being nn.LSTM's or nn.GRU's own forward."""
    if mask is not None:
        if layer.packed:
            return _masked_recurrence(run, x, mask, layer.return_sequences)
        return _masked_recurrence_unpacked(run, x, mask, layer.return_sequences, layer.bidirectional)
    output, state = run(x)
    return output if layer.return_sequences else _last_state(_final_hidden(state))


class LSTM(nn.LSTM):
    """nn.LSTM on (batch, steps, features) that returns the sequence or only the last state,
    as Keras's `return_sequences` chooses; its weights are nn.LSTM's own."""

    def __init__(self, input_size: int, units: int, bidirectional: bool, return_sequences: bool) -> None:
        super().__init__(input_size, units, batch_first=True, bidirectional=bidirectional)
        self.return_sequences = return_sequences
        self.packed = True  # a mask skips padding by packing; export turns this off

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return _keras_recurrent(self, super().forward, x, mask)


class GRU(nn.GRU):
    """nn.GRU on (batch, steps, features), returning the sequence or only the last state."""

    def __init__(self, input_size: int, units: int, bidirectional: bool, return_sequences: bool) -> None:
        super().__init__(input_size, units, batch_first=True, bidirectional=bidirectional)
        self.return_sequences = return_sequences
        self.packed = True  # a mask skips padding by packing; export turns this off

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return _keras_recurrent(self, super().forward, x, mask)


class MaskedSequential(nn.Sequential):
    """A Sequential over word ids in which id 0 is padding (an embedding's mask_zero): the
    modules at `mask_users` (recurrent layers, global pooling) also get the mask, True where
    a step holds a word. Same parameters and state-dict keys as nn.Sequential."""

    # PyTorch's recurrent kernel on packed sequences has no torch.func rule: training.compile
    # keeps the model's forward and the optimizer's update as separate graphs for this model.
    not_differentiable_by_torch_func = "the model skips padding steps (mask_zero) with packed sequences"

    def __init__(self, *modules: nn.Module, mask_users: list[int]) -> None:
        super().__init__(*modules)
        self.mask_users = frozenset(mask_users)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = x != 0
        for index, module in enumerate(self):
            x = module(x, mask) if index in self.mask_users else module(x)
        return x


class TimeDistributed(nn.Module):
    """Keras's TimeDistributed: `body` on every frame of (batch, channels, frames, height, width)
    (or every step of (batch, steps, features)) at once, as one batch of batch x frames images;
    its outputs go back to a video (images out) or to (batch, frames, features) (flat out)."""

    def __init__(self, body: nn.Module, video_in: bool, video_out: bool) -> None:
        super().__init__()
        self.body = body
        self.video_in = video_in
        self.video_out = video_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if self.video_in:
            steps = x.shape[2]
            each = x.transpose(1, 2).flatten(0, 1)  # (batch * frames, channels, height, width)
        else:
            steps = x.shape[1]
            each = x.flatten(0, 1)
        y = self.body(each).unflatten(0, (batch, steps))
        return y.transpose(1, 2) if self.video_out else y

    def extra_repr(self) -> str:
        return f"video_in={self.video_in}, video_out={self.video_out}"


def _activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return {
        "linear": lambda x: x,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda x: torch.softmax(x, dim=1),
    }[name]


def _same_padding(kernel: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) that keeps the size at stride 1, the extra pixel at the end (Keras)."""
    before, after = (kernel - 1) // 2, kernel // 2
    return before, after, before, after


class ConvLSTM2d(nn.Module):
    """Keras's ConvLSTM2D on (batch, channels, frames, height, width): an LSTM whose input and
    recurrent transforms are convolutions. Gates in Keras's order (input, forget, cell, output);
    `activation` on the cell input and output, sigmoid on the gates; the recurrent convolution
    keeps the size ("same"), the input one pads as `padding` says. The input convolution runs on
    all frames at once; only the recurrent one steps through time."""

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int,
        padding: tuple[int, int, int, int],
        activation: str,
        return_sequences: bool,
    ) -> None:
        super().__init__()
        self.filters = filters
        self.kernel_size = kernel_size
        self.padding = padding  # (left, right, top, bottom) of the input convolution
        self.activation = activation
        self.return_sequences = return_sequences
        self.weight_ih = nn.Parameter(torch.empty(4 * filters, in_channels, kernel_size, kernel_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * filters, filters, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(4 * filters))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras's initial weights: Glorot-uniform input kernel, orthogonal recurrent kernel,
        zero biases but the forget gate's, which starts at 1 (unit_forget_bias)."""
        nn.init.xavier_uniform_(self.weight_ih)
        with torch.no_grad():
            # Keras's recurrent kernel is (k, k, filters, 4 * filters) made orthogonal as a
            # (k * k * filters) x (4 * filters) matrix: the same here, transposed.
            flat = torch.empty(4 * self.filters, self.weight_hh[0].numel(), device=self.weight_hh.device)
            nn.init.orthogonal_(flat)
            self.weight_hh.copy_(flat.view_as(self.weight_hh))
            self.bias.zero_()
            self.bias[self.filters : 2 * self.filters].fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        batch, _, steps = x.shape[:3]
        act = _activation_function(self.activation)
        frames = x.transpose(1, 2).flatten(0, 1)
        if any(self.padding):
            frames = F.pad(frames, self.padding)
        inputs = F.conv2d(frames, self.weight_ih, self.bias).unflatten(0, (batch, steps))
        h = inputs.new_zeros(batch, self.filters, *inputs.shape[3:])
        c = torch.zeros_like(h)
        recurrent_padding = _same_padding(self.kernel_size)
        outputs = []
        for step in range(steps):
            gates = inputs[:, step] + F.conv2d(F.pad(h, recurrent_padding), self.weight_hh)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * act(g)
            h = torch.sigmoid(o) * act(c)
            if self.return_sequences:
                outputs.append(h)
        return torch.stack(outputs, dim=2) if self.return_sequences else h

    def extra_repr(self) -> str:
        return (
            f"{self.weight_ih.shape[1]}, {self.filters}, kernel_size={self.kernel_size}, padding={self.padding}, "
            f"activation={self.activation}, return_sequences={self.return_sequences}"
        )
