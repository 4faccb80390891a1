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

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from ..config import DataConfig
from ..errors import DataError
from ..registry import Registry

TASKS = ("multiclass", "binary", "multilabel", "regression")


@dataclass(frozen=True)
class DataInfo:
    """What the model builder and the summary need to know about a dataset."""

    input_shape: tuple[int, ...]  # one sample, channels first for images
    task: str  # one of TASKS
    num_classes: int  # classes (multiclass, binary=2), labels (multilabel) or outputs (regression)
    class_names: Optional[tuple[str, ...]] = None
    vocab_size: Optional[int] = None


@dataclass
class Dataset:
    """Whole splits as tensors. Images stay uint8; `input_scale` converts them per batch."""

    info: DataInfo
    x_train: Any
    y_train: Any
    x_val: Any = None
    y_val: Any = None
    x_test: Any = None
    y_test: Any = None
    input_scale: Optional[float] = None
    preprocessing: Optional[dict] = None  # fitted state of users' files (JSON-able), else None
    notes: tuple[str, ...] = ()  # what loading wants the user told (e.g. files skipped)

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and len(self.x_val) > 0

    @property
    def has_test(self) -> bool:
        return self.x_test is not None and len(self.x_test) > 0


# (description, done, total): how loading reports progress, e.g. images decoded so far.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DatasetSource:
    info: Callable[..., DataInfo]
    load: Callable[..., Dataset]  # (config, seed) -> train and test splits
    # Users' files: info takes (config, seed, state) and load (config, seed, state, progress),
    # where state is a saved preprocessing state or None (fit one); load splits by itself.
    fits_preprocessing: bool = False
    # Results beside the model's on a split: (inputs, preprocessing state, the model's metric,
    # key prefix) -> extra results.json entries, such as a naive forecast's error; None: none.
    baseline: Optional[Callable[..., dict]] = None


DATASETS: Registry[DatasetSource] = Registry("dataset")


# The module that registers each built-in dataset. Only the one a config names is imported:
# `dlcli summary` of an MNIST config should not pay for NumPy and the csv, image and text readers.
_BUILTIN_MODULES = {
    "mnist": "vision",
    "fashion_mnist": "vision",
    "imdb": "imdb",
    "npz": "npz",
    "synthetic": "synthetic",
    "csv": "tabular",
    "timeseries": "timeseries",
    "image_folder": "images",
    "text_folder": "text",
}


def _register_builtin(name: str) -> None:
    """Import the module that registers the dataset `name` (they register themselves); every
    one of them for any other name, so that an unknown name's error lists all the valid ones."""
    modules = [_BUILTIN_MODULES[name]] if name in _BUILTIN_MODULES else sorted(set(_BUILTIN_MODULES.values()))
    for module in modules:
        # Not importlib.import_module: what it imports is missing from `python -X importtime`.
        __import__(f"{__name__}.{module}")


def dataset_info(config: DataConfig, seed: int = 0, preprocessing: Optional[dict] = None) -> DataInfo:
    """Shapes, task and classes. Users' files: from the saved state when given (no file is
    read), else fitted as `load_dataset` would with this seed (a csv's one-hot widths depend
    on which rows are in the training split)."""
    _register_builtin(config.dataset)
    source = DATASETS.get(config.dataset, key="data.dataset")
    if source.fits_preprocessing:
        return source.info(config, seed, preprocessing)
    return source.info(config)


def baseline_results(
    config: DataConfig, x: Any, preprocessing: Optional[dict], model_metric: Optional[float], prefix: str = ""
) -> dict:
    """What the dataset kind reports beside the model on the inputs x (its `baseline`), or {}."""
    _register_builtin(config.dataset)
    source = DATASETS.get(config.dataset, key="data.dataset")
    return source.baseline(x, preprocessing, model_metric, prefix) if source.baseline is not None else {}


def load_dataset(
    config: DataConfig, seed: int, preprocessing: Optional[dict] = None, progress: Optional[ProgressFn] = None
) -> Dataset:
    """Load, subset and split a dataset as the config says, and check it fits its task.

    `preprocessing`: a state saved by an earlier load of users' files, applied instead of
    fitting. `progress` is called while long loads (image decoding) run.
    """
    from .checks import check_dataset

    _register_builtin(config.dataset)
    source = DATASETS.get(config.dataset, key="data.dataset")
    if source.fits_preprocessing:  # users' files split themselves (seeded, stratified)
        return check_dataset(source.load(config, seed, preprocessing, progress), config)
    data = source.load(config, seed)
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
    n = len(data.x_train)
    if config.validation_size is not None:
        size = config.validation_size
    elif config.validation_split:
        size = n - int(n * (1.0 - config.validation_split))  # Keras: the last fraction
    else:
        return data
    if size == 0:
        raise DataError(
            f"data.validation_split: {config.validation_split} of {n} training samples holds out zero rows.",
            hint="Use a larger validation_split, or validation_size: N for N samples.",
        )
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
