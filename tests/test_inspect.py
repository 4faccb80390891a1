"""dlcli plot, runs, compare and evaluate on run folders made by training on synthetic data."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, make_idx_dataset, synthetic_config, write_config
from dlcli.plots import plot_metric
from dlcli.rundir import read_metrics


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    config = write_config(tmp / "c.yaml", synthetic_config(epochs=3))
    for lr in ("0.01", "0.05"):
        result = invoke("train", config, "--runs-dir", tmp / "runs", "-q", "--set", f"optimizer.lr={lr}")
        assert result.exit_code == 0, result.output
    return sorted((tmp / "runs").iterdir())


def png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


@pytest.fixture
def drawn_figures(monkeypatch):
    """What each figure saved through matplotlib really shows, read from the figure as it is
    saved (not from what the plotting code says it drew): one dict per figure, line label ->
    (x values, y values, marker, line style)."""
    from matplotlib.figure import Figure

    figures = []
    real_savefig = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        figures.append(
            {
                line.get_label(): (
                    [int(x) for x in line.get_xdata()],
                    [float(y) for y in line.get_ydata()],
                    line.get_marker(),
                    line.get_linestyle(),
                )
                for line in self.axes[0].get_lines()
            }
        )
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return figures


def expected_lines(rows: list[dict], metric: str, prefix: str = "") -> dict:
    """Training values as dots, validation values as a line, a star on the best validation
    epoch (the earliest on ties; lowest loss, highest accuracy)."""
    epochs = [r["epoch"] for r in rows]
    pick = min if metric == "loss" else max
    best = pick(rows, key=lambda r: r[f"val_{metric}"])
    words = metric.replace("_", " ")
    return {
        f"{prefix}Training {words}": (epochs, [r[metric] for r in rows], "o", "None"),
        f"{prefix}Validation {words}": (epochs, [r[f"val_{metric}"] for r in rows], "None", "-"),
        f"{prefix}best val_{metric} (epoch {best['epoch']})": ([best["epoch"]], [best[f"val_{metric}"]], "*", "None"),
    }


def test_train_draws_its_plots_from_metrics_csv(two_runs, tmp_path):
    _, rows = read_metrics(two_runs[0] / "metrics.csv")
    for metric in ("loss", "accuracy"):
        pixels = png_pixels(two_runs[0] / f"{metric}.png")
        assert pixels.shape[:2] == (450, 700)
        assert pixels.std() > 0.05  # not blank
        # Pixel for pixel what plot_metric draws from the final metrics.csv.
        plot_metric([(two_runs[0].name, rows)], metric, tmp_path / f"{metric}.png")
        assert np.array_equal(pixels, png_pixels(tmp_path / f"{metric}.png")), metric


@pytest.mark.parametrize("metric", ["loss", "accuracy"])
def test_plotted_series_are_the_metrics_csv_columns(two_runs, tmp_path, drawn_figures, metric):
    columns, rows = read_metrics(two_runs[0] / "metrics.csv")
    drawn = plot_metric([("run", rows)], metric, tmp_path / f"{metric}.png")
    assert drawn["run"][metric] == [r[metric] for r in rows]
    assert drawn["run"][f"val_{metric}"] == [r[f"val_{metric}"] for r in rows]
    assert drawn_figures == [expected_lines(rows, metric)]


def test_plot_one_run_after_one_epoch_and_any_metric(tmp_path, tiny_config):
    invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "-q", "--set", "training.epochs=1")
    (run,) = (tmp_path / "runs").iterdir()
    (run / "loss.png").unlink()
    result = invoke("plot", run, "--metric", "loss", "--metric", "lr")
    assert result.exit_code == 0, result.output
    assert (run / "loss.png").is_file() and (run / "lr.png").is_file()
    result = invoke("plot", run, "--metric", "val_acuracy")
    assert result.exit_code == 2 and "not a column" in result.output and "val_accuracy" in result.output


def test_plot_several_runs_into_out(two_runs, tmp_path, drawn_figures):
    result = invoke("plot", *two_runs)
    assert result.exit_code == 2 and "--out" in result.output
    result = invoke("plot", *two_runs, "--out", tmp_path / "cmp")
    assert result.exit_code == 0
    assert png_pixels(tmp_path / "cmp" / "accuracy.png").std() > 0.05
    # One figure per metric, each with both runs' series under their names.
    assert len(drawn_figures) == 2
    for lines, metric in zip(drawn_figures, ("loss", "accuracy")):
        expected = {}
        for run in two_runs:
            expected.update(expected_lines(read_metrics(run / "metrics.csv")[1], metric, prefix=f"{run.name}: "))
        assert lines == expected


def test_runs_lists_newest_first_and_survives_a_broken_folder(two_runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(two_runs[0].parent, root)
    broken = root / "20991231-235959-broken"
    broken.mkdir()
    (broken / "run.json").write_text("{ half a fil")
    half = root / "20000101-000000-half"
    shutil.copytree(two_runs[0], half)
    (half / "metrics.csv").write_text("epoch,loss\n1,oops\n")
    result = invoke("runs", "--dir", root, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [r["id"] for r in listed] == sorted([p.name for p in root.iterdir()], reverse=True)
    by_id = {r["id"]: r for r in listed}
    assert by_id[broken.name]["status"] == "damaged" and "JSON" in by_id[broken.name]["problem"]
    assert "not a number" in by_id[half.name]["problem"]
    good = by_id[two_runs[1].name]
    assert good["status"] == "completed" and good["epochs_done"] == 3 and good["best_name"] == "val_accuracy"
    _, rows = read_metrics(two_runs[1] / "metrics.csv")
    best = max(rows, key=lambda r: r["val_accuracy"])  # the highest, the earliest on ties
    assert (good["best_value"], good["best_epoch"]) == (best["val_accuracy"], best["epoch"])
    results = json.loads((two_runs[1] / "results.json").read_text())
    assert good["test"] == {k: v for k, v in results.items() if k.startswith("test_")}
    assert set(good["test"]) == {"test_loss", "test_accuracy", "test_samples"}
    table = invoke("runs", "--dir", root)
    assert table.exit_code == 0 and "damaged" in table.output and two_runs[1].name in table.output


def test_runs_marks_a_killed_run(two_runs, tmp_path):
    root = tmp_path / "runs"
    killed = root / "20261127-000000-killed"
    shutil.copytree(two_runs[0], killed)
    info = json.loads((killed / "run.json").read_text())
    info.update(status="running", pid=2**22 + 12345)  # no such process
    (killed / "run.json").write_text(json.dumps(info))
    (listed,) = json.loads(invoke("runs", "--dir", root, "--json").output)
    assert listed["status"] == "killed"


def test_compare_shows_metrics_and_config_differences(two_runs):
    result = invoke("compare", *two_runs, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["config_differences"] == {"optimizer.lr": [0.01, 0.05]}
    assert [r["epochs_done"] for r in data["runs"]] == [3, 3]
    table = invoke("compare", *two_runs)
    assert "optimizer.lr" in table.output and "best val_accuracy" in table.output
    assert invoke("compare", two_runs[0]).exit_code == 2


def test_evaluate_recomputes_the_test_metrics(two_runs):
    run = two_runs[0]
    result = invoke("evaluate", run, "--checkpoint", "last", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    results = json.loads((run / "results.json").read_text())
    assert data["accuracy"] == pytest.approx(results["test_accuracy"])
    assert data["loss"] == pytest.approx(results["test_loss"], rel=1e-5)
    matrix = np.array(data["confusion"])
    assert matrix.shape == (3, 3) and matrix.sum() == 60
    assert np.trace(matrix) / 60 == pytest.approx(data["accuracy"])
    # Rows are the true classes: each row adds up to that class's count in the test split.
    from dlcli.data import load_dataset
    from dlcli.plan import load_run_config

    config = load_run_config(run)
    y_test = load_dataset(config.data, config.seed).y_test
    assert matrix.sum(axis=1).tolist() == np.bincount(y_test.numpy(), minlength=3).tolist()
    assert matrix.sum(axis=0).tolist() != matrix.sum(axis=1).tolist()  # so the orientation shows
    assert (run / "confusion.png").is_file()
    val = invoke("evaluate", run, "--split", "val")
    assert val.exit_code == 0 and "val split" in val.output and "Confusion matrix" in val.output
    # The last checkpoint on the val split gives what the last epoch logged as val_ metrics.
    last_row = read_metrics(run / "metrics.csv")[1][-1]
    val = json.loads(invoke("evaluate", run, "--split", "val", "--checkpoint", "last", "--json").output)
    assert (val["split"], val["samples"], val["epoch"]) == ("val", 40, last_row["epoch"])
    assert val["accuracy"] == last_row["val_accuracy"]
    assert val["loss"] == pytest.approx(last_row["val_loss"], rel=1e-6)
    assert invoke("evaluate", run, "--split", "train").exit_code == 2


def test_evaluate_uses_the_dataset_class_names(tmp_path):
    root = tmp_path / "data"
    make_idx_dataset(root / "fashion_mnist", n_train=100, n_test=30)
    config = write_config(
        tmp_path / "f.yaml",
        {
            "name": "fm",
            "device": "cpu",
            "data": {"dataset": "fashion_mnist", "root": str(root), "download": False},
            "model": {"preset": "mlp", "hidden": [8]},
            "training": {"epochs": 1, "batch_size": 20},
        },
    )
    assert invoke("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    data = json.loads(invoke("evaluate", run, "--json").output)
    assert data["class_names"][0] == "T-shirt/top" and data["class_names"][9] == "Ankle boot"
    # uint8 images scaled the same way in training and in evaluate: the same test results.
    results = json.loads((run / "results.json").read_text())
    assert data["accuracy"] == results["test_accuracy"]
    assert data["loss"] == pytest.approx(results["test_loss"], rel=1e-6)


def test_each_plot_is_drawn_once_without_pyplot_and_unchanged_by_it(two_runs, tmp_path, monkeypatch):
    import io
    import subprocess
    import sys

    from matplotlib.figure import Figure

    from dlcli import plots

    _, rows = read_metrics(two_runs[0] / "metrics.csv")
    draws = []
    real_draw = Figure.draw

    def counting_draw(self, renderer):
        draws.append(self)
        return real_draw(self, renderer)

    monkeypatch.setattr(Figure, "draw", counting_draw)
    plot_metric([("run", rows)], "loss", tmp_path / "once.png")
    assert len(draws) == 1

    def as_savefig_draws_it(fig) -> bytes:  # tight_layout leaves an engine: savefig draws a dry run first
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": plots.PNG_SOFTWARE})
        return buffer.getvalue()

    monkeypatch.setattr(plots, "_png_bytes", as_savefig_draws_it)
    plot_metric([("run", rows)], "loss", tmp_path / "twice.png")
    assert len(draws) == 3
    assert (tmp_path / "once.png").read_bytes() == (tmp_path / "twice.png").read_bytes()
    # `dlcli train` draws its plots before it exits: without importing pyplot.
    code = (
        "import sys; from pathlib import Path; from dlcli.plots import plot_run; "
        f"plot_run(Path({str(two_runs[0])!r}), out_dir=Path({str(tmp_path / 'fresh')!r})); "
        "print(sorted(m for m in sys.modules if m.startswith('matplotlib.py')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"
    assert (tmp_path / "fresh" / "loss.png").read_bytes() == (two_runs[0] / "loss.png").read_bytes()


def test_plot_title_names_validation_only_when_there_is_some(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    titles = []
    real_savefig = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        titles.append(self.axes[0].get_title())
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    with_validation = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e} for e in (1, 2, 3)]
    without_validation = [{"epoch": e, "loss": 1.0 / e, "val_loss": None} for e in (1, 2, 3)]
    plot_metric([("run", with_validation)], "loss", tmp_path / "a.png")
    plot_metric([("run", without_validation)], "loss", tmp_path / "b.png")
    plot_metric([("a", with_validation), ("b", without_validation)], "loss", tmp_path / "c.png")
    assert titles == ["Training and validation loss", "Training loss", "loss of 2 runs"]
