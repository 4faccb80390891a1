"""`dlcli lr-find`: tools that pick training options before a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import RunsDir, SetOption, handle_errors, load_experiment, located, stdout_console

app = typer.Typer()


@app.command("lr-find")
@handle_errors
def lr_find(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.", show_default=False)],
    set_: SetOption = None,
    start_lr: Annotated[float, typer.Option("--start-lr", help="First learning rate of the sweep.")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr", help="Rate the sweep grows towards.")] = 10.0,
    num_it: Annotated[int, typer.Option("--num-it", help="Optimizer steps (at most).", min=1)] = 100,
    allow_repeat: Annotated[
        bool,
        typer.Option("--allow-repeat", help="Cycle through the training data when it has fewer batches than --num-it."),
    ] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Find a learning rate: fastai's range test on a fresh model from CONFIG.

    Trains for at most --num-it steps while the rate grows exponentially, stops when the
    loss blows up, and suggests a rate (fastai's valley rule; the steepest slope beside it).
    Writes lr_find.csv and lr_find.png under RUNS_DIR/lr-find/; the config and every run
    folder stay as they are.
    """
    from ..lr_find import describe
    from ..lr_find import lr_find as range_test

    cfg = load_experiment(config, set_)
    with located(cfg):
        result = range_test(
            cfg, runs_dir=runs_dir, start_lr=start_lr, end_lr=end_lr, num_it=num_it, allow_repeat=allow_repeat
        )
    note = (
        f"The training data has {result.batches} batches; the test went over it again (--allow-repeat)."
        if len(result.lrs) > result.batches
        else None
    )
    console = stdout_console()
    for line in describe(result, num_it, note):
        console.print(line, highlight=False, markup=False)
