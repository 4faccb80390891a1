import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.config import load_config
from dlcli.rundir import read_metrics
from dlcli.training import train

from conftest import synthetic_config, write_config

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def last_run(runs: Path) -> Path:
    (run,) = sorted(runs.iterdir())
    return run


def check_run_folder(run: Path, epochs: int) -> None:
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "run.json", "summary.txt", "metrics.csv", "checkpoints", "results.json",
            "loss.png", "accuracy.png"} <= names
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["id"] == run.name
    assert info["epochs_completed"] == epochs and info["seed"] == 0 and info["device"] == "cpu"
    assert info["torch"] == torch.__version__ and info["python"] and info["dlcli"] and info["command"]
    columns, rows = read_metrics(run / "metrics.csv")
    assert columns == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    results = json.loads((run / "results.json").read_text())
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["test_samples"] == 60
    assert "Total params: 195" in (run / "summary.txt").read_text()  # 8*16+16 + 16*3+3
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)
        assert "model" in state
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == epochs
    assert load_config(run / "config.yaml") == load_config(run / "config.yaml")


def test_train_writes_a_complete_run_folder(tmp_path, tiny_config):
    runs = tmp_path / "runs"
    result = invoke("train", tiny_config, "--runs-dir", runs, "--set", "training.epochs=3")
    assert result.exit_code == 0, result.output
    run = last_run(runs)
    check_run_folder(run, 3)
    assert result.output.strip().splitlines()[-1] == f"Run folder: {run}"
    assert load_config(run / "config.yaml").training.epochs == 3

    # The saved config re-runs the experiment into a new folder, with the same numbers.
    again = invoke("train", run / "config.yaml", "--runs-dir", runs)
    assert again.exit_code == 0, again.output
    first, second = sorted(runs.iterdir())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(read_metrics(first / "metrics.csv")[1]) == strip(read_metrics(second / "metrics.csv")[1])


def test_train_as_a_real_subprocess_with_piped_output(tmp_path, tiny_config):
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "dlcli", "train", str(tiny_config), "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout  # no control characters in a pipe
    assert lines[0].startswith("Epoch 1/2 - 10/10 - ") and "val_accuracy:" in lines[0]
    assert lines[1].startswith("Epoch 2/2 - 10/10 - ")
    assert lines[-1].startswith("Run folder: ")
    check_run_folder(tmp_path / lines[-1].removeprefix("Run folder: "), 2)


def test_live_display_on_a_terminal(tmp_path, tiny_config):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    train(load_config(tiny_config), runs_dir=tmp_path / "runs", console=console, draw_plots=False)
    text = out.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "━" in text
    assert "10/10" in text and "/step" in text and "val_accuracy" in text


def test_quiet_prints_only_the_result(tmp_path, tiny_config):
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0
    assert "Epoch" not in result.output and "test_accuracy" in result.output


def test_print_config_shows_overrides_and_exits(tmp_path, tiny_config):
    result = invoke("train", tiny_config, "--print-config", "--set", "training.epochs=7", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["training"]["epochs"] == 7
    assert not (tmp_path / "runs").exists()


def test_summary_of_the_mnist_cnn():
    result = invoke("summary", ROOT / "configs/mnist_cnn.yaml")
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("(None, 26, 26, 32)", "(None, 13, 13, 32)", "(None, 11, 11, 64)", "(None, 5, 5, 64)",
                 "(None, 1600)", "(None, 10)", "320", "18,496", "16,010", "Total params: 34,826"):
        assert text in out, text


def test_summary_json_and_verbose():
    result = invoke("summary", ROOT / "configs/imdb_binary.yaml", "--json")
    data = json.loads(result.output)
    assert data["total_params"] == 160_305 and [l["params"] for l in data["layers"]] == [160_016, 272, 17]
    verbose = invoke("summary", ROOT / "configs/mnist_cnn.yaml", "--verbose")
    assert "3x3" in verbose.output and "Mult-Adds" in verbose.output and "valid" in verbose.output


@pytest.mark.parametrize(
    "args,words",
    [
        (["train", "missing.yaml"], "does not exist"),
        (["train"], "give either a CONFIG"),
        (["summary", "CONFIG", "--set", "training.batch_size=0"], "must be at least 1"),
        (["train", "CONFIG", "--set", "optimizer.name=adamm"], "unknown optimizer 'adamm'"),
        (["train", "CONFIG", "--set", "data.dataset=mnits"], "Did you mean 'mnist'"),
        (["train", "CONFIG", "--set", "loss=binary_crossentropy"], "binary_crossentropy does not fit"),
        (["train", "CONFIG", "--set", "loss=mse_loss"], "unknown loss 'mse_loss'"),
        (["train", "CONFIG", "--set", "model={layers: [{conv2d: {filters: 2, kernel_size: 3}}]}"], "needs an image input"),
        (["train", "CONFIG", "--set", "data.dataset=mnist", "--set", "data.root=nowhere", "--set", "data.download=false"],
         "Cannot find the mnist files"),
        (["train", "CONFIG", "--set", "optimizer.momentum=0.9"], "does not apply to adam"),
        (["train", "CONFIG", "--set", "training.early_stopping.monitor=val_acc"], "Did you mean 'val_accuracy'"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, tiny_config, args, words):
    args = [tiny_config if a == "CONFIG" else a for a in args]
    result = invoke(*args, "--runs-dir", tmp_path / "runs") if args[0] == "train" else invoke(*args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert result.output.startswith("Error: ")


@pytest.mark.parametrize(
    "task,loss,model,metric",
    [
        ("binary", "binary_crossentropy", {"preset": "binary", "hidden": [8]}, "accuracy"),
        ("multilabel", "binary_crossentropy", {"preset": "mlp", "hidden": [8]}, "accuracy"),
        ("regression", "mse", {"layers": [{"dense": {"units": 8, "activation": "tanh"}}, {"dense": {"units": 3}}]}, "mae"),
        ("multiclass", "categorical_crossentropy", {"preset": "cnn", "filters": [8], "kernel_size": 3, "dropout": 0.0}, "accuracy"),
    ],
)
def test_the_four_problem_types_train_end_to_end(tmp_path, task, loss, model, metric):
    raw = synthetic_config(epochs=4)
    raw["data"]["synthetic"].update(task=task, classes=3, shape=[1, 8, 8] if model.get("preset") == "cnn" else [8])
    raw.update(loss=loss, model=model)
    config = write_config(tmp_path / "c.yaml", raw)
    result = invoke("train", config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    run = last_run(tmp_path / "runs")
    columns, rows = read_metrics(run / "metrics.csv")
    assert columns == ["epoch", "loss", metric, "val_loss", f"val_{metric}", "lr", "seconds"]
    results = json.loads((run / "results.json").read_text())
    assert f"test_{metric}" in results
    if task == "multilabel":
        assert len(results["test_per_label_accuracy"]) == 3
    if metric == "accuracy":
        assert rows[-1]["val_accuracy"] > 0.5  # learnable data, well above chance


def test_the_cli_module_imports_no_heavy_packages():
    """`dlcli --help` stays instant because torch and matplotlib load only inside commands."""
    code = "import sys, dlcli.cli; print(sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_errors_found_after_loading_name_the_file_and_line(tmp_path):
    raw = synthetic_config()
    raw["data"]["dataset"] = "mnits"
    config = write_config(tmp_path / "c.yaml", raw)
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "mnits" in text)
    result = invoke("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {config}, line {line}: data.dataset: unknown dataset 'mnits'")
    raw = synthetic_config()
    raw["model"] = {"layers": [{"flatten": {}}, {"dense": {"units": 4, "activation": "sigmoid"}}]}
    config = write_config(tmp_path / "c.yaml", raw)
    result = invoke("summary", config)
    assert result.exit_code == 2 and f"{config}, line" in result.output and "expects a softmax" in result.output


def test_channels_last_cnn_trains_like_the_default_layout(tmp_path):
    """auto stores a CNN's 4-D weights channels-last; losses and test results match the
    channels-first run up to float rounding, and the MLP stays as it is."""
    from dlcli.models import use_channels_last
    from dlcli.training import plan_experiment

    raw = synthetic_config(epochs=3)
    raw["data"]["synthetic"].update(shape=[3, 10, 10], samples=160)
    raw["model"] = {"preset": "cnn", "filters": [6, 8], "kernel_size": 3, "dropout": 0.0}
    config = write_config(tmp_path / "cnn.yaml", raw)
    histories = {}
    for setting in ("auto", "false"):
        runs = tmp_path / f"runs-{setting}"
        result = invoke("train", config, "--runs-dir", runs, "-q", "--set", f"training.channels_last={setting}")
        assert result.exit_code == 0, result.output
        run = last_run(runs)
        histories[setting] = (read_metrics(run / "metrics.csv")[1], json.loads((run / "results.json").read_text()))
        weights = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
        conv = next(v for v in weights.values() if v.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last) == (setting == "auto")
        assert conv.is_contiguous() == (setting == "false")
    (rows_cl, res_cl), (rows_cf, res_cf) = histories["auto"], histories["false"]
    for a, b in zip(rows_cl, rows_cf):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert res_cl["test_loss"] == pytest.approx(res_cf["test_loss"], rel=1e-4)

    from dlcli.models import build_model

    mlp = load_config(write_config(tmp_path / "mlp.yaml", synthetic_config()))
    assert not use_channels_last(build_model(plan_experiment(mlp).model_plan), "auto")
