"""Random augmentation of training images, a whole batch at a time on its device.

Off by default (`data.augment`). Each batch gets its random numbers from a generator seeded
with (seed, epoch, batch index, process rank), so a resumed run draws exactly what the
uninterrupted run drew, with no generator state to save. Only the few numbers per image
(flip or not, offsets, angle) are drawn, on the CPU; the pixels are moved by batched tensor
operations on the batch's device: an exact shift for a pure crop-with-padding, otherwise one
affine resampling (`grid_sample`, bilinear, zeros outside) for rotation and shift together.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional

from ..config import AugmentConfig
from ..errors import ConfigError

if TYPE_CHECKING:  # torch is imported inside the functions, so `dlcli --help` stays fast
    import torch

Transform = Callable[["torch.Tensor", int, int], "torch.Tensor"]  # (x, epoch, batch) -> x


def batch_generator(seed: int, epoch: int, batch: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one batch, seeded from the four numbers that identify it."""
    import numpy as np
    import torch

    state = np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augmented copy of a float batch N,C,H,W of images, or N,C,T,H,W of clips, whose every
    frame gets its clip's flip, crop, rotation and shift (values as the model sees them)."""
    if x.dim() == 5:  # frames as more channels: one draw per clip moves all its frames alike
        n, c, t, h, w = x.shape
        return augment_batch(x.reshape(n, c * t, h, w), config, generator).reshape(n, c, t, h, w)
    import torch

    n, _, h, w = x.shape
    device = x.device
    if config.horizontal_flip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(device, non_blocking=True)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = config.crop_padding
    offset_y = offset_x = None
    if pad:
        offset_y = torch.randint(-pad, pad + 1, (n,), generator=generator)
        offset_x = torch.randint(-pad, pad + 1, (n,), generator=generator)
    if config.rotation == 0 and config.shift == 0:
        if pad:
            x = _shift_exact(x, offset_y.to(device), offset_x.to(device), pad)  # type: ignore[union-attr]
        return x
    angle = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(config.rotation)
    ty = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * config.shift * h
    tx = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * config.shift * w
    if pad:
        ty, tx = ty + offset_y, tx + offset_x  # type: ignore[operator]
    return affine_batch(x, angle, ty, tx)


def affine_batch(x: torch.Tensor, angle: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """Each image rotated by angle[i] (radians) about its centre and moved by (ty[i], tx[i])
    pixels, bilinear, zeros outside; the per-image numbers may live on the CPU."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = x.shape
    # affine_grid maps each output pixel to where it is read from, in [-1, 1] coordinates; the
    # rotation is corrected for the aspect ratio so that it is a true rotation in pixels.
    angle, ty, tx = (t.to(torch.float64) for t in (angle, ty, tx))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos, -sin * h / w, -2 * tx / w], dim=1),
            torch.stack([sin * w / h, cos, -2 * ty / h], dim=1),
        ],
        dim=1,
    ).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _shift_exact(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad with zeros and crop back: each image moved by whole pixels (dy, dx), no resampling."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (pad - dy)[:, None] + torch.arange(h, device=x.device)  # n, h: padded rows to read
    cols = (pad - dx)[:, None] + torch.arange(w, device=x.device)  # n, w
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # n, h, w, c
    return out.permute(0, 3, 1, 2).contiguous()


def make_augmenter(config: AugmentConfig, seed: int, rank: int = 0) -> Optional[Transform]:
    """The transform for `engine.Batches(transform=...)` of the training batches, or None when
    augmentation is off."""
    if not config.enabled:
        return None

    def transform(x, epoch: int, batch: int):
        return augment_batch(x, config, batch_generator(seed, epoch, batch, rank))

    return transform


def check_augmentation(config: AugmentConfig, input_shape: tuple[int, ...], cuda_graph: bool = False) -> None:
    """Augmentation needs images or clips (C,H,W or C,T,H,W samples) and eager steps."""
    if not config.enabled:
        return
    if len(input_shape) not in (3, 4):
        raise ConfigError(
            f"data.augment: augmentation moves image pixels, and this data's samples have shape {tuple(input_shape)}, "
            "not channels x height x width (or channels x frames x height x width).",
            hint="Remove data.augment for this data.",
            key="data.augment",
        )
    if cuda_graph:
        raise ConfigError(
            "data.augment and training.cuda_graph cannot be combined: a recorded step replays the same batch "
            "transformation, and augmentation draws new random numbers for every batch.",
            hint="Use training.cuda_graph: false with augmentation.",
            key="data.augment",
        )
