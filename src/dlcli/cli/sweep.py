"""`dlcli sweep`: many trainings from one command, searched by Optuna (a sub-app of its own).

`dlcli sweep CONFIG -p KEY=SPEC ...` starts a sweep (the `run` command, named or not);
`worker` joins one from this or another machine, `resume` continues one after a crash or
Ctrl-C, `summary` and `plot` show the result.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperGroup

from .common import RunsDir, SetOption, error_console, fail, handle_errors, stdout_console


class _RunByDefault(TyperGroup):
    """`dlcli sweep CONFIG ...` means `dlcli sweep run CONFIG ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    name="sweep",
    cls=_RunByDefault,
    help="Run many trainings from one command: a grid or an Optuna search over config keys. "
    "`dlcli sweep CONFIG -p KEY=SPEC ...` starts one; each trial is an ordinary run folder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

SweepRef = Annotated[
    str, typer.Argument(metavar="SWEEP", help="Sweep folder (runs/sweeps/<id>) or its id.", show_default=False)
]
StorageOption = Annotated[
    Optional[str],
    typer.Option(
        "--storage",
        metavar="URL",
        help="Optuna storage: postgresql://user@host/db, mysql://..., sqlite:///file.db, or a journal file path "
        "(default: study.journal in the sweep folder).",
    ),
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        help="Trials run at once on this machine, each its own process (CPU threads shared out, one GPU each).",
    ),
]
MaxFailures = Annotated[
    Optional[int],
    typer.Option("--max-failures", min=1, help="Stop the sweep once this many trials have failed (default: never)."),
]
FailFast = Annotated[bool, typer.Option("--fail-fast", help="Stop the sweep at the first failed trial.")]


# -- running -------------------------------------------------------------------------------


def _warn(console):
    return lambda text: console.print(text, highlight=False, markup=False)


def _execute(
    sweep_dir: Path,
    spec,
    study,
    url: str,
    workers: int,
    max_failures: Optional[int],
    fail_fast: bool,
    recover_stale: bool = False,
    show: Optional[Callable[[Any, list], None]] = None,
) -> None:
    """Run trials until none is left (or a stop), then write summary.csv, best.yaml and plots.
    `show(console, rows)` prints the result instead of the trials table and the best config
    (dlcli cv's folds, whose command is then named in the messages)."""
    from ..sweep.display import SweepDisplay
    from ..sweep.session import SweepSession
    from ..sweep.worker import RunOptions

    console = stdout_console()
    options = RunOptions(workers=workers, max_failures=max_failures, fail_fast=fail_fast, recover_stale=recover_stale)
    display = SweepDisplay(console, spec, sweep_dir)
    session = SweepSession(sweep_dir, spec, study, url, options, warn=_warn(console), on_event=display.event)
    display.start(session.finished_rows())

    def request_stop(signum, frame):
        session.request_stop("interrupted", signal.Signals(signum).name)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = session.run(refresh=display.refresh)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        display.stop()
    rows = session.finish(outcome)
    _report(console, sweep_dir, spec, outcome, rows, show)


def _report(console, sweep_dir: Path, spec, outcome, rows: list, show=None) -> None:
    """How the sweep's run of trials ended, the table of the best trials, the best config (or
    what `show` prints); exits 130/143 after an interrupt and 1 after a stop by failures."""
    from ..sweep.session import counts_text, finished_count

    done, parts = finished_count(outcome), counts_text(outcome)
    command, noun = ("cv", "folds") if spec.kind == "cv" else ("sweep", "trials")
    if show is None and (not console.is_terminal or outcome.stopped is None):
        _print_table(stdout_console(wide=True), spec, rows, limit=10)
    if outcome.stopped == "interrupted":
        error_console().print(
            f"Interrupted by {outcome.signal_name}: {done} of {outcome.planned} {noun} done ({parts}). "
            f"Running {noun} keep every complete epoch. Resume with: dlcli {command} resume {sweep_dir}"
        )
        raise typer.Exit(143 if outcome.signal_name == "SIGTERM" else 130)
    if outcome.stopped:
        fail(
            f"The {command} stopped: {outcome.stopped}. {done} of {outcome.planned} {noun} done ({parts}). "
            f"Fix the cause, then continue with: dlcli {command} resume {sweep_dir}",
            1,
        )
    if done < outcome.planned:
        console.print(
            f"This worker is done: {done} of {outcome.planned} {noun} finished ({parts}); the rest are "
            f"running elsewhere, or were left by a killed process (continue those with "
            f"dlcli {command} resume {sweep_dir})."
        )
    elif show is None:
        console.print(f"Sweep finished: {outcome.planned} trials ({parts}).")
    if show is not None:
        show(console, rows)
        return
    _print_best(console, sweep_dir, spec, rows)


def _print_best(console, sweep_dir: Path, spec, rows: list) -> None:
    from ..sweep.display import fmt_value
    from ..sweep.results import best_row
    from ..sweep.space import params_label
    from ..sweep.spec import BEST_FILE

    best = best_row(rows, spec.direction)
    if best is None:
        console.print("No trial completed, so there is no best config.")
        return
    console.print(
        f"Best: trial {best.number} ({params_label(best.params, width=200)}): {spec.metric} "
        f"{fmt_value(best.value)} at epoch {best.best_epoch}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"Best config: {sweep_dir / BEST_FILE} (train it with: dlcli train {sweep_dir / BEST_FILE})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"Sweep folder: {sweep_dir}", highlight=False, soft_wrap=True)


def _print_table(console, spec, rows: list, limit: Optional[int] = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..progress import format_seconds
    from ..runs import STATUS_STYLE
    from ..sweep.display import _short_keys, fmt_value
    from ..sweep.results import sort_rows

    ordered = sort_rows(rows, spec.direction)
    shown = ordered if limit is None or len(ordered) <= limit else ordered[:limit]
    title = f"Sweep {spec.id}: {spec.metric} ({spec.direction}), best first"
    if len(shown) < len(ordered):
        title += f" (top {len(shown)} of {len(ordered)}; all in summary.csv)"
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("status")
    table.add_column(spec.metric, justify="right")
    table.add_column("at epoch", justify="right")
    table.add_column("epochs", justify="right")
    keys = _short_keys(spec)
    for _, name in keys:
        table.add_column(name, justify="right")
    table.add_column("time", justify="right")
    table.add_column("error", max_width=70, no_wrap=True, overflow="ellipsis")
    for r in shown:
        table.add_row(
            str(r.number),
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            fmt_value(r.value),
            fmt_value(r.best_epoch),
            fmt_value(r.epochs),
            *[fmt_value(r.params.get(k)) for k, _ in keys],
            format_seconds(r.seconds) if r.seconds is not None else "-",
            r.error or "",
        )
    console.print(table)


# -- commands --------------------------------------------------------------------------------


# -- `dlcli sweep run`'s options ---------------------------------------------------------------

ConfigArgument = Annotated[
    Path, typer.Argument(help="Experiment YAML file (may hold a `sweep:` section).", show_default=False)
]
ParamOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=SPEC",
        help="A searched key: KEY=[a,b,...] (grid axis), or KEY=loguniform(lo,hi), uniform(lo,hi), int(lo,hi), "
        "int(lo,hi,log), choice(a,b,...) (repeatable).",
    ),
]
MethodOption = Annotated[
    Optional[str],
    typer.Option(
        "--method",
        help="grid (the product of all lists), random or tpe (default: grid when every parameter is a list, else tpe).",
    ),
]
TrialsOption = Annotated[
    Optional[int], typer.Option("--trials", "-n", min=1, help="Trials to run (default for a grid: all its points).")
]
MetricOption = Annotated[
    Optional[str],
    typer.Option(
        "--metric",
        help="Objective: a metrics.csv column; a trial's value is its best epoch's (default: the run's monitor).",
    ),
]
DirectionOption = Annotated[
    Optional[str], typer.Option("--direction", help="max, min or auto (from the metric's name).")
]
PruneOption = Annotated[
    Optional[str],
    typer.Option("--prune", help="median, hyperband or none (default: none for a grid, median for a search)."),
]
PruneStartupOption = Annotated[
    Optional[int],
    typer.Option(
        "--prune-startup-trials", min=0, help="Median pruning starts once this many trials have finished (default 5)."
    ),
]
PruneWarmupOption = Annotated[
    Optional[int],
    typer.Option("--prune-warmup-epochs", min=0, help="Epochs every trial runs before it may be pruned (default 0)."),
]
SeedOption = Annotated[
    Optional[int], typer.Option("--seed", min=0, help="Seed of the search (default: the config's seed).")
]
IdOption = Annotated[
    Optional[str],
    typer.Option("--id", help="The sweep's id (default: <date>-<time>-<name>); other machines join it by this name."),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Check the config, space and objective, print the plan (every grid point) and stop; nothing is written.",
    ),
]


@app.command("run")
@handle_errors
def run(
    config: ConfigArgument,
    param: ParamOption = None,
    set_: SetOption = None,
    method: MethodOption = None,
    trials: TrialsOption = None,
    metric: MetricOption = None,
    direction: DirectionOption = None,
    prune: PruneOption = None,
    prune_startup_trials: PruneStartupOption = None,
    prune_warmup_epochs: PruneWarmupOption = None,
    seed: SeedOption = None,
    workers: WorkersOption = 1,
    storage: StorageOption = None,
    sweep_id: IdOption = None,
    max_failures: MaxFailures = None,
    fail_fast: FailFast = False,
    runs_dir: RunsDir = Path("runs"),
    dry_run: DryRunOption = False,
) -> None:
    """Start a sweep: a grid or a search over config keys, each trial its own `dlcli train`.

    Every key and value is checked against the config before the first trial. Trials are
    ordinary run folders in runs/sweeps/<id>/trials/; summary.csv, best.yaml and the plots
    are written when the sweep ends.
    """
    from ..sweep.session import create_sweep
    from ..sweep.space import parse_cli_param
    from ..sweep.spec import SweepRequest, check_sweep_id, plan_sweep

    if sweep_id is not None:
        check_sweep_id(sweep_id)
    request = SweepRequest(
        config=config,
        overrides=list(set_ or ()),
        params=[parse_cli_param(p) for p in param or ()],
        method=method,
        trials=trials,
        metric=metric,
        direction=direction,
        prune=prune,
        prune_startup_trials=prune_startup_trials,
        prune_warmup_epochs=prune_warmup_epochs,
        seed=seed,
        sweep_id=sweep_id,
    )
    spec = plan_sweep(request)
    if dry_run:
        _print_plan(spec)
        return
    sweep_dir, study, url = create_sweep(spec, runs_dir, storage, sweep_id)
    _print_start(spec, sweep_dir, url, workers)
    _execute(sweep_dir, spec, study, url, workers, max_failures, fail_fast)


def _print_start(spec, sweep_dir: Path, url: str, workers: int) -> None:
    from ..sweep.spec import SWEEP_FILE
    from ..sweep.study import is_url, redact

    console = stdout_console()
    over = ", ".join(p.key for p in spec.space)
    console.print(
        f"Sweep {spec.id}: {spec.method} over {over}, {spec.trials} trials, {spec.metric} ({spec.direction}), "
        f"pruning: {spec.prune}, {workers} worker(s) here; storage: {redact(url)}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"Sweep folder: {sweep_dir}  (definition in {SWEEP_FILE})", highlight=False, soft_wrap=True)
    if spec.warning:
        error_console().print(f"Warning: {spec.warning}", style="yellow", highlight=False, markup=False)
    if is_url(url):
        console.print(
            f"Join from another machine: dlcli sweep worker {spec.id} --storage '{redact(url)}'",
            highlight=False,
            soft_wrap=True,
        )


def _print_plan(spec) -> None:
    from ..sweep.space import grid_points, yaml_text

    console = stdout_console()
    console.print(
        f"Plan: {spec.method}, {spec.trials} trials of {spec.name}; objective: best-epoch {spec.metric} "
        f"({spec.direction}); pruning: {spec.prune}; seed {spec.seed}",
        highlight=False,
        soft_wrap=True,
    )
    for p in spec.space:
        console.print(f"  {p.key} = {p.spec_text()}", highlight=False, soft_wrap=True)
    if spec.warning:
        error_console().print(f"Warning: {spec.warning}", style="yellow", highlight=False, markup=False)
    if spec.method == "grid":
        for number, point in enumerate(grid_points(spec.space)[: spec.trials]):
            console.print(
                f"  trial {number}: " + ", ".join(f"{k}={yaml_text(v)}" for k, v in point.items()),
                highlight=False,
                soft_wrap=True,
            )
    console.print("Every key and value fits the config. Nothing was written (--dry-run).")


@app.command()
@handle_errors
def worker(
    sweep: SweepRef,
    storage: StorageOption = None,
    workers: WorkersOption = 1,
    max_failures: MaxFailures = None,
    fail_fast: FailFast = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Join a running sweep: run its waiting trials on this machine.

    SWEEP is the sweep's folder (on a shared filesystem) or, with --storage URL, its id: the
    definition is then read from the storage and trials go to runs/sweeps/<id>/ here.
    """
    from ..sweep.session import open_sweep

    folder, spec, study, url = open_sweep(sweep, storage, runs_dir)
    stdout_console().print(
        f"Joining sweep {spec.id} ({spec.method}, {study.planned()} trials) with {workers} worker(s)",
        highlight=False,
        soft_wrap=True,
    )
    _execute(folder, spec, study, url, workers, max_failures, fail_fast)


@app.command()
@handle_errors
def resume(
    sweep: SweepRef,
    storage: StorageOption = None,
    workers: WorkersOption = 1,
    max_failures: MaxFailures = None,
    fail_fast: FailFast = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Continue a sweep after Ctrl-C, a crash or SIGKILL.

    Finished trials are kept; trials whose process is gone continue from their last complete
    epoch in their own folder (or start again there if they had none); waiting trials run.
    The sweep ends with exactly its planned trials.
    """
    from ..sweep.session import finish_files, open_sweep, stale_trials

    folder, spec, study, url = open_sweep(sweep, storage, runs_dir)
    stale = stale_trials(folder, spec, study, url)
    waiting = sum(1 for t in study.trials() if t.state == "waiting")
    console = stdout_console()
    if not stale and not waiting:
        running = sum(1 for t in study.trials() if t.state == "running")
        console.print(
            f"Nothing to resume in {folder}: "
            + (f"{running} trial(s) are running in live processes." if running else "every trial has finished."),
            highlight=False,
            soft_wrap=True,
        )
        rows = finish_files(folder, spec, study, _warn(console))
        _print_table(console, spec, rows, limit=10)
        _print_best(console, folder, spec, rows)
        return
    console.print(
        f"Resuming sweep {spec.id}: {len(stale)} trial(s) to continue, {waiting} waiting, {workers} worker(s)",
        highlight=False,
        soft_wrap=True,
    )
    _execute(folder, spec, study, url, workers, max_failures, fail_fast, recover_stale=True)


@app.command()
@handle_errors
def summary(
    sweep: SweepRef,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    storage: StorageOption = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Trials sorted by the objective: values, parameters, status, epochs, time; the best config.

    Also rewrites summary.csv and best.yaml in the sweep folder.
    """
    import json

    from ..sweep.results import rows_from_study, write_summaries
    from ..sweep.session import open_sweep, summary_data

    folder, spec, study, url = open_sweep(sweep, storage, runs_dir)
    rows = rows_from_study(folder, spec, study.trials())
    write_summaries(folder, spec, rows)
    if json_:
        data = summary_data(folder, spec, study, url, rows)
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    console = stdout_console(wide=True)
    _print_table(console, spec, rows)
    _print_best(console, folder, spec, rows)


@app.command()
@handle_errors
def plot(
    sweep: SweepRef,
    metric: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metric",
            "-m",
            help="metrics.csv column whose curves to overlay (repeatable; default: loss and the metric).",
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default: the sweep folder).")
    ] = None,
    storage: StorageOption = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Draw every trial's learning curves overlaid, and the objective against each parameter.

    Writes curves-<metric>.png (training and validation side by side, one color per trial,
    pruned trials dashed) and objective.png.
    """
    from ..sweep.plots import plot_sweep
    from ..sweep.results import rows_from_study
    from ..sweep.session import open_sweep

    folder, spec, study, url = open_sweep(sweep, storage, runs_dir)
    rows = rows_from_study(folder, spec, study.trials())
    written = plot_sweep(folder, spec, rows, out, metric)
    if not written:
        fail(f"Nothing to plot yet in {folder}: no trial has finished an epoch.")
    for path in written:
        stdout_console().print(f"Wrote {path}")
