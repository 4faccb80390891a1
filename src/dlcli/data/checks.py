"""Checks every dataset passes right after loading, whatever its source.

Labels must make sense for the task (classes numbered from 0, 0/1 for binary and multilabel
targets, finite regression targets) and inputs must be finite: otherwise training "works"
on nonsense (negative classes reached accuracy 1.0) or diverges epochs later with no hint
of why. Each problem names the split, the row and the value. The checks are whole-tensor
reductions, so they cost a fraction of one epoch even on large data; uint8 and integer inputs
are finite by type and skipped.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ..config import DataConfig
from ..errors import DataError
from .dataset import Dataset

# Rows per block when looking for the first non-finite input, so the search allocates at
# most a boolean mask of this many elements at a time.
_SEARCH_ELEMENTS = 1 << 24


def check_dataset(data: Dataset, config: DataConfig) -> Dataset:
    """Raise a DataError for empty training data, mismatched splits, labels that do not fit the
    task or non-finite values; return the data unchanged otherwise."""
    if len(data.x_train) == 0:
        raise DataError(
            f"The {config.dataset} dataset has no training rows: x_train holds 0 samples.",
            hint="Check the data file or folder; training needs at least one labelled sample.",
        )
    if data.x_val is not None and len(data.x_val) == 0:
        raise DataError(
            f"The {config.dataset} dataset's validation split has zero rows.",
            hint="Give it samples, or leave it out and use data.validation_split instead.",
        )
    for split, x, y in _splits(data):
        if y is not None and len(x) != len(y):
            raise DataError(
                f"The {split} split has {_count(len(x), 'input')} but {_count(len(y), 'label')}; "
                "they must pair up row by row."
            )
        for what, a, train in (("inputs", x, data.x_train), ("labels", y, data.y_train)):
            if a is not None and train is not None and tuple(a.shape[1:]) != tuple(train.shape[1:]):
                raise DataError(
                    f"The {split} split's {what} have shape {list(a.shape[1:])} per sample, but the training "
                    f"split's have {list(train.shape[1:])}.",
                    hint="Every split must hold samples of the same shape.",
                )
        if len(x) == 0:
            continue  # an empty test split is a note (see dataset_notes), not an error
        _check_inputs(split, x)
        if y is not None:
            _check_labels(split, y, data.info.task, data.info.num_classes)
    return data


def dataset_notes(data: Dataset) -> list[str]:
    """What the user should know about the data that is not an error: what loading noted (files
    skipped, rows dropped, decimal commas read) and an empty test split."""
    notes = list(data.notes)
    if data.x_test is not None and len(data.x_test) == 0:
        notes.append("Note: the test split has zero rows, so this run reports no test metrics.")
    return notes


def _splits(data: Dataset) -> Iterator[tuple[str, Any, Any]]:
    yield "training", data.x_train, data.y_train
    if data.x_val is not None:
        yield "validation", data.x_val, data.y_val
    if data.x_test is not None:
        yield "test", data.x_test, data.y_test


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _as_tensor(a: Any) -> Any:
    """Tensors as they are, and so are inputs that gather their samples when indexed (a time
    series' windows, which answer is_floating_point, sum and indexing as a tensor would)."""
    import torch

    return a if isinstance(a, torch.Tensor) or hasattr(a, "is_floating_point") else torch.as_tensor(a)


def _first_bad(mask: Any) -> tuple[int, tuple[int, ...]]:
    """(row, position within the row) of the first True in a mask of shape (rows, ...); no
    position when a row holds a single value."""
    flat = int(mask.reshape(-1).nonzero()[0, 0])
    per_row = mask[0].numel() if mask.dim() > 1 else 1
    row, rest = divmod(flat, max(1, per_row))
    if per_row <= 1:
        return row, ()
    shape = tuple(mask.shape[1:])
    position = []
    for size in reversed(shape):
        rest, index = divmod(rest, size)
        position.append(index)
    return row, tuple(reversed(position))


def _where(split: str, row: int, position: tuple[int, ...], what: str = "position") -> str:
    if not position:
        return f"row {row} of the {split} split"
    at = f"{what} {position[0]}" if len(position) == 1 else f"{what} {list(position)}"
    return f"row {row}, {at} of the {split} split"


def _value_text(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_inputs(split: str, x: Any) -> None:
    import torch

    x = _as_tensor(x)
    if not (x.is_floating_point() or x.is_complex()):
        return  # uint8 images, integer ids: finite by type
    if bool(torch.isfinite(x.sum())):
        return  # one reduction: a NaN or an infinity anywhere makes the sum non-finite
    rows = max(1, _SEARCH_ELEMENTS // max(1, x[0].numel()))
    for start in range(0, len(x), rows):
        bad = ~torch.isfinite(x[start : start + rows])
        if bool(bad.any()):  # else the sum only overflowed: large but finite values are fine
            row, position = _first_bad(bad)
            value = x[start + row][position] if position else x[start + row]
            raise DataError(
                f"The input at {_where(split, start + row, position)} is {_value_text(value)}, not a finite number; "
                "training on it would make the loss NaN.",
                hint="Drop or fill the missing or infinite values before training (dlcli does not impute them).",
            )


def _check_labels(split: str, y: Any, task: str, num_classes: int) -> None:
    import torch

    y = _as_tensor(y)
    if y.dtype == torch.bool:
        y = y.to(torch.uint8)
    if y.is_floating_point() and not bool(torch.isfinite(y.sum())):
        bad = ~torch.isfinite(y)
        row, position = _first_bad(bad)
        raise DataError(
            f"The label at {_where(split, row, position, 'column')} is {_value_text(y[row][position] if position else y[row])}, "
            "not a finite number.",
            hint="Drop or fill the rows whose labels are missing before training.",
        )
    if task == "regression":
        return
    if task == "multiclass":
        bad = (y < 0) | (y >= num_classes)
        if y.is_floating_point():
            bad |= y != torch.round(y)
        need = f"a multiclass task with {num_classes} classes needs whole numbers from 0 to {num_classes - 1}"
        hint = "Number the classes from 0 (numpy.unique(y, return_inverse=True) does it)."
    else:  # binary, multilabel
        bad = (y != 0) & (y != 1)
        need = f"a {task} task needs labels 0 or 1"
        hint = (
            "Map the two classes to 0 and 1."
            if task == "binary"
            else "Each label column must hold 1 where the label applies and 0 where it does not."
        )
    if bool(bad.any()):
        row, position = _first_bad(bad)
        value = y[row][position] if position else y[row]
        raise DataError(
            f"The label at {_where(split, row, position, 'column')} is {_value_text(value)}; {need}.", hint=hint
        )


# Leading bytes of files people hand over for a text or a table by mistake, and what they are.
_BINARY_KINDS = (
    (b"\x1f\x8b", "compressed with gzip", "Decompress it first (gunzip FILE, or 7-Zip on Windows)."),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx or .ods workbook is one)", "Save the sheet as CSV, or unzip it first."),
    (b"BZh", "compressed with bzip2", "Decompress it first (bunzip2 FILE)."),
    (b"\xfd7zXZ\x00", "compressed with xz", "Decompress it first (unxz FILE)."),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", "Give the text or table it shows, not the picture."),
    (b"\xff\xd8\xff", "a JPEG image", "Give the text or table it shows, not the picture."),
    (b"GIF8", "a GIF image", "Give the text or table it shows, not the picture."),
    (b"%PDF", "a PDF document", "Export its text or tables first."),
    (b"\x93NUMPY", "a NumPy array file", "Use data.dataset: npz for arrays, or save the array as CSV."),
)


def binary_kind(head: bytes) -> Optional[tuple[str, str]]:
    """(what the file is, the fix) when its first bytes show a compressed file, an archive, an
    image or a document rather than text; None when they do not."""
    for magic, what, fix in _BINARY_KINDS:
        if head.startswith(magic):
            return what, fix
    return None
