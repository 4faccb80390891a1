"""bf16 autocast on the CPU: refused where the CPU emulates it, trained in fp32 weights where it is native."""

import io

import pytest
import torch
from rich.console import Console

import dlcli.devices
from conftest import invoke
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


# -- training.precision: auto ------------------------------------------------------------------


def _never_counted():
    raise AssertionError("auto counted the step's work where the answer did not depend on it")


@pytest.mark.parametrize(
    "native,gflop,expected",
    [(False, 50.0, "fp32"), (True, 0.03, "fp32"), (True, 1.8, "bf16"), (True, None, "fp32")],
)
def test_auto_on_the_cpu_takes_bf16_where_it_is_native_and_the_step_does_enough_work(
    monkeypatch, native, gflop, expected
):
    from dlcli.devices import BF16_MIN_GFLOP_PER_STEP, choose_precision

    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: native)
    count = (lambda: gflop) if native else _never_counted
    choice = choose_precision("auto", torch.device("cpu"), recorded=False, step_gflop=count)
    assert choice.precision == expected
    assert choice.reason.startswith("auto: ")
    if not native:
        assert "no native bf16" in choice.reason
    elif gflop is not None:
        assert f"{BF16_MIN_GFLOP_PER_STEP['cpu']:g} where bf16 pays" in choice.reason


@pytest.mark.parametrize(
    "supported,recorded,gflop,expected",
    [
        (False, True, 5000.0, "fp32"),
        (True, True, 0.03, "bf16"),
        (True, False, 500.0, "fp32"),
        (True, False, 1500.0, "bf16"),
    ],
)
def test_auto_on_a_gpu_takes_bf16_when_the_step_is_recorded_or_large(monkeypatch, supported, recorded, gflop, expected):
    # The GPU's answers are pinned (no GPU here); the rule itself runs as on one.
    from dlcli.devices import choose_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    count = (lambda: gflop) if supported and not recorded else _never_counted
    choice = choose_precision("auto", torch.device("cuda", 0), recorded=recorded, step_gflop=count)
    assert choice.precision == expected


def test_fp32_and_bf16_are_taken_as_given():
    from dlcli.devices import choose_precision

    for setting in ("fp32", "bf16"):
        choice = choose_precision(setting, torch.device("cpu"), recorded=False, step_gflop=_never_counted)
        assert (choice.precision, choice.reason) == (setting, "set in the config")


def test_the_step_s_work_is_counted_on_the_meta_device():
    from dlcli.models import training_step_gflop

    # forward 2*in*out per sample and layer; backward: weight gradients (the same again) and the
    # second layer's input gradient (the first layer's input needs none).
    mlp = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    per_sample = 2 * (10 * 8 + 8 * 4) + 2 * (10 * 8 + 8 * 4) + 2 * 8 * 4
    assert training_step_gflop(mlp, (10,), False, 64) == pytest.approx(per_sample * 64 / 1e9)
    assert all(p.device.type == "cpu" for p in mlp.parameters())  # the model itself is untouched
    words = torch.nn.Sequential(torch.nn.Embedding(50, 6), torch.nn.Flatten(), torch.nn.Linear(6 * 7, 3))
    # the linear layer's forward, weight and input gradients (the embedding's weight needs the
    # latter); an embedding lookup is no floating-point work
    assert training_step_gflop(words, (7,), True, 10) == pytest.approx((2 + 2 + 2) * 6 * 7 * 3 * 10 / 1e9)

    class ReadsAValue(torch.nn.Module):  # .item() has no meaning on the meta device
        def forward(self, x):
            return x * float(x.sum().item())

    assert training_step_gflop(ReadsAValue(), (3,), False, 4) is None


def test_auto_trains_in_what_it_chose_and_says_so_in_run_json(monkeypatch, tmp_path, tiny_config):
    import json

    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: True)
    console = Console(file=io.StringIO())
    runs = tmp_path / "runs"

    def run(*sets):
        config = load_config(tiny_config, ["training.epochs=2", "device=cpu", *sets])
        outcome = train(config, runs_dir=runs, console=console, quiet=True, draw_plots=False)
        return outcome, json.loads((outcome.run_dir / "run.json").read_text())

    small, small_info = run("training.precision=auto")  # the tiny model's step is far below the line
    assert small_info["precision"] == "fp32" and "below the 0.1 where bf16 pays" in small_info["precision_reason"]
    fp32, _ = run("training.precision=fp32")
    assert [r["loss"] for r in small.history] == [r["loss"] for r in fp32.history]
    monkeypatch.setitem(dlcli.devices.BF16_MIN_GFLOP_PER_STEP, "cpu", 0.0)  # now every step pays
    large, large_info = run("training.precision=auto")
    assert large_info["precision"] == "bf16" and "native bf16 on this CPU" in large_info["precision_reason"]
    assert all(b["loss"] != f["loss"] for b, f in zip(large.history, fp32.history))  # autocast really ran
    # Resumed across precisions: the auto run goes on in fp32 once native bf16 is gone.
    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: False)
    longer = load_config(large.run_dir / "config.yaml", ["training.epochs=3"])
    resumed = train(longer, runs_dir=runs, console=console, quiet=True, draw_plots=False, resume_dir=large.run_dir)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert json.loads((large.run_dir / "run.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize("native", [False, True])
def test_dlcli_info_says_what_auto_takes_on_this_cpu(monkeypatch, native):
    import json

    monkeypatch.setattr(dlcli.devices, "cpu_bf16_native", lambda: native)
    shown = invoke("info")
    assert shown.exit_code == 0, shown.output
    expected = "bf16 for steps of at least 0.1 GFLOP, else fp32" if native else "fp32 (no native bf16)"
    assert f"training.precision: auto takes {expected}" in shown.output
    report = json.loads(invoke("info", "--json").output)
    assert report["cpu"]["precision_auto"] == expected
