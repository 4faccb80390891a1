import pytest
import torch

from dlcli.callbacks import EarlyStopping
from dlcli.engine import Batches, Callback, RunControl, Trainer
from dlcli.errors import TrainingDiverged, TrainingInterrupted


def blobs(n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    x = centers[y] + 0.5 * torch.randn(n, 2, generator=gen)
    return x, y


def make_trainer(callbacks=(), control=None, loss_fn=None, lr=0.05, **options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def correct(out, y):
        return (out.detach().argmax(1) == y).sum()

    return Trainer(
        model,
        optimizer,
        loss_fn or torch.nn.functional.cross_entropy,
        correct,
        callbacks=callbacks,
        control=control,
        **options,
    )


def test_batches_cover_every_sample_once_and_reshuffle():
    x = torch.arange(10).float().unsqueeze(1)
    batches = Batches(x, torch.arange(10), 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert len(batches) == 3
    epoch1 = torch.cat([yb for _, yb, _ in batches])
    epoch2 = torch.cat([yb for _, yb, _ in batches])
    assert sorted(epoch1.tolist()) == list(range(10)) == sorted(epoch2.tolist())
    assert epoch1.tolist() != epoch2.tolist()
    again = Batches(x, torch.arange(10), 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert torch.cat([yb for _, yb, _ in again]).tolist() == epoch1.tolist()
    assert [n for _, _, n in batches] == [4, 4, 2]


def test_uint8_inputs_are_scaled_per_batch():
    x = torch.tensor([[0, 255], [51, 102]], dtype=torch.uint8)
    ((xb, _, _),) = Batches(x, torch.tensor([0, 1]), 2, input_scale=1 / 255)
    assert xb.dtype == torch.float32
    assert torch.allclose(xb, torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert x.dtype == torch.uint8  # the stored data is untouched


def test_ranks_split_each_global_batch():
    x = torch.arange(10).float().unsqueeze(1)
    shares = []
    for rank in range(2):
        b = Batches(
            x, torch.arange(10), 4, shuffle=True, generator=torch.Generator().manual_seed(5), rank=rank, world_size=2
        )
        shares.append([yb.tolist() for _, yb, _ in b])
    single = [
        yb.tolist()
        for _, yb, _ in Batches(x, torch.arange(10), 4, shuffle=True, generator=torch.Generator().manual_seed(5))
    ]
    assert [a + b for a, b in zip(*shares)] == single


def test_fit_learns_and_logs_every_epoch():
    x, y = blobs()
    trainer = make_trainer()
    history = trainer.fit(
        Batches(x[:200], y[:200], 32, shuffle=True, generator=torch.Generator().manual_seed(0)),
        Batches(x[200:], y[200:], 64),
        epochs=4,
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert set(history[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert history[-1]["val_accuracy"] > 0.9 and history[-1]["loss"] < history[0]["loss"]


def test_diverging_loss_names_epoch_and_step():
    x, y = blobs()
    calls = {"n": 0}

    def poisoned(out, target):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(out, target)
        return loss * float("nan") if calls["n"] == 11 else loss

    trainer = make_trainer(loss_fn=poisoned)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit(Batches(x, y, 32), epochs=3)  # 8 steps per epoch: call 11 is epoch 2, step 3
    assert (info.value.epoch, info.value.step) == (2, 3)
    assert "lower the learning rate" in info.value.full_message().lower()


def test_stop_signal_ends_at_the_next_step():
    x, y = blobs()
    control = RunControl()

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs, trainer):
            control.signal = "SIGTERM"

    trainer = make_trainer(callbacks=[StopAfterFirstEpoch()], control=control)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(Batches(x, y, 32), epochs=3)
    assert info.value.exit_code == 143 and trainer.running.step == 1 and len(trainer.history) == 1


def test_early_stopping_restores_best_weights():
    x, y = blobs()
    early = EarlyStopping("val_loss", patience=1)
    snapshots = {}

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs, trainer):
            snapshots[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer = make_trainer(callbacks=[early, Snapshot()], lr=0.5)
    assert early.restored_best_weights is False  # says what happened, and nothing has yet
    history = trainer.fit(Batches(x[:200], y[:200], 16), Batches(x[200:], y[200:], 64), epochs=30)
    best_epoch = min(history, key=lambda h: h["val_loss"])["epoch"]
    assert early.best_epoch == best_epoch
    assert len(history) < 30 and best_epoch < history[-1]["epoch"]  # stopped early, after worse epochs
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, snapshots[best_epoch][k])
    assert early.restored_best_weights is True


def test_early_stopping_without_a_best_epoch_restores_nothing():
    """No epoch ran (a run resumed at its last epoch): there are no best weights to restore,
    and the callback must not claim it restored them."""
    x, y = blobs()
    early = EarlyStopping("val_loss", patience=1)
    trainer = make_trainer(callbacks=[early])
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(Batches(x, y, 32), Batches(x, y, 64), epochs=2, start_epoch=2)
    assert early.restored_best_weights is False
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


@pytest.mark.parametrize(
    "monitor,values,stopped",
    [
        ("val_loss", [1.0, 0.95, 0.80], 2),  # 0.05 better is not better by min_delta 0.1
        ("val_accuracy", [0.50, 0.55, 0.70], 2),
        ("val_loss", [1.0, 0.85, 0.70], 0),  # better by more than 0.1 each epoch: never stops
    ],
)
def test_early_stopping_counts_only_improvements_larger_than_min_delta(monitor, values, stopped):
    early = EarlyStopping(monitor, patience=1, min_delta=0.1)
    trainer = make_trainer()
    for epoch, value in enumerate(values, 1):
        early.on_epoch_end(epoch, {monitor: value}, trainer)
        if trainer.stop_training:
            break
    assert early.stopped_epoch == stopped
    assert early.best_epoch == (1 if stopped else len(values))


def test_mode_is_inferred_from_the_metric_name():
    assert EarlyStopping("val_accuracy").mode == "max"
    assert EarlyStopping("val_loss").mode == "min"
    assert EarlyStopping("val_mae").mode == "min"


def test_graphed_step_trains_exactly_like_the_eager_loop():
    """The step a CUDA graph records (batch gathered through a fixed index tensor, loss and
    metric written into buffers at a device-side counter, warm-up and odd-sized batches
    eager, recorded again after the learning rate changes) gives the eager loop's weights and
    history bit for bit. On the CPU the recorded body runs eagerly; tests/test_cuda.py replays it."""
    from dlcli.steps import WARMUP_STEPS

    x, y = blobs(230)
    x = (x * 40 + 128).clamp(0, 255).to(torch.uint8)  # uint8 inputs, scaled per batch
    results = []
    for graphed in (False, True):
        trainer = make_trainer(cuda_graph=graphed)
        trainer.schedule = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=2, gamma=0.5)
        trainer.schedule.step = lambda logs, s=trainer.schedule: type(s).step(s)
        train = Batches(
            x[:200], y[:200], 32, shuffle=True, generator=torch.Generator().manual_seed(3), input_scale=1 / 255
        )  # 6 full batches and one of 8 per epoch
        history = trainer.fit(train, Batches(x[200:], y[200:], 64, input_scale=1 / 255), epochs=5)
        results.append((history, [p.detach().clone() for p in trainer.model.parameters()], trainer))
    (eager_history, eager_weights, _), (graph_history, graph_weights, trainer) = results
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in eager_history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in graph_history] == strip
    assert all(torch.equal(a, b) for a, b in zip(eager_weights, graph_weights))
    graphed = trainer.step.graphed
    assert graphed.recordings == 3  # lr 0.05, 0.025 (epoch 3), 0.0125 (epoch 5)
    assert graphed.eager_steps_left == 0 and WARMUP_STEPS < 6
    assert graph_history[-1]["val_accuracy"] > 0.9


def test_a_cuda_graph_run_is_assembled_like_an_eager_one(tmp_path, monkeypatch):
    """training.py's side of cuda_graph, on the CPU (where the recorded body runs eagerly once
    the device check is bypassed): the trainer steps through GraphedStep, and the run's
    metrics, results and checkpoint equal an eager run's exactly, across a learning-rate
    schedule and an odd-sized last batch."""
    import io

    from rich.console import Console

    import dlcli.steps
    import dlcli.training
    from conftest import synthetic_config, write_config
    from dlcli.config import load_config

    made = []

    class CountingGraphedStep(dlcli.steps.GraphedStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(dlcli.steps, "GraphedStep", CountingGraphedStep)
    monkeypatch.setattr(dlcli.training, "check_device_options", lambda config, device: None)
    config_file = write_config(
        tmp_path / "c.yaml",
        synthetic_config(epochs=4, batch_size=24, schedule={"name": "step", "step_size": 2, "gamma": 0.5}),
    )
    outcomes = {}
    for graph in ("false", "true"):
        config = load_config(config_file, [f"training.cuda_graph={graph}"])
        outcomes[graph] = dlcli.training.train(
            config, runs_dir=tmp_path / graph, console=Console(file=io.StringIO()), draw_plots=False
        )
    assert len(made) == 1 and made[0].recordings == 2 and not made[0].record
    eager, graphed = outcomes["false"], outcomes["true"]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in graphed.history] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in eager.history
    ]
    assert graphed.results == eager.results
    weights = [torch.load(o.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"] for o in (eager, graphed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize(
    "make_optimizer, compiled_update",
    [
        (lambda params: torch.optim.Adam(params, fused=True), False),  # already one kernel
        (lambda params: torch.optim.Adam(params), True),
        (lambda params: torch.optim.RMSprop(params), True),
    ],
)
def test_compile_leaves_a_fused_update_alone_and_compiles_the_others(make_optimizer, compiled_update):
    model = torch.nn.Linear(2, 3)
    trainer = Trainer(
        model,
        make_optimizer(model.parameters()),
        torch.nn.functional.cross_entropy,
        lambda out, y: (out.argmax(1) == y).sum(),
        compile_mode="default",
    )
    # torch.compile wraps lazily: nothing is compiled until the first step.
    assert (trainer.step.update != trainer.step._optimizer_update) is compiled_update
    assert trainer.step.forward_metric != trainer.step.math.loss_and_metric


def test_recurrent_training_keeps_freed_memory_for_reuse_where_glibc_allows():
    import platform
    import sys

    from dlcli.devices import keep_freed_memory_for_reuse

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory_for_reuse() is glibc


class ThreadRecordingInputs:
    """Inputs that note which thread gathered each batch (as a memory-mapped tensor would be
    gathered); `fail_at` makes that batch's gathering raise."""

    def __init__(self, x, fail_at=None):
        self.x, self.fail_at, self.threads, self.gathered = x, fail_at, [], 0

    def __len__(self):
        return len(self.x)

    @property
    def device(self):
        return self.x.device

    def __getitem__(self, index):
        import threading

        self.threads.append(threading.current_thread().name)
        self.gathered += 1
        if self.fail_at is not None and self.gathered > self.fail_at:
            raise OSError("the disk went away")
        return self.x[index]


def read_ahead_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("dlcli-read-ahead")]


def test_batches_read_ahead_on_a_thread_are_the_same_batches_in_the_same_order():
    x, y = torch.arange(50).float().unsqueeze(1), torch.arange(50)

    def epochs(inputs, read_ahead):
        def shift(xb, epoch, index):  # a transform, as augmentation is: it sees the same batch numbers
            return xb + 1000 * epoch + 100 * index

        batches = Batches(
            inputs,
            y,
            8,
            shuffle=True,
            generator=torch.Generator().manual_seed(3),
            read_ahead=read_ahead,
            transform=shift,
        )
        out = []
        for epoch in range(2):
            batches.epoch = epoch
            out.append([(xb.tolist(), yb.tolist(), n) for xb, yb, n in batches])
        return out

    recorded = ThreadRecordingInputs(x)
    assert epochs(recorded, read_ahead=2) == epochs(x, read_ahead=0)
    assert recorded.threads and all(name.startswith("dlcli-read-ahead") for name in recorded.threads)
    assert not read_ahead_threads()


def test_reading_ahead_stops_with_the_loop_and_passes_errors_on():
    x, y = torch.arange(40).float().unsqueeze(1), torch.arange(40)
    recorded = ThreadRecordingInputs(x)
    batches = Batches(recorded, y, 4, read_ahead=2)
    for i, _ in enumerate(batches):
        if i == 1:
            break  # the loop ends early (early stopping, Ctrl-C): the thread must end with it
    assert not read_ahead_threads()
    assert recorded.gathered <= 2 + 2  # what was taken, and at most read_ahead more
    failing = Batches(ThreadRecordingInputs(x, fail_at=3), y, 4, read_ahead=2)
    with pytest.raises(OSError, match="the disk went away"):
        list(failing)
    assert not read_ahead_threads()
