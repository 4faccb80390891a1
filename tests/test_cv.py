"""dlcli cv: folds made by scikit-learn's own splitters and applied by data/splits.py to every
kind with a training split, the bad input it refuses, and whole cross-validations whose folds
are real `dlcli train` processes (summary.json's means, `dlcli runs`, SIGKILL then resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import invoke, synthetic_config, write_config
from dlcli.config import load_config
from dlcli.data import load_dataset
from dlcli.data.splits import fold_range, read_folds, write_folds
from dlcli.errors import DataError
from dlcli.sweep.cv import CvRequest, assign_folds, plan_cv, pool_config

sklearn_model_selection = pytest.importorskip("sklearn.model_selection")

ROOT = Path(__file__).resolve().parents[1]


def write_classes_table(path: Path, counts=(20, 14, 9), seed: int = 0) -> Path:
    """A csv sorted by class (as iris is): an `id` column that is each row's number, two noisy
    features and the class name."""
    rng = np.random.default_rng(seed)
    lines = ["id,a,b,kind"]
    row = 0
    for label, count in enumerate(counts):
        for _ in range(count):
            a, b = rng.normal(label, 0.5, size=2)
            lines.append(f"{row},{a:.4f},{b:.4f},class_{'xyz'[label]}")
            row += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_config(tmp_path: Path, table: Path, **data) -> Path:
    config = {
        "name": "table",
        "seed": 3,
        "device": "cpu",
        "data": {"dataset": "csv", "path": str(table), "target": "kind", "validation_split": 0.25, **data},
        "model": {"preset": "mlp", "hidden": [8]},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 2, "batch_size": 8},
    }
    return write_config(tmp_path / "table.yaml", config)


def ids_of(x) -> np.ndarray:
    """The `id` feature back from standardised inputs (its order is kept by standardising)."""
    return np.argsort(np.argsort(np.asarray(x)[:, 0]))


# -- the folds --------------------------------------------------------------------------------


def test_classification_folds_are_scikit_learns_stratified_kfold_and_each_fold_validates_on_them(tmp_path):
    config_path = csv_config(tmp_path, write_classes_table(tmp_path / "t.csv"))
    request = CvRequest(config_path, [], folds=4)
    spec, pool, assignment = plan_cv(request)
    assert pool.splitter == "StratifiedKFold" and pool.class_names == ("class_x", "class_y", "class_z")
    # The pool is what a run trains on without validation data; the test split stays out.
    config = pool_config(request)
    whole = load_dataset(config.data, config.seed)
    assert pool.n == len(whole.x_train) == 43 - 9 and len(whole.x_test) == 9
    expected = np.full(pool.n, -1)
    splitter = sklearn_model_selection.StratifiedKFold(n_splits=4, shuffle=True, random_state=3)
    for number, (_, held) in enumerate(splitter.split(np.zeros((pool.n, 1)), pool.labels)):
        expected[held] = number
    assert np.array_equal(assignment[:, 0], expected)
    assert spec.kind == "cv" and spec.trials == 4 and spec.metric == "val_loss" and spec.prune == "none"

    folds_file = tmp_path / "folds.csv"
    write_folds(folds_file, pool.labels, assignment)
    pool_ids = whole.x_train.numpy()[:, 0]
    for fold in range(4):
        fold_config = load_config(
            config_path, ["data.validation_split=0", f"data.folds_file={folds_file}", f"data.fold={fold}"]
        )
        data = load_dataset(fold_config.data, fold_config.seed)
        held = expected == fold
        # The same rows (by their standardised id) and labels, in the pool's order; test untouched.
        assert len(data.x_val) == held.sum() and len(data.x_train) == (~held).sum()
        assert np.array_equal(data.y_val.numpy(), pool.labels[held])
        assert np.array_equal(data.y_train.numpy(), pool.labels[~held])
        assert np.array_equal(np.argsort(data.x_val.numpy()[:, 0]), np.argsort(pool_ids[held]))
        assert np.array_equal(data.y_test.numpy(), whole.y_test.numpy())


def test_built_in_datasets_take_a_fold_of_their_training_samples(tmp_path):
    config_path = write_config(tmp_path / "s.yaml", synthetic_config())
    request = CvRequest(config_path, [], folds=3)
    spec, pool, assignment = plan_cv(request)
    whole = load_dataset(pool_config(request).data, 0)
    write_folds(tmp_path / "folds.csv", pool.labels, assignment)
    config = load_config(
        config_path, ["data.validation_split=0", f"data.folds_file={tmp_path / 'folds.csv'}", "data.fold=1"]
    )
    data = load_dataset(config.data, 0)
    held = assignment[:, 0] == 1
    assert np.array_equal(data.x_val.numpy(), whole.x_train.numpy()[held])
    assert np.array_equal(data.x_train.numpy(), whole.x_train.numpy()[~held])


def test_regression_uses_kfold_and_repeats_use_repeated_splitters(tmp_path):
    config = synthetic_config()
    config["data"]["synthetic"] = {"task": "regression", "input_shape": [4], "classes": 1, "samples": 90}
    config["loss"] = "mse"
    spec, pool, assignment = plan_cv(CvRequest(write_config(tmp_path / "r.yaml", config), [], folds=5))
    assert pool.splitter == "KFold" and pool.labels is None
    expected = np.full(pool.n, -1)
    for number, (_, held) in enumerate(
        sklearn_model_selection.KFold(5, shuffle=True, random_state=0).split(np.zeros((pool.n, 1)))
    ):
        expected[held] = number
    assert np.array_equal(assignment[:, 0], expected)

    classes = plan_cv(CvRequest(write_config(tmp_path / "c.yaml", synthetic_config()), [], folds=3, repeats=2))
    _, pool, assignment = classes
    repeated = sklearn_model_selection.RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0)
    expected = np.full((pool.n, 2), -1)
    for number, (_, held) in enumerate(repeated.split(np.zeros((pool.n, 1)), pool.labels)):
        expected[held, number // 3] = number
    assert np.array_equal(assignment, expected) and classes[0].trials == 6
    # Repeat 0 is StratifiedKFold(random_state=seed) itself.
    first = np.full(pool.n, -1)
    for number, (_, held) in enumerate(
        sklearn_model_selection.StratifiedKFold(3, shuffle=True, random_state=0).split(
            np.zeros((pool.n, 1)), pool.labels
        )
    ):
        first[held] = number
    assert np.array_equal(assignment[:, 0], first)


def test_time_series_folds_are_expanding_windows(tmp_path):
    from dlcli.config import data_config
    from dlcli.sweep.cv import Pool

    pool = Pool(20, None, "regression", None, "TimeSeriesSplit")
    assignment = assign_folds(pool, 4, 1, seed=0)
    write_folds(tmp_path / "folds.csv", None, assignment)
    splits = list(sklearn_model_selection.TimeSeriesSplit(n_splits=4).split(np.zeros((20, 1))))
    for fold, (train, held) in enumerate(splits):
        config = data_config("timeseries", folds_file=str(tmp_path / "folds.csv"), fold=fold)
        start, end = fold_range(config, 20)
        assert (start, end) == (held[0], held[-1] + 1) and list(train) == list(range(start))
    with pytest.raises(Exception, match="same every time"):
        assign_folds(pool, 4, 2, seed=0)


def test_folds_csv_round_trip_and_other_data_is_refused(tmp_path):
    labels = np.array([0, 1, 0, 1, 1])
    assignment = np.array([[0], [1], [1], [0], [2]])
    write_folds(tmp_path / "folds.csv", labels, assignment)
    folds = read_folds(tmp_path / "folds.csv")
    assert np.array_equal(folds.labels, labels) and np.array_equal(folds.assignment, assignment) and folds.count == 3
    config = load_config(
        write_config(tmp_path / "s.yaml", synthetic_config()),
        ["data.validation_split=0", f"data.folds_file={tmp_path / 'folds.csv'}", "data.fold=0"],
    )
    with pytest.raises(DataError, match="was made for other data"):
        load_dataset(config.data, 0)


# -- bad input --------------------------------------------------------------------------------


def one_paragraph(output: str) -> str:
    assert "Traceback" not in output
    return " ".join(output.split())


def test_one_fold_is_refused(tmp_path, tiny_config):
    result = invoke("cv", tiny_config, "--folds", 1, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "--folds 1: cross-validation needs at least 2 folds" in one_paragraph(result.output)
    assert not (tmp_path / "runs").exists()


def test_more_folds_than_the_smallest_class_has_members_names_the_class(tmp_path):
    config = csv_config(tmp_path, write_classes_table(tmp_path / "t.csv", counts=(20, 20, 4)))
    result = invoke("cv", config, "--folds", 5, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    text = one_paragraph(result.output)
    assert "the class 'class_z' has only 3 sample(s)" in text and "--folds 3 or fewer" in text
    assert not (tmp_path / "runs").exists()


def test_a_missing_scikit_learn_names_the_extra(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what `import sklearn` meets where it is absent
    result = invoke("cv", tiny_config, "--folds", 3, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "pip install 'dlcli[cv]'" in one_paragraph(result.output)


def test_fold_keys_go_together_and_replace_the_validation_split(tmp_path, tiny_config):
    result = invoke("train", tiny_config, "--set", "data.fold=1", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "folds_file and fold go together" in one_paragraph(result.output)
    result = invoke(
        "train", tiny_config, "--set", "data.fold=1", "--set", "data.folds_file=f.csv", "--runs-dir", tmp_path
    )
    assert result.exit_code == 2 and "set validation_split to 0" in one_paragraph(result.output)


def test_an_image_folder_with_its_own_val_folder_cannot_take_a_fold(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / name / f"{i}.png")
    write_folds(tmp_path / "folds.csv", None, np.zeros((6, 1), dtype=np.int64))
    config = {
        "name": "img",
        "data": {"dataset": "image_folder", "root": str(root), "image_size": [8, 8]},
        "model": {"preset": "mlp", "hidden": [4]},
        "loss": "sparse_categorical_crossentropy",
    }
    overrides = [f"data.folds_file={tmp_path / 'folds.csv'}", "data.fold=0"]
    loaded = load_config(write_config(tmp_path / "img.yaml", config), overrides)
    with pytest.raises(DataError, match="its own validation folder"):
        load_dataset(loaded.data, 0)


def test_a_cv_whose_summary_cannot_be_made_gives_its_parent_run_no_metrics_and_says_why(tmp_path):
    from dlcli.sweep.session import cv_parent_metrics

    said: list[str] = []
    (tmp_path / "cv.json").write_text("{not json")
    assert cv_parent_metrics(tmp_path, said.append) == {}
    assert len(said) == 1 and said[0].startswith("Warning: no metrics for the CV's MLflow parent run: ")
    assert "cv.json" in said[0]


# -- whole cross-validations ------------------------------------------------------------------


@pytest.fixture
def trial_env(monkeypatch):
    """Fold processes import this checkout's dlcli whatever their working folder."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_a_cross_validation_summarises_every_fold_and_runs_groups_them(tmp_path, trial_env):
    config = csv_config(tmp_path, write_classes_table(tmp_path / "t.csv"))
    runs = tmp_path / "runs"
    result = invoke("cv", config, "--folds", 3, "--runs-dir", runs, "--id", "k", "--set", "training.epochs=3")
    assert result.exit_code == 0, result.output
    folder = runs / "cv" / "k"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["completed"] == summary["planned"] == 3
    assert (folder / "folds.csv").is_file() and not (folder / "best.yaml").exists()
    for name in ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "loss", "accuracy"):
        values = [f["metrics"][name] for f in summary["folds"]]
        assert summary["metrics"][name]["mean"] == pytest.approx(np.mean(values))
        assert summary["metrics"][name]["std"] == pytest.approx(np.std(values))
    # A fold's value is its validation row in metrics.csv (final weights: the last epoch).
    rows = (folder / "trials" / "0001-table" / "metrics.csv").read_text().splitlines()
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert summary["folds"][1]["metrics"]["val_accuracy"] == pytest.approx(float(last["val_accuracy"]))
    saved = yaml.safe_load((folder / "trials" / "0001-table" / "config.yaml").read_text())
    assert saved["data"]["fold"] == 1 and saved["data"]["folds_file"] == str((folder / "folds.csv").resolve())
    assert "mean" in result.output and "std" in result.output

    again = invoke("cv", "summary", "k", "--runs-dir", runs, "--json")
    assert again.exit_code == 0 and json.loads(again.output) == summary

    listing = invoke("runs", "--dir", runs)
    assert listing.exit_code == 0 and "Cross-validation" in listing.output and "3/3 folds completed" in listing.output


PAUSE_HOOK = """
import os, time
from pathlib import Path
if os.environ.get("DLCLI_TEST_PAUSE_FOLD"):
    from dlcli.sweep.trial import SweepTrialCallback

    on_epoch_end = SweepTrialCallback.on_epoch_end

    def pausing_on_epoch_end(self, epoch, logs, trainer):
        on_epoch_end(self, epoch, logs, trainer)
        if epoch != 2 or not self.run_dir.name.startswith(os.environ["DLCLI_TEST_PAUSE_FOLD"]):
            return
        (Path(os.environ["DLCLI_TEST_PAUSE_NOTE"])).write_text(str(os.getpid()))
        parent, deadline = os.getppid(), time.monotonic() + 300
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.01)  # until the CV process is killed; the fold then stops as interrupted

    SweepTrialCallback.on_epoch_end = pausing_on_epoch_end
"""


def test_sigkill_during_fold_3_then_resume_gives_the_uninterrupted_summary(tmp_path, trial_env, monkeypatch):
    config = csv_config(tmp_path, write_classes_table(tmp_path / "t.csv"))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook) + os.pathsep + os.environ["PYTHONPATH"])
    common = ["--folds", "4", "--set", "training.epochs=4"]

    whole = invoke("cv", config, *common, "--runs-dir", tmp_path / "a", "--id", "whole")
    assert whole.exit_code == 0, whole.output

    note = tmp_path / "paused"
    env = dict(os.environ, DLCLI_TEST_PAUSE_FOLD="0002-", DLCLI_TEST_PAUSE_NOTE=str(note))
    cmd = [sys.executable, "-m", "dlcli", "cv", str(config), *common, "--runs-dir", str(tmp_path / "b"), "--id", "cut"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not note.exists():  # fold 3 (number 2) has finished its second of four epochs
            assert proc.poll() is None and time.monotonic() < deadline, "fold 3 never paused"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    folder = tmp_path / "b" / "cv" / "cut"
    assert not (folder / "trials" / "0003-table").exists()

    resumed = invoke("cv", "resume", "cut", "--runs-dir", tmp_path / "b")
    assert resumed.exit_code == 0, resumed.output
    assert "1 fold(s) to continue" in resumed.output
    info = json.loads((folder / "trials" / "0002-table" / "run.json").read_text())
    # Stopped after epoch 2 or, noticing the kill only at its next refresh, epoch 3: never complete.
    assert info.get("resumed_from_epoch") in (2, 3), info
    cut = json.loads((folder / "summary.json").read_text())
    reference = json.loads((tmp_path / "a" / "cv" / "whole" / "summary.json").read_text())
    assert cut["metrics"] == reference["metrics"]
    assert [f["metrics"] for f in cut["folds"]] == [f["metrics"] for f in reference["folds"]]


def test_a_time_series_fold_trains_on_the_rows_before_its_block_and_validates_on_the_block(tmp_path):
    series = tmp_path / "series.csv"
    series.write_text("t,value\n" + "".join(f"{i},{float(i % 7)}\n" for i in range(40)))
    config = {
        "name": "series",
        "data": {
            "dataset": "timeseries",
            "path": str(series),
            "target": "value",
            "window": {"length": 3, "horizon": 1},
            "test_split": 0.25,
            "validation_split": 0.25,
        },
        "model": {"preset": "mlp", "hidden": [4]},
        "loss": "mse",
    }
    config_path = write_config(tmp_path / "series.yaml", config)
    _, pool, assignment = plan_cv(CvRequest(config_path, [], folds=3))
    assert pool.splitter == "TimeSeriesSplit" and pool.n == 30  # the rows before the last quarter (the test's)
    write_folds(tmp_path / "folds.csv", None, assignment)
    train_windows, starts = [], []
    for fold in range(3):
        keys = ["data.validation_split=0", f"data.folds_file={tmp_path / 'folds.csv'}", f"data.fold={fold}"]
        data_config = load_config(config_path, keys).data
        start, end = fold_range(data_config, 30)
        data = load_dataset(data_config, 0)
        assert len(data.x_val) > 0 and len(data.x_test) > 0
        train_windows.append(len(data.x_train))
        starts.append(start)
    # An expanding window: each fold trains on one more block of rows, so one more block of windows.
    assert starts == [9, 16, 23]  # TimeSeriesSplit(3) of 30 rows: blocks of 7 after the first 9
    assert np.diff(train_windows).tolist() == np.diff(starts).tolist()
