import gc
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

import dlcli
from conftest import RUN_FOLDER_FILES, invoke, synthetic_config, write_config
from dlcli.config import config_to_dict, load_config
from dlcli.rundir import read_metrics
from dlcli.training import train

ROOT = Path(__file__).resolve().parents[1]


def last_run(runs: Path) -> Path:
    (run,) = sorted(runs.iterdir())
    return run


def outputs_on_the_test_split(run: Path, weights: dict):
    """The model of a run's saved config with `weights`, applied to the run's test split:
    (outputs, targets), computed here without the engine."""
    from dlcli.data import load_dataset
    from dlcli.models import build_model
    from dlcli.plan import plan_experiment

    config = load_config(run / "config.yaml")
    model = build_model(plan_experiment(config).model_plan)
    model.load_state_dict(weights)
    model.eval()
    data = load_dataset(config.data, config.seed)
    with torch.no_grad():
        return model(data.x_test), data.y_test


def check_run_folder(run: Path, epochs: int, expected_config, command: list[str] | None = None) -> None:
    names = {p.name for p in run.iterdir()}
    assert RUN_FOLDER_FILES <= names
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["id"] == run.name
    assert info["epochs_completed"] == epochs and info["seed"] == 0 and info["device"] == "cpu"
    assert info["torch"] == torch.__version__ and info["python"] == platform.python_version()
    assert info["dlcli"] == dlcli.__version__ and info["command"]
    if command is not None:
        assert info["command"][1:] == command
    columns, rows = read_metrics(run / "metrics.csv")
    assert columns == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert "Total params: 195" in (run / "summary.txt").read_text()  # 8*16+16 + 16*3+3

    # The saved config is the resolved one, every key written out (not only those that differ
    # from today's defaults), and it loads back to the config the run was started with.
    saved = (run / "config.yaml").read_text()
    assert yaml.safe_load(saved) == config_to_dict(expected_config)
    assert load_config(run / "config.yaml") == expected_config

    # last.pt holds the final weights: they give the test results written in results.json.
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == epochs
    results = json.loads((run / "results.json").read_text())
    outputs, targets = outputs_on_the_test_split(run, last["model"])
    assert results["test_samples"] == len(targets) == 60
    assert results["test_accuracy"] == pytest.approx((outputs.argmax(1) == targets).double().mean().item(), abs=1e-12)
    assert results["test_loss"] == pytest.approx(torch.nn.functional.cross_entropy(outputs, targets).item(), rel=1e-5)
    # best.pt holds the weights of the epoch with the lowest val_loss (the monitor by default).
    best_row = min(rows, key=lambda r: r["val_loss"])
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == best_row["epoch"]
    assert best["best"] == {"monitor": "val_loss", "value": best_row["val_loss"], "epoch": best_row["epoch"]}
    assert list(best["model"]) == list(last["model"])
    same_epoch = best["epoch"] == epochs
    assert all(torch.equal(best["model"][k], last["model"][k]) == same_epoch for k in last["model"])


def test_train_writes_a_complete_run_folder(tmp_path, tiny_config):
    runs = tmp_path / "runs"
    result = invoke("train", tiny_config, "--runs-dir", runs, "--set", "training.epochs=3")
    assert result.exit_code == 0, result.output
    run = last_run(runs)
    check_run_folder(run, 3, load_config(tiny_config, ["training.epochs=3"]))
    assert result.output.strip().splitlines()[-1] == f"Run folder: {run}"

    # The saved config re-runs the experiment into a new folder, with the same numbers.
    again = invoke("train", run / "config.yaml", "--runs-dir", runs)
    assert again.exit_code == 0, again.output
    first, second = sorted(runs.iterdir())

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(read_metrics(first / "metrics.csv")[1]) == strip(read_metrics(second / "metrics.csv")[1])
    assert (second / "config.yaml").read_text() == (first / "config.yaml").read_text()


@pytest.mark.e2e
def test_train_as_a_real_subprocess_with_piped_output(tmp_path, tiny_config):
    env = {**os.environ, "COLUMNS": "200"}
    args = ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.run(
        [sys.executable, "-m", "dlcli", *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout  # no control characters in a pipe
    assert lines[0].startswith("Epoch 1/2 - 10/10 - ") and "val_accuracy:" in lines[0]
    assert lines[1].startswith("Epoch 2/2 - 10/10 - ")
    assert lines[-1].startswith("Run folder: ")
    check_run_folder(tmp_path / lines[-1].removeprefix("Run folder: "), 2, load_config(tiny_config), command=args)


def test_live_display_on_a_terminal(tmp_path, tiny_config):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    train(load_config(tiny_config), runs_dir=tmp_path / "runs", console=console, draw_plots=False)
    text = out.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "━" in text
    assert "10/10" in text and "/step" in text and "val_accuracy" in text


def test_quiet_prints_only_the_result(tmp_path, tiny_config):
    # training.monitor picks the metric that best.pt and the printed best value follow.
    result = invoke(
        "train", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet", "--set", "training.monitor=val_accuracy"
    )
    assert result.exit_code == 0
    run = last_run(tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    best_row = max(read_metrics(run / "metrics.csv")[1], key=lambda r: r["val_accuracy"])
    assert results["best"] == {"monitor": "val_accuracy", "value": best_row["val_accuracy"], "epoch": best_row["epoch"]}
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=True)["epoch"] == best_row["epoch"]
    assert result.output.splitlines() == [
        (
            f"test_loss: {results['test_loss']:.4f}  test_accuracy: {results['test_accuracy']:.4f}  "
            f"best val_accuracy: {best_row['val_accuracy']:.4f} (epoch {best_row['epoch']})"
        ),
        f"Run folder: {run}",
    ]


def test_print_config_shows_overrides_and_exits(tmp_path, tiny_config):
    result = invoke(
        "train", tiny_config, "--print-config", "--set", "training.epochs=7", "--runs-dir", tmp_path / "runs"
    )
    assert result.exit_code == 0
    assert yaml.safe_load(result.output) == config_to_dict(load_config(tiny_config, ["training.epochs=7"]))
    assert yaml.safe_load(result.output)["training"]["epochs"] == 7
    assert not (tmp_path / "runs").exists()


def test_summary_of_the_mnist_cnn():
    result = invoke("summary", ROOT / "configs/mnist_cnn.yaml")
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "(None, 26, 26, 32)",
        "(None, 13, 13, 32)",
        "(None, 11, 11, 64)",
        "(None, 5, 5, 64)",
        "(None, 1600)",
        "(None, 10)",
        "320",
        "18,496",
        "16,010",
        "Total params: 34,826",
    ):
        assert text in out, text


def test_summary_json_and_verbose():
    result = invoke("summary", ROOT / "configs/imdb_binary.yaml", "--json")
    data = json.loads(result.output)
    assert data["total_params"] == 160_305 and [layer["params"] for layer in data["layers"]] == [160_016, 272, 17]
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
        (
            ["train", "CONFIG", "--set", "model={layers: [{conv2d: {filters: 2, kernel_size: 3}}]}"],
            "needs an image input",
        ),
        (
            ["train", "CONFIG", "--set", "data={dataset: mnist, root: nowhere, download: false}"],
            "Cannot find the mnist files",
        ),
        (
            ["train", "CONFIG", "--set", "data.dataset=mnist"],  # the config's synthetic: options stay behind
            "data.synthetic: is a key of synthetic data, and data.dataset is mnist",
        ),
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
        (
            "regression",
            "mse",
            {"layers": [{"dense": {"units": 8, "activation": "tanh"}}, {"dense": {"units": 3}}]},
            "mae",
        ),
        (
            "multiclass",
            "categorical_crossentropy",
            {"preset": "cnn", "filters": [8], "kernel_size": 3, "dropout": 0.0},
            "accuracy",
        ),
    ],
)
def test_the_four_problem_types_train_end_to_end(tmp_path, task, loss, model, metric):
    raw = synthetic_config(epochs=4)
    raw["data"]["synthetic"].update(
        task=task, classes=3, input_shape=[8, 8, 1] if model.get("preset") == "cnn" else [8]
    )
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
    # It learns: without optimizer steps every epoch's loss would be the same. Measured on the
    # CPU: the last epoch's training loss is 0.50 to 0.78 of the first's, val_loss falls too.
    assert rows[-1]["loss"] < 0.85 * rows[0]["loss"] and rows[-1]["val_loss"] < rows[0]["val_loss"]
    # And well above chance (0.5 per bit, 1/3 for 3 classes); measured: binary 0.93, multilabel
    # 0.64, multiclass 0.58 val_accuracy; regression val_mae 0.75 of the first epoch's.
    floor = {"binary": 0.8, "multilabel": 0.6, "multiclass": 0.5}
    if metric == "accuracy":
        assert rows[-1]["val_accuracy"] >= floor[task], rows[-1]
    else:
        assert rows[-1]["val_mae"] < 0.85 * rows[0]["val_mae"], rows


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
    from dlcli.plan import plan_experiment

    raw = synthetic_config(epochs=3)
    raw["data"]["synthetic"].update(input_shape=[10, 10, 3], samples=160)
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


# A program that calls dlcli's main() as `dlcli` does, and notes what ran at exit: its exit
# handler, and the teardown of its module globals (an object's __del__), which the normal
# interpreter exit does and dlcli's skips.
EXIT_PROBE = """
import atexit, sys
notes = sys.argv[1]

class Teardown:
    def __del__(self, notes=notes, open=open):
        open(notes + ".teardown", "w").close()

probe = Teardown()
atexit.register(lambda: open(notes + ".atexit", "w").write(str(sys.gettrace() is not None)))
sys.argv = ["dlcli", *sys.argv[2:]]
from dlcli.cli import main
{call}
"""


@pytest.mark.parametrize("as_program", [True, False])
def test_the_program_skips_the_interpreter_teardown_but_not_exit_handlers(tmp_path, as_program):
    # After torch the teardown took 1-2 s; exit codes, output and exit handlers are unchanged.
    # main() called from a function (someone's own code) leaves the process to exit normally.
    call = "main()" if as_program else "def run():\n    main()\nrun()"
    script = tmp_path / "probe.py"
    script.write_text(EXIT_PROBE.format(call=call))
    for name, args, code in (("ok", ["--version"], 0), ("bad", ["train", str(tmp_path / "missing.yaml")], 2)):
        notes = tmp_path / name
        proc = subprocess.run([sys.executable, script, notes, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, proc.stderr
        if code == 0:
            assert proc.stdout.startswith(f"dlcli {dlcli.__version__} (Python ")
        else:
            assert proc.stderr.startswith(f"Error: Config file '{tmp_path / 'missing.yaml'}' does not exist.")
        traced = Path(f"{notes}.atexit").read_text() == "True"  # coverage in subprocesses: a normal exit
        assert Path(f"{notes}.teardown").exists() == (not as_program or traced)


def test_train_pauses_the_garbage_collector_until_training_begins_and_restores_it(tmp_path, monkeypatch):
    from dlcli.engine import Trainer

    seen = {}
    fit, train_one_epoch = Trainer.fit, Trainer.train_one_epoch

    def recording_fit(self, *args, **kwargs):
        seen["setup"] = gc.isenabled()  # imports, data, model, optimizer: no full collections
        return fit(self, *args, **kwargs)

    def recording_epoch(self, *args, **kwargs):
        seen.setdefault("training", (gc.isenabled(), gc.get_freeze_count() > 0))
        return train_one_epoch(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    monkeypatch.setattr(Trainer, "train_one_epoch", recording_epoch)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    config = write_config(tmp_path / "c.yaml", synthetic_config())
    assert invoke("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0
    # Training runs with the collector on, the start-up's objects frozen out of its scans.
    assert seen == {"setup": False, "training": (True, True)}
    assert gc.isenabled() and gc.get_freeze_count() == 0  # as it was, for whatever runs next
    bad = write_config(tmp_path / "bad.yaml", {**synthetic_config(), "optimizer": {"name": "nope"}})
    assert invoke("train", bad, "--runs-dir", tmp_path / "runs").exit_code == 2
    assert gc.isenabled() and gc.get_freeze_count() == 0  # also after a refused config


def test_an_error_message_with_a_librarys_colour_codes_reaches_a_pipe_as_plain_text(capsys):
    import typer

    from dlcli.cli import fail

    # torch.export's messages carry ANSI colours; a log file must not get the escape sequences.
    with pytest.raises(typer.Exit) as stopped:
        fail("Exporting the model as pt2 failed: \x1b[31mUnsupported\x1b[0m operator [aten.foo]")
    assert stopped.value.exit_code == 2
    assert capsys.readouterr().err == "Error: Exporting the model as pt2 failed: Unsupported operator [aten.foo]\n"
