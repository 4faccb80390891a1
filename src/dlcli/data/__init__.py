"""Datasets as in-memory tensors, plus the facts the model builder needs.

Each dataset family registers a `DatasetSource`: `info` answers input shape, task and class
count without touching files (so `dlcli summary` needs no data), and `load` returns the raw
train/test splits. `load_dataset` then applies the common steps: subsetting and the
validation hold-out with Keras's semantics.

Users' files (`csv`, `image_folder`, `text_folder`) differ in two ways: their sources split
the data themselves (a seeded, stratified shuffle before holding out validation and test
rows, since such files are often sorted by class), and they fit preprocessing on the
training split, returned as plain JSON-able data in `Dataset.preprocessing` (see
preprocessing.py). Given that saved state back, they apply it and never fit again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from ..config import DataConfig
from ..errors import DataError
from ..registry import DATASETS
from .dataset import TASKS, DataInfo, Dataset, DatasetSource, ProgressFn

__all__ = [
    "DATASETS",
    "TASKS",
    "DataInfo",
    "Dataset",
    "DatasetSource",
    "ProgressFn",
    "baseline_results",
    "dataset_info",
    "load_dataset",
    "source",
    "split_validation",
]


def source(name: str) -> DatasetSource:
    """The registration of the dataset kind `name` (its module imported on first use)."""
    return DATASETS.get(name, key="data.dataset")


def dataset_info(config: DataConfig, seed: int = 0, preprocessing: Optional[dict] = None) -> DataInfo:
    """Shapes, task and classes. Users' files: from the saved state when given (no file is
    read), else fitted as `load_dataset` would with this seed (a csv's one-hot widths depend
    on which rows are in the training split)."""
    kind = source(config.dataset)
    if kind.fits_preprocessing:
        return kind.info(config, seed, preprocessing)
    return kind.info(config)


def baseline_results(
    config: DataConfig, x: Any, preprocessing: Optional[dict], model_metric: Optional[float], prefix: str = ""
) -> dict:
    """What the dataset kind reports beside the model on the inputs x (its `baseline`), or {}."""
    kind = source(config.dataset)
    return kind.baseline(x, preprocessing, model_metric, prefix) if kind.baseline is not None else {}


def load_dataset(
    config: DataConfig, seed: int, preprocessing: Optional[dict] = None, progress: Optional[ProgressFn] = None
) -> Dataset:
    """Load, subset and split a dataset as the config says, and check it fits its task.

    `preprocessing`: a state saved by an earlier load of users' files, applied instead of
    fitting. `progress` is called while long loads (image decoding) run.
    """
    from .checks import check_dataset

    kind = source(config.dataset)
    if kind.fits_preprocessing:  # users' files split themselves (seeded, stratified)
        return check_dataset(kind.load(config, seed, preprocessing, progress), config)
    data = kind.load(config, seed)
    data = check_dataset(data, config)  # labels fit the task, inputs are finite, rows to train on
    if config.max_train_samples is not None:
        data = replace(
            data,
            x_train=data.x_train[: config.max_train_samples],
            y_train=data.y_train[: config.max_train_samples],
        )
    return split_validation(data, config)


def split_validation(data: Dataset, config: DataConfig) -> Dataset:
    """Hold out validation samples from the training set, before any shuffling (as Keras does)."""
    from .splits import apply_fold, validation_count

    if config.fold is not None:  # dlcli cv: the fold of folds.csv validates (data/splits.py)
        x_train, y_train, x_val, y_val = apply_fold(data.x_train, data.y_train, config)
        return replace(data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    n = len(data.x_train)
    if config.validation_size is not None:
        size = config.validation_size
    elif config.validation_split:
        size = validation_count(n, config.validation_split)  # Keras: the last fraction
    else:
        return data
    if size >= n:
        raise DataError(
            f"data.{'validation_size' if config.validation_size is not None else 'validation_split'}: "
            f"holding out {size} of {n} training samples leaves none to train on.",
            hint="Use a smaller validation_size or validation_split.",
        )
    if config.validation_from == "start":
        val, train = slice(0, size), slice(size, n)
    else:
        train, val = slice(0, n - size), slice(n - size, n)
    return replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_val=data.x_val if size == 0 else data.x_train[val],
        y_val=data.y_val if size == 0 else data.y_train[val],
    )
