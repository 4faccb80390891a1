"""bf16 autocast on the CPU: refused where the CPU emulates it, trained in fp32 weights where it is native."""

import io

import pytest
import torch
from rich.console import Console

import dlcli.devices
from dlcli.checkpoint import load_checkpoint
from dlcli.config import load_config
from dlcli.errors import DeviceError
from dlcli.training import check_device_options, train


def test_bf16_on_a_cpu_without_native_support_is_refused_with_what_it_reports(monkeypatch, tiny_config):
    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(dlcli.devices, "cpu_capability", lambda: "AVX2")
    config = load_config(tiny_config, ["training.precision=bf16"])
    with pytest.raises(DeviceError) as info:
        check_device_options(config, torch.device("cpu"))
    message = info.value.full_message()
    assert "needs native bfloat16 instructions (AVX512-BF16 or AMX)" in message
    assert "capability AVX2" in message
    assert "training.precision: fp32" in message and "dlcli info" in message


def test_bf16_on_a_native_cpu_trains_keeps_fp32_checkpoints_and_resumes_in_fp32(monkeypatch, tmp_path, tiny_config):
    # The capability check is the only thing replaced: autocast itself runs for real (emulated
    # on a CPU without bf16 instructions, which changes its speed, not its results' dtype).
    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: True)
    console = Console(file=io.StringIO())
    config = load_config(tiny_config, ["training.precision=bf16", "training.epochs=2", "device=cpu"])
    outcome = train(config, runs_dir=tmp_path / "runs", console=console, quiet=True, draw_plots=False)
    assert outcome.status == "completed" and len(outcome.history) == 2
    fp32 = train(
        load_config(tiny_config, ["training.epochs=2", "device=cpu"]),
        runs_dir=tmp_path / "runs",
        console=console,
        quiet=True,
        draw_plots=False,
    )
    # bf16 really ran: its losses differ from fp32's by rounding, but not by more than bf16's precision.
    for bf, fp in zip(outcome.history, fp32.history):
        assert bf["loss"] != fp["loss"]
        assert bf["loss"] == pytest.approx(fp["loss"], rel=0.05)
    state = load_checkpoint(outcome.run_dir / "checkpoints" / "last.pt")
    assert {t.dtype for t in state["model"].values()} == {torch.float32}
    longer = load_config(outcome.run_dir / "config.yaml", ["training.precision=fp32", "training.epochs=3"])
    resumed = train(
        longer, runs_dir=tmp_path / "runs", console=console, quiet=True, draw_plots=False, resume_dir=outcome.run_dir
    )
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]


def _loss_of(model, batches, bf16: bool) -> float:
    """Mean cross-entropy of a model over batches, computed here: under bf16 autocast or in fp32."""
    total, samples = 0.0, 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for xb, yb, _ in batches:
            out = model(xb).float()
            total += float(torch.nn.functional.cross_entropy(out, yb, reduction="sum"))
            samples += len(yb)
    return total / samples


def test_bf16_validation_and_test_losses_are_computed_under_autocast(monkeypatch, tmp_path, tiny_config):
    # Evaluation runs the model as training does: a bf16 run's validation and test losses are
    # the bf16 model's, not the fp32 weights' (which would hide what bf16 costs in accuracy).
    from dlcli.data import load_dataset
    from dlcli.engine import Batches
    from dlcli.loading import load_run

    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: True)
    config = load_config(tiny_config, ["training.precision=bf16", "training.epochs=1", "device=cpu"])
    outcome = train(
        config, runs_dir=tmp_path / "runs", console=Console(file=io.StringIO()), quiet=True, draw_plots=False
    )
    run = load_run(outcome.run_dir, "last")  # after the only epoch: the weights both losses saw
    data = load_dataset(config.data, config.seed)
    for split, logged in (("val", outcome.history[0]["val_loss"]), ("test", outcome.results["test_loss"])):
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
        batches = Batches(x, y, 512, input_scale=data.input_scale)
        bf16, fp32 = _loss_of(run.model, batches, bf16=True), _loss_of(run.model, batches, bf16=False)
        assert logged == pytest.approx(bf16, rel=1e-6, abs=1e-7), split
        assert abs(bf16 - fp32) > 100 * 1e-6 * fp32, (split, bf16, fp32)  # the two are told apart
