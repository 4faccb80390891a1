"""Run folder guards: one process per folder (lock_run_dir), and checkpoint loading that says
what is wrong in dlcli's words only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dlcli.checkpoint import load_checkpoint
from dlcli.errors import CheckpointError, RunDirError
from dlcli.rundir import LOCK_FILE, lock_run_dir, release_run_locks

SRC = str(Path(__file__).resolve().parents[1] / "src")

HOLD = """
import sys, time
from dlcli.rundir import lock_run_dir
lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds the folder's lock until it is killed."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_folder_held_by_another_process_is_refused_with_its_pid(tmp_path):
    proc = hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirError) as info:
            lock_run_dir(tmp_path)
        assert info.value.full_message() == (
            f"The run folder {tmp_path} is in use: process {proc.pid} is training in it, and two processes would "
            "overwrite each other's checkpoints and metrics. Wait until it finishes (or stop it), then resume; "
            "`dlcli runs` shows its status."
        )
    finally:
        proc.kill()
        proc.wait()
    # The kernel released the dead process's lock: the stale file is simply locked again.
    lock = lock_run_dir(tmp_path)
    assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    lock.release()


def test_this_process_may_lock_a_folder_again_and_release_frees_it(tmp_path):
    first = lock_run_dir(tmp_path)
    second = lock_run_dir(tmp_path)  # a second training in the same process replaces the handle
    assert first.fd is None and second.fd is not None
    release_run_locks()
    assert second.fd is None
    proc = hold_lock(tmp_path)  # another process can take it now
    proc.kill()
    proc.wait()


def test_loading_a_torchscript_archive_shows_no_pytorch_warning(tmp_path):
    import torch

    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = tmp_path / "last.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save's own deprecation notice
        torch.jit.save(torch.jit.script(Double()), str(path))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
    assert [str(w.message) for w in shown] == []  # PyTorch's multi-line UserWarning used to come first
    assert info.value.full_message() == (
        f"Checkpoint {path} is damaged or not a dlcli checkpoint (it is a TorchScript archive, not a checkpoint). "
        "Use the other checkpoint (--checkpoint best|last) or start a new run."
    )


def test_a_checkpoint_holding_code_is_refused_without_pytorchs_advice(tmp_path):
    import collections

    import torch

    path = tmp_path / "last.pt"
    torch.save({"model": collections.OrderedDict(), "extra": Path("x")}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = info.value.full_message()
    assert message.startswith(
        f"Checkpoint {path} is damaged or not a dlcli checkpoint (it holds more than "
        "tensors and plain data: Unsupported global: GLOBAL pathlib"
    )
    assert "weights_only" not in message  # PyTorch's text advises turning the safety off
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "(it is not a file torch.save wrote)" in info.value.message


def test_a_second_resume_of_a_busy_run_folder_exits_2_and_a_killed_one_resumes(tmp_path):
    import json

    from typer.testing import CliRunner

    from conftest import synthetic_config, write_config
    from dlcli.cli import app

    runner = CliRunner()
    raw = synthetic_config(epochs=1, batch_size=16)
    raw["data"]["synthetic"].update(samples=48, test_samples=0)
    config = write_config(tmp_path / "c.yaml", raw)
    assert runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"]).exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    # Another process trains in the folder: it holds the lock and run.json names it.
    proc = hold_lock(run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running", "pid": proc.pid}))
    try:
        busy = runner.invoke(app, ["train", "--resume", str(run), "--set", "training.epochs=2"])
        assert busy.exit_code == 2
        assert busy.output == (
            f"Error: The run folder {run} is in use: process {proc.pid} is training in it, and two processes "
            "would overwrite each other's checkpoints and metrics. Wait until it finishes (or stop it), then "
            "resume; `dlcli runs` shows its status.\n"
        )
        assert json.loads((run / "run.json").read_text())["status"] == "running"  # untouched
    finally:
        proc.kill()
        proc.wait()
    (listed,) = json.loads(runner.invoke(app, ["runs", "--dir", str(tmp_path / "runs"), "--json"]).output)
    assert listed["status"] == "killed"
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--set", "training.epochs=2", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert (run / LOCK_FILE).read_text().split()[0] == str(os.getpid())  # the stale file was taken over


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fsynced descriptors through /proc")
def test_a_run_fsyncs_each_file_written_and_its_two_folders_once_at_the_end(tmp_path, monkeypatch):
    # Each file's data is fsynced before its rename (old or new contents after any crash); the
    # folders are synced once when the run completes, not after every write (a journal commit
    # each, four writes per epoch).
    from conftest import invoke, synthetic_config, write_config

    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    config = write_config(tmp_path / "c.yaml", synthetic_config(epochs=2))
    assert invoke("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    # Temporary files are named .<file>.<random>.tmp
    written = [re.fullmatch(r"\.(.+)\.[^.]+\.tmp", Path(p).name).group(1) for p in synced[:-2]]
    assert written == [
        *["config.yaml", "summary.txt", "run.json"],
        *["metrics.csv", "last.pt", "best.pt", "run.json"] * 2,  # best.pt: val_loss fell in both epochs
        *["results.json", "loss.png", "accuracy.png", "run.json"],
    ]
    assert synced[-2:] == [str(run / "checkpoints"), str(run)]


def test_metrics_logger_writes_what_a_full_rewrite_would(tmp_path):
    from dlcli.callbacks import MetricsLogger
    from dlcli.rundir import metrics_csv_text, read_metrics

    columns = ["epoch", "loss", "accuracy", "val_loss", "lr", "seconds"]
    earlier = [{"epoch": 1, "loss": 0.5, "accuracy": 0.75, "val_loss": None, "lr": 0.001, "seconds": 1.25}]
    logger = MetricsLogger(tmp_path, columns, earlier)  # a resumed run keeps the rows before it
    rows = list(earlier)
    for epoch in range(2, 5):
        logs = {
            "epoch": epoch,
            "loss": 1 / epoch,
            "accuracy": 0.1 * epoch,
            "val_loss": 2.0 / 3,
            "lr": 1e-3,
            "seconds": 0.1,
        }
        logger.on_epoch_end(epoch, logs, trainer=None)
        rows.append(logs)
        assert (tmp_path / "metrics.csv").read_text() == metrics_csv_text(rows, columns)
    assert read_metrics(tmp_path / "metrics.csv")[1][-1]["loss"] == 0.25
