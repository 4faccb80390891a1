"""New inputs for a trained run (`dlcli predict`) and the input contract of an export.

Each dataset kind's reader takes a `ReadRequest` of plain values (the run's data config, its
DataInfo and saved preprocessing: nothing loaded from a run folder here) and returns `Inputs`
in exactly the storage its `load` makes, so that predicting on the files of a run's own test
split reproduces its evaluation. The helpers below are shared by several kinds' readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Optional, Sequence

from ..errors import DataError
from ..rundir import PREPROCESSING_FILE
from .dataset import DataInfo
from .preprocessing import check_state

TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class PredictOptions:
    text: Optional[str] = None  # --text: one text given on the command line
    invert: bool = False  # images: white-on-black like MNIST from black-on-white photos
    skip_bad: bool = False  # an input that cannot be read gets an error row instead of stopping
    all_windows: bool = False  # time series: every window of the file, not only the last


@dataclass
class Inputs:
    """What the model is run on: one name per input; rows that could not be read have an error."""

    names: list[str]
    x: Any  # tensor of the readable inputs, in the dataset's storage (e.g. uint8 images)
    labels: Any = None  # true targets when the inputs carry them (a folder by class, a target column)
    errors: dict[int, str] = field(default_factory=dict)  # index in names -> why it was not read
    notes: list[str] = field(default_factory=list)
    input_scale: Optional[float] = None
    columns: dict[str, list] = field(default_factory=dict)  # more output columns, a value per name (time stamps)

    @property
    def readable(self) -> list[int]:
        return [i for i in range(len(self.names)) if i not in self.errors]


@dataclass(frozen=True)
class ReadRequest:
    """What a kind's reader gets: the inputs as given, and the run's data facts as plain values."""

    config: Any  # the run's data config (the kind's DataConfig subclass)
    info: DataInfo
    preprocessing: Optional[dict]  # the run's saved preprocessing state, if it has one
    inputs: list[str]
    options: PredictOptions
    run_dir: str = "the run folder"  # named in messages

    def saved_state(self, kind: str) -> dict:
        """The saved preprocessing users' files need to be read as in training; never refitted."""
        if self.preprocessing is None:
            raise DataError(
                f"{self.run_dir} has no saved preprocessing ({PREPROCESSING_FILE}), which {kind} runs need to "
                "read new inputs as they were trained on.",
                hint=f"Restore the run folder's {PREPROCESSING_FILE}; dlcli never fits it again.",
            )
        return check_state(self.preprocessing, kind)


# The order of the axes dlcli's layers take, by rank: images and clips channels first.
LAYER_ORDER = {4: "NCHW", 5: "NCTHW"}
AXIS_NAMES = {"N": "samples", "C": "channels", "T": "frames", "H": "height", "W": "width"}


def axes_into_layer_order(layout: str) -> Optional[tuple[int, ...]]:
    """The x.permute (or NumPy transpose) that takes an array laid out as `layout` (NHWC,
    NTHWC, ...: batch axis first) into LAYER_ORDER; None when it is already in it."""
    order = LAYER_ORDER[len(layout)]
    return None if layout == order else tuple(layout.index(axis) for axis in order)


def shape_in_layout(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """A shape in LAYER_ORDER (batch axis first) written in `layout`'s order."""
    order = LAYER_ORDER[len(layout)]
    return tuple(shape[order.index(axis)] for axis in layout)


@dataclass
class InputSpec:
    """What the exported model takes, and the preprocessing that remains the caller's job."""

    dtype: str  # "uint8", "float32" or "int64" (word ids)
    scale: Any = None  # multiplied after the cast to float (a number or one per feature)
    shift: Any = None  # subtracted before scaling (one per feature), or None
    outside: str = ""  # preprocessing outside the graph, in words
    extra: dict = field(default_factory=dict)
    # Outputs trained on scaled targets go back to the targets' units: output * scale + shift.
    output_shift: Any = None
    output_scale: Any = None
    binary_rows: bool = False  # float inputs are 0/1 (multi-hot): the examples traced are too
    # Images and clips: the order of the axes the exported model takes (NCHW, NTHWC, ...); the
    # graph's first step moves them into LAYER_ORDER where it differs (`axes`).
    layout: Optional[str] = None

    @property
    def axes(self) -> Optional[tuple[int, ...]]:
        """x.permute(axes) (batch axis included) from `layout` into LAYER_ORDER, or None."""
        return None if self.layout is None else axes_into_layer_order(self.layout)

    def order_in_words(self) -> str:
        """The sentence of export.json on the order of the axes ('' when there is none to say)."""
        if self.layout is None:
            return ""
        words = ", ".join(f"{axis} {AXIS_NAMES[axis]}" for axis in self.layout)
        return f" Axes in the order {self.layout}: {words}."

    def taken_shape(self, trained_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape the exported model takes, given the shape (batch first) its layers take."""
        return tuple(trained_shape) if self.layout is None else shape_in_layout(trained_shape, self.layout)


def generic_input_spec(config: Any, info: DataInfo, state: Optional[dict]) -> InputSpec:
    """Float arrays shaped like the training data: for kinds with no more to say."""
    return InputSpec("float32", None, outside="Give float32 arrays shaped like the training data.")


def expand_paths(inputs: list[str], suffixes: Collection[str]) -> list[Path]:
    """Files named, and the matching files inside folders named (recursively, in sorted order;
    hidden files such as ._x.jpg and .DS_Store are skipped)."""
    found: list[Path] = []
    for item in inputs:
        if item == "-":
            raise DataError(
                "- (standard input) gives one text to runs of texts (imdb, text_folder); this run reads files.",
                hint="Name the files or folders to predict on.",
            )
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"Input {item} does not exist.", hint="Check the path.")
    return found


def label_from_folder(path: Path, class_names: list[str]) -> Optional[int]:
    """The class of a file in a folder named after a class (by name, or by index for digits)."""
    parent = path.parent.name
    for index, name in enumerate(class_names):
        if parent == name or parent == str(index) or parent.lower() == name.lower().replace("/", "_"):
            return index
    return None


def known_labels(labels: list):
    """A tensor when every input has a label, the list (None where unknown) when some have, else None."""
    import torch

    if not any(label is not None for label in labels):
        return None
    return torch.tensor(labels) if all(label is not None for label in labels) else labels
