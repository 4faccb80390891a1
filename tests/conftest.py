"""Shared fixtures: tiny datasets written by the tests themselves, and CLI helpers."""

from __future__ import annotations

import gzip
import importlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

# What every finished run folder holds (a classification run: its plots are loss and accuracy).
RUN_FOLDER_FILES = {
    "config.yaml",
    "run.json",
    "summary.txt",
    "metrics.csv",
    "checkpoints",
    "results.json",
    "loss.png",
    "accuracy.png",
}


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose dependency is missing, except under CI=true, where .ci/run installed
    every dependency: there a missing one is a broken install, and the test fails instead of
    turning into a quiet skip and a green run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}: .ci/run installs it, so the install is broken", pytrace=False)
    pytest.skip(reason)


def import_or_skip_unless_ci(module: str, reason: str):
    """pytest.importorskip that fails under CI=true (see skip_unless_ci)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_unless_ci(reason)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """An IDX file as the MNIST distribution has them (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_dataset(folder: Path, n_train: int = 120, n_test: int = 40, compress: bool = True, seed: int = 0) -> Path:
    """Four IDX files of learnable 28x28 'digits': class k lights up row band k."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 7, 4:24] = 250
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)
    return folder


def make_imdb_npz(path: Path) -> Path:
    """A small imdb.npz in Keras's layout: object arrays of word-rank lists, int labels."""
    rng = np.random.default_rng(1)

    def reviews(n):
        xs = np.empty(n, dtype=object)
        ys = rng.integers(0, 2, n)
        for i in range(n):
            length = int(rng.integers(5, 30))
            words = rng.integers(1, 40, length)
            if ys[i]:
                words[:3] = [5, 6, 7]  # "positive" words
            xs[i] = [int(w) for w in words]
        return xs, ys.astype(np.int64)

    x_train, y_train = reviews(60)
    x_test, y_test = reviews(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def synthetic_config(**training) -> dict:
    return {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "synthetic",
            "validation_split": 0.2,
            "synthetic": {"task": "multiclass", "input_shape": [8], "classes": 3, "samples": 200, "test_samples": 60},
        },
        "model": {"preset": "mlp", "hidden": [16]},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 2, "batch_size": 16, **training},
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", synthetic_config())


@pytest.fixture
def idx_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_idx_dataset(root / "mnist")
    return root


def invoke(*args):
    """Run the dlcli CLI in-process with these arguments (any type, as strings); a traceback in
    its output fails the test, since dlcli answers every mistake with a one-paragraph message."""
    from typer.testing import CliRunner

    from dlcli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def trained_run(config: Path, runs_dir: Path) -> Path:
    """Train CONFIG with `dlcli train -q` into runs_dir; the run folder it names on its last line."""
    result = invoke("train", config, "--runs-dir", runs_dir, "-q")
    assert result.exit_code == 0, result.output
    return Path(result.output.strip().splitlines()[-1].split("Run folder: ")[1])


# Fixtures that start trial processes or a server: a test using one is end-to-end.
_E2E_FIXTURES = {"trial_env", "mlflow_server", "postgres_url"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
