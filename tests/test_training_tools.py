"""Issue 31's training tools: label smoothing, clipping, gradient accumulation, per-step
schedules (one_cycle, warm-up) and their exact resume, each against PyTorch's own reference."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import invoke, synthetic_config, write_config
from dlcli.checkpoint import load_checkpoint
from dlcli.config import LossConfig, OptimizerConfig, ScheduleConfig, load_config
from dlcli.engine import Batches, Trainer
from dlcli.losses import label_smoothing_of, make_objective, resolve_loss_name
from dlcli.optim import LrSchedule, make_clipper
from dlcli.rundir import read_metrics
from dlcli.steps import TWO_GRAPHS

# -- label smoothing -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_label_smoothing_is_pytorchs_cross_entropy(name):
    gen = torch.Generator().manual_seed(0)
    out, y = torch.randn(20, 5, generator=gen), torch.randint(0, 5, (20,), generator=gen)
    objective = make_objective(name, "multiclass", 5, label_smoothing=0.1)
    assert torch.equal(objective.loss_fn(out, y), F.cross_entropy(out, y, label_smoothing=0.1))
    assert not torch.equal(objective.loss_fn(out, y), F.cross_entropy(out, y))


def test_binary_label_smoothing_moves_targets_towards_a_half():
    gen = torch.Generator().manual_seed(0)
    out, y = torch.randn(20, 1, generator=gen), torch.randint(0, 2, (20, 1), generator=gen).float()
    objective = make_objective("binary_crossentropy", "binary", 2, label_smoothing=0.2)
    expected = F.binary_cross_entropy_with_logits(out, y * 0.8 + 0.1)
    assert torch.allclose(objective.loss_fn(out, y), expected)


def test_loss_is_a_name_or_a_mapping(tmp_path):
    raw = synthetic_config()
    plain = load_config(None, raw=raw)
    assert plain.loss == "sparse_categorical_crossentropy" and label_smoothing_of(plain.loss) == 0.0
    raw["loss"] = {"name": "categorical_crossentropy", "label_smoothing": 0.1}
    smoothed = load_config(None, raw=raw)
    assert smoothed.loss == LossConfig("categorical_crossentropy", 0.1)
    assert resolve_loss_name(smoothed.loss, "multiclass") == "categorical_crossentropy"
    assert label_smoothing_of(smoothed.loss) == 0.1


# -- clipping ------------------------------------------------------------------------------


def grads_of(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(3))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 5
    return params


def test_global_clipnorm_is_clip_grad_norm():
    ours, ref = grads_of(), grads_of()
    make_clipper(OptimizerConfig(global_clipnorm=1.0))(ours)
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, ref))
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ours]))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_clipnorm_clips_each_tensor_and_clipvalue_each_value():
    ours = grads_of()
    make_clipper(OptimizerConfig(clipnorm=1.0))(ours)
    for p, ref in zip(ours, grads_of()):
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        assert torch.equal(p.grad, ref.grad)
        assert float(torch.linalg.vector_norm(p.grad)) == pytest.approx(1.0, abs=1e-5)
    values = grads_of()
    make_clipper(OptimizerConfig(clipvalue=0.5))(values)
    assert all(float(p.grad.abs().max()) <= 0.5 for p in values)
    assert make_clipper(OptimizerConfig()) is None


def blobs(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])[y] + 0.5 * torch.randn(n, 2, generator=gen)
    return x, y


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def correct(out, y):
    return (out.detach().argmax(1) == y).sum()


def test_a_clipped_trainer_step_is_the_hand_written_loop_with_clip_grad_norm():
    x, y = blobs(64)
    model, ref = tiny_model(), tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, opt, F.cross_entropy, correct, clip=make_clipper(OptimizerConfig(global_clipnorm=0.1)))
    trainer.fit(Batches(x, y, 16), epochs=2)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(2):
        for start in range(0, 64, 16):
            ref_opt.zero_grad()
            F.cross_entropy(ref(x[start : start + 16]), y[start : start + 16]).backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
            ref_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))


# -- gradient accumulation -----------------------------------------------------------------


@pytest.mark.parametrize("n", [96, 90, 5])  # whole windows; a last window of 3 micro-batches, one partial; one
def test_k_micro_batches_update_as_one_batch_of_k_times_b(n):
    x, y = blobs(n)
    runs = {}
    for name, batch, k in (("accumulated", 8, 4), ("whole", 32, 1)):
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        trainer = Trainer(model, opt, F.cross_entropy, correct, accumulation=k)
        batches = Batches(x, y, batch, shuffle=True, generator=torch.Generator().manual_seed(3))
        history = trainer.fit(batches, epochs=3)
        runs[name] = (model, history, opt)
    (a, ha, oa), (b, hb, _) = runs["accumulated"], runs["whole"]
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), (p - q).abs().max()
    assert oa.state[next(a.parameters())]["momentum_buffer"] is not None
    for ra, rb in zip(ha, hb):  # the logged loss is the mean over samples, as without accumulation
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-6)
        assert ra["accuracy"] == rb["accuracy"]


def test_accumulation_under_compile_falls_back_to_two_graphs_and_says_why():
    model = tiny_model()
    trainer = Trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        F.cross_entropy,
        correct,
        compile_mode="default",
        accumulation=2,
    )
    assert trainer.compiled_step.startswith(TWO_GRAPHS) and "gradient accumulation" in trainer.compiled_step


def test_batch_norm_with_accumulation_is_noted_once(tmp_path):
    raw = synthetic_config(epochs=1, gradient_accumulation_steps=2)
    raw["model"] = {
        "layers": [{"dense": {"units": 8}}, {"batchnorm": {}}, {"dense": {"units": 3, "activation": "softmax"}}]
    }
    result = invoke("train", write_config(tmp_path / "bn.yaml", raw), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert result.output.count("batch norm's statistics are those of each micro-batch") == 1


# -- per-step schedules --------------------------------------------------------------------


def lr_steps(run: Path) -> list[tuple[int, int, float]]:
    with (run / "lr_steps.csv").open() as f:
        return [(int(r["epoch"]), int(r["step"]), float(r["lr"])) for r in csv.DictReader(f)]


def reference_one_cycle(lr, total, **options):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, cycle_momentum=False, **options)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def train_run(tmp_path: Path, raw: dict, name: str = "runs") -> Path:
    result = invoke("train", write_config(tmp_path / f"{name}.yaml", raw), "--runs-dir", tmp_path / name, "-q")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / name).iterdir()
    return run


def test_one_cycle_rates_are_pytorchs_onecyclelr_at_every_step(tmp_path):
    # 160 training samples, batches of 16, windows of 3: 4 updates per epoch (the last of 1 batch).
    raw = synthetic_config(epochs=3, gradient_accumulation_steps=3, schedule={"name": "one_cycle", "pct_start": 0.3})
    run = train_run(tmp_path, raw)
    rows = lr_steps(run)
    expected = reference_one_cycle(0.01, 12, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    assert [r[1] for r in rows] == list(range(1, 13))
    assert [r[0] for r in rows] == [1] * 4 + [2] * 4 + [3] * 4
    assert max(abs(r[2] - e) for r, e in zip(rows, expected)) <= 1e-12
    _, metrics = read_metrics(run / "metrics.csv")
    assert [m["lr"] for m in metrics] == pytest.approx([expected[0], expected[4], expected[8]], abs=1e-12)


def momenta_of(optimizer, schedule, steps):
    """The momentum (Adam's beta_1, else SGD's momentum) of each of `steps` updates."""
    seen = []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        seen.append(group["betas"][0] if "betas" in group else group["momentum"])
        optimizer.step()
        schedule()
    return seen


def test_one_cycle_cycles_momentum_as_pytorchs_onecyclelr_does():
    config = ScheduleConfig(name="one_cycle", pct_start=0.3, base_momentum=0.8, max_momentum=0.93)
    adam = torch.optim.Adam(tiny_model().parameters(), lr=0.01)
    ours = momenta_of(adam, LrSchedule(config, adam, epochs=3, steps_per_epoch=7).step_batch, 21)
    ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=0.01, total_steps=21, pct_start=0.3, base_momentum=0.8, max_momentum=0.93
    )
    expected = momenta_of(ref_opt, ref.step, 21)
    assert max(abs(a - b) for a, b in zip(ours, expected)) <= 1e-12
    assert ours[0] == pytest.approx(0.93) and min(ours) == pytest.approx(0.8, abs=1e-3)  # it does cycle
    # Left alone: an SGD without momentum (cycling would switch one on), and cycle_momentum: false.
    for optimizer, options in (
        (torch.optim.SGD(tiny_model().parameters(), lr=0.01), {}),
        (torch.optim.Adam(tiny_model().parameters(), lr=0.01), {"cycle_momentum": False}),
    ):
        schedule = LrSchedule(ScheduleConfig(name="one_cycle", **options), optimizer, epochs=1, steps_per_epoch=9)
        assert set(momenta_of(optimizer, schedule.step_batch, 9)) == {0.0 if not options else 0.9}


def test_a_group_added_mid_cycle_joins_the_momentum_cycle():
    """Unfreezing (training.fine_tune) adds a parameter group during one_cycle: it takes the
    cycle's momentum from then on, as group 0 does."""
    from dlcli.optim import add_param_group

    model, extra = tiny_model(), torch.nn.Linear(4, 4)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = LrSchedule(ScheduleConfig(name="one_cycle"), adam, epochs=2, steps_per_epoch=10)
    momenta_of(adam, schedule.step_batch, 4)
    add_param_group(adam, schedule, list(extra.parameters()), 0.1)
    for _ in range(12):
        first, added = adam.param_groups
        assert added["betas"] == first["betas"] and added["lr"] == pytest.approx(first["lr"] * 0.1)
        adam.step()
        schedule.step_batch()


def test_warm_up_scales_each_schedule_linearly_then_hands_over(tmp_path):
    schedule = {"name": "step", "step_size": 1, "gamma": 0.5, "warmup_steps": 6}
    run = train_run(tmp_path, synthetic_config(epochs=3, schedule=schedule))  # 10 updates per epoch
    lrs = [r[2] for r in lr_steps(run)]
    warm = [0.01 * (s + 1) / 6 for s in range(6)]
    assert lrs[:6] == pytest.approx(warm, abs=1e-15)
    assert lrs[6:10] == pytest.approx([0.01] * 4, abs=1e-15)
    assert lrs[10:20] == pytest.approx([0.005] * 10, abs=1e-15)
    assert lrs[20:] == pytest.approx([0.0025] * 10, abs=1e-15)


def test_warm_up_in_epochs_spans_the_epochs_updates():
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.4)
    sched = LrSchedule(ScheduleConfig(name="cosine", warmup_epochs=2), opt, epochs=4, steps_per_epoch=5)
    seen = []
    for _ in range(2):
        for _ in range(5):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step_batch()
        sched.step({})
    cosine = 0.4 * (1 + math.cos(math.pi / 4)) / 2  # epoch 2's cosine rate
    assert seen[:5] == pytest.approx([0.4 * (s + 1) / 10 for s in range(5)])
    assert seen[5:] == pytest.approx([cosine * (s + 6) / 10 for s in range(5)])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * (1 + math.cos(math.pi / 2)) / 2)


# -- exact resume --------------------------------------------------------------------------


def killed_and_resumed(tmp_path: Path, raw: dict) -> tuple[Path, Path]:
    """A reference run, and one SIGKILLed in the middle of an epoch after its second, then resumed."""
    from test_reliability import start, wait_for_rows

    config = write_config(tmp_path / "kill.yaml", raw)
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
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    resumed = subprocess.run(
        [sys.executable, "-m", "dlcli", "train", "--resume", str(run), "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    return ref_run, run


def assert_resumed_as_uninterrupted(ref_run: Path, run: Path, epochs: int) -> None:
    """The killed-and-resumed run's metrics.csv (timings aside) and last weights equal the
    uninterrupted run's, bit for bit."""

    def without_seconds(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    _, ref_rows = read_metrics(ref_run / "metrics.csv")
    _, rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert without_seconds(rows) == without_seconds(ref_rows)
    ref_state = load_checkpoint(ref_run / "checkpoints" / "last.pt")["model"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "one_cycle", "max_lr": 0.02},
        {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 3},
    ],
    ids=["one_cycle", "warm_up"],
)
def test_a_run_killed_mid_window_and_mid_schedule_resumes_bit_identically(tmp_path, schedule):
    raw = synthetic_config(epochs=5, batch_size=8, gradient_accumulation_steps=3, schedule=schedule)
    raw["optimizer"]["global_clipnorm"] = 1.0
    raw["loss"] = {"name": "sparse_categorical_crossentropy", "label_smoothing": 0.1}
    raw["data"]["synthetic"].update(samples=3000, input_shape=[32])
    raw["model"] = {"preset": "mlp", "hidden": [64, 64], "dropout": 0.2}
    ref_run, run = killed_and_resumed(tmp_path, raw)
    assert_resumed_as_uninterrupted(ref_run, run, epochs=5)
    assert (run / "lr_steps.csv").read_text() == (ref_run / "lr_steps.csv").read_text()


# -- bad input -----------------------------------------------------------------------------


def one_paragraph_exit_2(tmp_path: Path, raw: dict, *words: str) -> None:
    result = invoke("train", write_config(tmp_path / "bad.yaml", raw), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "\n\n" not in text, text
    for word in words:
        assert word in text, text
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def bad(**changes) -> dict:
    raw = synthetic_config()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        if key:
            raw.setdefault(section, {})[key] = value
        else:
            raw[section] = value
    return raw


@pytest.mark.parametrize(
    "raw,words",
    [
        (bad(training__gradient_accumulation_steps=0), ["training.gradient_accumulation_steps", "at least 1"]),
        (bad(training__schedule={"name": "one_cycle", "max_lr": 0}), ["training.schedule.max_lr", "greater than 0"]),
        (bad(loss__={"name": "sparse_categorical_crossentropy", "label_smoothing": 1.0}), ["loss.label_smoothing"]),
        (bad(loss__={"name": "sparse_categorical_crossentropy", "label_smoothing": -0.1}), ["loss.label_smoothing"]),
        (bad(loss__={"name": "mse", "label_smoothing": 0.1}), ["loss.label_smoothing", "regression"]),
        (bad(optimizer__clipnorm=1.0, optimizer__clipvalue=0.5), ["optimizer.clipvalue", "clipnorm and clipvalue"]),
        (bad(optimizer__clipnorm=1.0, optimizer__global_clipnorm=1.0), ["optimizer.global_clipnorm"]),
        (bad(training__schedule={"name": "one_cycle", "warmup_steps": 5}), ["one_cycle warms up by itself"]),
        (
            bad(training__schedule={"name": "one_cycle", "base_momentum": 0.95, "max_momentum": 0.85}),
            ["training.schedule.base_momentum", "above max_momentum"],
        ),
        (bad(training__schedule={"name": "step", "warmup_steps": 5, "warmup_epochs": 1}), ["not both"]),
        (bad(training__cuda_graph=True, training__gradient_accumulation_steps=2), ["CUDA graph"]),
    ],
)
def test_bad_training_tool_options_are_one_paragraph_and_exit_2(tmp_path, raw, words):
    one_paragraph_exit_2(tmp_path, raw, *words)


def test_label_smoothing_on_data_whose_auto_loss_is_a_regression_loss(tmp_path):
    raw = synthetic_config()
    raw["data"]["synthetic"] = {"task": "regression", "input_shape": [8], "classes": 1, "samples": 100}
    raw["loss"] = {"name": "auto", "label_smoothing": 0.1}
    one_paragraph_exit_2(tmp_path, raw, "loss.label_smoothing", "mse is a regression loss")


# -- data parallelism ----------------------------------------------------------------------


class CountingNoSync(torch.nn.Module):
    """A model with DDP's no_sync(): counts the micro-batches run without an all-reduce."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_model()
        self.unsynced = 0
        self.syncing = True

    def forward(self, x):
        if not self.syncing:
            self.unsynced += 1
        return self.inner(x)

    def no_sync(self):
        import contextlib

        @contextlib.contextmanager
        def off():
            self.syncing = False
            try:
                yield
            finally:
                self.syncing = True

        return off()


def test_micro_batches_that_do_not_step_skip_the_all_reduce():
    x, y = blobs(90)  # batches of 8: 12 micro-batches (the last of 2 samples), 3 windows of 4
    model = CountingNoSync()
    steps = []
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, correct, accumulation=4)
    original = trainer.step.apply_update

    def counting_update():
        steps.append(model.unsynced)
        original()

    trainer.step.apply_update = counting_update
    trainer.fit(Batches(x, y, 8), epochs=1)
    assert steps == [3, 6, 9]  # 3 unsynced micro-batches per window; the 4th all-reduces and steps


@pytest.mark.e2e
def test_accumulation_with_two_processes_matches_one(tmp_path):
    raw = synthetic_config(epochs=2, batch_size=16, gradient_accumulation_steps=3)
    raw["data"]["synthetic"].update(samples=400, test_samples=50)
    config = write_config(tmp_path / "dp.yaml", raw)

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-m", "dlcli", "train", str(config), *args, "-q"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr + done.stdout

    run("--runs-dir", "one")
    run("--runs-dir", "two", "--nproc", "2")
    (one,), (two,) = list((tmp_path / "one").iterdir()), list((tmp_path / "two").iterdir())
    for a, b in zip(read_metrics(one / "metrics.csv")[1], read_metrics(two / "metrics.csv")[1]):
        for key in ("loss", "accuracy", "val_loss"):
            assert b[key] == pytest.approx(a[key], abs=2e-4), key
    w_one = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    w_two = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    assert all(torch.allclose(w_one[k], w_two[k], atol=1e-4) for k in w_one)


def test_evaluate_reports_the_test_loss_training_reported_with_label_smoothing(tmp_path):
    from conftest import trained_run

    raw = synthetic_config(epochs=1)
    raw["loss"] = {"name": "sparse_categorical_crossentropy", "label_smoothing": 0.2}
    run = trained_run(write_config(tmp_path / "c.yaml", raw), tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    result = invoke("evaluate", run, "--checkpoint", "last", "--json")
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["loss"] == pytest.approx(results["test_loss"], rel=1e-6)
