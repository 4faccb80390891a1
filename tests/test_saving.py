"""When the run folder catches up with training: the save schedule, saves that cover several
epochs, what an interrupt or a stop by a later callback leaves, and the display of short epochs."""

import io
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

import dlcli.engine
import dlcli.progress
from conftest import synthetic_config, write_config
from dlcli.callbacks import SaveSchedule
from dlcli.checkpoint import load_checkpoint, model_weights
from dlcli.config import load_config
from dlcli.engine import Callback, RunControl
from dlcli.errors import TrainingInterrupted
from dlcli.rundir import read_json, read_metrics
from dlcli.training import train


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_schedule_saves_first_and_last_and_at_most_a_fiftieth_of_the_time():
    clock = FakeClock()
    schedule = SaveSchedule(cost_multiple=50, max_unsaved_s=10, clock=clock)
    assert schedule.due(final=False)  # nothing saved yet: the first epoch always is

    def save_taking(seconds):
        def save():
            clock.now += seconds

        return save

    schedule.timed(save_taking(0.004))  # a table's save: 4 ms
    clock.now += 0.1
    assert not schedule.due(final=False)
    assert schedule.due(final=True)  # the last epoch, or training stops
    clock.now += 0.11  # past 0.2 s since the save: 50 times what it took
    assert schedule.due(final=False)

    schedule.timed(save_taking(1.0))  # a big model's checkpoint: 1 s
    clock.now += 9.9
    assert not schedule.due(final=False)
    clock.now += 0.1  # never more than 10 s unsaved, whatever a save costs
    assert schedule.due(final=False)


def only_first_and_last(self, final):
    """What the schedule does with epochs far shorter than a save: saves after the first epoch
    and the last, none between (here whatever the machine's speed)."""
    return final or self.saved_at is None


class Watch(Callback):
    """Each epoch's weights as it ended, and the epoch last.pt held at that moment."""

    def __init__(self, run_parent: Path, stop_in_epoch=None, control=None, stop_after_epoch=None):
        self.run_parent = run_parent
        self.weights: dict[int, dict] = {}
        self.last_pt_epochs: list[int] = []
        self.stop_in_epoch, self.control, self.stop_after_epoch = stop_in_epoch, control, stop_after_epoch

    def on_train_begin(self, trainer):
        self.trainer = trainer

    def on_epoch_begin(self, epoch, trainer):
        if epoch == self.stop_in_epoch:  # stops after this epoch's first step, as Ctrl-C does
            self.control.signal = "SIGINT"

    def on_epoch_end(self, epoch, logs, trainer):
        self.weights[epoch] = model_weights(trainer.model)
        (run,) = self.run_parent.iterdir()
        self.last_pt_epochs.append(load_checkpoint(run / "checkpoints" / "last.pt")["epoch"])
        if epoch == self.stop_after_epoch:  # as a sweep's pruner does, after the writer
            trainer.stop_training = True


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def quiet_console():
    return Console(file=io.StringIO())


def test_interrupt_saves_the_epochs_noted_since_the_last_save_and_resume_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(SaveSchedule, "due", only_first_and_last)
    config = load_config(write_config(tmp_path / "c.yaml", synthetic_config(epochs=5)))
    control = RunControl()
    watch = Watch(tmp_path / "runs", stop_in_epoch=4, control=control)
    with pytest.raises(TrainingInterrupted):
        train(config, runs_dir=tmp_path / "runs", console=quiet_console(), control=control, extra_callbacks=[watch])
    (run,) = (tmp_path / "runs").iterdir()
    assert watch.last_pt_epochs == [1, 1, 1]  # while training, only the first epoch was saved

    # The interrupt came after a step of epoch 4; the folder holds epoch 3 as it ended.
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and same_weights(last["model"], watch.weights[3])
    assert not same_weights(last["model"], model_weights(watch.trainer.model))  # not the model as interrupted
    _, rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    info = read_json(run / "run.json")
    assert (info["status"], info["epochs_completed"]) == ("interrupted", 3)
    best_epoch = min(rows, key=lambda r: r["val_loss"])["epoch"]
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["epoch"] == best_epoch and same_weights(best["model"], watch.weights[best_epoch])

    # Resumed, it ends where an uninterrupted run ends: optimizer and random state were kept too.
    resumed = train(
        load_config(run / "config.yaml"), runs_dir=tmp_path / "runs", console=quiet_console(), resume_dir=run
    )
    reference = train(config, runs_dir=tmp_path / "reference", console=quiet_console())
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)
    assert same_weights(
        load_checkpoint(run / "checkpoints" / "last.pt")["model"],
        load_checkpoint(reference.run_dir / "checkpoints" / "last.pt")["model"],
    )


def test_stop_by_a_later_callback_saves_the_last_epoch_not_the_restored_best(tmp_path, monkeypatch):
    monkeypatch.setattr(SaveSchedule, "due", only_first_and_last)
    # Early stopping that never stops by itself, and whose best epoch is the first (mode max on
    # a falling loss): the weights it restores at the end are not the last epoch's.
    raw = synthetic_config(epochs=6, early_stopping={"monitor": "val_loss", "mode": "max", "patience": 50})
    config = load_config(write_config(tmp_path / "c.yaml", raw))
    watch = Watch(tmp_path / "runs", stop_after_epoch=3)
    outcome = train(config, runs_dir=tmp_path / "runs", console=quiet_console(), extra_callbacks=[watch])
    run = outcome.run_dir
    assert watch.last_pt_epochs == [1, 1, 1]
    early = outcome.best["early_stopping"]
    assert early["restored_best_weights"] and early["best_epoch"] != 3
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and same_weights(last["model"], watch.weights[3])
    assert read_json(run / "run.json")["epochs_completed"] == 3


@pytest.fixture
def frames_only_at_epoch_boundaries(monkeypatch):
    """The engine refreshes a live bar every 0.25 s. These epochs take milliseconds, but on a
    loaded machine one can take longer, and a refresh then adds a frame to the output the tests
    read line by line: an hour's interval leaves only the frames drawn at an epoch's start and end."""
    monkeypatch.setattr(dlcli.engine, "REPORT_INTERVAL_S", 3600.0)


def test_short_epochs_are_not_drawn_live_but_print_the_same_lines(
    tmp_path, monkeypatch, frames_only_at_epoch_boundaries
):
    # An epoch is short when it takes less than the report interval: an hour, so that these are
    # short whatever the load (the next test makes every epoch long).
    monkeypatch.setattr(dlcli.progress, "REPORT_INTERVAL_S", 3600.0)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    config = load_config(write_config(tmp_path / "c.yaml", synthetic_config(epochs=3)))
    train(config, runs_dir=tmp_path / "runs", console=console, draw_plots=False)
    text = out.getvalue()
    # The first epoch is drawn live (its length is not known yet); it was short, so the later
    # ones are printed only when they end.
    assert text.count("\x1b[?25l") == 1  # a Live hides the cursor when it starts
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", text).splitlines()
    titles = [lines.index(f"Epoch {epoch}/3") for epoch in (1, 2, 3)]
    assert titles[1:] == [titles[0] + 3, titles[0] + 5]  # epoch 1: its title, a live frame, its line
    for title in titles:
        final = lines[title + 2 if title == titles[0] else title + 1]
        assert final.startswith("10/10 ━") and "/step - loss: " in final and "val_accuracy: " in final


def test_a_live_epoch_starts_at_zero_of_its_steps(tmp_path, monkeypatch, frames_only_at_epoch_boundaries):
    monkeypatch.setattr(dlcli.progress, "REPORT_INTERVAL_S", 0.0)  # every epoch drawn live
    out = io.StringIO()
    config = load_config(write_config(tmp_path / "c.yaml", synthetic_config(epochs=3)))
    console = Console(file=out, force_terminal=True, width=150)
    train(config, runs_dir=tmp_path / "runs", console=console, draw_plots=False)
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", out.getvalue()).splitlines()
    for epoch in (1, 2, 3):
        first_frame = lines[lines.index(f"Epoch {epoch}/3") + 1]
        # Not 0/0 with a full bar (before the first epoch), nor the last epoch's 10/10.
        assert first_frame.startswith(" 0/10 ") and "━" * 30 in first_frame, first_frame


class Diverge(Callback):
    """Makes the loss NaN from the first step of an epoch: training stops as diverged."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_begin(self, epoch, trainer):
        if epoch == self.epoch:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float("nan"))


@pytest.mark.parametrize("ending", ["normal", "interrupt", "divergence"])
def test_a_failing_final_save_fails_the_run_whatever_ended_training(tmp_path, monkeypatch, ending):
    # Epoch 1 is saved; the save after epochs 2 and 3 (at the end of training, or when training
    # stops in epoch 4) fails. The folder then lacks epochs training completed: whatever ended
    # training, run.json says failed with the save's error, and that error is raised.
    import dlcli.checkpoint

    monkeypatch.setattr(SaveSchedule, "due", only_first_and_last)
    original_save = dlcli.checkpoint.Checkpointer.save
    calls = []

    def save_once(self, rows, trainer):
        calls.append([r["epoch"] for r in rows])
        if len(calls) > 1:
            raise OSError(5, "Input/output error", "last.pt")
        original_save(self, rows, trainer)

    monkeypatch.setattr(dlcli.checkpoint.Checkpointer, "save", save_once)
    control = RunControl()
    extra = {
        "normal": [],
        "interrupt": [Watch(tmp_path / "runs", stop_in_epoch=4, control=control)],
        "divergence": [Diverge(4)],
    }[ending]
    config = load_config(write_config(tmp_path / "c.yaml", synthetic_config(epochs=3 if ending == "normal" else 5)))
    with pytest.raises(OSError, match="Input/output error") as raised:
        train(config, runs_dir=tmp_path / "runs", console=quiet_console(), control=control, extra_callbacks=extra)
    assert calls == [[1], [2, 3]]
    if ending != "normal":  # what stopped training stays attached to the error
        assert type(raised.value.__cause__).__name__ == {"interrupt": "TrainingInterrupted"}.get(
            ending, "TrainingDiverged"
        )
    (run,) = (tmp_path / "runs").iterdir()
    info = read_json(run / "run.json")
    assert info["status"] == "failed" and info["error"] == "OSError: [Errno 5] Input/output error: 'last.pt'"
    assert info["finished_at"] is not None
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
