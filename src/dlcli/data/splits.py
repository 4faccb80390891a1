"""Seeded, stratified hold-out of validation and test samples from users' files.

Users' files are often sorted by class (iris and wine are: 50 setosa, then 50 versicolor...),
so taking the last rows, as Keras's `validation_split` does and the built-in datasets keep
doing, would leave a validation set of one class. Here the samples are first put in a seeded
order in which every prefix holds each class in about its share of the whole; the test
samples are the first of that order, the validation samples the next, training the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import DataConfig
from ..errors import DataError

DEFAULT_TEST_SPLIT = 0.2


@dataclass(frozen=True)
class Split:
    """Indices (into the samples given) of each split, each in the stratified order."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    stratified: bool

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_order(labels: Optional[np.ndarray], n: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(n); with labels, every prefix is stratified (within one
    sample per class): a class of n_c samples has its j-th (randomly chosen) sample at the
    key (j + 0.5) / n_c, and samples are sorted by key, ties in random order."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if labels is None or n == 0:
        return perm
    labels = np.asarray(labels, dtype=np.int64)[perm]
    grouped = np.argsort(labels, kind="stable")  # positions in perm, by class, random within
    sorted_labels = labels[grouped]
    counts = np.bincount(sorted_labels)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(n) - starts[sorted_labels]
    key = (rank + 0.5) / counts[sorted_labels]
    ties = rng.random(n)
    return perm[grouped[np.lexsort((ties, key))]]


def holdout_count(n: int, fraction: float) -> int:
    """Keras's rounding: n - int(n * (1 - fraction)), so 0.2 of 150 is 30."""
    return n - int(n * (1.0 - fraction)) if fraction else 0


def split_samples(
    n: int,
    labels: Optional[np.ndarray],
    config: DataConfig,
    seed: int,
    *,
    has_test: bool,
    has_val: bool = False,
    what: str = "rows",
) -> Split:
    """Hold out test (unless the data has its own test set) and validation samples, then cap
    the training samples at max_train_samples."""
    if has_test:
        n_test = 0
    else:
        n_test = holdout_count(n, DEFAULT_TEST_SPLIT if config.test_split is None else config.test_split)
    rest = n - n_test
    if has_val:
        n_val = 0
    elif config.validation_size is not None:
        n_val = config.validation_size
    else:
        n_val = holdout_count(rest, config.validation_split)
    if n_test + n_val >= n:
        held = f"{n_test} test and {n_val} validation" if n_test else f"{n_val} validation"
        raise DataError(
            f"Holding out {held} {what} of {n} leaves none to train on.",
            hint="Use a smaller data.test_split, validation_split or validation_size, or more data.",
        )
    order = stratified_order(labels, n, seed)
    train = order[n_test + n_val :]
    if config.max_train_samples is not None:
        train = train[: config.max_train_samples]
    return Split(train=train, val=order[n_test : n_test + n_val], test=order[:n_test], stratified=labels is not None)
