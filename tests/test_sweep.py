"""dlcli sweep: the search-space syntax, checks before any trial, the study (claims, draws,
objectives, summaries), the display, and whole sweeps whose trials are real `dlcli train`
processes (grid with a failure, best epochs, pruning, Ctrl-C, SIGKILL and resume, two workers
on PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from conftest import import_or_skip_unless_ci, invoke, skip_unless_ci, synthetic_config, write_config
from dlcli.config import load_config
from dlcli.errors import ConfigError
from dlcli.rundir import read_metrics
from dlcli.sweep.space import Param, grid_points, parse_cli_param, parse_spec
from dlcli.sweep.spec import SweepRequest, plan_sweep, read_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trial_env(monkeypatch):
    """Trial processes import this checkout's dlcli whatever their working folder."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def sweep_dirs(runs: Path) -> list[Path]:
    return sorted((runs / "sweeps").iterdir())


# -- the search space -----------------------------------------------------------------------


def test_space_syntax():
    assert parse_cli_param("optimizer.lr=[0.0001,0.001,0.01]") == Param(
        "optimizer.lr", "grid", values=(0.0001, 0.001, 0.01)
    )
    assert parse_cli_param("optimizer.lr=loguniform(1e-5,1e-1)") == Param(
        "optimizer.lr", "loguniform", low=1e-5, high=0.1, log=True
    )
    assert parse_cli_param("model.dropout=uniform(0,0.5)") == Param("model.dropout", "uniform", low=0.0, high=0.5)
    assert parse_cli_param("training.batch_size=int(16,256,log)") == Param(
        "training.batch_size", "int", low=16, high=256, log=True
    )
    assert parse_cli_param("training.epochs=int(1, 3)") == Param("training.epochs", "int", low=1, high=3)
    hidden = parse_cli_param("model.hidden=choice([64],[128,64])")
    assert hidden == Param("model.hidden", "choice", values=([64], [128, 64]))
    # Lists travel through Optuna as their JSON text and come back as lists.
    assert hidden.encoded_choices() == ["[64]", "[128, 64]"] and hidden.decode("[128, 64]") == [128, 64]
    assert parse_cli_param("optimizer.name=choice(adam, sgd)").values == ("adam", "sgd")
    assert parse_spec("model.hidden", [[16], [32, 16]]) == Param("model.hidden", "grid", values=([16], [32, 16]))
    assert parse_spec("optimizer.lr", "loguniform(1e-4, 1e-2)").spec_text() == "loguniform(0.0001, 0.01)"
    # A range is checked at both ends and at a point inside that is not a whole number.
    low, inside, high = Param("training.batch_size", "uniform", low=8.0, high=64.0).values_to_check()
    assert (low, high) == (8.0, 64.0) and not inside.is_integer() and 8 < inside < 64


@pytest.mark.parametrize(
    "text, message",
    [
        ("optimizer.lr", "-p 'optimizer.lr': expected KEY=SPEC."),
        ("optimizer.lr=0.1", "-p optimizer.lr=0.1: a single value is not a search space."),
        ("optimizer.lr=[]", "-p optimizer.lr=[]: the list is empty; give at least one value."),
        ("optimizer.lr=[0.1,0.1]", "-p optimizer.lr=[0.1,0.1]: the value 0.1 is listed twice."),
        (
            "optimizer.lr=logunif(1,2)",
            "-p optimizer.lr=logunif(1,2): unknown function 'logunif'; valid are: loguniform, uniform, int, choice.",
        ),
        (
            "optimizer.lr=loguniform(0,1)",
            "-p optimizer.lr=loguniform(0,1): loguniform(...) needs a lower bound above 0, found 0.0.",
        ),
        (
            "optimizer.lr=uniform(1,1)",
            "-p optimizer.lr=uniform(1,1): the lower bound 1.0 must be below the upper bound 1.0.",
        ),
        (
            "training.batch_size=int(8,64,lg)",
            "-p training.batch_size=int(8,64,lg): the third argument of int(...) can only be `log`, found 'lg'.",
        ),
        (
            "training.batch_size=int(8.5,64)",
            "-p training.batch_size=int(8.5,64): the lower bound of int(...) must be a whole number, found 8.5.",
        ),
        ("model.hidden=choice()", "-p model.hidden=choice(): choice(...) needs at least one value."),
    ],
)
def test_space_syntax_errors(text, message):
    with pytest.raises(ConfigError) as info:
        parse_cli_param(text)
    assert info.value.message == message


def test_grid_points_are_the_product_of_the_lists_in_order():
    space = [Param("a", "grid", values=(1, 2)), Param("b", "grid", values=("x", "y", "z"))]
    points = grid_points(space)
    assert points == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]


# -- checks before the first trial ----------------------------------------------------------


def request(config: Path, *params: str, **options) -> SweepRequest:
    return SweepRequest(
        config=config, overrides=options.pop("overrides", []), params=[parse_cli_param(p) for p in params], **options
    )


def test_every_key_and_value_is_checked_with_the_messages_of_set(tiny_config):
    # An unknown key: the same words as --set, after the parameter that brought it.
    with pytest.raises(ConfigError) as by_set:
        load_config(tiny_config, ["model.hiden=[8]"])
    with pytest.raises(ConfigError) as by_sweep:
        plan_sweep(request(tiny_config, "model.hiden=[[8],[16]]"))
    assert by_set.value.message.startswith("--set model.hiden: unknown key 'hiden' in model")
    assert by_sweep.value.message == "-p model.hiden=[[8], [16]] (value [8]): " + by_set.value.message[len("--set ") :]
    assert by_sweep.value.hint == by_set.value.hint == "Did you mean 'hidden'?"
    # A range whose end does not fit.
    with pytest.raises(ConfigError) as info:
        plan_sweep(request(tiny_config, "optimizer.lr=uniform(-1,1)", trials=3))
    assert info.value.message == (
        "-p optimizer.lr=uniform(-1.0, 1.0) (value -1.0): optimizer.lr: must be greater than "
        "0.0, found -1.0 (learning rate)."
    )
    with pytest.raises(ConfigError) as info:
        plan_sweep(request(tiny_config, "model.dropout=uniform(0,1)", trials=3))
    assert "(value 1.0): model.dropout: must be at least 0.0 and less than 1.0, found 1.0" in info.value.message
    # A float range for an integer key fails before any trial, with the fix.
    with pytest.raises(ConfigError) as info:
        plan_sweep(request(tiny_config, "training.batch_size=uniform(8,64)", trials=3))
    assert "training.batch_size: expected a whole number, found float" in info.value.message
    assert info.value.hint == "Draw whole numbers with int(8, 64)."
    # A value that validates alone but makes a model that cannot work (checked like dlcli summary).
    with pytest.raises(ConfigError) as info:
        plan_sweep(request(tiny_config, "optimizer.name=[adam,adamax]"))
    assert "(value adamax): optimizer.name: unknown optimizer 'adamax'" in info.value.message


def test_method_trials_and_objective(tiny_config):
    spec = plan_sweep(request(tiny_config, "optimizer.lr=[0.01,0.1]", "training.batch_size=[8,16,32]"))
    assert (spec.method, spec.trials, spec.prune) == ("grid", 6, "none")
    assert (spec.metric, spec.direction) == ("val_loss", "min")  # the run's monitor
    spec = plan_sweep(request(tiny_config, "optimizer.lr=loguniform(1e-4,1e-1)", trials=7, metric="val_accuracy"))
    assert (spec.method, spec.trials, spec.prune, spec.direction) == ("tpe", 7, "median", "max")
    with pytest.raises(ConfigError, match=r"--method tpe draws values at random: say how many trials with --trials N"):
        plan_sweep(request(tiny_config, "optimizer.lr=loguniform(1e-4,1e-1)"))
    with pytest.raises(ConfigError, match=r"--method grid runs the product of lists, and -p optimizer.lr=loguniform"):
        plan_sweep(request(tiny_config, "optimizer.lr=loguniform(1e-4,1e-1)", method="grid"))
    with pytest.raises(ConfigError, match=r"--trials 3: the grid has only 2 points"):
        plan_sweep(request(tiny_config, "optimizer.lr=[0.01,0.1]", trials=3))
    with pytest.raises(ConfigError) as info:
        plan_sweep(request(tiny_config, "optimizer.lr=[0.01,0.1]", metric="val_acc"))
    assert (
        info.value.message
        == "--metric 'val_acc' is not a logged metric; logged are: loss, accuracy, val_loss, val_accuracy."
    )


def test_an_image_folder_with_a_val_folder_optimises_the_runs_monitor(tmp_path):
    # Validation comes from the val/ folder, not from data.validation_split: the run monitors
    # val_loss, and so must the sweep's default objective (and --metric may name val_ columns).
    from PIL import Image

    root = tmp_path / "images"
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for k, name in enumerate(("a", "b")):
            for i in range(count):
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (6, 4), 40 + 100 * k + i).save(path)
    raw = synthetic_config(epochs=1)
    raw["name"] = "folders"
    raw["data"] = {"dataset": "image_folder", "root": str(root)}
    raw["model"] = {"preset": "mlp", "hidden": [4]}
    raw["loss"] = "auto"
    config = write_config(tmp_path / "folders.yaml", raw)
    spec = plan_sweep(request(config, "optimizer.lr=[0.01,0.1]"))
    assert (spec.metric, spec.direction) == ("val_loss", "min")
    assert plan_sweep(request(config, "optimizer.lr=[0.01,0.1]", metric="val_accuracy")).direction == "max"
    result = invoke("train", config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    run = Path(result.output.strip().splitlines()[-1].split("Run folder: ")[1])
    assert json.loads((run / "run.json").read_text())["monitor"] == spec.metric
    # Without the val/ folder there is no validation data: the run and the sweep watch loss.
    shutil.rmtree(root / "val")
    assert plan_sweep(request(config, "optimizer.lr=[0.01,0.1]")).metric == "loss"


def test_sweep_section_in_the_config_file(tmp_path):
    raw = synthetic_config()
    raw["sweep"] = {
        "method": "random",
        "trials": 4,
        "metric": "val_accuracy",
        "seed": 7,
        "params": {"optimizer.lr": "loguniform(1e-4, 1e-1)", "model.hidden": [[8], [16]]},
    }
    path = write_config(tmp_path / "with_sweep.yaml", raw)
    spec = plan_sweep(request(path))
    assert (spec.method, spec.trials, spec.metric, spec.direction, spec.seed) == ("random", 4, "val_accuracy", "max", 7)
    assert [p.key for p in spec.space] == ["optimizer.lr", "model.hidden"]
    assert "sweep" not in spec.base  # the base config is the experiment alone
    # -p replaces the file's entry for a key, the command line's options win.
    spec = plan_sweep(request(path, "optimizer.lr=[0.01,0.02]", trials=2))
    assert spec.space[0] == Param("optimizer.lr", "grid", values=(0.01, 0.02)) and spec.trials == 2
    raw["sweep"]["trails"] = 3
    write_config(path, raw)
    with pytest.raises(ConfigError, match=r"sweep.trails: unknown key; valid keys are: .*Did you mean 'trials'"):
        plan_sweep(request(path))


# -- the study: claims, values, summaries (Optuna, no training) -----------------------------


def make_study(tmp_path: Path, tiny_config: Path, *params: str, **options):
    from dlcli.sweep.space import encode_choice
    from dlcli.sweep.spec import create_sweep_dir
    from dlcli.sweep.study import Study

    spec = plan_sweep(request(tiny_config, *params, **options))
    folder = create_sweep_dir(tmp_path / "runs", spec.name, "s1")
    spec.id = folder.name
    points = (
        [{k: encode_choice(v) for k, v in p.items()} for p in grid_points(spec.space)][: spec.trials]
        if spec.method == "grid"
        else [{} for _ in range(spec.trials)]
    )
    return folder, spec, Study.create(spec, spec.storage_url(folder), points)


def test_parallel_claims_never_take_a_trial_twice(tmp_path, tiny_config):
    from dlcli.sweep.study import Study

    folder, spec, study = make_study(tmp_path, tiny_config, "optimizer.lr=[0.001,0.002,0.003,0.004,0.005,0.006]")
    other = Study.open(spec, spec.storage_url(folder))  # a second worker on the same journal file
    claimed: list[int] = []

    def claim_all(s):
        while (trial_id := s.claim_waiting()) is not None:
            claimed.append(trial_id)

    threads = [threading.Thread(target=claim_all, args=(s,)) for s in (study, other, study)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 6
    values = sorted(study.suggest(i, spec.space)["optimizer.lr"] for i in claimed)
    assert values == [0.001, 0.002, 0.003, 0.004, 0.005, 0.006]  # every grid point once
    assert study.claim_waiting() is None and len(study.trials()) == 6  # never a seventh


def test_summary_csv_and_best_yaml_from_the_study(tmp_path, tiny_config):
    from dlcli.sweep.results import rows_from_study, sort_rows, write_summaries

    folder, spec, study = make_study(tmp_path, tiny_config, "model.hidden=[[8],[16],[4,4]]", metric="val_accuracy")
    outcomes = [("completed", 0.7), ("completed", 0.9), ("failed", None)]
    for status, value in outcomes:
        trial_id = study.claim_waiting()
        study.suggest(trial_id, spec.space)
        study.set_attrs(
            trial_id,
            status=status,
            best_value=value,
            best_epoch=2,
            epochs=2,
            seconds=1.5,
            error="boom" if status == "failed" else None,
        )
        study.finish(trial_id, status, value)
    rows = sort_rows(rows_from_study(folder, spec, study.trials()), spec.direction)
    assert [(r.number, r.status, r.value, r.params) for r in rows] == [
        (1, "completed", 0.9, {"model.hidden": [16]}),
        (0, "completed", 0.7, {"model.hidden": [8]}),
        (2, "failed", None, {"model.hidden": [4, 4]}),
    ]
    best = write_summaries(folder, spec, rows)
    assert best.number == 1
    with open(folder / "summary.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0] == [
        "trial",
        "status",
        "val_accuracy",
        "best_epoch",
        "epochs",
        "seconds",
        "model.hidden",
        "folder",
        "error",
    ]
    assert table[1][:7] == ["1", "completed", "0.9", "2", "2", "1.5", "[16]"] and table[3][-1] == "boom"
    best_config = load_config(folder / "best.yaml")
    assert best_config.model.hidden == (16,) and best_config == load_config(tiny_config, ["model.hidden=[16]"])


# -- drawing values: the declared distributions, reproducible by seed ------------------------

SEARCHED = (
    "optimizer.lr=loguniform(1e-5,1e-1)",  # log-midpoint (geometric mean) 1e-3, arithmetic ~0.05
    "model.dropout=uniform(0.01,0.5)",  # arithmetic midpoint 0.255, log-midpoint ~0.07
    "training.batch_size=int(4,256,log)",  # log-midpoint 32, arithmetic 130
)


def in_memory_study(monkeypatch, tiny_config: Path, *params: str, **options):
    """A sweep's study created by the study module itself, on Optuna's in-memory storage."""
    import optuna

    from dlcli.sweep import study as study_module

    storage = optuna.storages.InMemoryStorage()
    monkeypatch.setattr(study_module, "make_storage", lambda url, must_exist=False: storage)
    spec = plan_sweep(request(tiny_config, *params, sweep_id="draws", **options))
    return spec, study_module.Study.create(spec, "in-memory", [{} for _ in range(spec.trials)])


def draw_all(study, spec, objective=None) -> list[dict]:
    """Every planned trial's values in turn, as the workers draw them; each trial is told
    objective(index) when one is given, else left running (parallel workers at the start)."""
    draws = []
    while (trial_id := study.claim_waiting()) is not None:
        draws.append(study.suggest(trial_id, spec.space))
        if objective is not None:
            study.finish(trial_id, "completed", objective(len(draws)))
    return draws


def share_below(values, threshold) -> float:
    return sum(v < threshold for v in values) / len(values)


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_draws_follow_the_declared_distributions(monkeypatch, tiny_config, method):
    spec, study = in_memory_study(monkeypatch, tiny_config, *SEARCHED, method=method, trials=200, seed=3)
    draws = draw_all(study, spec)
    lr, dropout, batch = ([d[key] for d in draws] for key in ("optimizer.lr", "model.dropout", "training.batch_size"))
    assert all(1e-5 <= v <= 1e-1 for v in lr) and all(0.01 <= v <= 0.5 for v in dropout)
    assert all(isinstance(v, int) and 4 <= v <= 256 for v in batch)
    # A log scale splits about half/half around the geometric mean of its bounds (a uniform
    # draw would put ~1 % of lr and ~11 % of batch sizes below it), a linear scale around the
    # arithmetic midpoint (a log draw would put ~83 % of dropouts below it).
    assert 0.35 < share_below(lr, math.sqrt(1e-5 * 1e-1)) < 0.65
    assert 0.35 < share_below(batch, math.sqrt(4 * 256)) < 0.65
    assert 0.35 < share_below(dropout, (0.01 + 0.5) / 2) < 0.65


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_the_same_seed_draws_the_same_values_and_another_seed_others(monkeypatch, tiny_config, method):
    # 20 trials: past TPE's random start-up trials, so its model's draws are compared too.
    def noise(i: int) -> float:
        return (i * 0.6180339887) % 1.0

    def draws(seed: int) -> list[dict]:
        spec, study = in_memory_study(monkeypatch, tiny_config, *SEARCHED, method=method, trials=20, seed=seed)
        return draw_all(study, spec, noise)

    first = draws(7)
    assert draws(7) == first
    other = draws(8)
    assert all(a[key] != b[key] for a, b in zip(first, other) for key in ("optimizer.lr", "model.dropout"))


# -- the objective: a trial's best epoch, in the metric's direction ---------------------------

NAN, INF = float("nan"), float("inf")


def test_a_trials_value_is_its_best_finite_epoch_in_the_metrics_direction():
    from dlcli.sweep.spec import best_value

    rows = [
        {"epoch": 1, "val_loss": NAN, "val_accuracy": NAN},  # a NaN first must not stick
        {"epoch": 2, "val_loss": 0.9, "val_accuracy": 0.5},
        {"epoch": 3, "val_loss": 0.4, "val_accuracy": 0.7},
        {"epoch": 4, "val_loss": 0.6, "val_accuracy": 0.8},
        {"epoch": 5, "val_loss": -INF, "val_accuracy": INF},  # not finite: never the best
        {"epoch": 6, "val_loss": None, "val_accuracy": None},  # not logged this epoch
        {"epoch": 7, "val_loss": 0.4, "val_accuracy": 0.8},  # a tie keeps the earlier epoch
        {"epoch": 8, "val_loss": 0.5, "val_accuracy": 0.6},
    ]
    assert best_value(rows, "val_loss", "min") == (0.4, 3)
    assert best_value(rows, "val_accuracy", "max") == (0.8, 4)
    assert best_value(rows, "val_loss", "max") == (0.9, 2)
    assert best_value(rows, "val_accuracy", "min") == (0.5, 2)
    assert best_value(rows[:1] + rows[4:6], "val_loss", "min") == (None, None)
    assert best_value([], "val_loss", "min") == (None, None)


@pytest.mark.parametrize(
    "metric, direction, value, epoch", [("val_loss", "min", 0.4, 3), ("val_accuracy", "max", 0.8, 4)]
)
def test_a_finished_trial_is_told_its_best_epoch_from_its_metrics_csv(
    tmp_path, tiny_config, metric, direction, value, epoch
):
    from dlcli.sweep.results import best_row, rows_from_study, sort_rows
    from dlcli.sweep.worker import RunOptions, SweepRun, TrialView

    folder, spec, study = make_study(tmp_path, tiny_config, "optimizer.lr=[0.01,0.02,0.03]", metric=metric)
    assert spec.direction == direction  # the metric's own direction
    run = SweepRun(folder, spec, study, "", RunOptions(gpus=[]))
    curves = {
        "good": [(NAN, NAN), (0.9, 0.5), (0.4, 0.7), (0.6, 0.8), (0.5, 0.6)],
        "worse": [(1.2, 0.3), (1.0, 0.4), (1.1, 0.35)],
        "diverged": [(NAN, NAN), (NAN, NAN)],
    }
    views = {}
    for name, curve in curves.items():
        trial_id = study.claim_waiting()
        views[name] = view = TrialView(study.trial_number(trial_id), trial_id, {}, tmp_path / name)
        view.folder.mkdir()
        lines = ["epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"]
        lines += [f"{e},1.0,0.5,{loss},{acc},0.01,0.1" for e, (loss, acc) in enumerate(curve, start=1)]
        (view.folder / "metrics.csv").write_text("\n".join(lines) + "\n")
        run._finish_from_folder(view, "completed")
    good, worse, diverged = (study.trial(views[n].trial_id) for n in ("good", "worse", "diverged"))
    assert (good.state, good.value, good.attrs["best_epoch"], good.attrs["epochs"]) == ("completed", value, epoch, 5)
    assert worse.value == (1.0 if metric == "val_loss" else 0.4) and worse.attrs["best_epoch"] == 2
    assert diverged.state == "failed" and diverged.attrs["error"] == f"the run logged no finite value of {metric}"
    rows = sort_rows(rows_from_study(folder, spec, study.trials()), spec.direction)
    assert [r.number for r in rows] == [views[n].number for n in ("good", "worse", "diverged")]
    assert best_row(rows, spec.direction).number == views["good"].number


def test_a_joining_worker_draws_other_values_than_the_creator(monkeypatch, tiny_config):
    # Another process's worker must not replay the creator's seeded stream (every value twice).
    from dlcli.sweep.study import Study

    spec, creator = in_memory_study(monkeypatch, tiny_config, *SEARCHED, method="random", trials=4, seed=7)
    joiner = Study.open(spec, "in-memory")
    drawn = [s.suggest(s.claim_waiting(), spec.space)["optimizer.lr"] for s in (creator, joiner, creator, joiner)]
    assert len(set(drawn)) == 4


def test_pruning_reports_skip_epochs_without_a_finite_value(monkeypatch, tiny_config):
    from dlcli.sweep.study import TrialReporter

    spec, study = in_memory_study(monkeypatch, tiny_config, *SEARCHED, method="random", trials=2)
    trial_id = study.claim_waiting()
    reporter = TrialReporter(spec.id, "in-memory", trial_id, "median", 0, 0)
    assert reporter.report(NAN, 1) is False and reporter.report(INF, 2) is False
    reporter.report(0.5, 3)
    assert study.trial(trial_id).intermediate == {3: 0.5}


def test_trial_environment_divides_threads_and_gpus(tmp_path, tiny_config, monkeypatch):
    from dlcli.sweep.spec import cpu_count
    from dlcli.sweep.worker import RunOptions, SweepRun

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    folder, spec, study = make_study(tmp_path, tiny_config, "optimizer.lr=[0.01,0.1]")
    spec.base["device"] = "auto"
    run = SweepRun(folder, spec, study, "", RunOptions(workers=2, gpus=["3", "5"]))
    envs = [run.processes.environment(slot) for slot in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5", "3"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {str(max(1, cpu_count() // 2))}
    spec.base["device"] = "cpu"
    on_cpu = SweepRun(folder, spec, study, "", RunOptions(workers=2)).processes.environment(0)
    assert on_cpu.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # left as it was


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_trials_are_those_whose_worker_is_gone(tmp_path, tiny_config):
    from dlcli.sweep.worker import STALE_AFTER_S, RunOptions, SweepRun

    folder, spec, study = make_study(tmp_path, tiny_config, "optimizer.lr=[0.001,0.002,0.003,0.004,0.005]")
    here, now = socket.gethostname(), time.time()
    owners = [
        dict(host=here, worker_pid=_dead_pid(), heartbeat=now),  # killed on this machine
        dict(host=here, worker_pid=os.getpid(), heartbeat=now),  # alive: this very process
        dict(host="elsewhere", worker_pid=1, heartbeat=now - STALE_AFTER_S - 1),  # silent too long
        dict(host="elsewhere", worker_pid=1, heartbeat=now),
    ]  # another machine, alive
    ids = []
    for attrs in owners:
        trial_id = study.claim_waiting()
        study.set_attrs(trial_id, **attrs)
        ids.append(trial_id)
    run = SweepRun(folder, spec, study, "", RunOptions(gpus=[]))
    assert run.find_stale() == [ids[0], ids[2]]  # the fifth is waiting, not stale


def test_max_failures_and_fail_fast_stop_the_sweep(tmp_path, tiny_config):
    from dlcli.sweep.worker import RunOptions, SweepRun

    folder, spec, study = make_study(tmp_path, tiny_config, "optimizer.lr=[0.001,0.002,0.003]")
    run = SweepRun(folder, spec, study, "", RunOptions(gpus=[], max_failures=2))
    run._record_failure(study.claim_waiting(), "first")
    assert not run.stopping
    run._record_failure(study.claim_waiting(), "second")
    assert run.stopping and run.stop_reason == "2 trial(s) failed (--max-failures 2); the last: second"
    assert [t.attrs["error"] for t in study.trials() if t.state == "failed"] == ["first", "second"]
    fast = SweepRun(folder, spec, study, "", RunOptions(gpus=[], fail_fast=True))
    fast._after_failure("boom")
    assert fast.stop_reason == "2 trial(s) failed (--fail-fast); the last: boom"


def test_plain_display_lines(tmp_path, tiny_config):
    from dlcli.sweep.display import SweepDisplay
    from dlcli.sweep.worker import TrialView

    spec = plan_sweep(request(tiny_config, "optimizer.lr=[0.01,0.1]"))
    out = io.StringIO()
    display = SweepDisplay(Console(file=out, width=200), spec, tmp_path)
    display.start([])
    view = TrialView(0, 0, {"optimizer.lr": 0.01}, tmp_path, started=100.0)
    display.event("started", view)
    view.status, view.value, view.best_epoch, view.epochs_done, view.finished = "completed", 0.51234, 2, 2, 112.0
    display.event("finished", view)
    failed = TrialView(
        1, 1, {"optimizer.lr": 0.1}, tmp_path, status="failed", started=100.0, finished=103.0, error="boom"
    )
    display.event("finished", failed)
    assert out.getvalue().splitlines() == [
        "Trial 0 started: lr=0.01",
        "Trial 0 completed in 12s: val_loss 0.5123 (epoch 2)  best so far",
        "Trial 1 failed after 3.0s: boom",
    ]
    live_out = io.StringIO()
    live = SweepDisplay(Console(file=live_out, width=120, force_terminal=True), spec, tmp_path)
    live.start([])
    live.event("finished", view)
    live.stop()
    text = live_out.getvalue()
    assert "Sweep " in text and "1/2 trials done" in text and "0.5123 (2)" in text


# -- whole sweeps: every trial a real `dlcli train` process ---------------------------------


def test_grid_sweep_with_a_failing_point(tmp_path, tiny_config, trial_env):
    runs = tmp_path / "runs"
    # max_train_samples=1 leaves no sample to train on once validation is held out: that trial
    # fails with dlcli's message, and the sweep goes on.
    result = invoke(
        "sweep",
        tiny_config,
        "-p",
        "data.max_train_samples=[1,150]",
        "--set",
        "training.epochs=1",
        "--workers",
        "2",
        "--runs-dir",
        runs,
        "--id",
        "grid",
    )
    assert result.exit_code == 0, result.output
    folder = runs / "sweeps" / "grid"
    assert sorted(p.name for p in (folder / "trials").iterdir()) == ["0000-tiny", "0001-tiny"]
    assert "Trial 0 failed after" in result.output and "leaves none to train on" in result.output
    assert "Sweep finished: 2 trials (1 completed, 1 failed)." in result.output
    good = folder / "trials" / "0001-tiny"
    info = json.loads((good / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed_from_epoch"] is None
    assert info["sweep"] == {
        "id": "grid",
        "trial": 1,
        "params": {"data.max_train_samples": 150},
        "folder": str(folder.resolve()),
    }
    _, rows = read_metrics(good / "metrics.csv")
    with open(folder / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert [(r["trial"], r["status"]) for r in summary] == [("1", "completed"), ("0", "failed")]
    assert float(summary[0]["val_loss"]) == rows[0]["val_loss"]
    assert "data.validation_split: holding out 1 of 1 training samples leaves none to train on" in summary[1]["error"]
    assert load_config(folder / "best.yaml") == load_config(good / "config.yaml")
    assert {p.name for p in folder.iterdir()} >= {
        "sweep.yaml",
        "study.journal",
        "summary.csv",
        "best.yaml",
        "objective.png",
        "curves-loss.png",
        "curves-accuracy.png",
    }
    assert read_spec(folder).trials == 2
    # The trial is an ordinary run folder: dlcli's other commands work on it.
    assert invoke("evaluate", good).exit_code == 0
    listing = invoke("runs", "--dir", runs)
    assert listing.exit_code == 0 and "Sweep" in listing.output and "max_train_samples=150" in listing.output
    assert "1/2 trials finished" in listing.output or "2/2 trials finished" in listing.output
    summary_json = json.loads(invoke("sweep", "summary", folder, "--json").output)
    assert summary_json["sweep"]["counts"] == {"completed": 1, "failed": 1}
    assert summary_json["best"]["number"] == 1 and summary_json["best"]["config"] == str(folder / "best.yaml")
    plotted = invoke("sweep", "plot", "grid", "--runs-dir", runs, "--out", tmp_path / "plots")
    assert plotted.exit_code == 0 and (tmp_path / "plots" / "objective.png").stat().st_size > 1000
    # The best config trains as it is.
    again = invoke("train", folder / "best.yaml", "--runs-dir", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.output


def test_each_trials_value_is_its_best_epoch_with_three_epoch_trials(tmp_path, tiny_config, trial_env):
    # val_accuracy: higher is better. A learning rate too small to change a prediction ties its
    # epochs (the earliest counts); one that learns improves on its first epoch.
    runs = tmp_path / "runs"
    result = invoke(
        "sweep",
        tiny_config,
        "-p",
        "optimizer.lr=[0.0000001,0.05]",
        "--set",
        "training.epochs=3",
        "--metric",
        "val_accuracy",
        "--workers",
        "2",
        "--runs-dir",
        runs,
        "--id",
        "obj",
    )
    assert result.exit_code == 0, result.output
    folder = runs / "sweeps" / "obj"
    with open(folder / "summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    best_of = {}
    for row in summary:
        curve = read_metrics(folder / row["folder"] / "metrics.csv")[1]
        assert [r["epoch"] for r in curve] == [1, 2, 3] and row["status"] == "completed"
        best = max(r["val_accuracy"] for r in curve)
        epoch = next(r["epoch"] for r in curve if r["val_accuracy"] == best)
        assert (float(row["val_accuracy"]), int(row["best_epoch"]), int(row["epochs"])) == (best, epoch, 3)
        best_of[float(row["optimizer.lr"])] = (best, epoch)
    values = [float(row["val_accuracy"]) for row in summary]
    assert values == sorted(values, reverse=True)  # best first
    winner = max(best_of, key=lambda lr: best_of[lr][0])
    assert load_config(folder / "best.yaml").optimizer.lr == winner


def test_median_pruning_stops_a_hopeless_trial_and_keeps_its_folder(tmp_path, tiny_config, trial_env):
    runs = tmp_path / "runs"
    result = invoke(
        "sweep",
        tiny_config,
        "-p",
        "optimizer.lr=[0.05,0.000001]",
        "--prune",
        "median",
        "--prune-startup-trials",
        "1",
        "--runs-dir",
        runs,
        "--id",
        "pr",
        "--fail-fast",
    )
    assert result.exit_code == 0, result.output
    pruned = runs / "sweeps" / "pr" / "trials" / "0001-tiny"
    info = json.loads((pruned / "run.json").read_text())
    assert (info["status"], info["pruned_at_epoch"], info["epochs_completed"]) == ("pruned", 1, 1)
    assert [r["epoch"] for r in read_metrics(pruned / "metrics.csv")[1]] == [1]
    assert "Trial 1 pruned after epoch 1" in result.output
    assert "Sweep finished: 2 trials (1 completed, 1 pruned)." in result.output


# Trials that must be caught mid-run (after their first epoch, before their last) pause there:
# no wait or poll can promise that on a loaded machine, where a trial may run all its epochs
# before the test looks. A sitecustomize on the trials' PYTHONPATH wraps the sweep's trial
# callback: after the epoch named by DLCLI_TEST_PAUSE_AFTER_EPOCH (saved by then), the trial
# writes its pid to DLCLI_TEST_PAUSE_DIR/<its folder name> and waits until it is signalled
# (the Ctrl-C its sweep passes on) or released (a file `release` there).
PAUSE_HOOK = """\
import os
import sys

if os.environ.get("DLCLI_TEST_PAUSE_AFTER_EPOCH") and "--sweep-trial" in sys.argv:
    import time
    from pathlib import Path

    from dlcli.sweep.trial import SweepTrialCallback

    after_epoch = int(os.environ["DLCLI_TEST_PAUSE_AFTER_EPOCH"])
    pauses = Path(os.environ["DLCLI_TEST_PAUSE_DIR"])
    on_epoch_end = SweepTrialCallback.on_epoch_end

    def pausing_on_epoch_end(self, epoch, logs, trainer):
        on_epoch_end(self, epoch, logs, trainer)
        if epoch != after_epoch:
            return
        note = pauses / (self.run_dir.name + ".tmp")
        note.write_text(str(os.getpid()))
        note.rename(pauses / self.run_dir.name)
        deadline = time.monotonic() + 300  # a failed test must not leave it waiting for ever
        while trainer.control.signal is None and not (pauses / "release").exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)

    SweepTrialCallback.on_epoch_end = pausing_on_epoch_end
"""


@pytest.fixture
def pause_dir(tmp_path, trial_env, monkeypatch) -> Path:
    """Where pausing trials say so (see PAUSE_HOOK); sweeps started with pausing_after(N) pause."""
    hook = tmp_path / "pause_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook) + os.pathsep + os.environ["PYTHONPATH"])
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    monkeypatch.setenv("DLCLI_TEST_PAUSE_DIR", str(pauses))
    return pauses


def pausing_after(epoch: int) -> dict[str, str]:
    """The environment of a sweep process whose trials pause after this epoch."""
    return dict(os.environ, DLCLI_TEST_PAUSE_AFTER_EPOCH=str(epoch))


def wait_for_paused(pauses: Path, names: list[str], sweep: subprocess.Popen, timeout: float = 300.0) -> list[int]:
    """The pids of these trials (by folder name) once all have paused; their sweep must live on."""
    deadline = time.monotonic() + timeout
    while not all((pauses / name).exists() for name in names):
        if sweep.poll() is not None:
            raise AssertionError(f"the sweep exited ({sweep.returncode}) before its trials paused")
        if time.monotonic() > deadline:
            raise AssertionError(f"no pause of {names} within {timeout} s: {sorted(p.name for p in pauses.iterdir())}")
        time.sleep(0.05)
    pids = [int((pauses / name).read_text()) for name in names]
    for name in names:
        (pauses / name).unlink()  # the next pause writes it again
    return pids


def _end_all(sweeps: list[subprocess.Popen], pauses: Path) -> None:
    """After a failed test: sweeps killed, and their paused trials released, which then see
    their sweep gone and stop."""
    (pauses / "release").touch()
    for proc in sweeps:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _run_info(trial: Path) -> dict:
    try:
        return json.loads((trial / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def test_ctrl_c_then_sigkill_then_resume_ends_with_exactly_the_planned_trials(tmp_path, trial_env, pause_dir):
    epochs = 3
    config = write_config(tmp_path / "c.yaml", synthetic_config(epochs=epochs))
    runs = tmp_path / "runs"
    folder = runs / "sweeps" / "k"
    names = ["0000-tiny", "0001-tiny"]
    trials = [folder / "trials" / name for name in names]
    cmd = [
        sys.executable,
        "-m",
        "dlcli",
        "sweep",
        str(config),
        "-p",
        "optimizer.lr=[0.01,0.02]",
        "--workers",
        "2",
        "--runs-dir",
        str(runs),
        "--id",
        "k",
    ]
    resume = [sys.executable, "-m", "dlcli", "sweep", "resume", "k", "--runs-dir", str(runs), "--workers", "2"]
    started: list[subprocess.Popen] = []
    try:
        # 1. Ctrl-C: trials stop at the end of a step, keep their complete epochs, exit 130. Each
        # waits after its first epoch until the SIGINT the sweep passes on reaches it, then stops
        # after one more step: exactly one complete epoch.
        sweep = subprocess.Popen(cmd, env=pausing_after(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(sweep)
        wait_for_paused(pause_dir, names, sweep)
        sweep.send_signal(signal.SIGINT)
        out, _ = sweep.communicate(timeout=300)
        assert sweep.returncode == 130, out
        assert "Resume with: dlcli sweep resume" in out
        for t in trials:
            info = _run_info(t)
            assert (info["status"], info["epochs_completed"]) == ("interrupted", 1)
            assert [r["epoch"] for r in read_metrics(t / "metrics.csv")[1]] == [1]
        # 2. Resume, then SIGKILL the sweep and its trial processes mid-way: each has resumed and
        # finished epoch 2 and waits there, so none can finish first.
        sweep = subprocess.Popen(
            resume, env=pausing_after(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        started.append(sweep)
        paused = wait_for_paused(pause_dir, names, sweep)
        sweep.kill()
        for pid in paused:  # alive: they wait until signalled
            os.kill(pid, signal.SIGKILL)
        sweep.communicate(timeout=60)
        for t in trials:
            assert "after epoch 1." in (t / "output.log").read_text()  # "Resuming <folder> after epoch 1."
            info = _run_info(t)  # killed: nothing could record the end
            assert (info["status"], info["epochs_completed"]) == ("running", 2)
    finally:
        _end_all(started, pause_dir)
    # 3. Resume after SIGKILL: the trials continue in their folders to exactly the planned epochs.
    result = invoke("sweep", "resume", "k", "--runs-dir", runs, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "Sweep finished: 2 trials (2 completed)." in result.output
    for t in trials:
        assert "after epoch 2." in (t / "output.log").read_text()
        assert _run_info(t)["status"] == "completed"
        assert [r["epoch"] for r in read_metrics(t / "metrics.csv")[1]] == list(range(1, epochs + 1))
    summary = json.loads(invoke("sweep", "summary", "k", "--runs-dir", runs, "--json").output)
    assert summary["sweep"]["counts"] == {"completed": 2}
    assert sorted(t["params"]["optimizer.lr"] for t in summary["trials"]) == [0.01, 0.02]  # no point twice
    assert sorted(p.name for p in (folder / "trials").iterdir()) == names


# -- two workers against a real PostgreSQL ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on localhost, started for the test and stopped after."""
    # CI installs all of these (.ci/run): there a missing one fails the test instead of skipping it.
    bin_dir = _postgres_bin()
    if bin_dir is None:
        skip_unless_ci("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
    import_or_skip_unless_ci("psycopg2", "the psycopg2 driver is not installed (pip install psycopg2-binary)")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own user
        import pwd

        if shutil.which("runuser") is None:
            skip_unless_ci("running as root without runuser to start PostgreSQL as another user")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            skip_unless_ci("running as root and there is no postgres user to start PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="dlcli-pg-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, port = base / "data", _free_port()
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *as_user,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        skip_unless_ci(f"could not start a PostgreSQL cluster: {getattr(exc, 'stderr', b'') or exc}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_two_worker_processes_on_postgresql_share_the_grid_and_run_each_point_once(
    tmp_path, tiny_config, trial_env, postgres_url, pause_dir
):
    import optuna

    from dlcli.sweep.study import make_storage

    runs_a, runs_b = tmp_path / "a" / "runs", tmp_path / "b" / "runs"  # two "machines": no shared folder
    started: list[subprocess.Popen] = []
    try:
        # The first worker's first trial waits after its epoch until the second worker has
        # claimed a trial, so neither can run the whole grid alone however the machine is loaded.
        first = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dlcli",
                "sweep",
                str(tiny_config),
                "-p",
                "optimizer.lr=[0.01,0.02,0.03,0.04]",
                "--set",
                "training.epochs=1",
                "--storage",
                postgres_url,
                "--id",
                "pg",
                "--runs-dir",
                str(runs_a),
            ],
            env=pausing_after(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(first)
        assert first.stdout.readline().startswith("Sweep pg: grid over optimizer.lr, 4 trials")  # the study exists
        wait_for_paused(pause_dir, ["0000-tiny"], first)
        second = subprocess.Popen(
            [sys.executable, "-m", "dlcli", "sweep", "worker", "pg", "--storage", postgres_url, "--runs-dir", runs_b],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(second)
        trials_b = runs_b / "sweeps" / "pg" / "trials"
        deadline = time.monotonic() + 300
        while not (trials_b.is_dir() and any(trials_b.iterdir())):
            assert second.poll() is None and time.monotonic() < deadline, "the second worker claimed no trial"
            time.sleep(0.05)
        (pause_dir / "release").touch()
        out_b, _ = second.communicate(timeout=600)
        out_a, _ = first.communicate(timeout=600)
    finally:
        _end_all(started, pause_dir)
    assert first.returncode == 0 and second.returncode == 0, out_a + out_b
    summary = json.loads(
        invoke("sweep", "summary", "pg", "--storage", postgres_url, "--runs-dir", runs_b, "--json").output
    )
    assert summary["sweep"]["counts"] == {"completed": 4}
    assert sorted(t["params"]["optimizer.lr"] for t in summary["trials"]) == [0.01, 0.02, 0.03, 0.04]
    # Each trial ran in exactly one worker, both worked, and the study knows which ran which.
    ran_a = {p.name for p in (runs_a / "sweeps" / "pg" / "trials").iterdir()}
    ran_b = {p.name for p in trials_b.iterdir()}
    assert ran_a and ran_b and not ran_a & ran_b and len(ran_a | ran_b) == 4
    study = optuna.load_study(study_name="pg", storage=make_storage(postgres_url))
    by_worker: dict[int, set[str]] = {}
    for trial in study.trials:
        by_worker.setdefault(trial.user_attrs["worker_pid"], set()).add(Path(trial.user_attrs["folder"]).name)
    assert by_worker == {first.pid: ran_a, second.pid: ran_b}
    assert read_spec(runs_b / "sweeps" / "pg").storage == postgres_url  # joined from the storage alone


@pytest.mark.parametrize(
    "storage, words",
    [
        ("postgresql:/localhost/db", "starts like a URL (postgresql:) but is not one"),
        ("mysql:localhost/db", "starts like a URL (mysql:) but is not one"),
        ("postgres://me:secret@localhost/db", "the scheme is postgresql://, not postgres://"),
        ("postgresql://me@localhost:54x2/db", "the port '54x2' is not a number"),
    ],
)
def test_a_storage_that_looks_like_a_url_but_is_not_is_refused_before_anything_is_made(
    tmp_path, monkeypatch, storage, words
):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", synthetic_config(epochs=1))
    result = invoke(
        "sweep", config, "-p", "optimizer.lr=[0.01, 0.02]", "--storage", storage, "--runs-dir", tmp_path / "runs"
    )
    assert result.exit_code == 2 and words in result.output, result.output
    assert "secret" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no folder named postgresql:, no runs


def test_a_journal_path_and_a_windows_drive_are_paths():
    from dlcli.sweep.study import check_storage

    for path in ("study.journal", "sweeps/a.journal", "C:\\sweeps\\a.journal", "/abs/x.journal"):
        assert check_storage(path) == path


def test_a_sweep_ranked_on_training_data_says_so_and_records_it(tmp_path):
    import yaml

    raw = synthetic_config(epochs=1)
    raw["data"]["validation_split"] = 0.0
    config = write_config(tmp_path / "c.yaml", raw)
    plan = invoke("sweep", config, "-p", "optimizer.lr=[0.01, 0.02]", "--dry-run")
    assert plan.exit_code == 0 and "Trials are ranked by loss on the training data" in plan.output
    assert "--set data.validation_split=0.1" in plan.output
    result = invoke("sweep", config, "-p", "optimizer.lr=[0.01, 0.02]", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    first_lines = "\n".join(result.output.splitlines()[:4])
    assert "Trials are ranked by loss on the training data" in first_lines  # before any trial runs
    (sweep_file,) = (tmp_path / "runs").rglob("sweep.yaml")
    assert "ranked by loss on the training data" in yaml.safe_load(sweep_file.read_text())["warning"]
    held_out = write_config(tmp_path / "v.yaml", synthetic_config(epochs=1))  # validation_split 0.2
    plan = invoke("sweep", held_out, "-p", "optimizer.lr=[0.01, 0.02]", "--dry-run")
    assert plan.exit_code == 0 and "training data" not in plan.output
