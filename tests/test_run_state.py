"""Commands on runs in progress and on run state: a run still training is named with its pid, a
resume whose --set changes the model names the --set, standard input is for text runs, and
running out of memory while predicting or evaluating is one paragraph with exit 1."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import invoke, synthetic_config, trained_run, write_config


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("state")
    return trained_run(write_config(tmp / "c.yaml", synthetic_config(epochs=1)), tmp / "runs")


def test_a_run_still_training_is_named_with_its_process_not_a_missing_checkpoint(run, tmp_path):
    import shutil

    busy = tmp_path / "busy"
    shutil.copytree(run, busy)
    (busy / "checkpoints" / "best.pt").unlink()  # as before a training process's first epoch ends
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time; from pathlib import Path; from dlcli.rundir import lock_run_dir; "
            f"lock_run_dir(Path({str(busy)!r})); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for command in (["predict", busy, "x.npz"], ["evaluate", busy], ["export", busy, "--format", "pt2"]):
            result = invoke(*command)
            assert result.exit_code == 2, result.output
            assert f"is still training (process {holder.pid})" in result.output, result.output
            assert "does not exist" not in result.output
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while time.time() < deadline:  # the lock goes with the process: now it is a missing checkpoint
        result = invoke("evaluate", busy)
        if "does not exist" in result.output:
            break
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_resume_whose_set_changes_the_model_names_the_set(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = invoke(
        "train", "--resume", copy, "--set", "model.hidden=[32]", "--set", "training.epochs=2", "--runs-dir", tmp_path
    )
    assert result.exit_code == 2
    assert "--set model.hidden=[32] changes the model of" in result.output
    assert "training.epochs" not in result.output.split("changes the model")[0]
    result = invoke("train", "--resume", copy, "--set", "training.epochs=2", "--runs-dir", tmp_path, "-q")
    assert result.exit_code == 0, result.output  # an override that keeps the model resumes


def test_standard_input_is_for_text_runs(run):
    result = invoke("predict", run, "-")
    assert result.exit_code == 2 and "standard input) gives one text to runs of texts" in result.output


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_out_of_memory_while_using_a_run_is_one_paragraph_with_its_own_advice(run, tmp_path, monkeypatch, command):
    import numpy as np

    import dlcli.engine

    def exhausted(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried to allocate 123 bytes"
        )

    monkeypatch.setattr(dlcli.engine, "predict", exhausted)
    monkeypatch.setattr(dlcli.engine.Trainer, "evaluate", exhausted)
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.zeros((2, 8), dtype=np.float32))
    result = invoke(command, run, *([inputs] if command == "predict" else []))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: Out of memory") and "--batch-size" in result.output
    assert "training.batch_size" not in result.output
