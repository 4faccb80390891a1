"""Property: any mutation of a valid config, and any data file, ends in a run or a clean error,
never a traceback.

The suite runs a few examples of each; for a long search raise their number, at low priority:
`DLCLI_FUZZ_EXAMPLES=2000 nice -n 19 pytest -q tests/test_config_fuzz.py`.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
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
    raw["data"]["download"] = False
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


DATA_CASES = {"npz": npz_cases()}  # "csv": csv_cases(), "image_folder": image_cases() once they land
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
        train_and_check(path, folder / "runs")
