"""Data-parallel training with two CPU processes (gloo), started by dlcli's own launcher."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import synthetic_config, write_config
from dlcli.checkpoint import load_checkpoint
from dlcli.rundir import read_metrics

HELPERS = Path(__file__).parent / "helpers"


def dp_config(tmp_path: Path) -> Path:
    raw = synthetic_config(epochs=3, batch_size=16)
    raw["data"]["synthetic"].update(samples=400, test_samples=50)
    raw["model"] = {"preset": "mlp", "hidden": [16]}  # no dropout: the runs must compute the same thing
    return write_config(tmp_path / "dp.yaml", raw)


def run(args, cwd, timeout=240):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_two_processes_match_one(tmp_path):
    config = dp_config(tmp_path)
    single = run(["-m", "dlcli", "train", config, "--runs-dir", "single", "-q"], tmp_path)
    assert single.returncode == 0, single.stderr
    started = time.perf_counter()
    double = run(["-m", "dlcli", "train", config, "--runs-dir", "double", "--nproc", "2"], tmp_path)
    assert double.returncode == 0, double.stderr + double.stdout
    (one,), (two,) = list((tmp_path / "single").iterdir()), list((tmp_path / "double").iterdir())  # one folder each
    assert double.stdout.count("Epoch 3/3") == 1  # only rank 0 shows progress
    info = json.loads((two / "run.json").read_text())
    assert info["status"] == "completed" and info["world_size"] == 2
    _, rows_one = read_metrics(one / "metrics.csv")
    _, rows_two = read_metrics(two / "metrics.csv")
    assert [r["epoch"] for r in rows_two] == [1, 2, 3]
    for a, b in zip(rows_one, rows_two):  # metrics averaged over both processes = the single run's
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=2e-4), key
    w_one = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    w_two = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    assert list(w_two) == list(w_one)  # plain weights, no "module." prefix
    for key in w_one:
        assert torch.allclose(w_one[key], w_two[key], atol=1e-4), key
    print(f"two-process run took {time.perf_counter() - started:.1f}s")

    # The checkpoint resumes without torchrun.
    resumed = run(["-m", "dlcli", "train", "--resume", two, "--set", "training.epochs=4", "-q"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in read_metrics(two / "metrics.csv")[1]] == [1, 2, 3, 4]


def test_batch_size_must_divide_by_the_processes(tmp_path):
    config = dp_config(tmp_path)
    result = run(["-m", "dlcli", "train", config, "--runs-dir", "runs", "--nproc", "3"], tmp_path)
    assert result.returncode != 0
    assert "does not divide by the 3 processes" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
def test_a_failing_rank_ends_every_rank(tmp_path):
    config = dp_config(tmp_path)
    started = time.perf_counter()
    result = run(
        [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            HELPERS / "fail_on_rank.py",
            "train",
            config,
            "--runs-dir",
            "runs",
        ],
        tmp_path,
        timeout=180,
    )
    assert result.returncode != 0
    assert time.perf_counter() - started < 150
    assert "simulated failure on rank 1" in result.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "failed" and "rank 1" in info["error"]


def test_a_failed_launch_is_one_paragraph_and_exit_1(monkeypatch, tmp_path):
    # The launcher's own failure (ChildFailedError once a rank has printed its error) reaches
    # the CLI as a DlcliError: the CLI prints it, the library does not.
    from torch.distributed import run as torchrun
    from typer.testing import CliRunner

    from dlcli.cli import app

    class ChildFailedError(Exception):
        pass

    def failing_main(args):
        raise ChildFailedError("rank 1 failed")

    monkeypatch.setattr(torchrun, "main", failing_main)
    result = CliRunner().invoke(
        app, ["train", str(dp_config(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "--nproc", "2"]
    )
    assert result.exit_code == 1
    assert "Error: data-parallel training failed (ChildFailedError); see the rank's message above." in result.output
    assert "Traceback" not in result.output
