"""Property: any mutation of a valid config, and any data file, ends in a run or a clean error,
never a traceback.

The suite runs a few examples of each (config mutations, npz files, csv tables, time series,
image folders, text folders); for a long search raise their number, at low priority:
`DLCLI_FUZZ_EXAMPLES=2000 nice -n 19 pytest -q tests/test_config_fuzz.py`.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import synthetic_config
from dlcli.cli import app

runner = CliRunner()
EXAMPLES = int(os.environ.get("DLCLI_FUZZ_EXAMPLES", "0"))  # 0: each test's small default


def examples(default: int) -> int:
    return EXAMPLES or default


def train_and_check(config: Path, runs: Path) -> None:
    """The property: exit code 0, 1 (the machine's limits) or 2 (the user's input), no traceback,
    and any error as dlcli's one paragraph."""
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs), "-q"])
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert result.output.startswith("Error: "), result.output


def base_config() -> dict:
    raw = synthetic_config(epochs=1, batch_size=8)
    raw["data"]["synthetic"].update(samples=40, test_samples=10)
    raw["model"] = {
        "layers": [
            {"flatten": {}},
            {"dense": {"units": 4, "activation": "relu"}},
            {"dropout": {"rate": 0.1}},
            {"dense": {"units": 3, "activation": "softmax"}},
        ]
    }
    return raw


def paths(node, prefix=()):
    """Every key path of a nested config, lists included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


ALL_PATHS = [p for p in paths(base_config()) if p]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=6),
    st.sampled_from(
        [
            "relu",
            "softmax",
            "sigmoid",
            "mnist",
            "adam",
            "sgd",
            "rmsprop",
            "mse",
            "same",
            "auto",
            "binary_crossentropy",
            "multilabel",
            "regression",
            "cnn",
            "mlp",
            "conv2d",
            "val_loss",
        ]
    ),
    st.lists(st.integers(-1, 5), max_size=3),
    st.dictionaries(st.sampled_from(["units", "rate", "name", "x"]), st.integers(-1, 5), max_size=2),
)
MUTATION = st.tuples(st.sampled_from(["set", "delete", "add"]), st.sampled_from(ALL_PATHS), VALUES)


def mutate(raw: dict, action: str, path: tuple, value) -> dict:
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "set":
        parent[last] = value
    elif action == "delete":
        if isinstance(parent, list):
            parent.pop(last)
        else:
            del parent[last]
    elif isinstance(parent, dict):
        parent["unknown_" + str(last)] = value
    else:
        parent.insert(last, value)
    return raw


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_any_mutation_is_a_run_or_a_clean_error(mutations):
    raw = base_config()
    for action, path, value in mutations:
        try:
            raw = mutate(raw, action, path, value)
        except (KeyError, IndexError, TypeError, AttributeError):
            pass  # an earlier mutation removed or replaced this path
    data = raw.get("data")
    if isinstance(data, dict) and data.get("dataset") in ("mnist", "fashion_mnist", "imdb"):
        data.setdefault("download", False)  # a mutation that names a built-in dataset: no network
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.yaml"
        config.write_text(yaml.safe_dump(raw))
        train_and_check(config, Path(tmp) / "runs")


# -- data files ---------------------------------------------------------------------------------
# Each kind of data file is a strategy of DataCase: something that writes its files into a folder
# and returns the `data:` section that reads them. New kinds (CSV tables, image folders) join by
# adding their strategy to DATA_CASES; the property and the config around the data stay the same.


@dataclass
class DataCase:
    describe: str
    write: Callable[[Path], dict]  # folder -> the config's data section

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"DataCase({self.describe})"


X_DTYPES = ["float32", "float64", "float16", "uint8", "int64", "int32", "bool"]
TASKS = {  # labels of each task: dtypes, shape per sample, value range
    "multiclass": (["int64", "int32", "uint8", "int8"], (), (0, 5)),
    "binary": (["int64", "uint8", "bool"], (), (0, 1)),
    "multilabel": (["float32", "float64", "int64"], (3,), (0, 1)),
    "regression": (["float32", "float64"], (2,), (-3, 3)),
}
# What can be wrong with a file; each case has none, one or two of them.
DEFECTS = [
    "no rows",
    "nan input",
    "inf input",
    "nan label",
    "negative label",
    "label out of range",
    "test x only",
    "test y shorter",
    "test other shape",
    "test labels other shape",
    "empty test",
    "missing array",
    "1-D x",
    "tiny split",
    "huge split",
    "labels 0 to 300",
    "flat label column",
    "complex input",
    "text labels",
    "scalar array",
]


@st.composite
def arrays(draw, rows: int, sample_shape: tuple, dtype: str, low: int, high: int):
    """`rows` samples of small random values of one dtype."""
    shape = (rows, *sample_shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.integers(low, high + 1, size=shape)
    if np.dtype(dtype).kind in "fc" and draw(st.booleans()):
        values = values + rng.random(size=shape) * (high - low) / 4
    return (values > 0) if dtype == "bool" else values.astype(dtype)


def poke(draw, array: np.ndarray, value) -> np.ndarray:
    """The array with one random element set to `value` (as far as its dtype can hold it)."""
    if array.size == 0:
        return array
    array = array.copy()
    where = tuple(draw(st.integers(0, n - 1)) for n in array.shape)
    with np.errstate(all="ignore"):
        try:
            array[where] = np.array(value).astype(array.dtype)
        except (OverflowError, ValueError):
            pass  # no NaN among integers: keep the array as it is
    return array


@st.composite
def npz_cases(draw):
    defects = draw(st.lists(st.sampled_from(DEFECTS), max_size=2, unique=True))
    task = draw(st.sampled_from(sorted(TASKS)))
    y_dtypes, label_shape, (low, high) = TASKS[task]
    if "labels 0 to 300" in defects:
        high = 300
    if "flat label column" in defects:
        label_shape = (1,)
    rows = 0 if "no rows" in defects else draw(st.integers(1, 9))
    sample_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    x_dtype = draw(st.sampled_from(X_DTYPES))
    y_dtype = draw(st.sampled_from(y_dtypes))
    x_train = draw(arrays(rows, sample_shape, x_dtype, -3, 3))
    y_train = draw(arrays(rows, label_shape, y_dtype, low, high))
    if "1-D x" in defects:
        x_train = x_train.reshape(rows, int(np.prod(sample_shape)))[:, 0]
    for defect, value, target in (
        ("nan input", np.nan, "x"),
        ("inf input", -np.inf, "x"),
        ("nan label", np.nan, "y"),
        ("negative label", -1, "y"),
        ("label out of range", high + 1 if task != "regression" else np.inf, "y"),
    ):
        if defect in defects:
            if target == "x":
                x_train = poke(draw, x_train, value)
            else:
                y_train = poke(draw, y_train, value)
    if "complex input" in defects:
        x_train = x_train.astype(np.complex64)
    if "text labels" in defects:
        y_train = y_train.astype(str)
    content = {"x_train": x_train, "y_train": y_train}
    if draw(st.booleans()) or any(d.startswith("test") or d == "empty test" for d in defects):
        test_rows = 0 if "empty test" in defects else draw(st.integers(1, 4))
        test_shape = x_train.shape[1:] + ((2,) if "test other shape" in defects else ())
        content["x_test"] = draw(arrays(test_rows, test_shape, x_dtype, -3, 3))
        if "test x only" not in defects:
            y_rows = max(0, test_rows - 1) if "test y shorter" in defects else test_rows
            y_shape = y_train.shape[1:] + ((2,) if "test labels other shape" in defects else ())
            content["y_test"] = draw(arrays(y_rows, y_shape, y_dtype, low, high))
    if "missing array" in defects:
        content.pop(draw(st.sampled_from(sorted(content))))
    if "scalar array" in defects:
        content[draw(st.sampled_from(sorted(content)))] = np.float32(1.0)
    split = {"tiny split": 1e-20, "huge split": 0.95}.get(
        next((d for d in defects if d.endswith("split")), ""), draw(st.sampled_from([0.0, 0.0, 0.25]))
    )
    describe = (
        f"{task} with {defects or 'no defect'}: "
        + ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in content.items())
        + f", split {split}"
    )

    def write(folder: Path) -> dict:
        path = folder / "data.npz"
        np.savez(path, **content)
        return {"dataset": "npz", "path": str(path), "validation_split": split}

    return DataCase(describe, write)


CELLS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(-10, 10, allow_nan=False, width=32).map(lambda v: f"{v:.3g}"),
    st.sampled_from(["", "NA", "?", "null", "yes", "no", "red", "blue", "1,5", "-", " ", '"a,b"', "é", "0x1f"]),
    st.text(max_size=4),
)
# Mostly files a person would write, so that most examples reach training; the rest probe errors.
HEADERS = st.one_of(
    st.lists(st.sampled_from(["a", "b", "c", "label", "x y", "é"]), min_size=2, max_size=5, unique=True),
    st.lists(st.sampled_from(["a", "b", "label", "", "a"]), min_size=1, max_size=4),
)
ENCODINGS = ["utf-8"] * 8 + ["utf-8-sig", "latin-1", "gzip"]
NUMBERS = st.one_of(
    st.integers(-5, 5).map(str), st.floats(-10, 10, allow_nan=False, width=32).map(lambda v: f"{v:.3g}")
)


def write_text_file(path: Path, text: str, encoding: str) -> None:
    """The text as a user's file might be: UTF-8 (with or without a BOM), Latin-1, or gzipped."""
    import gzip

    if encoding == "gzip":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_bytes(text.encode(encoding, errors="replace"))


@st.composite
def table_texts(draw) -> tuple[list[str], str]:
    """(header, file text): rows of mixed cells, sometimes ragged, in one of the delimiters."""
    header = draw(HEADERS)
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    rows = []
    messy = draw(st.booleans())
    for _ in range(draw(st.one_of(st.integers(8, 30), st.integers(0, 8)))):
        width = len(header) + (draw(st.sampled_from([0, 0, 0, -1, 1])) if messy else 0)
        cells = CELLS if messy else st.one_of(NUMBERS, NUMBERS, st.sampled_from(["red", "blue", "yes", "no", ""]))
        rows.append(delimiter.join(draw(st.lists(cells, min_size=max(width, 0), max_size=max(width, 0)))))
    return header, "\n".join([delimiter.join(header), *rows]) + draw(st.sampled_from(["\n", "", "\n\n"]))


CLEAN = st.sampled_from([True, True, False])  # two examples in three are files a person would write
WORDS = ["red", "blue", "green"]


@st.composite
def clean_table(draw) -> tuple[list[str], str]:
    """(header, text) of a well-formed table: numeric and categorical inputs, a label column last,
    and now and then an empty cell."""
    inputs = draw(st.lists(st.sampled_from(["a", "b", "c", "x y", "é"]), min_size=1, max_size=4, unique=True))
    kinds = [draw(st.sampled_from(["number", "number", "word"])) for _ in inputs]
    labels = draw(st.sampled_from([["cat", "dog"], ["cat", "dog", "owl"], ["0", "1"], None]))  # None: regression
    delimiter = draw(st.sampled_from([",", ",", ";", "\t"]))
    rows = []
    for _ in range(draw(st.integers(8, 30))):
        cells = [draw(NUMBERS) if kind == "number" else draw(st.sampled_from(WORDS)) for kind in kinds]
        if draw(st.integers(0, 9)) == 0:
            cells[draw(st.integers(0, len(cells) - 1))] = ""
        cells.append(draw(st.sampled_from(labels)) if labels else draw(NUMBERS))
        rows.append(delimiter.join(cells))
    return [*inputs, "label"], "\n".join([delimiter.join([*inputs, "label"]), *rows]) + "\n"


@st.composite
def csv_cases(draw):
    clean = draw(CLEAN)
    header, text = draw(clean_table() if clean else table_texts())
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"] if clean else ENCODINGS))
    target = "label" if clean else draw(st.sampled_from([*header, "missing_column"]))
    options = draw(
        st.fixed_dictionaries(
            {"missing": st.sampled_from(["mean", "zero", "drop_rows"] if clean else ["error", "mean", "drop_rows"])},
            optional={
                "test_split": st.sampled_from([0.0, 0.2, 0.5]),
                "task": st.sampled_from(["auto"] if clean else ["auto", "regression", "multiclass", "binary"]),
                "column_types": st.dictionaries(
                    st.sampled_from(header),
                    st.sampled_from(["numeric", "categorical", "boolean", "ignore"]),
                    max_size=0 if clean else 2,
                ),
            },
        )
    )

    def write(folder: Path) -> dict:
        path = folder / "table.csv"
        write_text_file(path, text, encoding)
        return {"dataset": "csv", "path": str(path), "target": target, **options}

    return DataCase(f"csv {encoding} {options} target {target!r}: {text[:200]!r}", write)


@st.composite
def timeseries_cases(draw):
    clean = draw(CLEAN)
    rows = draw(st.integers(40, 80) if clean else st.integers(0, 20))
    step = 1 if clean else draw(st.sampled_from([1, -1, 0, 2]))  # decreasing or repeated stamps too
    cells = NUMBERS if clean else st.one_of(NUMBERS, NUMBERS, CELLS)
    values = draw(st.lists(cells, min_size=rows, max_size=rows))
    other = draw(st.lists(cells, min_size=rows, max_size=rows))
    if clean and rows and draw(st.booleans()):
        values[draw(st.integers(0, rows - 1))] = ""  # one missing cell, for the missing policies
    lines = ["date,temp,other"] + [
        f"2024-{1 + (i * step) // 28:02d}-{1 + (i * step) % 28:02d},{v},{o}"
        for i, (v, o) in enumerate(zip(values, other))
    ]
    window = draw(
        st.fixed_dictionaries(
            {"length": st.integers(1, 4 if clean else 8)},
            optional={
                "horizon": st.one_of(
                    st.integers(1, 3), st.lists(st.integers(1, 3), min_size=1, max_size=2, unique=clean)
                )
            },
        )
    )
    options = draw(
        st.fixed_dictionaries(
            {"missing": st.sampled_from(["interpolate", "ffill", "drop_windows"])} if clean else {},
            optional={
                "missing": st.sampled_from(["error", "interpolate", "ffill", "drop_windows"]),
                "frequency": st.sampled_from(["1D", "2h", "bad"]),
                "features": st.sampled_from([["temp"], ["other"], ["temp", "other"]]),
            }
            if not clean
            else {"features": st.sampled_from([["temp"], ["temp", "other"]])},
        )
    )
    if draw(st.booleans()):  # time stamps, and then maybe calendar inputs and a frequency
        options["time_column"] = "date" if clean else draw(st.sampled_from(["date", "temp"]))
        if draw(st.booleans()):
            options["time_features"] = ["day_of_week"]
        if clean and draw(st.booleans()):
            options["frequency"] = "1D"
    target = "temp" if clean else draw(st.sampled_from(["temp", "other", "date"]))
    text = "\n".join(lines) + "\n"

    def write(folder: Path) -> dict:
        path = folder / "series.csv"
        path.write_text(text, encoding="utf-8")
        return {"dataset": "timeseries", "path": str(path), "target": target, "window": window, **options}

    return DataCase(f"timeseries window {window} {options} target {target}: {text[:160]!r}", write)


IMAGE_FILES = st.sampled_from(
    ["png L", "png RGB", "jpeg RGB", "png RGBA", "gif P", "bmp L"] * 3 + ["text", "empty", "truncated"]
)


def write_image(path: Path, kind: str, size: tuple[int, int], shade: int) -> None:
    from PIL import Image

    if kind in ("text", "empty"):
        path.write_text("not an image" if kind == "text" else "")
        return
    fmt, mode = kind.split() if kind != "truncated" else ("png", "L")
    image = Image.new(mode, size, shade if mode in ("L", "P") else (shade,) * len(mode))
    image.save(path.with_suffix("." + fmt), format=fmt.upper())
    if kind == "truncated":
        data = path.with_suffix(".png").read_bytes()
        path.with_suffix(".png").write_bytes(data[: len(data) // 2])


@st.composite
def image_folder_cases(draw):
    clean = draw(CLEAN)
    if clean:
        classes = draw(st.lists(st.sampled_from(["cat", "dog", "bird"]), min_size=2, max_size=3, unique=True))
        kinds = st.sampled_from(["png L", "png RGB", "jpeg RGB", "png RGBA", "gif P", "bmp L"])
    else:
        classes = draw(st.lists(st.sampled_from(["cat", "dog", ".hidden", "x y"]), max_size=3, unique=True))
        kinds = IMAGE_FILES
    files = {
        name: draw(st.lists(st.tuples(kinds, st.integers(1, 9), st.integers(1, 9)), min_size=2, max_size=5))
        for name in classes
    }
    layout = draw(st.sampled_from(["flat", "flat", "train/test", "train/val"]))
    loop = draw(st.sampled_from([None, None, "self", "parent"]))
    sizes = st.lists(st.integers(1, 6), min_size=2, max_size=2)
    options = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "image_size": sizes if clean else st.one_of(sizes, st.lists(st.integers(0, 6))),
                "channels": st.sampled_from([1, 3]),
                "on_bad_file": st.sampled_from(["error", "skip"]),
                "test_split": st.sampled_from([0.0, 0.3]),
            }
            | (
                {}
                if clean
                else {"class_names": st.lists(st.sampled_from(["cat", "dog", "owl"]), min_size=1, max_size=2)}
            ),
        )
    )

    def write(folder: Path) -> dict:
        root = folder / "images"
        root.mkdir()
        splits = {"flat": [""], "train/test": ["train", "test"], "train/val": ["train", "val"]}[layout]
        for split in splits:
            for name, entries in files.items():
                target = root / split / name
                target.mkdir(parents=True, exist_ok=True)
                for i, (kind, h, w) in enumerate(entries):
                    write_image(target / f"{i}", kind, (w, h), 30 * i)
                if loop and entries:
                    (target / "loop").symlink_to(target if loop == "self" else target.parent, target_is_directory=True)
        return {"dataset": "image_folder", "root": str(root), **options}

    return DataCase(f"image_folder {layout} loop {loop} {files} {options}", write)


@st.composite
def text_folder_cases(draw):
    clean = draw(CLEAN)
    if clean:
        classes = draw(st.lists(st.sampled_from(["pos", "neg", "meh"]), min_size=2, max_size=3, unique=True))
        words = st.lists(st.sampled_from(["good", "bad", "film", "é", "plot!"]), min_size=1, max_size=6).map(" ".join)
        encodings = st.sampled_from(["utf-8", "utf-8-sig"])
    else:
        classes = draw(st.lists(st.sampled_from(["pos", "neg"]), max_size=2, unique=True))
        words = st.text(max_size=20)
        encodings = st.sampled_from(ENCODINGS)
    texts = {name: draw(st.lists(st.tuples(words, encodings), min_size=2, max_size=5)) for name in classes}
    options = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "output_mode": st.sampled_from(["multi_hot", "count", "tf_idf"] + ([] if clean else ["sequence"])),
                "num_words": st.integers(4, 12),
                "sequence_length": st.integers(1, 5),
                "on_bad_file": st.sampled_from(["error", "skip"]),
                "test_split": st.sampled_from([0.0, 0.3]),
            },
        )
    )

    def write(folder: Path) -> dict:
        root = folder / "texts"
        for name, entries in texts.items():
            (root / name).mkdir(parents=True)
            for i, (text, encoding) in enumerate(entries):
                write_text_file(root / name / f"{i}.txt", text, encoding)
        root.mkdir(exist_ok=True)
        return {"dataset": "text_folder", "root": str(root), **options}

    return DataCase(f"text_folder {texts} {options}", write)


@st.composite
def video_folder_cases(draw):
    """Class folders of clips as folders of frames (and, when PyAV is installed, GIF files):
    clips of differing lengths and sizes, damaged frames, empty clips, files where clips go."""
    clean = draw(CLEAN)
    classes = draw(
        st.lists(st.sampled_from(["left", "right", "up"]), min_size=2 if clean else 0, max_size=3, unique=True)
    )
    clips = {
        name: draw(
            st.lists(
                st.tuples(
                    st.integers(1 if clean else 0, 5),  # frames
                    st.integers(2, 6) if clean else st.sampled_from([2, 3, 5]),  # frame side
                    st.sampled_from(["frames"] * 3 + ([] if clean else ["damaged", "a file"])),
                ),
                min_size=2,
                max_size=4,
            )
        )
        for name in classes
    }
    options = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "frames": st.integers(1, 4) if clean else st.integers(1, 6),
                "frame_step": st.integers(1, 2),
                "short_clips": st.sampled_from(["pad", "skip", "error"]),
                "image_size": st.lists(st.integers(1, 4), min_size=2, max_size=2),
                "channels": st.sampled_from([1, 3]),
                "on_bad_file": st.sampled_from(["error", "skip"]),
                "test_split": st.sampled_from([0.0, 0.3]),
                "augment": st.just({"horizontal_flip": True}),
            },
        )
    )
    if clean:
        options.setdefault("image_size", [4, 4])

    def write(folder: Path) -> dict:
        from PIL import Image

        root = folder / "clips"
        root.mkdir()
        for name, entries in clips.items():
            for i, (frames, side, kind) in enumerate(entries):
                clip = root / name / f"clip_{i}"
                if kind == "a file":
                    clip.parent.mkdir(parents=True, exist_ok=True)
                    clip.with_suffix(".mp4").write_bytes(b"not a video")
                    continue
                clip.mkdir(parents=True)
                for f in range(frames):
                    if kind == "damaged" and f == frames - 1:
                        (clip / f"{f:05d}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
                    else:
                        Image.new("L", (side, side), 40 * f).save(clip / f"{f:05d}.png")
        return {"dataset": "video_folder", "root": str(root), **options}

    return DataCase(f"video_folder {clips} {options}", write)


DATA_CASES = {
    "npz": npz_cases(),
    "video_folder": video_folder_cases(),
    "csv": csv_cases(),
    "timeseries": timeseries_cases(),
    "image_folder": image_folder_cases(),
    "text_folder": text_folder_cases(),
}
MODELS = st.sampled_from(
    [  # a CNN where the data has no image shape is a clean error too
        {"preset": "mlp", "hidden": [4]},
        {"preset": "mlp", "hidden": [4]},
        {"preset": "mlp", "hidden": []},
        {"preset": "cnn", "filters": [2], "kernel_size": 1, "pool_size": 1},
    ]
)
LOSSES = st.sampled_from(
    ["auto"] * 6 + ["mse", "binary_crossentropy", "sparse_categorical_crossentropy", "categorical_crossentropy"]
)


@settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.one_of(*DATA_CASES.values()), MODELS, LOSSES)
def test_any_data_file_is_a_run_or_a_clean_error(case, model, loss):
    check_data_case(case, model, loss)


# One test per kind of reader, so each gets its share of examples (DLCLI_FUZZ_EXAMPLES each).
@pytest.mark.parametrize("kind", [k for k in DATA_CASES if k != "npz"])
def test_each_reader_is_a_run_or_a_clean_error(kind):
    @settings(
        max_examples=examples(6),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(DATA_CASES[kind], MODELS, LOSSES)
    def check(case, model, loss):
        check_data_case(case, model, loss)

    check()


def check_data_case(case: DataCase, model: dict, loss: str) -> None:
    """Train on the case's files: a run or a clean error, and nothing written outside the runs
    folder (the data files stay as they were)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = {
            "name": "fuzz",
            "seed": 0,
            "device": "cpu",
            "data": case.write(folder),
            "model": model,
            "loss": loss,
            "training": {"epochs": 1, "batch_size": 4},
        }
        path = folder / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        before = snapshot(folder)
        train_and_check(path, folder / "runs")
        assert snapshot(folder) == before, "files outside the runs folder changed"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder but the runs folder, with its bytes (links as their targets)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] == "runs":
            continue
        if path.is_symlink():
            found[str(relative)] = os.readlink(path).encode()
        elif path.is_file():
            found[str(relative)] = path.read_bytes()
    return found
