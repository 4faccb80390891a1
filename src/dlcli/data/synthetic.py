"""Generated data of any shape for tests and offline demos; learnable, and the same for a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Optional

from ..config import DataConfig, option
from ..errors import ConfigError
from ..registry import DATASETS
from .dataset import DataInfo, Dataset, DatasetSource
from .inputs import Inputs, ReadRequest, generic_input_spec


@dataclass(frozen=True)
class SyntheticConfig:
    task: Literal["multiclass", "binary", "multilabel", "regression"] = option(
        "multiclass", help="kind of targets to generate"
    )
    input_shape: Optional[tuple[int, ...]] = option(
        None,
        help="one sample's shape as dlcli summary shows it: [features], [steps, features], [height, width, "
        "channels] or [frames, height, width, channels] (default [20])",
        ge=1,
        min_items=1,
    )
    shape: Optional[tuple[int, ...]] = option(
        None,
        help="deprecated: the shape channels first ([channels, height, width]); use input_shape",
        ge=1,
        min_items=1,
    )
    classes: int = option(3, help="classes (multiclass), labels (multilabel) or outputs (regression)", ge=1)
    samples: int = option(1000, help="training samples", ge=1)
    test_samples: int = option(200, help="test samples (0 for none)", ge=0)
    noise: float = option(1.0, help="standard deviation of the noise", ge=0.0)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape the tensors hold: images and videos channels first, as every dataset stores them."""
        if self.input_shape is not None:
            if len(self.input_shape) in (3, 4):  # [height, width, channels] or [frames, height, width, channels]
                *rest, channels = self.input_shape
                return (channels, *rest)
            return tuple(self.input_shape)
        return tuple(self.shape) if self.shape is not None else (20,)


@dataclass(frozen=True, kw_only=True)
class SyntheticData(DataConfig):
    """synthetic: generated data of any shape, learnable, and the same for a seed."""

    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig, metadata={"help": "synthetic data"})

    FORMER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "synthetic": {
            "task": "multiclass",
            "shape": [20],
            "classes": 3,
            "samples": 1000,
            "test_samples": 200,
            "noise": 1.0,
        }
    }

    def check(self) -> None:
        super().check()
        if self.synthetic.shape is not None and self.synthetic.input_shape is not None:
            raise ConfigError(
                "give input_shape (in the summary's order) or the deprecated shape (channels first), not both.",
                key="data.synthetic.shape",
            )


DEPRECATED_SHAPE = (
    "data.synthetic.shape is deprecated: it reads [channels, height, width]; write data.synthetic.input_shape "
    "in the order dlcli summary shows ([height, width, channels])."
)


def _info(config: SyntheticData) -> DataInfo:
    s = config.synthetic
    classes = 2 if s.task == "binary" else s.classes
    if s.task == "multiclass" and classes < 2:
        raise ConfigError(
            "data.synthetic.classes: a multiclass task needs at least 2 classes.", key="data.synthetic.classes"
        )
    return DataInfo(input_shape=s.sample_shape, task=s.task, num_classes=classes)


def _load(config: SyntheticData, seed: int) -> Dataset:
    import torch

    s = config.synthetic
    info = _info(config)
    gen = torch.Generator().manual_seed(seed)
    shape = s.sample_shape
    features = math.prod(shape)
    total = s.samples + s.test_samples
    if s.task in ("multiclass", "binary"):
        # Centers about 2.8 apart whatever the width, so noise 1.0 makes classes overlap a little.
        centers = torch.randn(info.num_classes, features, generator=gen) * (2.0 / math.sqrt(features))
        y = torch.randint(0, info.num_classes, (total,), generator=gen)
        x = centers[y] + s.noise * torch.randn(total, features, generator=gen)
    else:
        x = torch.randn(total, features, generator=gen)
        weights = torch.randn(features, info.num_classes, generator=gen) / math.sqrt(features)
        signal = x @ weights + s.noise * torch.randn(total, info.num_classes, generator=gen)
        y = (signal > 0).float() if s.task == "multilabel" else signal
    x = x.reshape(total, *shape).contiguous()
    n = s.samples
    return Dataset(
        info=info,
        x_train=x[:n],
        y_train=y[:n],
        x_test=x[n:] if s.test_samples else None,
        y_test=y[n:] if s.test_samples else None,
        notes=(DEPRECATED_SHAPE,) if s.shape is not None else (),
    )


def _read_inputs(request: ReadRequest) -> Inputs:
    """.npz files of arrays, as the npz kind reads them (imported here: NumPy only when predicting)."""
    from .npz import read_array_inputs

    return read_array_inputs(request)


DATASETS.add(
    "synthetic",
    DatasetSource(
        config=SyntheticData, info=_info, load=_load, read_inputs=_read_inputs, input_spec=generic_input_spec
    ),
)
