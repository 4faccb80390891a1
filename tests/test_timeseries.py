"""data.dataset: timeseries: windows as Keras cuts them, split by time, scaling on the training
rows, missing cells, the persistence baseline, predict and export; and rank-3 npz arrays."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import import_or_skip_unless_ci, write_config
from dlcli.cli import app
from dlcli.config import DataConfig, data_config, load_config
from dlcli.data import load_dataset
from dlcli.data.timeseries import (
    Window,
    WindowConfig,
    WindowedSeries,
    time_feature_columns,
    window_starts,
    windows_touching,
)
from dlcli.engine import Batches
from dlcli.errors import DataError

runner = CliRunner()


def keras_reference(data, targets, sequence_length, sampling_rate, sequence_stride):
    """Keras's keras.utils.timeseries_dataset_from_array (start_index 0, end_index None, no
    shuffle), written from its documentation and its published source (Keras is not a
    dependency): there are len(data) - (sequence_length - 1) * sampling_rate sequences at most,
    no more than len(targets); sequence i starts at row i * sequence_stride and holds the rows
    start, start + sampling_rate, ... (sequence_length of them); its target is targets[start]."""
    num_seqs = min(len(data) - (sequence_length - 1) * sampling_rate, len(targets))
    starts = range(0, max(num_seqs, 0), sequence_stride)
    xs = [data[s : s + sequence_length * sampling_rate : sampling_rate] for s in starts]
    ys = [targets[s] for s in starts]
    return np.array(xs).reshape(len(xs), sequence_length, *data.shape[1:]), np.array(ys)


def write_table(path: Path, header: list[str], rows) -> Path:
    lines = [",".join(header)] + [",".join(c if isinstance(c, str) else repr(float(c)) for c in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def dated(n: int, start: str = "2020-01-01", step_days: int = 1) -> list[str]:
    first = np.datetime64(start, "D")
    return [str(first + i * step_days) for i in range(n)]


def series_config(path, length=3, horizon=1, stride=1, sampling_rate=1, **options) -> DataConfig:
    options.setdefault("validation_split", 0.0)
    options.setdefault("test_split", 0.0)
    window = WindowConfig(length=length, horizon=horizon, stride=stride, sampling_rate=sampling_rate)
    return data_config(dataset="timeseries", path=str(path), window=window, **options)


def all_windows(x) -> torch.Tensor:
    return x[torch.arange(len(x))]


# (length, stride, sampling_rate, horizon): lengths 1-7, strides 1-4, rates 1-3, horizons 1-5
KERAS_CASES = [
    (1, 1, 1, 1),
    (1, 3, 2, 4),
    (2, 1, 1, 1),
    (2, 2, 3, 2),
    (3, 1, 2, 1),
    (3, 4, 1, 5),
    (4, 1, 1, 3),
    (4, 3, 2, 2),
    (5, 2, 1, 1),
    (5, 1, 3, 4),
    (6, 1, 1, 2),
    (6, 2, 2, 5),
    (7, 1, 1, 1),
    (7, 4, 3, 3),
    (3, 2, 3, 1),
    (2, 4, 2, 3),
    (4, 2, 3, 5),
    (5, 3, 2, 2),
    (6, 4, 1, 4),
    (7, 3, 2, 1),
]


@pytest.mark.parametrize("length,stride,rate,horizon", KERAS_CASES)
def test_windows_are_those_of_keras_timeseries_dataset_from_array(tmp_path, length, stride, rate, horizon):
    """As Chollet's temperature chapter calls it: data[:-delay], targets=target[delay:] with
    delay = (length - 1) * sampling_rate + horizon; compared element for element."""
    rng = np.random.default_rng(length * 1000 + stride * 100 + rate * 10 + horizon)
    array = rng.normal(size=(57, 3))
    path = write_table(tmp_path / "s.csv", ["a", "b", "c"], array)
    config = series_config(path, length, horizon, stride, rate, target="c", normalize="none")
    data = load_dataset(config, seed=0)
    delay = (length - 1) * rate + horizon
    expected_x, expected_y = keras_reference(array[:-delay], array[delay:, 2], length, rate, stride)
    assert isinstance(data.x_train, WindowedSeries)
    assert data.x_train.shape == expected_x.shape
    assert torch.equal(all_windows(data.x_train), torch.from_numpy(expected_x.astype(np.float32)))
    assert torch.equal(data.y_train[:, 0], torch.from_numpy(expected_y.astype(np.float32)))


def test_several_horizons_give_one_output_each_on_the_farthest_horizons_windows(tmp_path):
    rng = np.random.default_rng(7)
    array = rng.normal(size=(40, 2))
    path = write_table(tmp_path / "s.csv", ["a", "b"], array)
    data = load_dataset(series_config(path, 5, [1, 2, 3], 2, 2, target="b", normalize="none"), seed=0)
    assert data.preprocessing["output_names"] == ["b+1", "b+2", "b+3"]
    assert data.info.num_classes == 3 and data.y_train.shape[1] == 3
    far = (5 - 1) * 2 + 3
    expected_x, _ = keras_reference(array[:-far], array[far:, 1], 5, 2, 2)
    assert torch.equal(all_windows(data.x_train), torch.from_numpy(expected_x.astype(np.float32)))
    for j, horizon in enumerate((1, 2, 3)):
        delay = (5 - 1) * 2 + horizon
        _, expected_y = keras_reference(array[:-delay], array[delay:, 1], 5, 2, 2)
        assert torch.equal(data.y_train[:, j], torch.from_numpy(expected_y[: len(expected_x)].astype(np.float32)))


def test_windows_are_gathered_per_batch_from_the_rows_stored_once(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(3000, 2))
    path = write_table(tmp_path / "s.csv", ["a", "b"], array)
    data = load_dataset(series_config(path, length=200, target="b"), seed=0)
    x = data.x_train
    # rows x features stored, not windows x length x features (2601 x 200 x 2 floats)
    assert tuple(x.series.shape) == (3000, 2) and x.shape == (2601, 200, 2)
    assert x.numel() * x.element_size() < 3000 * 2 * 4 + 2601 * 8 + 200 * 8 + 8
    precomputed = all_windows(x)
    assert float(x.sum()) == pytest.approx(float(precomputed.double().sum()), rel=1e-5)
    # The engine's seeded shuffle over the gathered windows gives the very batches of the precomputed tensor.
    lazy = Batches(x, data.y_train, 64, shuffle=True, generator=torch.Generator().manual_seed(3))
    eager = Batches(precomputed, data.y_train, 64, shuffle=True, generator=torch.Generator().manual_seed(3))
    pairs = list(zip(lazy, eager))
    assert len(pairs) == math.ceil(2601 / 64)
    for (xa, ya, na), (xb, yb, nb) in pairs:
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and na == nb


def test_windows_touching_flags_every_window_that_reads_a_flagged_row():
    rng = np.random.default_rng(1)
    for length, rate in ((1, 1), (4, 1), (3, 2), (5, 3)):
        window = Window(length, (1,), 1, rate)
        flags = rng.random(50) < 0.08
        starts = window_starts(50, window)
        expected = [flags[s : s + (length - 1) * rate + 1 : rate].any() for s in starts]
        assert windows_touching(flags, starts, window).tolist() == expected


# ----------------------------------------------------------------------------- splits and scaling


def index_series(tmp_path: Path, n: int = 100, name: str = "s.csv", first: int = 0) -> Path:
    """A series whose value is its row number (plus `first`): windows show which rows they read."""
    rows = [[d, float(first + i), float((first + i) % 7)] for i, d in enumerate(dated(n))]
    return write_table(tmp_path / name, ["date", "step", "other"], rows)


def test_splits_are_by_time_with_a_quarter_each_by_default_and_no_window_straddles_two(tmp_path):
    path = index_series(tmp_path)
    raw = {
        "data": {
            "dataset": "timeseries",
            "path": str(path),
            "time_column": "date",
            "target": "step",
            "normalize": "none",
            "window": {"length": 4, "horizon": 2},
        },
        "model": {"layers": [{"flatten": {}}, {"dense": {"units": 1}}]},
    }
    config = load_config(None, raw=raw)
    assert (config.data.validation_split, config.data.test_split) == (0.25, 0.25)
    data = load_dataset(config.data, seed=0)
    assert data.preprocessing["split"]["rows"] == {"train": 50, "val": 25, "test": 25}
    for x, y, low, high in (
        (data.x_train, data.y_train, 0, 50),
        (data.x_val, data.y_val, 50, 75),
        (data.x_test, data.y_test, 75, 100),
    ):
        values = all_windows(x)[:, :, 0]
        assert values.min() == low and values.max() < high and y.max() < high
        assert torch.equal(y[:, 0], values[:, -1] + 2)  # the target 2 rows after the window's last
        # Keras's count of each part's windows: rows - delay - (length - 1) r
        assert len(x) == (high - low) - (3 + 2) - 3


def test_a_test_file_tests_and_the_training_file_keeps_its_rows(tmp_path):
    path = index_series(tmp_path, 60)
    test = index_series(tmp_path, 30, "test.csv", first=1000)
    config = data_config(
        dataset="timeseries",
        train_path=str(path),
        test_path=str(test),
        time_column="date",
        target="step",
        normalize="none",
        validation_split=0.25,
        window=WindowConfig(length=3),
    )
    data = load_dataset(config, seed=0)
    assert data.preprocessing["split"]["rows"] == {"train": 45, "val": 15, "test": 30}
    assert all_windows(data.x_test)[:, :, 0].min() == 1000


def test_scaling_is_fitted_on_the_training_rows_only_and_reused_never_refitted(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.normal(10.0, 3.0, size=(80, 2))
    values[60:] += 100.0  # a change in the test rows must not move the statistics
    path = write_table(tmp_path / "s.csv", ["a", "b"], values)
    config = series_config(path, 4, target="b", validation_split=0.25, test_split=0.25)
    data = load_dataset(config, seed=0)
    a, b = data.preprocessing["features"]
    assert a["mean"] == pytest.approx(values[:40, 0].mean()) and a["std"] == pytest.approx(values[:40, 0].std())
    assert data.preprocessing["output_scaling"] == {"shift": [b["mean"]], "scale": [b["std"]]}
    x = all_windows(data.x_train)
    assert float(x[0, 0, 0]) == pytest.approx((values[0, 0] - a["mean"]) / a["std"], rel=1e-5)
    # Given a state back, the data is scaled with it as it is (a changed mean shows), not fitted again.
    state = json.loads(json.dumps(data.preprocessing))
    state["features"][0]["mean"] = 0.0
    again = load_dataset(config, seed=0, preprocessing=state)
    assert again.preprocessing is state
    assert float(all_windows(again.x_train)[0, 0, 0]) == pytest.approx(values[0, 0] / a["std"], rel=1e-5)


# ----------------------------------------------------------------------------- missing cells, time, task


def gappy(tmp_path: Path) -> Path:
    rows = [[d, float(i), float(10 * i)] for i, d in enumerate(dated(30))]
    rows[6][1] = ""  # a missing feature cell at row 6 (file line 8)
    return write_table(tmp_path / "g.csv", ["date", "a", "b"], rows)


def test_missing_cells_are_an_error_that_names_the_row_and_column(tmp_path):
    path = gappy(tmp_path)
    with pytest.raises(DataError) as caught:
        load_dataset(series_config(path, target="b", time_column="date"), seed=0)
    assert f"{path}, line 8, column 'a': the cell is empty" in caught.value.message
    assert "interpolate, ffill or drop_windows" in caught.value.hint


@pytest.mark.parametrize("policy,expected", [("interpolate", 6.0), ("ffill", 5.0)])
def test_interpolate_and_ffill_fill_the_cell_from_its_rows(tmp_path, policy, expected):
    data = load_dataset(series_config(gappy(tmp_path), 3, target="b", missing=policy, normalize="none"), seed=0)
    assert float(data.x_train[4][2, 0]) == expected  # window 4 holds rows 4, 5, 6


def test_drop_windows_leaves_out_exactly_the_windows_that_touch_a_missing_cell(tmp_path):
    data = load_dataset(series_config(gappy(tmp_path), 3, target="b", missing="drop_windows"), seed=0)
    starts = data.x_train.starts.tolist()
    assert starts == [s for s in range(30 - 3 - 2) if not s <= 6 <= s + 2]
    assert data.notes and "3 training windows touching a missing cell left out" in data.notes[0]


def test_a_frequency_makes_missing_time_stamps_missing_rows(tmp_path):
    days = dated(20)
    rows = [[d, float(i)] for i, d in enumerate(days) if i != 9]  # 2020-01-10 is absent
    path = write_table(tmp_path / "f.csv", ["date", "a"], rows)
    with pytest.raises(DataError) as caught:
        load_dataset(series_config(path, target="a", time_column="date", frequency="1D"), seed=0)
    assert "the time 2020-01-10, which the file has no row for (data.frequency: 1D)" in caught.value.message
    data = load_dataset(
        series_config(path, 2, target="a", time_column="date", frequency="1D", missing="interpolate", normalize="none"),
        seed=0,
    )
    assert data.x_train.series[:, 0].tolist() == [float(i) for i in range(20)]
    assert any("1 time stamp missing from the file" in note for note in data.notes)
    # Without a frequency, rows are steps as they come: the gap is no missing cell.
    plain = load_dataset(series_config(path, 2, target="a", time_column="date", normalize="none"), seed=0)
    assert plain.x_train.series.shape[0] == 19


def test_calendar_features_are_sine_and_cosine_of_the_position_in_each_cycle():
    seconds = np.array(["2021-01-01T06:00", "2021-07-02T12:00"], dtype="datetime64[s]").astype(np.int64)
    columns = time_feature_columns(seconds, ["hour", "day_of_week", "day_of_year"])
    hour, week, year = [np.arctan2(columns[:, 2 * k], columns[:, 2 * k + 1]) / (2 * np.pi) % 1 for k in range(3)]
    assert hour == pytest.approx([0.25, 0.5])
    assert week == pytest.approx([(4 + 0.25) / 7, (4 + 0.5) / 7])  # Fridays, Monday = 0
    assert year == pytest.approx([0.25 / 365, (182 + 0.5) / 365])


def test_a_categorical_target_makes_a_classifier_of_tomorrows_class(tmp_path):
    weather = ["sun", "rain", "fog"]
    rows = [[d, float(i % 5), weather[i % 3]] for i, d in enumerate(dated(40))]
    path = write_table(tmp_path / "w.csv", ["date", "wind", "weather"], rows)
    data = load_dataset(series_config(path, 4, target="weather", time_column="date"), seed=0)
    assert data.info.task == "multiclass" and data.info.class_names == ("fog", "rain", "sun")
    assert data.preprocessing["input_names"] == ["wind"]  # the class column is no input
    expected = [("fog", "rain", "sun").index(weather[(s + 3 + 1) % 3]) for s in data.x_train.starts.tolist()]
    assert data.y_train.tolist() == expected


# ----------------------------------------------------------------------------- training, the baseline


GRU = {"layers": [{"gru": {"units": 4}}, {"dense": {"units": 1}}]}


def trend_series(tmp_path: Path, n: int = 120) -> tuple[Path, np.ndarray]:
    """A rising trend with a weekly season: what persistence is judged on."""
    t = np.arange(n)
    y = 0.25 * t + 3.0 * np.sin(2 * np.pi * t / 7)
    write_table(
        tmp_path / "trend.csv", ["date", "y", "noise"], [[d, y[i], float(i % 3)] for i, d in enumerate(dated(n))]
    )
    return tmp_path / "trend.csv", y


def train_series(tmp_path: Path, data: dict, model=None, epochs: int = 1, runs: str = "runs") -> Path:
    config = {
        "name": "ts",
        "device": "cpu",
        "data": {"dataset": "timeseries", **data},
        "model": model or GRU,
        "loss": "mse",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 16},
    }
    result = runner.invoke(
        app, ["train", str(write_config(tmp_path / "c.yaml", config)), "--runs-dir", str(tmp_path / runs)]
    )
    assert result.exit_code == 0, result.output
    return next((tmp_path / runs).iterdir())


def test_results_report_the_persistence_forecast_on_the_same_test_windows(tmp_path):
    path, y = trend_series(tmp_path)
    run = train_series(
        tmp_path, {"path": str(path), "time_column": "date", "target": "y", "window": {"length": 7, "horizon": 2}}
    )
    results = json.loads((run / "results.json").read_text())
    # By hand: the test part is the last 30 rows (90-119), its windows start at 0..(30 - (6 + 2) - 6 - 1),
    # the forecast is y at the window's last row, the truth y two rows later.
    lasts = 90 + np.arange(30 - 8 - 6) + 6
    expected = np.abs(y[lasts + 2] - y[lasts]).mean()
    assert results["test_samples"] == len(lasts)
    assert results["test_persistence_mae"] == pytest.approx(expected, rel=1e-12)
    assert results["test_mae_over_persistence"] == pytest.approx(results["test_mae"] / expected, rel=1e-12)
    verdict = "beats" if results["test_mae"] < expected else "does NOT beat"
    assert results["baseline"].startswith(f"The model {verdict} the persistence forecast")
    # The MAE is in the target's units: recomputed from the model's scaled outputs by hand.
    from dlcli.loading import load_run

    loaded = load_run(run)
    data = load_dataset(loaded.config.data, 0, preprocessing=loaded.preprocessing)
    with torch.no_grad():
        out = loaded.model(all_windows(data.x_test)).double()
    mean, std = loaded.preprocessing["targets"][0]["mean"], loaded.preprocessing["targets"][0]["std"]
    assert results["test_mae"] == pytest.approx(
        float((out[:, 0] * std + mean - torch.from_numpy(y[lasts + 2])).abs().mean()), rel=1e-4
    )
    evaluated = runner.invoke(app, ["evaluate", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"persistence_mae: {expected:.4f}" in evaluated.output and "persistence forecast" in evaluated.output


def test_a_model_that_does_not_beat_persistence_is_told_so_plainly(tmp_path):
    from dlcli.data.timeseries import baseline_results

    path, _ = trend_series(tmp_path, 60)
    data = load_dataset(series_config(path, 4, target="y", time_column="date", test_split=0.3), seed=0)
    naive = data.x_test.persistence.mae()
    worse = baseline_results(data.x_test, data.preprocessing, naive * 1.5, "test_")
    assert worse["baseline"].startswith("The model does NOT beat the persistence forecast")
    assert worse["test_mae_over_persistence"] == pytest.approx(1.5)
    better = baseline_results(data.x_test, data.preprocessing, naive * 0.5, "test_")
    assert better["baseline"].startswith("The model beats the persistence forecast")


def test_summary_needs_no_windows(tmp_path, monkeypatch):
    import dlcli.data.timeseries as timeseries

    def no_windows(*args, **kwargs):
        raise AssertionError("summary built windows")

    monkeypatch.setattr(timeseries, "_window_part", no_windows)
    monkeypatch.setattr(timeseries, "WindowedSeries", no_windows)
    path, _ = trend_series(tmp_path, 60)
    config = {
        "data": {
            "dataset": "timeseries",
            "path": str(path),
            "time_column": "date",
            "target": "y",
            "window": {"length": 5},
            "time_features": ["day_of_week"],
        },
        "model": {
            "layers": [{"lstm": {"units": 3, "return_sequences": True}}, {"flatten": {}}, {"dense": {"units": 1}}]
        },
    }
    result = runner.invoke(app, ["summary", str(write_config(tmp_path / "c.yaml", config)), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["layers"][0]["output_shape"] == [None, 5, 3]


# ----------------------------------------------------------------------------- predict and export


def weather_run(tmp_path: Path, model=None) -> tuple[Path, Path]:
    rng = np.random.default_rng(4)
    n = 80
    temp = 10 + 5 * np.sin(np.arange(n) / 5) + rng.normal(0, 0.5, n)
    rows = [[d, temp[i], float(rng.random()), "x"] for i, d in enumerate(dated(n, "2015-01-01"))]
    path = write_table(tmp_path / "weather.csv", ["date", "temp", "wind", "note"], rows)
    data = {
        "path": str(path),
        "time_column": "date",
        "target": "temp",
        "window": {"length": 6},
        "time_features": ["day_of_year"],
    }
    return train_series(tmp_path, data, model), path


@pytest.fixture(scope="module")
def trained_weather(tmp_path_factory) -> tuple[Path, Path]:
    return weather_run(tmp_path_factory.mktemp("weather"))


def recent(path: Path, rows: int, out: Path, drop: str = "") -> Path:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, c in enumerate(header) if c != drop]
    out.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in [lines[0], *lines[-rows:]]) + "\n")
    return out


def test_predict_forecasts_the_step_after_the_files_last_row_in_the_targets_units(tmp_path, trained_weather):
    from dlcli.data.timeseries import read_recent
    from dlcli.loading import load_run

    run, path = trained_weather
    latest = recent(path, 10, tmp_path / "recent.csv")
    result = runner.invoke(app, ["predict", str(run), str(latest)])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header == "input,last_time,forecast_time,predicted"
    name, last, forecast, value = row.split(",")
    assert (name, last, forecast) == ("recent.csv:6-11", "2015-03-21", "2015-03-22")
    loaded = load_run(run)
    window = read_recent(loaded.preprocessing, latest).x
    with torch.no_grad():
        scaled = float(loaded.model(window)[0, 0])
    spec = loaded.preprocessing["targets"][0]
    assert float(value) == pytest.approx(scaled * spec["std"] + spec["mean"], rel=1e-5)
    every = runner.invoke(app, ["predict", str(run), str(latest), "--all-windows"])
    assert every.exit_code == 0, every.output
    lines = every.stdout.strip().splitlines()
    assert lines[0] == "input,last_time,forecast_time,predicted,true" and len(lines) == 1 + 5
    truth = float(path.read_text().splitlines()[-4].split(",")[1])  # the first window's target: 6 rows on
    assert float(lines[1].split(",")[-1]) == pytest.approx(truth, rel=1e-5)
    assert "mean absolute error" in every.stderr


@pytest.mark.parametrize(
    "rows,drop,message",
    [
        (4, "", "recent.csv has 4 rows, and one window needs 6 (data.window length 6). Give at least the last 6 rows"),
        (8, "wind", "recent.csv lacks the column 'wind' that the model reads; it needs: temp, wind, date."),
    ],
)
def test_predict_with_too_few_rows_or_a_missing_column_is_one_paragraph(tmp_path, trained_weather, rows, drop, message):
    run, path = trained_weather
    latest = recent(path, rows, tmp_path / "recent.csv", drop)
    result = runner.invoke(app, ["predict", str(run), str(latest)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.stdout == ""
    assert message in result.stderr.replace("\n", " ")


def test_export_bakes_the_scaling_in_and_onnxruntime_agrees_on_a_raw_window(tmp_path):
    ort = import_or_skip_unless_ci("onnxruntime", "onnxruntime is not installed")
    from dlcli.data.timeseries import time_feature_columns

    run, path = weather_run(tmp_path, {"layers": [{"flatten": {}}, {"dense": {"units": 1}}]})  # quick to export
    result = runner.invoke(app, ["export", str(run)])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((run / "export" / "onnx" / "export.json").read_text())
    assert sidecar["input_names"] == ["temp", "wind", "day_of_year_sin", "day_of_year_cos"]
    latest = recent(path, 6, tmp_path / "recent.csv")
    lines = [line.split(",") for line in latest.read_text().splitlines()[1:]]
    seconds = np.array([line[0] for line in lines], dtype="datetime64[s]").astype(np.int64)
    raw = np.concatenate(
        [
            np.array([[float(line[1]), float(line[2])] for line in lines]),
            time_feature_columns(seconds, ["day_of_year"]),
        ],
        axis=1,
    ).astype(np.float32)[None]
    session = ort.InferenceSession(str(run / "export" / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    exported = float(session.run(None, {"input": raw})[0][0, 0])
    predicted = runner.invoke(app, ["predict", str(run), str(latest)])
    assert exported == pytest.approx(float(predicted.stdout.strip().splitlines()[1].split(",")[-1]), abs=1e-5)


# ----------------------------------------------------------------------------- bad input


def bad_case(tmp_path: Path, name: str) -> tuple[dict, str]:
    days = dated(40)
    rows = [[d, float(i), float(i % 4)] for i, d in enumerate(days)]
    data = {"time_column": "date", "target": "a", "window": {"length": 3}}
    if name == "out_of_order":
        rows[3][0], rows[4][0] = days[4], days[3]
        expected = (
            "line 6, column 'date': the time stamp 2020-01-04 comes before the previous row's 2020-01-05: this is "
            "the first row out of time order."
        )
    elif name == "duplicated":
        rows[4][0] = days[3]
        expected = "line 6, column 'date': the time stamp 2020-01-04 is the same as the row before's"
    elif name == "window_longer_than_a_split":
        data["window"] = {"length": 12}
        expected = "The window (length 12: 12 rows) is longer than the validation part of the series (10 rows)."
    elif name == "horizon_leaves_no_test_window":
        data["window"] = {"length": 3, "horizon": 6}
        data["validation_split"] = 0.0
        expected = "The test part of the series (10 rows) holds no window with its target"
    elif name == "text_in_a_number":
        rows[2][2] = "oops"
        expected = "line 4, column 'b': 'oops' is not a number, but 'b' is a numeric feature."
    elif name == "missing_without_policy":
        rows[5][2] = ""
        expected = "line 7, column 'b': the cell is empty (or a missing-value marker such as NA); 1 cell is missing"
    elif name == "missing_of_another_kind":
        data["missing"] = "mean"
        expected = (
            "data.missing: mean is a policy for csv data; for timeseries data the policies that fit are: error, "
            "interpolate, ffill, drop_windows."
        )
    else:  # target_not_in_file
        data["target"] = "aa"
        expected = (
            "data.target: "
            + str(tmp_path / "bad.csv")
            + " has no column 'aa'; its columns are: date, a, b. Did you mean 'a'?"
        )
    path = write_table(tmp_path / "bad.csv", ["date", "a", "b"], rows)
    return {"path": str(path), **data}, expected


@pytest.mark.parametrize(
    "name",
    [
        "out_of_order",
        "duplicated",
        "window_longer_than_a_split",
        "horizon_leaves_no_test_window",
        "text_in_a_number",
        "missing_without_policy",
        "missing_of_another_kind",
        "target_not_in_file",
    ],
)
def test_bad_series_are_one_paragraph_exit_code_2_and_no_run_folder(tmp_path, name):
    data, expected = bad_case(tmp_path, name)
    config = {"data": {"dataset": "timeseries", **data}, "model": GRU, "device": "cpu", "training": {"epochs": 1}}
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_config(tmp_path / "c.yaml", config)), "--runs-dir", str(runs)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n\n" not in message
    assert expected in message.replace("\n", " ")
    assert not runs.exists() or not any(runs.iterdir())


# ----------------------------------------------------------------------------- rank-3 arrays of one's own


@pytest.mark.parametrize(
    "layers",
    [
        [{"lstm": {"units": 4}}],
        [{"gru": {"units": 4}}],
        [{"conv1d": {"filters": 4, "kernel_size": 3, "activation": "relu"}}, {"global_max_pool": {}}],
        [{"flatten": {}}, {"dense": {"units": 4, "activation": "relu"}}],
    ],
    ids=["lstm", "gru", "conv1d", "dense"],
)
def test_npz_arrays_of_samples_timesteps_features_train(tmp_path, layers):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(48, 12, 3)).astype(np.float32)
    y = (x[:, -1, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "seq.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    config = {
        "device": "cpu",
        "data": {"dataset": "npz", "path": str(tmp_path / "seq.npz")},
        "model": {"layers": [*layers, {"dense": {"units": 1, "activation": "sigmoid"}}]},
        "training": {"epochs": 1, "batch_size": 16},
    }
    path = write_config(tmp_path / "c.yaml", config)
    result = runner.invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "test_accuracy" in result.output


def test_a_trading_day_of_prices_per_sample_shows_batch_timesteps_features(tmp_path):
    """The course's stock example: 250 days of (390 minutes, price/high/low)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(250, 390, 3)).astype(np.float32)
    np.savez(tmp_path / "stock.npz", x_train=x, y_train=rng.normal(size=250).astype(np.float32))
    config = {
        "device": "cpu",
        "data": {"dataset": "npz", "path": str(tmp_path / "stock.npz"), "max_train_samples": 32},
        "model": {
            "layers": [
                {"conv1d": {"filters": 3, "kernel_size": 3, "padding": "same"}},
                {"flatten": {}},
                {"dense": {"units": 1}},
            ]
        },
        "training": {"epochs": 1, "batch_size": 32},
    }
    path = write_config(tmp_path / "c.yaml", config)
    summary = runner.invoke(app, ["summary", str(path)])
    assert summary.exit_code == 0 and "(None, 390, 3)" in summary.output
    result = runner.invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output


def test_the_shipped_seattle_config_splits_by_time_and_knows_its_baseline():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "seattle_temp_forecast.yaml")
    data = load_dataset(config.data, config.seed)
    split = data.preprocessing["split"]
    assert split["rows"] == {"train": 729, "val": 366, "test": 366}
    assert split["first_time"] == {"train": "2012-01-01", "val": "2013-12-30", "test": "2014-12-31"}
    assert data.x_train.shape == (702, 14, 6) and len(data.x_test) == 339
    lines = (Path(config.data.path)).read_text().splitlines()[1:]
    temp = np.array([float(line.split(",")[2]) for line in lines])[-366:]
    lasts = np.arange(339) + 13
    assert data.x_test.persistence.mae() == pytest.approx(np.abs(temp[lasts + 1] - temp[lasts]).mean(), rel=1e-12)


def test_the_mae_of_several_targets_is_each_in_its_own_units(tmp_path):
    from dlcli.losses import make_objective
    from dlcli.training import objective_in_target_units

    rng = np.random.default_rng(8)
    values = np.stack([rng.normal(0, 1, 50), rng.normal(100, 40, 50)], axis=1)
    path = write_table(tmp_path / "two.csv", ["a", "b"], values)
    data = load_dataset(series_config(path, 3, target=["a", "b"]), seed=0)
    stds = [spec["std"] for spec in data.preprocessing["targets"]]
    objective = objective_in_target_units(make_objective("mse", "regression", 2), data.preprocessing)
    y = data.y_train
    off_by_one_std = y + 1.0  # one scaled unit away in every output
    assert float(objective.metric_sum(off_by_one_std, y)) == pytest.approx(len(y) * sum(stds), rel=1e-5)


def test_a_categorical_target_trains_and_predicts_classes(tmp_path):
    weather = ["sun", "rain", "fog"]
    rows = [[d, float(i % 5), weather[(i // 2) % 3]] for i, d in enumerate(dated(60))]
    path = write_table(tmp_path / "w.csv", ["date", "wind", "weather"], rows)
    model = {"layers": [{"flatten": {}}, {"dense": {"units": 3, "activation": "softmax"}}]}
    config = {
        "device": "cpu",
        "data": {"dataset": "timeseries", "path": str(path), "time_column": "date", "target": "weather"},
        "model": model,
        "training": {"epochs": 1, "batch_size": 16},
    }
    config["data"]["window"] = {"length": 4}
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(write_config(tmp_path / "c.yaml", config)), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    run = next(runs.iterdir())
    results = json.loads((run / "results.json").read_text())
    assert "test_accuracy" in results and "test_persistence_mae" not in results
    predicted = runner.invoke(app, ["predict", str(run), str(path)])
    assert predicted.exit_code == 0, predicted.output
    header, row = predicted.stdout.strip().splitlines()
    assert header.startswith("input,last_time,forecast_time,predicted,probability")
    assert row.split(",")[3] in weather and (run / "classes.txt").read_text() == "fog\nrain\nsun\n"


def test_a_part_whose_every_window_is_dropped_is_a_clear_error(tmp_path):
    # Found by the fuzzer: with several horizons, no window left made a reshape fail (a ValueError).
    rows = [[f"2024-01-{day:02d}", 1.0 * day, 0.0] for day in range(1, 29)] + [["2024-02-01", 3.0, 0.0]]
    path = write_table(tmp_path / "gap.csv", ["date", "temp", "other"], rows)
    config = series_config(
        path,
        length=3,
        horizon=(1, 3),
        target="temp",
        missing="drop_windows",
        time_column="date",
        frequency="1D",
        validation_split=0.25,
        test_split=0.25,
    )
    with pytest.raises(DataError, match="Every window of the test part touches a missing cell"):
        load_dataset(config, seed=0)


def test_too_few_training_rows_advise_smaller_test_and_validation_splits(tmp_path):
    rows = [[float(i), 0.0] for i in range(12)]
    path = write_table(tmp_path / "short.csv", ["temp", "other"], rows)
    config = series_config(path, length=3, horizon=3, target="temp", validation_split=0.25, test_split=0.25)
    with pytest.raises(DataError) as info:
        load_dataset(config, seed=0)
    assert "The training part of the series (6 rows) holds no window" in str(info.value)
    assert "or smaller data.test_split and data.validation_split." in str(info.value)


@pytest.mark.parametrize("key", ["validation_split", "test_split"])
def test_a_split_so_small_it_holds_out_zero_rows_is_refused(tmp_path, key):
    path = write_table(tmp_path / "t.csv", ["temp", "other"], [[float(i), 0.0] for i in range(40)])
    with pytest.raises(DataError) as info:
        load_dataset(series_config(path, target="temp", **{key: 1e-20}), seed=0)
    assert info.value.message == f"data.{key}: 1e-20 of 40 rows holds out zero rows."
