"""Seeded, stratified hold-out of validation and test samples from users' files.

Users' files are often sorted by class (iris and wine are: 50 setosa, then 50 versicolor...),
so taking the last rows, as Keras's `validation_split` does and the built-in datasets keep
doing, would leave a validation set of one class. Here the samples are first put in a seeded
order in which every prefix holds each class in about its share of the whole; the test
samples are the first of that order, the validation samples the next, training the rest.

Cross-validation (`dlcli cv`) replaces the validation hold-out by a fold: the samples a run
would train on with no validation data (its "pool") are numbered 0.. in their order, folds.csv
says in which fold each is held out, and `data.fold` picks the fold that validates.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
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


ZERO_HOLDOUT_HINTS = {
    "validation_split": "Use a larger validation_split, or validation_size: N for N samples.",
    "test_split": "Use a larger test_split, or test_split: 0 to keep no test data.",
}


def nonzero_holdout(n: int, fraction: float, key: str, what: str) -> int:
    """holdout_count for `data.<key>` (validation_split or test_split) of n `what`; a fraction
    so small it holds out none is refused, as the run would otherwise go without that data unasked."""
    count = holdout_count(n, fraction)
    if fraction and count == 0:
        raise DataError(f"data.{key}: {fraction} of {n} {what} holds out zero rows.", hint=ZERO_HOLDOUT_HINTS[key])
    return count


def validation_count(n: int, fraction: float) -> int:
    """The rows `data.validation_split` holds out of n training samples (none refused)."""
    return nonzero_holdout(n, fraction, "validation_split", "training samples")


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
        n_test = nonzero_holdout(
            n, DEFAULT_TEST_SPLIT if config.test_split is None else config.test_split, "test_split", what
        )
    rest = n - n_test
    if config.fold is not None:
        if has_val:
            raise DataError(
                "data.fold: this data has its own validation folder, and a cross-validation fold would replace it.",
                hint="Move the val/ folder's samples into train/ to cross-validate them, or train without dlcli cv.",
            )
        n_val = 0
    elif has_val:
        n_val = 0
    elif config.validation_size is not None:
        n_val = config.validation_size
    else:
        n_val = validation_count(rest, config.validation_split)
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
    val = order[n_test : n_test + n_val]
    if config.fold is not None:
        pool_labels = None if labels is None else np.asarray(labels)[train]
        in_fold = fold_mask(config, len(train), pool_labels)
        train, val = train[~in_fold], train[in_fold]
    return Split(train=train, val=val, test=order[:n_test], stratified=labels is not None)


FOLDS_FILE = "folds.csv"


@dataclass(frozen=True)
class Folds:
    """folds.csv as `dlcli cv` writes it: per pool position, its label (classification) and, per
    repeat, the number of the run that holds it out (repeat r's folds are r*k .. r*k+k-1)."""

    labels: Optional[np.ndarray]  # int64, or None for regression
    assignment: np.ndarray  # (n samples, repeats) of fold numbers

    @property
    def count(self) -> int:
        return int(self.assignment.max()) + 1 if self.assignment.size else 0

    def held_out(self, fold: int) -> np.ndarray:
        """A boolean mask of the pool: True where run `fold` validates."""
        return (self.assignment == fold).any(axis=1)


def write_folds(path: Path, labels: Optional[np.ndarray], assignment: np.ndarray) -> None:
    """folds.csv: `position,label,fold_0,...`, one row per pool sample; fold_r is the run
    (data.fold) holding the sample out in repeat r; label is empty for regression."""
    from ..rundir import atomic_write_text

    repeats = assignment.shape[1]
    lines = [",".join(["position", "label", *(f"fold_{r}" for r in range(repeats))])]
    for position in range(assignment.shape[0]):
        label = "" if labels is None else str(int(labels[position]))
        lines.append(",".join([str(position), label, *(str(int(f)) for f in assignment[position])]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_folds(path: Path) -> Folds:
    """folds.csv back; a DataError naming the file when it is missing or not dlcli cv's."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        repeats = sum(1 for name in rows[0] if name.startswith("fold_"))
        body = rows[1:]
        assignment = np.array([[int(v) for v in row[2 : 2 + repeats]] for row in body], dtype=np.int64)
        has_labels = bool(body) and body[0][1] != ""
        labels = np.array([int(row[1]) for row in body], dtype=np.int64) if has_labels else None
    except (OSError, IndexError, ValueError) as exc:
        raise DataError(
            f"data.folds_file {path}: cannot read it as dlcli cv's folds file ({type(exc).__name__}: {exc}).",
            hint="It is written by dlcli cv into its folder (runs/cv/<id>/folds.csv); run the fold through dlcli cv.",
        ) from None
    return Folds(labels, assignment.reshape(len(body), repeats))


def fold_mask(config: DataConfig, n: int, labels: Optional[np.ndarray]) -> np.ndarray:
    """The held-out mask of data.fold over a pool of n samples, checked against folds.csv (the
    same number of samples and, for classification, the same labels in the same order)."""
    assert config.folds_file is not None and config.fold is not None  # DataConfig.check pairs them
    folds = read_folds(Path(config.folds_file))
    runs = folds.count
    if config.fold >= runs:
        raise DataError(
            f"data.fold {config.fold}: {config.folds_file} holds {runs} folds (0 to {runs - 1}).",
            hint="Run the folds through dlcli cv.",
        )
    same_labels = labels is None or folds.labels is None or np.array_equal(folds.labels, labels)
    if len(folds.assignment) != n or not same_labels:
        raise DataError(
            f"data.folds_file {config.folds_file} was made for other data: it has {len(folds.assignment)} "
            f"samples to train on, this data {n}" + ("" if same_labels else ", with other labels") + ".",
            hint="Run dlcli cv again on this data; folds are made for one data set, seed and test split.",
        )
    return folds.held_out(config.fold)


def fold_range(config: DataConfig, n: int) -> tuple[int, int]:
    """A time series' fold over its first n rows (the pool): [start, end) of the rows it
    validates; the run trains on the rows before start (an expanding window)."""
    held = np.flatnonzero(fold_mask(config, n, None))
    if len(held) == 0 or held[0] == 0 or held[-1] - held[0] + 1 != len(held):
        raise DataError(
            f"data.fold {config.fold} of {config.folds_file} is not a time-ordered block after the first rows.",
            hint="Time series are cross-validated by dlcli cv with expanding windows (TimeSeriesSplit).",
        )
    return int(held[0]), int(held[-1]) + 1


def apply_fold(x_train, y_train, config: DataConfig):
    """The built-in datasets' pool (their training samples, after max_train_samples) split by
    data.fold: (x_train, y_train, x_val, y_val)."""
    import torch

    labels = y_train.numpy() if y_train.dim() == 1 and not y_train.is_floating_point() else None
    held = torch.from_numpy(fold_mask(config, len(x_train), labels))
    return x_train[~held], y_train[~held], x_train[held], y_train[held]
