"""The CUDA path: real checks where a GPU is present, device selection and errors everywhere."""

import io
import json

import pytest
import torch
from rich.console import Console

from dlcli.config import load_config
from dlcli.errors import DeviceError
from dlcli.plan import resolve_device
from dlcli.training import check_device_options, train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def quiet_console():
    return Console(file=io.StringIO())


def test_auto_picks_cuda_only_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    # With its index: torch.cuda.set_device refuses a bare "cuda", which stopped every auto run
    # on the GPU machine (torch 2.11); test_training_on_the_gpu[device=auto] runs it for real.
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_bf16_needs_a_gpu_that_supports_it(monkeypatch, tiny_config):
    config = load_config(tiny_config, ["training.precision=bf16"])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    with pytest.raises(DeviceError, match="Old GPU has none"):
        check_device_options(config, torch.device("cuda", 0))


def test_compile_on_the_cpu_needs_a_compiler(monkeypatch, tiny_config):
    import shutil

    config = load_config(tiny_config, ["training.compile=true"])
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DeviceError, match="C\\+\\+ compiler"):
        check_device_options(config, torch.device("cpu"))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("options", [[], ["device=auto"], ["training.precision=bf16"], ["training.compile=true"]])
def test_training_on_the_gpu(tmp_path, tiny_config, options):
    config = load_config(tiny_config, ["device=cuda", "training.epochs=3", *options])
    outcome = train(config, runs_dir=tmp_path, console=quiet_console(), draw_plots=False)
    info = json.loads((outcome.run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["device"].startswith("cuda") and info["device_name"]
    assert outcome.history[-1]["val_accuracy"] > 0.5
    # The checkpoint holds CPU tensors, so it loads on a machine without a GPU.
    state = torch.load(outcome.run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["model"].values())


@pytest.mark.cuda
@needs_cuda
def test_gpu_and_cpu_runs_agree(tmp_path, tiny_config):
    """Same seed on both devices: the metrics agree to float rounding (TF32 off by default)."""
    runs = {}
    for device in ("cpu", "cuda"):
        config = load_config(tiny_config, [f"device={device}", "training.epochs=2"])
        runs[device] = train(config, runs_dir=tmp_path / device, console=quiet_console(), draw_plots=False)
    for a, b in zip(runs["cpu"].history, runs["cuda"].history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)


@pytest.mark.cuda
@needs_cuda
def test_data_goes_to_the_gpu_once():
    from dlcli.engine import Batches

    x = torch.randint(0, 255, (100, 1, 4, 4), dtype=torch.uint8)
    batches = Batches(
        x,
        torch.arange(100),
        10,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        input_scale=1 / 255,
        device="cuda",
    ).to_device()
    assert batches.x.device.type == "cuda"
    xb, yb, _ = next(iter(batches))
    assert xb.device.type == "cuda" and xb.dtype == torch.float32 and yb.device.type == "cuda"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(
    "options",
    [
        [],
        ["training.precision=bf16"],
        ["optimizer={name: sgd, lr: 0.05, momentum: 0.9}"],
        ["optimizer={name: rmsprop}"],
        ["model={preset: cnn, filters: [4], kernel_size: 3, dropout: 0.3}", "data.synthetic.input_shape=[8, 8, 1]"],
    ],
)
def test_cuda_graph_training(tmp_path, tiny_config, options):
    """Whole recorded steps with each optimizer kind, bf16 and a CNN with dropout; the run's
    checkpoint then resumes on the CPU without recording (its optimizer options are its own)."""
    config = load_config(tiny_config, ["device=cuda", "training.epochs=5", "training.cuda_graph=true", *options])
    outcome = train(config, runs_dir=tmp_path, console=quiet_console(), draw_plots=False)
    # On the CPU the same runs end at val_accuracy 0.52 to 0.75 (3 classes) and 10 to 60 %
    # below their first epoch's loss.
    assert outcome.history[-1]["val_accuracy"] > 0.4
    assert outcome.history[-1]["loss"] < 0.95 * outcome.history[0]["loss"]
    resumed = load_config(tiny_config, ["device=cpu", "training.epochs=6", *[o for o in options if "bf16" not in o]])
    again = train(resumed, runs_dir=tmp_path, console=quiet_console(), draw_plots=False, resume_dir=outcome.run_dir)
    assert [h["epoch"] for h in again.history] == [1, 2, 3, 4, 5, 6]


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_replays_what_the_eager_loop_computes(tmp_path, tiny_config):
    """No dropout: recorded and eager training agree to float rounding, across a learning-rate
    change (the step is recorded again) and an odd-sized last batch every epoch (eager). A
    stale learning rate, added-up gradients or wrong batches would differ by far more."""
    common = [
        "device=cuda",
        "training.epochs=4",
        "training.batch_size=24",
        "training.schedule={name: step, step_size: 2, gamma: 0.5}",
    ]
    runs = {}
    for graph in ("false", "true"):
        config = load_config(tiny_config, [*common, f"training.cuda_graph={graph}"])
        runs[graph] = train(config, runs_dir=tmp_path / graph, console=quiet_console(), draw_plots=False)
    for a, b in zip(runs["false"].history, runs["true"].history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert runs["true"].results["test_loss"] == pytest.approx(runs["false"].results["test_loss"], rel=1e-4)
