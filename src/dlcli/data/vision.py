"""MNIST and Fashion-MNIST from IDX files (gzip or raw), found locally before any download."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import DataConfig, option
from ..errors import DataError
from ..registry import DATASETS
from .dataset import DataInfo, Dataset, DatasetSource
from .inputs import Inputs, InputSpec, ReadRequest, expand_paths

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, kw_only=True)
class VisionData(DataConfig):
    """mnist, fashion_mnist: the four IDX files, found under root (or downloaded into it)."""

    root: str = option("data", help="folder searched for the dataset's files (and downloaded into)")
    download: bool = option(True, help="download missing files when a network is there")


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
# NumPy type codes, so that naming MNIST (`dlcli summary`) does not import NumPy.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a NumPy array."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read {path}: {exc}.", hint="The file may be truncated; copy it again.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).", hint="Check that it is the right file.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (its header is incomplete).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data but its header announces {expected}.",
            hint="The file is truncated or damaged; copy it again.",
        )
    # A copy, because arrays over a bytes object are read-only and torch wants writable memory.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).copy()


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_folders(root: Path, dataset: str) -> list[Path]:
    """Where the four IDX files are looked for, in order."""
    if dataset == "mnist":
        folders = [root / "mnist", root / "MNIST" / "raw", root / "MNIST"]
    else:
        folders = [root / "fashion_mnist", root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "FashionMNIST"]
    folders.append(root)
    if dataset == "fashion_mnist":
        folders.append(DEBIAN_FASHION)
    return folders


def find_idx_files(root: Path, dataset: str) -> dict[str, Path] | None:
    for folder in candidate_folders(root, dataset):
        found = {key: _find_file(folder, stem) for key, stem in IDX_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _download(root: Path, dataset: str) -> None:
    """torchvision's download into root/<Name>/raw; any failure becomes a DataError upstream."""
    from torchvision import datasets as tv

    cls = tv.MNIST if dataset == "mnist" else tv.FashionMNIST
    root.mkdir(parents=True, exist_ok=True)
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def _load(dataset: str, config: VisionData, seed: int) -> Dataset:
    import numpy as np
    import torch

    root = Path(config.root)
    files = find_idx_files(root, dataset)
    download_error = None
    if files is None and config.download:
        try:
            _download(root, dataset)
        except Exception as exc:  # offline: urllib/torchvision raise many kinds
            download_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        files = find_idx_files(root, dataset)
    if files is None:
        looked = ", ".join(str(p) for p in candidate_folders(root, dataset))
        tried = (
            f" The download failed ({download_error})."
            if download_error
            else ("" if config.download else " Downloading is off (data.download: false).")
        )
        fix = (
            "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in one of those folders, or "
            "point data.root at the folder that has them (--set data.root=PATH)"
        )
        if dataset == "fashion_mnist":
            fix += ", or on Debian run `apt-get install dataset-fashion-mnist`"
        raise DataError(f"Cannot find the {dataset} files; looked in: {looked}.{tried}", hint=f"To fix it, {fix}.")
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"The {dataset} {split} files do not match: images {x.shape}, labels {y.shape}.",
                hint=f"Check the files in {files['x_train'].parent}.",
            )
    info = _info(dataset, config, arrays["x_train"].shape[1:])

    def images(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8)).unsqueeze(1)  # N,1,H,W

    def labels(a: np.ndarray):
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        info=info,
        x_train=images(arrays["x_train"]),
        y_train=labels(arrays["y_train"]),
        x_test=images(arrays["x_test"]),
        y_test=labels(arrays["y_test"]),
        input_scale=1.0 / 255.0,
    )


def _info(dataset: str, config: VisionData, hw: tuple[int, ...] = (28, 28)) -> DataInfo:
    names = FASHION_CLASSES if dataset == "fashion_mnist" else DIGIT_CLASSES
    return DataInfo(input_shape=(1, *hw), task="multiclass", num_classes=10, class_names=names)


def _read_inputs(request: ReadRequest) -> Inputs:
    """IDX image files (labels from the labels file beside them), or any image files,
    converted to 28x28 grayscale."""
    import torch

    from .images import IMAGE_SUFFIXES, read_image_inputs

    info = request.info
    names = list(info.class_names or [])
    idx = [p for p in request.inputs if "idx3-ubyte" in Path(p).name]
    if idx:
        xs, ys, all_names = [], [], []
        for item in idx:
            images = read_idx(Path(item))
            xs.append(torch.from_numpy(images).unsqueeze(1))
            all_names += [f"{Path(item).name}[{i}]" for i in range(len(images))]
            label_file = Path(item.replace("images-idx3", "labels-idx1"))
            ys.append(torch.from_numpy(read_idx(label_file).astype("int64")) if label_file.is_file() else None)
        known = [y for y in ys if y is not None]
        labels = torch.cat(known) if len(known) == len(ys) else None
        if len(idx) < len(request.inputs):
            raise DataError("Give either IDX files or image files to one dlcli predict, not both.")
        return Inputs(all_names, torch.cat(xs), labels, input_scale=1.0 / 255.0)
    paths = expand_paths(request.inputs, IMAGE_SUFFIXES)
    size = (info.input_shape[1], info.input_shape[2])
    return read_image_inputs(paths, names, size, info.input_shape[0], request.options)


def _input_spec(config: VisionData, info: DataInfo, state: object) -> InputSpec:
    return InputSpec(
        "uint8",
        1.0 / 255.0,
        outside=(
            f"Decode the image, convert it to grayscale and resize it to {info.input_shape[1]}x{info.input_shape[2]}; "
            "pass the 0-255 gray levels as uint8, white strokes on black as in MNIST (invert dark-on-light pictures)."
        ),
        layout="NCHW",
    )


for _name in ("mnist", "fashion_mnist"):
    DATASETS.add(
        _name,
        DatasetSource(
            config=VisionData,
            info=lambda cfg, _n=_name: _info(_n, cfg),
            load=lambda cfg, seed, _n=_name: _load(_n, cfg, seed),
            read_inputs=_read_inputs,
            input_spec=_input_spec,
        ),
    )
