"""A user's own arrays: an .npz file with x_train, y_train and optionally x_test, y_test.

The task is read off the targets: integer labels are classes (binary when there are two),
0/1 float matrices are multilabel, other floats are regression.

`data.layout` names the axes of image and video arrays in letters (N samples, T frames, C
channels, H height, W width): rank 5 `NTHWC` (Keras's, the default), `NTCHW` or `NCTHW`;
rank 4 `NCHW` (the default: arrays are used as stored) or `NHWC`. They are converted once, at
load, into the storage order dlcli's layers take, channels first: N,C,H,W and N,C,T,H,W
(PyTorch's Conv3d order). `dlcli predict` converts its arrays the same way; an export takes
the converted order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from ..config import DataConfig, option
from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .dataset import DataInfo, Dataset, DatasetSource
from .inputs import LAYER_ORDER, Inputs, InputSpec, ReadRequest, axes_into_layer_order, expand_paths, shape_in_layout


@dataclass(frozen=True, kw_only=True)
class NpzData(DataConfig):
    """npz: a user's arrays (x_train, y_train, and x_test, y_test when there is a test split)."""

    path: Optional[str] = option(None, help="the .npz file (required)")
    layout: Optional[Literal["NTHWC", "NTCHW", "NCTHW", "NHWC", "NCHW"]] = option(
        None,
        help="the axes of x: rank 5 NTHWC (default), NTCHW or NCTHW; rank 4 NCHW (default) or NHWC "
        "(N samples, T frames, C channels, H height, W width)",
    )

    def check(self) -> None:
        super().check()
        if not self.path:
            raise ConfigError("the npz dataset needs `path:` to the .npz file.", key="data.path")


DEFAULT_LAYOUT = {4: "NCHW", 5: "NTHWC"}  # rank 4: as stored (as dlcli always did); rank 5: Keras's


def array_layout(layout: Optional[str], ndim: int, where: str) -> Optional[str]:
    """The layout of an x array of rank ndim: data.layout, or the rank's default; None for
    arrays of other ranks (features, sequences), which are used as stored."""
    if layout is None:
        return DEFAULT_LAYOUT.get(ndim)
    if len(layout) != ndim:
        shapes = "rank 4 (NCHW or NHWC) or rank 5 (NTHWC, NTCHW or NCTHW)"
        raise DataError(
            f"data.layout: {layout} names {len(layout)} axes, but {where} has {ndim} ({shapes} arrays take a layout).",
            hint=f"Use a layout of {ndim} letters, or remove data.layout."
            if ndim in LAYER_ORDER
            else "Remove data.layout for this array.",
        )
    return layout


def to_storage(x: np.ndarray, layout: Optional[str]) -> np.ndarray:
    """x from its layout into the storage order (N,C,H,W or N,C,T,H,W); unchanged when it is
    already in it or has no layout."""
    axes = None if layout is None else axes_into_layer_order(layout)
    return x if axes is None else np.ascontiguousarray(x.transpose(axes))


def from_storage_shape(shape: tuple[int, ...], layout: Optional[str]) -> tuple[int, ...]:
    """One sample's shape in storage order, written in the layout's order (for messages)."""
    if layout is None or len(shape) + 1 != len(layout):
        return tuple(shape)
    return shape_in_layout((0, *shape), layout)[1:]


def _read(config: NpzData) -> dict[str, np.ndarray]:
    path = Path(config.path or "")
    if not path.is_file():
        raise DataError(f"data.path: {str(path)!r} is not a file.", hint="Point data.path at your .npz file.")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path} as an .npz file: {exc}.") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}; it holds {', '.join(arrays) or 'no arrays'}.",
            hint="Save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).",
        )
    for key in ("x_train", "y_train", "x_test", "y_test"):
        a = arrays.get(key)
        if a is not None and (a.ndim == 0 or a.dtype.kind not in "biuf"):  # complex, text, dates, records
            kind = {"U": "text", "S": "byte-string", "c": "complex", "M": "date", "m": "time-span"}.get(a.dtype.kind)
            what = "a single value" if a.ndim == 0 else f"{kind or 'non-numeric'} values ({a.dtype})"
            raise DataError(
                f"{path}: {key} holds {what}; dlcli needs an array of real numbers, one row per sample.",
                hint="Convert it with numpy (e.g. .astype('float32'), or class names to numbers) first.",
            )
        if a is not None and a.ndim == 1 and key.startswith("x"):  # one number per sample: a single feature
            arrays[key] = a.reshape(-1, 1)
        if a is not None and key.startswith("x"):
            arrays[key] = to_storage(arrays[key], array_layout(config.layout, arrays[key].ndim, f"{path}'s {key}"))
    if len(arrays["x_train"]) != len(arrays["y_train"]):
        raise DataError(f"{path}: x_train has {len(arrays['x_train'])} rows but y_train {len(arrays['y_train'])}.")
    return arrays


def _task(y: np.ndarray) -> tuple[str, int]:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        if y.ndim == 1:
            classes = int(y.max()) + 1 if len(y) else 2
            return ("binary", 2) if classes <= 2 else ("multiclass", classes)
        return "multilabel", int(y.shape[1])
    width = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
    if y.ndim == 2 and np.isin(y, (0.0, 1.0)).all():
        return "multilabel", width
    return "regression", width


def _info_of(arrays: dict[str, np.ndarray]) -> DataInfo:
    task, classes = _task(arrays["y_train"])
    return DataInfo(input_shape=tuple(arrays["x_train"].shape[1:]), task=task, num_classes=classes)


def _info(config: NpzData) -> DataInfo:
    return _info_of(_read(config))


def _load(config: NpzData, seed: int) -> Dataset:
    import torch

    arrays = _read(config)
    info = _info_of(arrays)
    task = info.task

    def x(a):
        return torch.from_numpy(np.ascontiguousarray(a if a.dtype == np.uint8 else a.astype(np.float32)))

    def y(a):
        if task in ("binary", "multiclass"):
            return torch.from_numpy(a.astype(np.int64))
        a = a.astype(np.float32)
        return torch.from_numpy(a.reshape(a.shape[0], int(np.prod(a.shape[1:]))))  # (0, k) too

    has_test = "x_test" in arrays and "y_test" in arrays
    return Dataset(
        info=info,
        x_train=x(arrays["x_train"]),
        y_train=y(arrays["y_train"]),
        x_test=x(arrays["x_test"]) if has_test else None,
        y_test=y(arrays["y_test"]) if has_test else None,
        input_scale=1.0 / 255.0 if arrays["x_train"].dtype == np.uint8 else None,
    )


def read_array_inputs(request: ReadRequest) -> Inputs:
    """.npz files holding x (or x_test), and y (or y_test) when known: npz and synthetic runs."""
    import torch

    info = request.info
    xs, ys, names = [], [], []
    for path in expand_paths(request.inputs, (".npz",)):
        try:
            with np.load(path, allow_pickle=False) as f:
                key = "x" if "x" in f else "x_test" if "x_test" in f else None
                if key is None:
                    raise DataError(
                        f"{path} has no array named x (or x_test); it has {', '.join(f.files) or 'none'}.",
                        hint="Save the inputs with numpy.savez(path, x=inputs).",
                    )
                x = f[key]
                y = f["y" if key == "x" else "y_test"] if ("y" if key == "x" else "y_test") in f else None
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read {path} as an .npz file: {exc}.") from None
        given, trained = _predict_layouts(request.config, x.ndim, len(info.input_shape) + 1)
        x = to_storage(x, given)
        if tuple(x.shape[1:]) != tuple(info.input_shape):
            raise DataError(
                f"{path}: {key} has samples of shape {from_storage_shape(tuple(x.shape[1:]), given)}"
                f"{f' ({given[1:]})' if given else ''}, but this run's model takes "
                f"{from_storage_shape(tuple(info.input_shape), trained)}{f' ({trained[1:]})' if trained else ''}.",
                hint="Give arrays shaped like the training data, in its layout.",
            )
        xs.append(x)
        ys.append(y)
        names += [f"{path.name}[{i}]" for i in range(len(x))]
    if not xs:
        return Inputs([], None)
    x = np.concatenate(xs)
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else None
    tensor = torch.from_numpy(x) if x.dtype == np.uint8 else torch.from_numpy(x.astype(np.float32))
    labels = None
    known = [y for y in ys if y is not None]
    if len(known) == len(ys):
        y = np.concatenate(known)
        labels = torch.from_numpy(y.astype(np.int64) if info.task in ("multiclass", "binary") else y.astype(np.float32))
    return Inputs(names, tensor, labels, input_scale=scale)


def _predict_layouts(config: object, ndim: int, trained_ndim: int) -> tuple[Optional[str], Optional[str]]:
    """(the layout of an array of rank ndim given to predict, the training data's layout): the
    run's data.layout or the rank's default for npz runs; None for data without layouts."""
    if not isinstance(config, NpzData):  # synthetic data: arrays as stored
        return None, None
    layout = config.layout
    trained = DEFAULT_LAYOUT.get(trained_ndim) if layout is None else layout
    given = DEFAULT_LAYOUT.get(ndim) if layout is None else layout if len(layout) == ndim else None
    return given, trained


def _stored_dtype(path: Path) -> Optional[str]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return str(f["x_train"].dtype)
    except (OSError, KeyError, ValueError):
        return None


def _input_spec(config: NpzData, info: DataInfo, state: object) -> InputSpec:
    uint8 = _stored_dtype(Path(config.path)) == "uint8" if config.path else False
    layout = array_layout(config.layout, len(info.input_shape) + 1, "the training data")
    if layout is None or (config.layout is None and layout == LAYER_ORDER[len(layout)]):  # as before layouts
        return InputSpec(
            "uint8" if uint8 else "float32",
            1.0 / 255.0 if uint8 else None,
            outside="Give arrays shaped and typed like the training file's x_train.",
        )
    return InputSpec(
        "uint8" if uint8 else "float32",
        1.0 / 255.0 if uint8 else None,
        outside="Give arrays typed and laid out like the training file's x_train.",
        layout=layout,
    )


DATASETS.add(
    "npz",
    DatasetSource(config=NpzData, info=_info, load=_load, read_inputs=read_array_inputs, input_spec=_input_spec),
)
