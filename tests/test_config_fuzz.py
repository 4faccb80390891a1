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

from dlcli.cli import app

from conftest import synthetic_config

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
    raw["model"] = {"layers": [{"flatten": {}}, {"dense": {"units": 4, "activation": "relu"}},
                               {"dropout": {"rate": 0.1}}, {"dense": {"units": 3, "activation": "softmax"}}]}
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
    st.sampled_from(["relu", "softmax", "sigmoid", "mnist", "adam", "sgd", "rmsprop", "mse", "same", "auto",
                     "binary_crossentropy", "multilabel", "regression", "cnn", "mlp", "conv2d", "val_loss"]),
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


X_DTYPES = ["float32", "float64", "float16", "uint8", "int64", "int32", "bool", "complex64"]
Y_DTYPES = ["int64", "int32", "uint8", "int8", "bool", "float32", "float64"]
SPECIAL = [np.nan, np.inf, -np.inf, -1, 2, 3e38, 1e-45]


@st.composite
def arrays(draw, rows: int, sample_shape: tuple, dtypes: list, low: int, high: int, specials: bool):
    """`rows` samples of small random values in a random dtype, now and then one special value."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = (rows, *sample_shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.integers(low, high + 1, size=shape)
    if dtype.kind in "fc" and draw(st.booleans()):
        values = values + rng.random(size=shape)
    with np.errstate(all="ignore"):
        array = (values > 0) if dtype == np.bool_ else values.astype(dtype)
        if specials and 0 not in shape and draw(st.integers(0, 4)) == 0:
            where = tuple(draw(st.integers(0, n - 1)) for n in shape)
            try:
                array[where] = np.array(draw(st.sampled_from(SPECIAL))).astype(dtype)
            except (OverflowError, ValueError):
                pass  # no NaN among integers: keep the array as it is
    return array


@st.composite
def npz_cases(draw):
    rows = draw(st.integers(0, 9))
    sample_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    label_shape = draw(st.sampled_from([(), (), (1,), (3,)]))
    low, high = draw(st.sampled_from([(0, 1), (0, 1), (0, 2), (0, 5), (0, 5), (-2, 2), (1, 3), (0, 300)]))
    x_train = draw(arrays(rows, sample_shape, X_DTYPES, -3, 3, specials=True))
    y_train = draw(arrays(rows, label_shape, Y_DTYPES, low, high, specials=True))
    content = {"x_train": x_train, "y_train": y_train}
    test = draw(st.sampled_from(["none", "same", "empty", "x only", "shorter y", "other shape"]))
    test_rows = {"none": 0, "same": 3, "empty": 0, "x only": 2, "shorter y": 3, "other shape": 2}[test]
    if test != "none":
        test_shape = sample_shape + (2,) if test == "other shape" else sample_shape
        content["x_test"] = draw(arrays(test_rows, test_shape, [str(x_train.dtype)], -3, 3, specials=True))
        if test != "x only":
            y_rows = test_rows - 1 if test == "shorter y" else test_rows
            content["y_test"] = draw(arrays(y_rows, label_shape, [str(y_train.dtype)], low, high + 2, specials=True))
    if draw(st.integers(0, 19)) == 0:
        content.pop(draw(st.sampled_from(sorted(content))))  # a file that lacks an array
    split = draw(st.sampled_from([0.0, 0.0, 0.3, 0.9, 1e-20]))
    describe = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in content.items()) + f", split {split}"

    def write(folder: Path) -> dict:
        path = folder / "data.npz"
        np.savez(path, **content)
        return {"dataset": "npz", "path": str(path), "validation_split": split}

    return DataCase(describe, write)


DATA_CASES = {"npz": npz_cases()}  # "csv": csv_cases(), "image_folder": image_cases() once they land
MODELS = st.sampled_from([
    {"preset": "mlp", "hidden": [4]},
    {"preset": "mlp", "hidden": []},
    {"preset": "cnn", "filters": [2], "kernel_size": 1, "pool_size": 1},
    {"layers": [{"flatten": {}}, {"dense": {"units": 3}}]},
])
LOSSES = st.sampled_from(["auto", "auto", "auto", "auto", "mse", "binary_crossentropy", "sparse_categorical_crossentropy",
                          "categorical_crossentropy"])


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(*DATA_CASES.values()), MODELS, LOSSES)
def test_any_data_file_is_a_run_or_a_clean_error(case, model, loss):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = {"name": "fuzz", "seed": 0, "device": "cpu", "data": case.write(folder), "model": model,
                  "loss": loss, "training": {"epochs": 1, "batch_size": 4}}
        path = folder / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        train_and_check(path, folder / "runs")
