"""data.augment: batched, seeded image augmentation, and the Batches hook that applies it."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from conftest import synthetic_config, trained_run, write_config
from dlcli.config import AugmentConfig
from dlcli.data.augment import (
    _shift_exact,
    affine_batch,
    augment_batch,
    batch_generator,
    check_augmentation,
    make_augmenter,
)
from dlcli.engine import Batches, Trainer
from dlcli.errors import ConfigError


def images(n=64, c=1, h=6, w=6, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_off_by_default():
    assert not AugmentConfig().enabled and make_augmenter(AugmentConfig(), seed=0) is None


def test_flip_mirrors_about_half_the_images_the_same_way_for_the_same_batch():
    x = images()
    transform = make_augmenter(AugmentConfig(horizontal_flip=True), seed=5)
    out = transform(x, 3, 7)
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert torch.all(flipped ^ kept) and 16 < int(flipped.sum()) < 48
    assert torch.equal(transform(x, 3, 7), out)  # (seed, epoch, batch) decides
    assert not torch.equal(transform(x, 3, 8), out) and not torch.equal(transform(x, 4, 7), out)
    assert not torch.equal(make_augmenter(AugmentConfig(horizontal_flip=True), seed=6)(x, 3, 7), out)


def test_crop_with_padding_moves_each_image_by_whole_pixels_with_zeros():
    x = images(n=16) + 1.0  # no zeros inside, so the moved-in border is recognisable
    out = augment_batch(x, AugmentConfig(crop_padding=2), batch_generator(0, 1, 0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    moves = []
    for i in range(16):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[i], padded[i, :, 2 - dy : 8 - dy, 2 - dx : 8 - dx])
        ]
        assert len(matches) == 1
        moves.append(matches[0])
    assert len(set(moves)) > 3


def test_affine_rotation_and_integer_shift_are_exact():
    x = images(n=2, c=3, h=5, w=5)
    quarter = affine_batch(x, torch.full((2,), math.pi / 2), torch.zeros(2), torch.zeros(2))
    assert torch.allclose(quarter, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5)
    moved = affine_batch(x, torch.zeros(2), torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0]))
    assert torch.allclose(moved, _shift_exact(x, torch.tensor([1, -2]), torch.tensor([2, 0]), 2), atol=1e-6)
    same = augment_batch(x, AugmentConfig(rotation=10, shift=0.1), batch_generator(0, 0, 0))
    assert same.shape == x.shape and not torch.equal(same, x)


def test_checks_name_the_fix():
    with pytest.raises(ConfigError) as info:
        check_augmentation(AugmentConfig(horizontal_flip=True), (20,))
    assert info.value.full_message() == (
        "data.augment: augmentation moves image pixels, and this data's samples have shape (20,), not channels x "
        "height x width (or channels x frames x height x width). Remove data.augment for this data."
    )
    with pytest.raises(ConfigError, match="cannot be combined"):
        check_augmentation(AugmentConfig(shift=0.1), (1, 8, 8), cuda_graph=True)
    check_augmentation(AugmentConfig(), (20,))


def _trainer(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return Trainer(
        model, optimizer, torch.nn.functional.cross_entropy, lambda out, y: (out.argmax(1) == y).sum()
    ), optimizer


def test_a_resumed_run_draws_the_same_augmentation(monkeypatch):
    x = (images(n=40) * 255).to(torch.uint8)
    y = torch.arange(40) % 3
    config = AugmentConfig(horizontal_flip=True, crop_padding=1, rotation=15)
    seen = []

    def batches(generator):
        transform = make_augmenter(config, seed=0)
        return Batches(
            x,
            y,
            8,
            shuffle=True,
            generator=generator,
            input_scale=1 / 255,
            transform=lambda xb, e, b: (seen.append((e, b)), transform(xb, e, b))[1],
        )

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    start = copy.deepcopy(model.state_dict())
    trainer, _ = _trainer(model)
    trainer.fit(batches(torch.Generator().manual_seed(1)), epochs=2)
    assert seen == [(e, b) for e in (1, 2) for b in range(5)]
    straight = copy.deepcopy(model.state_dict())

    model.load_state_dict(start)
    trainer, optimizer = _trainer(model)
    generator = torch.Generator().manual_seed(1)
    trainer.fit(batches(generator), epochs=1)
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), generator.get_state()))
    resumed_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    resumed_model.load_state_dict(saved[0])
    trainer, optimizer = _trainer(resumed_model)
    optimizer.load_state_dict(saved[1])
    generator = torch.Generator()
    generator.set_state(saved[2])
    trainer.fit(batches(generator), epochs=2, start_epoch=1)
    for key, value in straight.items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augmentation_on_the_gpu_matches_the_cpu():
    x = images(n=32, c=3, h=16, w=16)
    config = AugmentConfig(horizontal_flip=True, crop_padding=2, rotation=10, shift=0.1)
    cpu = augment_batch(x, config, batch_generator(0, 1, 2))
    gpu = augment_batch(x.cuda(), config, batch_generator(0, 1, 2))
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-5)
    exact = AugmentConfig(horizontal_flip=True, crop_padding=2)
    assert torch.equal(
        augment_batch(x.cuda(), exact, batch_generator(0, 1, 2)).cpu(),
        augment_batch(x, exact, batch_generator(0, 1, 2)),
    )


# ----------------------------------------------------------------------------- geometry, measured on pixels


def single_bright_pixel(h, w, row, col, n=1):
    x = torch.zeros(n, 1, h, w)
    x[:, 0, row, col] = 1.0
    return x


def centroids(x):
    """(row, col) of each image's brightness centre, as float64 tensors of length N."""
    _, _, h, w = x.shape
    weights = x.sum(1).to(torch.float64)
    total = weights.sum((1, 2))
    rows = (weights.sum(2) * torch.arange(h, dtype=torch.float64)).sum(1) / total
    cols = (weights.sum(1) * torch.arange(w, dtype=torch.float64)).sum(1) / total
    return rows, cols


def tent(d):
    return np.clip(1 - np.abs(d), 0, None)


@pytest.mark.parametrize("h, w", [(11, 17), (17, 11)])
@pytest.mark.parametrize("degrees, ty, tx", [(30, 0, 0), (-50, 0, 0), (0, 1.5, -2.25)])
def test_rotation_or_shift_of_a_non_square_image_moves_pixels_as_computed_by_hand(h, w, degrees, ty, tx):
    """Computed by hand: output pixel p reads the input where the rotation about the image
    centre (by the angle, counter-clockwise as torch.rot90 turns) or the move brings p from;
    bilinear sampling of one bright pixel at (r0, c0) there gives tent(row - r0) * tent(col - c0).
    On a non-square image a rotation that forgot the aspect ratio would stretch instead."""
    angle = math.radians(degrees)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r0, c0 = int(cy) + 2, int(cx) + 3
    out = affine_batch(single_bright_pixel(h, w, r0, c0), torch.tensor([angle]), torch.tensor([ty]), torch.tensor([tx]))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    y, x = rows - cy, cols - cx
    source_row = cy + math.sin(angle) * x + math.cos(angle) * y - ty
    source_col = cx + math.cos(angle) * x - math.sin(angle) * y - tx
    expected = tent(source_row - r0) * tent(source_col - c0)
    assert expected.sum() > 0.5  # the bright pixel stays inside the frame
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-5)


def test_a_quarter_turn_of_a_wide_image_turns_its_central_square():
    """A 9x15 image with content only in its central 9x9 square: a 90-degree rotation about the
    centre is exactly rot90 of that square, in the same place (the side strips stay zero)."""
    x = torch.zeros(2, 3, 9, 15)
    x[:, :, :, 3:12] = images(n=2, c=3, h=9, w=9, seed=4)
    quarter = affine_batch(x, torch.full((2,), math.pi / 2), torch.zeros(2), torch.zeros(2))
    expected = torch.zeros_like(x)
    expected[:, :, :, 3:12] = torch.rot90(x[:, :, :, 3:12], k=1, dims=(2, 3))
    assert torch.allclose(quarter, expected, atol=1e-5)


def test_random_rotation_angles_fill_the_configured_range_in_degrees():
    """rotation: 10 turns each image by an angle drawn from -10 to +10 degrees: measured from
    where a bright pixel 8 pixels right of the centre ends up."""
    n, size = 200, 21
    x = single_bright_pixel(size, size, 10, 18, n=n)
    out = augment_batch(x, AugmentConfig(rotation=10), batch_generator(3, 1, 0))
    rows, cols = centroids(out)
    measured = torch.rad2deg(torch.atan2(rows - 10, cols - 10))
    radius = torch.hypot(rows - 10, cols - 10)
    assert torch.allclose(radius, torch.full_like(radius, 8.0), atol=0.1)  # rotated about the centre
    assert measured.abs().max() <= 10.5, measured.abs().max()  # bilinear centroids: a fraction of a degree
    assert measured.abs().max() >= 9.0 and measured.min() < -5 and measured.max() > 5


@pytest.mark.parametrize("h, w", [(12, 20), (20, 12)])
def test_random_shifts_fill_the_configured_fraction_of_each_side(h, w):
    """shift: 0.25 moves each image by up to a quarter of its height down or up and a quarter of
    its width left or right (fractions of pixels included)."""
    n = 200
    x = single_bright_pixel(h, w, h // 2, w // 2, n=n)
    out = augment_batch(x, AugmentConfig(shift=0.25), batch_generator(3, 1, 0))
    rows, cols = centroids(out)
    dy, dx = rows - h // 2, cols - w // 2
    assert dy.abs().max() <= 0.25 * h + 1e-4 and dx.abs().max() <= 0.25 * w + 1e-4
    assert dy.abs().max() >= 0.22 * h and dx.abs().max() >= 0.22 * w
    assert not torch.allclose(dy, dy.round(), atol=1e-3)  # not only whole pixels


# ----------------------------------------------------------------------------- training batches only


def test_augmentation_transforms_the_training_batches_only(tmp_path, monkeypatch):
    """A run with validation and test data: every training batch of every epoch is augmented
    exactly once, validation and test batches (at every epoch's end and the final evaluation)
    never are."""
    from dlcli.data import augment

    calls = []
    real_augment_batch = augment.augment_batch

    def counted(x, config, generator):
        calls.append(len(x))
        return real_augment_batch(x, config, generator)

    monkeypatch.setattr(augment, "augment_batch", counted)
    raw = synthetic_config(epochs=2, batch_size=24)
    raw["data"]["synthetic"].update(input_shape=[6, 6, 1], samples=200, test_samples=60)
    raw["data"]["augment"] = {"horizontal_flip": True, "rotation": 10}
    run = trained_run(write_config(tmp_path / "c.yaml", raw), tmp_path / "runs")
    assert "val_loss" in (run / "metrics.csv").read_text().splitlines()[0]
    assert "test_accuracy" in json.loads((run / "results.json").read_text())
    # 200 samples less 20 % for validation: 160 training samples, batches of 24 -> 6 x 24 + 16.
    assert calls == ([24] * 6 + [16]) * 2
