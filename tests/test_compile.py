"""training.compile: the whole step compiled (forward, loss, metric, backward, optimizer update)
gives the eager run's results to float rounding, and checkpoints and resume are unaffected."""

import copy
import io
import json
import re
import shutil

import pytest
import torch
from rich.console import Console

from conftest import skip_unless_ci, synthetic_config, write_config
from dlcli.checkpoint import load_checkpoint
from dlcli.config import load_config
from dlcli.rundir import read_metrics
from dlcli.training import train

pytestmark = pytest.mark.e2e  # runs the C++ compiler: tens of seconds on a cold cache


@pytest.fixture(autouse=True)
def cxx_compiler():
    """Inductor's CPU code needs a C++ compiler; CI installs one, so there its absence fails."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        skip_unless_ci("no C++ compiler (g++ or c++) for torch.compile's CPU code")


def run(tmp_path, name, overrides, resume_dir=None):
    config = load_config(tmp_path / "c.yaml", overrides)
    console = Console(file=io.StringIO())
    return train(config, runs_dir=tmp_path / name, console=console, resume_dir=resume_dir, draw_plots=False)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_compiled_run_matches_eager_and_resumes(tmp_path):
    # A schedule changes the learning rate every epoch (the update is compiled again once),
    # and Adam keeps state that the checkpoint must carry across the resume.
    raw = synthetic_config(epochs=3, schedule={"name": "step", "step_size": 1, "gamma": 0.5})
    raw["optimizer"] = {"name": "adam", "lr": 0.01}
    write_config(tmp_path / "c.yaml", raw)
    eager = run(tmp_path, "eager", [])
    compiled = run(tmp_path, "compiled", ["training.compile=true"])
    for a, b in zip(eager.history, compiled.history, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert compiled.results["test_loss"] == pytest.approx(eager.results["test_loss"], rel=1e-4)
    info = json.loads((compiled.run_dir / "run.json").read_text())
    assert info["compile_seconds"] > 0 and "compile_seconds" not in json.loads((eager.run_dir / "run.json").read_text())
    # The checkpoint holds the model's own parameter names, not torch.compile's wrapper's.
    compiled_state = load_checkpoint(compiled.run_dir / "checkpoints" / "last.pt")["model"]
    eager_state = load_checkpoint(eager.run_dir / "checkpoints" / "last.pt")["model"]
    assert compiled_state.keys() == eager_state.keys()
    assert all(torch.allclose(compiled_state[k], eager_state[k], rtol=1e-3, atol=1e-5) for k in eager_state)
    # Compiled, Adam's update is PyTorch's fused kernel; eager runs keep the default one.
    fused = load_checkpoint(compiled.run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0]["fused"]
    assert fused is True
    assert not load_checkpoint(eager.run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0]["fused"]

    # Stopped after epoch 1 and resumed, compiled, to 3 epochs: the uninterrupted run's curve.
    first = run(tmp_path, "resumed", ["training.compile=true", "training.epochs=1"])
    resumed = run(tmp_path, "resumed", ["training.compile=true"], resume_dir=first.run_dir)
    rows = read_metrics(resumed.run_dir / "metrics.csv")[1]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for a, b in zip(without_seconds(compiled.history), without_seconds(rows), strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


def test_compile_auto_compiles_what_its_rule_chooses_and_says_so(tmp_path, monkeypatch):
    import dlcli.devices

    write_config(tmp_path / "c.yaml", synthetic_config(epochs=2))
    monkeypatch.setattr(dlcli.devices, "COMPILE_MIN_STEPS", 1)  # the tiny run counts as long
    chosen = run(tmp_path, "auto", ["training.compile=auto"])
    info = json.loads((chosen.run_dir / "run.json").read_text())
    assert info["compile"] == "default" and info["compile_reason"].startswith("auto: compiled")
    assert info["compiled_step"].startswith("one graph") and info["compile_seconds"] > 0
    from conftest import invoke

    printed = invoke("train", tmp_path / "c.yaml", "--runs-dir", tmp_path / "forced", "--set", "training.compile=true")
    assert printed.exit_code == 0, printed.output
    assert re.search(r"compiled \(default, set in the config\): \d+\.\d s compiling", printed.output)
    (forced,) = (tmp_path / "forced").iterdir()
    rows = read_metrics(forced / "metrics.csv")[1]
    for a, b in zip(rows, chosen.history, strict=True):  # the same compiled step as compile: true
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)


def test_an_optimizer_without_a_fused_kernel_has_its_update_compiled(tmp_path):
    raw = synthetic_config(epochs=2)
    raw["optimizer"] = {"name": "rmsprop", "lr": 0.01, "momentum": 0.5}
    write_config(tmp_path / "c.yaml", raw)
    eager = run(tmp_path, "eager", [])
    compiled = run(tmp_path, "compiled", ["training.compile=true"])
    for a, b in zip(without_seconds(eager.history), without_seconds(compiled.history), strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)
    groups = load_checkpoint(compiled.run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert not groups[0].get("fused")


def _trainer(model, make_optimizer, compile_mode):
    from dlcli.engine import Trainer

    return Trainer(
        model,
        make_optimizer(model.parameters()),
        torch.nn.functional.cross_entropy,
        lambda out, y: (out.argmax(1) == y).sum(),
        compile_mode=compile_mode,
    )


def _blobs():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=gen)
    x = torch.tensor([[2.0, 0.0, 1.0], [-2.0, 0.0, 0.0], [0.0, 2.5, -1.0]])[y] + 0.7 * torch.randn(96, 3, generator=gen)
    return x, y


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.AdamW(p, lr=0.02, eps=1e-7, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    ],
    ids=["adamw", "sgd-nesterov"],
)
def test_the_step_is_one_graph_equal_to_eager_and_a_new_learning_rate_does_not_recompile(make_optimizer):
    from dlcli.engine import Batches

    x, y = _blobs()
    trainers = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        trainer = trainers[mode] = _trainer(model, make_optimizer, mode)
        batches = Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
        history = [trainer.train_one_epoch(batches)]
        for group in trainer.optimizer.param_groups:  # what a schedule does between epochs
            group["lr"] *= 0.5
        # The learning rate reaches the graph as a tensor: a new value must not compile again.
        with torch._dynamo.config.patch(error_on_recompile=True):
            history.append(trainer.train_one_epoch(batches))
        trainer.history = history
    eager, compiled = trainers[None], trainers["default"]
    assert compiled.compiled_step.startswith("one graph") and eager.compiled_step is None
    assert compiled.compile_seconds > 0
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    # The optimizer's own state tensors carried the update: a checkpoint holds what eager's does.
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        for key, value in eager.optimizer.state[p].items():
            torch.testing.assert_close(compiled.optimizer.state[q][key], value, rtol=1e-5, atol=1e-6)


def test_a_model_with_running_statistics_keeps_two_graphs_and_matches_eager():
    from dlcli.engine import Batches

    x, y = _blobs()
    results = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        # No bias before the batch norm: its gradient would be zero but for rounding, which
        # Adam would scale up to full steps in directions that differ from run to run.
        model = torch.nn.Sequential(
            torch.nn.Linear(3, 16, bias=False), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
        trainer = _trainer(model, lambda p: torch.optim.Adam(p, lr=0.02), mode)
        batches = Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
        results[mode] = (trainer, trainer.train_one_epoch(batches))
    trainer, logs = results["default"]
    assert trainer.compiled_step.startswith("two graphs") and "batch norm" in trainer.compiled_step
    assert logs == pytest.approx(results[None][1], rel=1e-5)
    torch.testing.assert_close(trainer.model[1].running_mean, results[None][0].model[1].running_mean)


def test_the_steps_that_cannot_be_one_graph_say_why():
    from dlcli.models.modules import LSTM, MaskedSequential
    from dlcli.one_graph_step import one_graph_blocker

    cpu = torch.device("cpu")
    masked = MaskedSequential(torch.nn.Embedding(20, 4), LSTM(4, 3, False, False), mask_users=[1])
    adam = torch.optim.Adam(masked.parameters())
    assert "mask_zero" in one_graph_blocker(masked, adam, cpu, 1)
    plain = torch.nn.Linear(3, 2)
    assert one_graph_blocker(plain, torch.optim.Adam(plain.parameters()), cpu, 1) is None
    assert "data parallelism" in one_graph_blocker(plain, torch.optim.Adam(plain.parameters()), cpu, 2)
    assert "Adagrad" in one_graph_blocker(plain, torch.optim.Adagrad(plain.parameters()), cpu, 1)
    assert "CPU" in one_graph_blocker(plain, torch.optim.Adam(plain.parameters()), torch.device("cuda"), 1)
    plain.bias.requires_grad_(False)
    assert "frozen" in one_graph_blocker(plain, torch.optim.Adam(plain.parameters()), cpu, 1)


class _WithUnusedLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Linear(3, 3)
        self.unused = torch.nn.Linear(3, 3)  # in the optimizer, never in the forward

    def forward(self, x):
        return self.used(x)


def test_a_parameter_without_gradient_sends_the_step_back_to_two_graphs():
    # The optimizer skips a parameter without a gradient; a graph would give it zeros, which
    # weight decay would then move. After its eager first step the trainer goes to two graphs.
    from dlcli.engine import Batches

    x, y = _blobs()
    trainers = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        trainer = trainers[mode] = _trainer(
            _WithUnusedLayer(), lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.1), mode
        )
        trainer.train_one_epoch(Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(1)))
    compiled = trainers["default"]
    assert compiled.compiled_step.startswith("two graphs") and "unused.weight" in compiled.compiled_step
    for p, q in zip(trainers[None].model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_optimizer_state_loaded_after_the_first_step_is_the_state_the_graph_updates():
    from dlcli.engine import Batches

    x, y = _blobs()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    trainer = _trainer(model, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), "default")
    batches = Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
    trainer.train_one_epoch(batches)
    # Copies: a state dict holds the live tensors, which load_state_dict may share as they are.
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict())
    # Both continue from the same weights and momentum: one eagerly, one after load_state_dict
    # replaced the optimizer's state tensors under the compiled step.
    torch.manual_seed(0)
    twin = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    eager = _trainer(twin, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), None)
    for t in (eager, trainer):
        t.model.load_state_dict(saved[0])
        t.optimizer.load_state_dict(copy.deepcopy(saved[1]))  # each its own tensors
        t.train_one_epoch(Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(2)))
    assert trainer.compiled_step.startswith("one graph")
    for p, q in zip(eager.model.parameters(), trainer.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            trainer.optimizer.state[q]["momentum_buffer"], eager.optimizer.state[p]["momentum_buffer"]
        )


def test_an_optimizer_option_changed_mid_run_sends_the_step_back_to_two_graphs():
    # The one graph binds every option but the learning rate when it is built: a later change
    # (a callback or schedule editing the group) must reach the update, as it does eagerly.
    from dlcli.engine import Batches
    from dlcli.steps import TWO_GRAPHS

    x, y = _blobs()
    trainers = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        trainer = trainers[mode] = _trainer(model, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), mode)
        batches = Batches(x, y, 16, shuffle=True, generator=torch.Generator().manual_seed(1))
        history = [trainer.train_one_epoch(batches)]
        if mode is not None:
            assert trainer.compiled_step.startswith("one graph")
        trainer.optimizer.param_groups[0].update(weight_decay=0.05, momentum=0.5)
        history.append(trainer.train_one_epoch(batches))
        trainer.history = history
    eager, compiled = trainers[None], trainers["default"]
    assert (
        compiled.compiled_step
        == TWO_GRAPHS + "an optimizer option other than the learning rate changed during training"
    )
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
