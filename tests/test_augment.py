"""data.augment: batched, seeded image augmentation, and the Batches hook that applies it."""

import copy
import math

import pytest
import torch

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
        "height x width. Remove data.augment for this data."
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
