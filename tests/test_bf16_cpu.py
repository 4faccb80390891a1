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
