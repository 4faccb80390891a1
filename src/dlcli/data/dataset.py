"""What every dataset kind hands back, and the one registration that carries all it knows.

A kind is one module in `data/` that registers a `DatasetSource` in `registry.DATASETS`: its
config keys (a `DataConfig` subclass), `info` and `load`, the reader `dlcli predict` uses for new
inputs, the input contract `dlcli export` writes, and the readable files of its saved
preprocessing. Nothing here reads files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..config import DataConfig

if TYPE_CHECKING:
    from .inputs import Inputs, InputSpec, ReadRequest

TASKS = ("multiclass", "binary", "multilabel", "regression")


@dataclass(frozen=True)
class DataInfo:
    """What the model builder and the summary need to know about a dataset."""

    input_shape: tuple[int, ...]  # one sample, channels first for images
    task: str  # one of TASKS
    num_classes: int  # classes (multiclass, binary=2), labels (multilabel) or outputs (regression)
    class_names: Optional[tuple[str, ...]] = None
    vocab_size: Optional[int] = None
    token_ids: bool = False  # inputs are word ids (for an embedding), not features


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
    # The inputs are memory-mapped from a file (data.cache: disk): batches are read ahead.
    inputs_on_disk: bool = False
    # ("train" | "val" | "test") -> where each sample of that split came from (a file's path, or a
    # table's file and line), for `dlcli evaluate --top-losses`; None where samples have no such name.
    sample_names: Optional[Callable[[str], Sequence[str]]] = None

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
    """Everything about one dataset kind. `config` is its keys' class: `data:` mappings that
    name the kind are built as it (and checked by its `check`)."""

    config: type[DataConfig]
    info: Callable[..., DataInfo]
    load: Callable[..., Dataset]  # (config, seed) -> train and test splits
    # `dlcli predict`: new inputs (files, folders, text) read into the tensors `load` makes.
    read_inputs: Callable[[ReadRequest], Inputs]
    # `dlcli export`: (config, info, saved preprocessing) -> the exported graph's input contract.
    input_spec: Callable[[Any, DataInfo, Optional[dict]], InputSpec]
    # Users' files: info takes (config, seed, state) and load (config, seed, state, progress),
    # where state is a saved preprocessing state or None (fit one); load splits by itself.
    fits_preprocessing: bool = False
    # Readable files beside preprocessing.json: (state) -> {file name: text}; None: none.
    state_files: Optional[Callable[[dict], dict[str, str]]] = None
    # Results beside the model's on a split: (inputs, preprocessing state, the model's metric,
    # key prefix) -> extra results.json entries, such as a naive forecast's error; None: none.
    baseline: Optional[Callable[..., dict]] = None
