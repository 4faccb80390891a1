"""Labels that do not fit the task, non-finite inputs and empty splits are named before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_config
from dlcli.cli import app
from dlcli.config import DataConfig, data_config
from dlcli.data import DataInfo, Dataset, load_dataset
from dlcli.data.checks import check_dataset, dataset_notes
from dlcli.errors import DataError

runner = CliRunner()


def npz_run(tmp_path: Path, *extra: str, **arrays) -> tuple[int, str]:
    """Train one epoch on an .npz of these arrays; (exit code, output)."""
    rng = np.random.default_rng(0)
    arrays.setdefault("x_train", rng.normal(size=(12, 3)).astype(np.float32))
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    config = write_config(
        tmp_path / "c.yaml",
        {
            "name": "npz",
            "device": "cpu",
            "data": {"dataset": "npz", "path": str(path)},
            "model": {"preset": "mlp", "hidden": [4]},
            "training": {"epochs": 1, "batch_size": 4},
        },
    )
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), *extra])
    return result.exit_code, result.output


def test_negative_class_labels_are_refused_before_training(tmp_path):
    y = np.array([0, 1, 2, 3, 4, -1, 2, 1, 0, 3, 4, 2])
    code, output = npz_run(tmp_path, y_train=y)
    assert code == 2
    assert output == (
        "Error: The label at row 5 of the training split is -1; a multiclass task with 5 classes "
        "needs whole numbers from 0 to 4. Number the classes from 0 (numpy.unique(y, "
        "return_inverse=True) does it).\n"
    )
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


def test_labels_all_negative_were_a_binary_task_that_reached_accuracy_one(tmp_path):
    code, output = npz_run(tmp_path, y_train=-np.ones(12, dtype=np.int64))
    assert (code, output) == (
        2,
        "Error: The label at row 0 of the training split is -1; a binary task needs "
        "labels 0 or 1. Map the two classes to 0 and 1.\n",
    )


def test_a_test_label_outside_the_training_classes(tmp_path):
    x = np.zeros((4, 3), dtype=np.float32)
    code, output = npz_run(tmp_path, y_train=np.arange(12) % 3, x_test=x, y_test=np.array([0, 2, 3, 1]))
    assert (code, output) == (
        2,
        "Error: The label at row 2 of the test split is 3; a multiclass task with 3 "
        "classes needs whole numbers from 0 to 2. Number the classes from 0 "
        "(numpy.unique(y, return_inverse=True) does it).\n",
    )


def test_nan_input_is_named_with_its_row_and_column(tmp_path):
    x = np.ones((12, 3), dtype=np.float32)
    x[9, 2] = np.nan
    code, output = npz_run(tmp_path, x_train=x, y_train=np.arange(12) % 3)
    assert (code, output) == (
        2,
        "Error: The input at row 9, position 2 of the training split is nan, not a finite "
        "number; training on it would make the loss NaN. Drop or fill the missing or "
        "infinite values before training (dlcli does not impute them).\n",
    )


def test_infinite_regression_target(tmp_path):
    y = np.linspace(0.5, 3.0, 12).astype(np.float32)
    y[4] = -np.inf
    code, output = npz_run(tmp_path, y_train=y)
    assert (code, output) == (
        2,
        "Error: The label at row 4 of the training split is -inf, not a finite number. "
        "Drop or fill the rows whose labels are missing before training.\n",
    )


def test_zero_training_rows(tmp_path):
    code, output = npz_run(tmp_path, x_train=np.zeros((0, 3), np.float32), y_train=np.zeros(0, np.int64))
    assert (code, output) == (
        2,
        "Error: The npz dataset has no training rows: x_train holds 0 samples. Check "
        "the data file or folder; training needs at least one labelled sample.\n",
    )


def test_a_validation_split_of_zero_rows(tmp_path):
    code, output = npz_run(tmp_path, "--set", "data.validation_split=1e-20", y_train=np.arange(12) % 3)
    assert (code, output) == (
        2,
        "Error: data.validation_split: 1e-20 of 12 training samples holds out zero rows. "
        "Use a larger validation_split, or validation_size: N for N samples.\n",
    )


def test_an_empty_test_split_is_a_note_and_no_test_metrics(tmp_path):
    code, output = npz_run(
        tmp_path, "-q", y_train=np.arange(12) % 3, x_test=np.zeros((0, 3), np.float32), y_test=np.zeros(0, np.int64)
    )
    assert code == 0, output
    assert output.splitlines()[0].startswith("best loss: ")  # quiet: the final result only
    code, output = npz_run(
        tmp_path, y_train=np.arange(12) % 3, x_test=np.zeros((0, 3), np.float32), y_test=np.zeros(0, np.int64)
    )
    assert code == 0, output
    assert output.splitlines()[0] == "Note: the test split has zero rows, so this run reports no test metrics."
    assert "test_loss" not in output
    run = next((tmp_path / "runs").iterdir())
    assert not any(k.startswith("test_") for k in (run / "results.json").read_text().split('"'))


def test_mismatched_test_split(tmp_path):
    code, output = npz_run(
        tmp_path, y_train=np.arange(12) % 3, x_test=np.zeros((5, 3), np.float32), y_test=np.zeros(4, np.int64)
    )
    assert (code, output) == (2, "Error: The test split has 5 inputs but 4 labels; they must pair up row by row.\n")


def dataset(task: str, classes: int, x, y, **splits) -> Dataset:
    info = DataInfo(input_shape=tuple(x.shape[1:]), task=task, num_classes=classes)
    return Dataset(info=info, x_train=x, y_train=y, **splits)


def check_message(data: Dataset) -> str:
    with pytest.raises(DataError) as info:
        check_dataset(data, data_config(dataset="npz"))
    return info.value.message


def test_multilabel_and_binary_targets_must_be_zero_or_one():
    x = torch.zeros(4, 2)
    y = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.5, 1.0], [0.0, 0.0, 0.0]])
    assert check_message(dataset("multilabel", 3, x, y)) == (
        "The label at row 2, column 1 of the training split is 0.5; a multilabel task needs labels 0 or 1."
    )
    assert check_message(dataset("binary", 2, x, torch.tensor([0, 1, 2, 1]))) == (
        "The label at row 2 of the training split is 2; a binary task needs labels 0 or 1."
    )
    assert check_message(dataset("multiclass", 3, x, torch.tensor([0.0, 1.0, 1.5, 2.0]))) == (
        "The label at row 2 of the training split is 1.5; a multiclass task with 3 classes needs whole numbers "
        "from 0 to 2."
    )


def test_class_labels_run_from_zero_to_the_number_of_classes_minus_one():
    x = torch.zeros(4, 2)
    for y in (torch.tensor([0, 1, 2, 2]), torch.tensor([2.0, 0.0, 1.0, 0.0])):
        good = dataset("multiclass", 3, x, y, x_val=x[:2], y_val=y[:2])
        assert check_dataset(good, data_config(dataset="npz")) is good
    assert check_message(dataset("multiclass", 3, x, torch.tensor([0, 1, 3, 2]))) == (
        "The label at row 2 of the training split is 3; a multiclass task with 3 classes needs whole numbers "
        "from 0 to 2."
    )
    assert check_message(
        dataset("multiclass", 3, x, torch.tensor([0, 1, 2, 2]), x_val=x[:1], y_val=torch.tensor([3]))
    ) == (
        "The label at row 0 of the validation split is 3; a multiclass task with 3 classes needs whole numbers "
        "from 0 to 2."
    )
    assert check_message(dataset("binary", 2, x, torch.tensor([1, 0, 2, 1]))) == (
        "The label at row 2 of the training split is 2; a binary task needs labels 0 or 1."
    )


def test_a_validation_split_of_zero_rows_is_refused():
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError) as info:
        check_dataset(dataset("binary", 2, x, y, x_val=x[:0], y_val=y[:0]), data_config(dataset="image_folder"))
    assert info.value.full_message() == (
        "The image_folder dataset's validation split has zero rows. Give it samples, or leave it out and use "
        "data.validation_split instead."
    )


def test_image_inputs_name_the_pixel_and_uint8_is_skipped():
    x = torch.zeros(3, 1, 4, 4)
    x[1, 0, 2, 3] = float("inf")
    y = torch.tensor([0, 1, 0])
    assert check_message(dataset("binary", 2, x, y)).startswith(
        "The input at row 1, position [0, 2, 3] of the training split is inf, not a finite number"
    )
    images = torch.full((3, 1, 4, 4), 255, dtype=torch.uint8)
    good = dataset("binary", 2, images, y, x_test=images[:0], y_test=y[:0])
    assert check_dataset(good, data_config(dataset="npz")) is good
    assert dataset_notes(good) == ["Note: the test split has zero rows, so this run reports no test metrics."]


def test_large_finite_values_whose_sum_overflows_pass():
    x = torch.full((4, 3), 3e38)  # the sum is inf, every value is finite
    data = dataset("regression", 1, x, torch.zeros(4, 1))
    assert check_dataset(data, data_config(dataset="npz")) is data


@pytest.mark.parametrize("fits_preprocessing", [False, True])
def test_load_dataset_checks_what_any_source_returns(monkeypatch, fits_preprocessing):
    # The check sits in load_dataset, not in each source: a source of either kind that returns a
    # bad label is refused, and a good dataset comes back as the source made it.
    from dlcli.data import DATASETS, DatasetSource

    x = torch.zeros(6, 2)
    returned = {"y": torch.tensor([0, 1, 2, 0, 1, 3])}

    def load(config, seed, *state_and_progress):
        return dataset("multiclass", 3, x, returned["y"])

    source = DatasetSource(
        config=DataConfig,
        info=None,
        load=load,
        read_inputs=None,
        input_spec=None,
        fits_preprocessing=fits_preprocessing,
    )
    monkeypatch.setitem(DATASETS._items, "fake", source)
    with pytest.raises(DataError) as info:
        load_dataset(data_config(dataset="fake"), seed=0)
    assert info.value.message == (
        "The label at row 5 of the training split is 3; a multiclass task with 3 classes needs whole numbers "
        "from 0 to 2."
    )
    returned["y"] = torch.tensor([0, 1, 2, 0, 1, 2])
    data = load_dataset(data_config(dataset="fake"), seed=0)
    assert data.y_train is returned["y"] and dataset_notes(data) == []


@pytest.mark.parametrize(
    "x_train,y_train,problem",
    [
        (np.zeros((4, 2), np.float32), np.array(["cat", "dog", "cat", "dog"]), "y_train holds text values (<U3)"),
        (np.zeros((4, 2), np.complex64), np.arange(4) % 2, "x_train holds complex values (complex64)"),
        (np.float32(1.0), np.arange(4) % 2, "x_train holds a single value"),
    ],
)
def test_npz_arrays_that_are_not_real_numbers(tmp_path, x_train, y_train, problem):
    # Found by the fuzz test: text labels and a 0-d array were tracebacks, complex inputs
    # silently lost their imaginary part.
    code, output = npz_run(tmp_path, x_train=x_train, y_train=y_train)
    assert (code, output) == (
        2,
        f"Error: {tmp_path / 'mine.npz'}: {problem}; dlcli needs an array of real "
        "numbers, one row per sample. Convert it with numpy (e.g. .astype('float32'), or "
        "class names to numbers) first.\n",
    )


def test_npz_inputs_of_one_number_per_sample_are_one_feature(tmp_path):
    # Found by the fuzz test: a 1-D x_train failed in the engine with an IndexError.
    x = np.linspace(-1, 1, 12).astype(np.float32)
    code, output = npz_run(tmp_path, "-q", x_train=x, y_train=(x > 0).astype(np.int64))
    assert code == 0, output
    data = load_dataset(data_config(dataset="npz", path=str(tmp_path / "mine.npz")), seed=0)
    assert data.info.input_shape == (1,) and data.x_train.shape == (12, 1)


def test_splits_whose_samples_differ_in_shape():
    # Found by the fuzz test: a test split of another shape reached the model (a matmul error).
    x, y = torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])
    assert check_message(dataset("binary", 2, x, y, x_test=torch.zeros(2, 3, 2), y_test=y[:2])) == (
        "The test split's inputs have shape [3, 2] per sample, but the training split's have [3]."
    )
    assert check_message(dataset("binary", 2, x, y, x_test=x[:2], y_test=torch.zeros(2, 2, dtype=torch.long))) == (
        "The test split's labels have shape [2] per sample, but the training split's have []."
    )


def test_an_empty_split_of_float_targets_keeps_its_width():
    # Found by the fuzz test: an empty multilabel or regression test split failed to reshape.
    from dlcli.losses import prepare_targets

    assert prepare_targets(torch.zeros(0, 3), "mse", "regression").shape == (0, 3)
    assert prepare_targets(torch.zeros(0), "mse", "regression").shape == (0, 1)
    assert prepare_targets(torch.ones(5), "mse", "regression").shape == (5, 1)
