"""Generated data of any shape for tests and offline demos; learnable, and the same for a seed."""

from __future__ import annotations

import math

from ..config import DataConfig
from . import DATASETS, DataInfo, Dataset, DatasetSource


def _info(config: DataConfig) -> DataInfo:
    s = config.synthetic
    classes = 2 if s.task == "binary" else s.classes
    if s.task == "multiclass" and classes < 2:
        from ..errors import ConfigError

        raise ConfigError(
            "data.synthetic.classes: a multiclass task needs at least 2 classes.", key="data.synthetic.classes"
        )
    return DataInfo(input_shape=tuple(s.shape), task=s.task, num_classes=classes)


def _load(config: DataConfig, seed: int) -> Dataset:
    import torch

    s = config.synthetic
    info = _info(config)
    gen = torch.Generator().manual_seed(seed)
    features = math.prod(s.shape)
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
    x = x.reshape(total, *s.shape).contiguous()
    n = s.samples
    return Dataset(
        info=info,
        x_train=x[:n],
        y_train=y[:n],
        x_test=x[n:] if s.test_samples else None,
        y_test=y[n:] if s.test_samples else None,
    )


DATASETS.add("synthetic", DatasetSource(info=_info, load=_load))
