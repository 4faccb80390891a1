"""Never lose a run: signals, kill-and-resume, atomic files, divergence, early stopping, schedules."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import synthetic_config, write_config
from dlcli.checkpoint import load_checkpoint
from dlcli.cli import app
from dlcli.errors import CheckpointError
from dlcli.rundir import atomic_write_text, create_run_dir, read_metrics

runner = CliRunner()


def slow_config(tmp_path: Path, epochs: int = 6) -> Path:
    # A schedule and early stopping too, so that resuming must restore their state as well.
    raw = synthetic_config(
        epochs=epochs,
        batch_size=8,
        schedule={"name": "step", "step_size": 2, "gamma": 0.5},
        early_stopping={"monitor": "val_loss", "patience": 20},
    )
    raw["data"]["synthetic"].update(samples=3000, input_shape=[32])
    raw["model"] = {"preset": "mlp", "hidden": [64, 64], "dropout": 0.2}  # dropout: the global RNG matters
    return write_config(tmp_path / "slow.yaml", raw)


def start(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "dlcli", "train", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(run_parent: Path, rows: int, timeout: float = 60) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for metrics in run_parent.glob("*/metrics.csv"):
            try:
                if len(metrics.read_text().strip().splitlines()) - 1 >= rows:
                    return metrics.parent
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError("training made no progress")


def strip_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.e2e
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_says_how_to_resume(tmp_path, sig, code):
    config = slow_config(tmp_path, epochs=50)
    proc = start([config, "--runs-dir", tmp_path / "runs"], tmp_path)
    run = wait_for_rows(tmp_path / "runs", 1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"dlcli train --resume {run}" in err.strip().splitlines()[-1]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    _, rows = read_metrics(run / "metrics.csv")
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == len(rows) >= 1


@pytest.mark.e2e
def test_killed_run_resumes_to_the_same_result(tmp_path):
    config = slow_config(tmp_path, epochs=5)
    reference = subprocess.run(
        [sys.executable, "-m", "dlcli", "train", str(config), "--runs-dir", "ref", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    (ref_run,) = (tmp_path / "ref").iterdir()

    proc = start([config, "--runs-dir", "runs", "-q"], tmp_path)
    run = wait_for_rows(tmp_path / "runs", 2)
    time.sleep(0.05)  # into the middle of the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # what a kill leaves
    resumed = subprocess.run(
        [sys.executable, "-m", "dlcli", "train", "--resume", str(run), "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr

    _, ref_rows = read_metrics(ref_run / "metrics.csv")
    _, rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]  # every epoch exactly once
    assert strip_seconds(rows) == strip_seconds(ref_rows)
    ref_state = load_checkpoint(ref_run / "checkpoints" / "last.pt")["model"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert json.loads((run / "results.json").read_text()) == json.loads((ref_run / "results.json").read_text())


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left


def test_full_disk_is_a_clear_error(tmp_path, tiny_config, monkeypatch):
    import dlcli.rundir

    def full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(dlcli.rundir, "atomic_write_bytes", full)
    result = runner.invoke(app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "disk is full" in result.output and "Traceback" not in result.output


def test_diverging_loss_fails_the_run_with_a_hint(tmp_path):
    raw = synthetic_config(epochs=3)
    raw["data"]["synthetic"]["task"] = "regression"
    raw["loss"] = "mse"
    raw["optimizer"] = {"name": "sgd", "lr": 1.0e6}
    config = write_config(tmp_path / "diverge.yaml", raw)
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "diverged" in result.output and "epoch 1, step" in result.output and "learning rate" in result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_two_runs_in_the_same_second_get_different_folders(tmp_path):
    a, b = create_run_dir(tmp_path, "same"), create_run_dir(tmp_path, "same")
    assert a != b and a.is_dir() and b.is_dir()


def test_unwritable_runs_folder_is_a_clear_error(tmp_path, tiny_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["train", str(tiny_config), "--runs-dir", str(blocker / "runs")])
    assert result.exit_code == 2 and "--runs-dir" in result.output and "Traceback" not in result.output


def test_resume_errors(tmp_path, tiny_config):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output
    runner.invoke(app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs")])
    (run,) = (tmp_path / "runs").iterdir()
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2 and "already finished" in result.output and "training.epochs" in result.output
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 2", "epochz: 2"))
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2 and "no longer validates" in result.output


def test_resume_with_a_different_model_or_a_damaged_checkpoint(tmp_path, tiny_config):
    runner.invoke(app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs")])
    (run,) = (tmp_path / "runs").iterdir()
    result = runner.invoke(
        app, ["train", "--resume", str(run), "--set", "training.epochs=4", "--set", "model.hidden=[7]"]
    )
    assert result.exit_code == 2 and "--set model.hidden=[7] changes the model of" in result.output
    (run / "checkpoints" / "last.pt").write_bytes(b"garbage")
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "training.epochs=4"])
    assert result.exit_code == 2 and "damaged" in result.output
    with pytest.raises(CheckpointError):
        load_checkpoint(run / "checkpoints" / "missing.pt")


def test_resume_extends_a_finished_run(tmp_path):
    raw = synthetic_config(epochs=2)
    raw["optimizer"]["lr"] = 0.5  # measured: val_loss is lowest at epoch 1 of these 4
    config = write_config(tmp_path / "c.yaml", raw)
    runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"])
    (run,) = (tmp_path / "runs").iterdir()
    _, first_rows = read_metrics(run / "metrics.csv")
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "training.epochs=4", "-q"])
    assert result.exit_code == 0, result.output
    _, rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and rows[:2] == first_rows
    # best.pt still knows the best epoch from before the resume: it is not replaced by a worse one.
    best = min(rows, key=lambda r: r["val_loss"])
    assert best["epoch"] <= 2, rows  # else this run does not tell
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == best["epoch"]
    results = json.loads((run / "results.json").read_text())
    assert results["best"] == {"monitor": "val_loss", "value": best["val_loss"], "epoch": best["epoch"]}


def lrs_of_a_run(tmp_path: Path, schedule: dict, epochs: int) -> list[dict]:
    config = write_config(tmp_path / "s.yaml", synthetic_config(epochs=epochs, schedule=schedule))
    runs = tmp_path / f"runs-{schedule['name']}"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return read_metrics(run / "metrics.csv")[1]


def test_step_and_cosine_schedules_write_the_lr_of_each_epoch(tmp_path):
    rows = lrs_of_a_run(tmp_path, {"name": "step", "step_size": 2, "gamma": 0.5}, epochs=4)
    assert [r["lr"] for r in rows] == [0.01, 0.01, 0.005, 0.005]
    # Cosine annealing over the 4 epochs down to min_lr 0: lr_e = 0.01 * (1 + cos(pi * e / 4)) / 2.
    rows = lrs_of_a_run(tmp_path, {"name": "cosine"}, epochs=4)
    expected = [0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]  # 0.01, 0.00854, 0.005, 0.00146
    assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-9)


def plateau_lrs(values: list[float], lr: float, factor: float, patience: int, mode: str) -> list[float]:
    """Each epoch's learning rate under the reduce-on-plateau rule (Keras's and PyTorch's): after
    more than `patience` epochs in a row without improving on the best value by the relative
    threshold 1e-4, multiply the rate by `factor`."""
    lrs, best, bad = [], None, 0
    for value in values:
        lrs.append(lr)
        improved = best is None or (value > best * (1 + 1e-4) if mode == "max" else value < best * (1 - 1e-4))
        if improved:
            best, bad = value, 0
        else:
            bad += 1
            if bad > patience:
                lr, bad = lr * factor, 0
    return lrs


def test_reduce_on_plateau_lowers_the_lr_when_the_metric_stalls(tmp_path):
    schedule = {"name": "reduce_on_plateau", "patience": 0, "factor": 0.5, "monitor": "val_accuracy"}
    rows = lrs_of_a_run(tmp_path, schedule, epochs=6)
    accuracy = [r["val_accuracy"] for r in rows]
    expected = plateau_lrs(accuracy, 0.01, 0.5, 0, "max")
    # The run must show both cases for the check to mean anything: val_accuracy improves after the
    # first epoch (a rule with the direction inverted would lower the rate there) and later stalls
    # (so the rate is lowered at least once).
    assert expected[-1] < 0.01 and expected != plateau_lrs(accuracy, 0.01, 0.5, 0, "min"), accuracy
    assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-9)


def test_early_stopping_in_a_run_restores_the_best_epoch(tmp_path):
    from dlcli.evaluation import evaluate_run

    raw = synthetic_config(epochs=40, early_stopping={"monitor": "val_loss", "patience": 2})
    raw["optimizer"]["lr"] = 0.3
    config = write_config(tmp_path / "es.yaml", raw)
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    _, rows = read_metrics(run / "metrics.csv")
    best = min(rows, key=lambda r: r["val_loss"])
    assert best["epoch"] < rows[-1]["epoch"] < 40  # stopped early, after epochs worse than the best
    results = json.loads((run / "results.json").read_text())
    assert results["best"]["early_stopping"] == {
        "monitor": "val_loss",
        "best": best["val_loss"],
        "best_epoch": best["epoch"],
        "stopped_epoch": rows[-1]["epoch"],
        "restored_best_weights": True,
    }
    assert results["checkpoint"] == f"best weights (epoch {best['epoch']})"
    best_weights = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best_weights["epoch"] == best["epoch"]
    # The test metrics in results.json are those of the best epoch's weights (best.pt), which the
    # run restored at its end, and not those of the last epoch's (last.pt).
    on_best, on_last = evaluate_run(run, "best"), evaluate_run(run, "last")
    assert (on_best["epoch"], on_last["epoch"]) == (best["epoch"], rows[-1]["epoch"])
    assert results["test_accuracy"] == on_best["accuracy"]
    assert results["test_loss"] == pytest.approx(on_best["loss"], rel=1e-6)
    assert results["test_loss"] != pytest.approx(on_last["loss"], rel=1e-6)


@pytest.fixture
def deterministic_mode_restored():
    """Deterministic mode (and the cuBLAS setting it needs) is process-wide: start the test
    without it and put back what was there afterwards, also when the test fails, so that it
    never leaks into later tests."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    torch.use_deterministic_algorithms(False)
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    try:
        yield
    finally:
        enabled, warn_only, benchmark, cublas = before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def test_deterministic_flag_turns_on_deterministic_algorithms(
    tmp_path, tiny_config, monkeypatch, deterministic_mode_restored
):
    from dlcli.engine import Trainer

    seen = []  # whether deterministic algorithms were on while each run trained
    real_fit = Trainer.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    for flag in ("false", "true"):
        result = runner.invoke(
            app,
            [
                "train",
                str(tiny_config),
                "--runs-dir",
                str(tmp_path / "runs"),
                "-q",
                "--set",
                "training.epochs=1",
                "--set",
                f"training.deterministic={flag}",
            ],
        )
        assert result.exit_code == 0, result.output
    assert seen == [False, True]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # what cuBLAS needs to be deterministic on a GPU


@pytest.mark.parametrize("bf16_native", [False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def test_bf16_on_the_cpu_is_refused_or_accepted_by_what_the_cpu_reports(
    monkeypatch, tmp_path, tiny_config, bf16_native
):
    # The CPU's capability is pinned: the same test must pass on a CPU with native bf16
    # (AVX512-BF16, AMX) and on one without, and each branch is tested on every machine.
    import dlcli.devices

    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: bf16_native)
    monkeypatch.setattr(dlcli.devices, "cpu_capability", lambda: "AVX512" if bf16_native else "AVX2")
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_config),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--set",
            "training.precision=bf16",
            "--set",
            "device=cpu",
            "--set",
            "training.epochs=1",
        ],
    )
    if bf16_native:
        assert result.exit_code == 0, result.output
        (run_dir,) = (tmp_path / "runs").iterdir()
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        assert "precision: bf16" in (run_dir / "config.yaml").read_text()
    else:
        assert (
            result.exit_code == 2 and "capability AVX2" in result.output and "training.precision: fp32" in result.output
        )
        assert "Traceback" not in result.output
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_device_options_are_checked_on_the_cpu(monkeypatch, tmp_path, tiny_config):
    # Pinned to a machine without a GPU, whatever this one has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    result = runner.invoke(
        app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs"), "--set", "device=cuda"]
    )
    assert result.exit_code == 2 and "no CUDA GPU" in result.output and "device: cpu" in result.output
    result = runner.invoke(
        app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs"), "--set", "training.cuda_graph=true"]
    )
    assert result.exit_code == 2 and "CUDA graphs need a CUDA GPU" in result.output
    assert "training.cuda_graph: false" in result.output
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_config),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--set",
            "training.cuda_graph=true",
            "--set",
            "training.compile=reduce-overhead",
        ],
    )
    assert result.exit_code == 2 and "cannot be combined" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app,
        [
            "train",
            str(tiny_config),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--nproc",
            "2",
            "--set",
            "training.cuda_graph=true",
        ],
    )
    assert result.exit_code == 2 and "works in one process, and this run has 2" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resuming_keeps_the_optimizers_own_implementation(tmp_path):
    """A checkpoint from a CUDA run holds fused/capturable Adam options and a step count on
    the GPU; resumed elsewhere, the optimizer keeps its own options and steps on."""
    from dlcli.config import OptimizerConfig
    from dlcli.optim import build_optimizer, load_optimizer_state

    model = torch.nn.Linear(3, 2)
    source = build_optimizer(OptimizerConfig(name="adam"), model.parameters(), capturable=False)
    model(torch.randn(4, 3)).sum().backward()
    source.step()
    state = source.state_dict()
    for group in state["param_groups"]:
        group.update(fused=True, capturable=True)  # as saved by a CUDA run with cuda_graph
    target = build_optimizer(OptimizerConfig(name="adam"), model.parameters())
    load_optimizer_state(target, state)
    assert all(not g["capturable"] and not g["fused"] for g in target.param_groups)
    assert all(s["step"].device.type == "cpu" and float(s["step"]) == 1.0 for s in target.state.values())
    model(torch.randn(4, 3)).sum().backward()
    target.step()  # a capturable Adam on the CPU would raise here
    assert all(float(s["step"]) == 2.0 for s in target.state.values())


def test_a_run_stopped_in_its_first_epoch_resumes_from_the_start(tmp_path, tiny_config):
    import io

    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.engine import RunControl
    from dlcli.errors import TrainingInterrupted
    from dlcli.training import train

    control = RunControl(signal="SIGINT")  # as if Ctrl-C came during the very first step
    with pytest.raises(TrainingInterrupted) as info:
        train(
            load_config(tiny_config), runs_dir=tmp_path / "runs", console=Console(file=io.StringIO()), control=control
        )
    run = info.value.run_dir
    assert not (run / "checkpoints" / "last.pt").exists()
    result = runner.invoke(app, ["train", "--resume", str(run), "-q"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")[1]] == [1, 2]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    # metrics.csv is written just before last.pt: a kill between the two at the end of epoch 1
    # leaves one row and no checkpoint. Made here by removing last.pt after a stopped run.
    config = write_config(tmp_path / "c.yaml", synthetic_config(epochs=3))
    runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs"), "-q", "--set", "training.epochs=1"])
    (run,) = (tmp_path / "runs").iterdir()
    (run / "checkpoints" / "last.pt").unlink()
    update = json.loads((run / "run.json").read_text()) | {"status": "running"}
    (run / "run.json").write_text(json.dumps(update))
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "training.epochs=3", "-q"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")[1]] == [1, 2, 3]  # epoch 1 once, trained again
    # With more than one row, a missing last.pt was removed by hand: an error, nothing rewritten.
    before = (run / "metrics.csv").read_text()
    (run / "checkpoints" / "last.pt").unlink()
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "training.epochs=4", "-q"])
    assert result.exit_code == 2 and "last.pt does not exist" in result.output
    assert (run / "metrics.csv").read_text() == before


# -- allocation failures at run time ----------------------------------------------------------


def _refuses_huge_allocations() -> bool:
    # With overcommit "always" (1) a 9 TiB malloc succeeds and the kernel's OOM killer strikes
    # later instead; modes 0 (heuristic) and 2 (strict) refuse it at once, as the test needs.
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() in ("0", "2")
    except OSError:
        return False


@pytest.mark.skipif(not _refuses_huge_allocations(), reason="needs vm.overcommit_memory 0 or 2 to fail a 9 TiB malloc")
def test_out_of_memory_while_training_is_exit_1_and_a_failed_run(tmp_path):
    raw = synthetic_config(epochs=1, batch_size=4)
    raw["data"] = {"dataset": "synthetic", "synthetic": {"input_shape": [2, 2, 1], "samples": 8, "test_samples": 0}}
    raw["loss"] = "auto"
    # Few parameters, but the first forward pass needs 16 channels of 200,002 x 200,002 pixels.
    raw["model"] = {
        "layers": [
            {"conv2d": {"filters": 16, "kernel_size": 1, "padding": 100000}},
            {"avgpool2d": {"pool_size": 200002}},
            {"flatten": {}},
            {"dense": {"units": 3, "activation": "softmax"}},
        ]
    }
    config = write_config(tmp_path / "oom.yaml", raw)
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs")])
    (run,) = (tmp_path / "runs").iterdir()
    assert result.exit_code == 1
    assert result.output.endswith(
        f"Error: Out of memory: this machine could not allocate 9.3 TiB while training (run folder: {run}). Use a "
        "smaller training.batch_size, a smaller model or data.max_train_samples; the run folder keeps every "
        "complete epoch.\n"
    )
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "can't allocate memory" in info["error"]


def test_cuda_out_of_memory_message():
    from dlcli.training import out_of_memory_message

    error = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity "
        "of 79.11 GiB of which 3.12 GiB is free."
    )
    assert out_of_memory_message(error, None) == (
        "Out of memory: the GPU could not allocate 20.00 GiB while training. Use a smaller training.batch_size, "
        "a smaller model or data.max_train_samples; the run folder keeps every complete epoch."
    )
    # One test of what counts as an allocation failure, for training and every other command.
    from dlcli.errors import is_allocation_failure

    assert is_allocation_failure(error) and is_allocation_failure(MemoryError())
    assert is_allocation_failure(RuntimeError("[enforce fail at alloc_cpu.cpp:117] ... Cannot allocate memory"))
    assert not is_allocation_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
