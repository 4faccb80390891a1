"""`dlcli cv`: K-fold cross-validation of a config, each fold an ordinary run (a sub-app).

`dlcli cv CONFIG --folds 5` (the `run` command, named or not) makes the folds and runs them
through the sweep machinery (sweep/cv.py); `resume` continues one after Ctrl-C or a kill;
`summary` prints the table again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import RunsDir, SetOption, handle_errors, stdout_console
from .sweep import WorkersOption, _execute, _RunByDefault

app = typer.Typer(
    name="cv",
    cls=_RunByDefault,
    help="K-fold cross-validation: `dlcli cv CONFIG --folds 5` trains one run per fold (the test split stays "
    "held out) and prints each metric's mean and standard deviation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

CvRef = Annotated[
    str, typer.Argument(metavar="CV", help="Cross-validation folder (runs/cv/<id>) or its id.", show_default=False)
]


def print_cv_table(console, summary: dict[str, Any], title: Optional[str] = None) -> None:
    """Every fold's headline metrics with their mean and standard deviation."""
    from rich.table import Table

    from ..sweep.display import fmt_value

    metrics = summary["metrics"]
    shown = [m for m in metrics if m.startswith("val_")] + [m for m in metrics if m.startswith("test_")]
    shown = shown or list(metrics)
    cv = summary["cv"]
    table = Table(
        title=title
        or f"Cross-validation {cv['id']}: {cv['folds']} folds x {cv['repeats']} ({cv['splitter']}, seed {cv['seed']})",
        title_justify="left",
    )
    table.add_column("fold", justify="right")
    table.add_column("status")
    for name in shown:
        table.add_column(name, justify="right")
    for fold in summary["folds"]:
        table.add_row(str(fold["fold"]), fold["status"], *[fmt_value(fold["metrics"].get(name)) for name in shown])
    table.add_section()
    table.add_row(
        "mean", f"{summary['completed']}/{summary['planned']}", *[fmt_value(metrics[n]["mean"]) for n in shown]
    )
    table.add_row("std", "", *[fmt_value(metrics[n]["std"]) for n in shown])
    console.print(table)


def _show(folder: Path):
    def show(console, rows: list) -> None:
        from ..sweep.cv_results import SUMMARY_JSON, write_cv_summary

        summary = write_cv_summary(folder)
        print_cv_table(stdout_console(wide=True), summary)
        done = "finished" if summary["completed"] == summary["planned"] else "not complete"
        console.print(
            f"Cross-validation {done}: {summary['completed']} of {summary['planned']} folds completed. "
            f"Summary: {folder / SUMMARY_JSON}",
            highlight=False,
            soft_wrap=True,
        )

    return show


@app.command("run")
@handle_errors
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.", show_default=False)],
    folds: Annotated[int, typer.Option("--folds", "-k", help="Number of folds (at least 2).")] = 5,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Repeat the K folds with other shuffles (RepeatedStratifiedKFold).")
    ] = 1,
    workers: WorkersOption = 1,
    set_: SetOption = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", min=0, help="Seed of the fold shuffle (default: the config's seed).")
    ] = None,
    cv_id: Annotated[
        Optional[str], typer.Option("--id", help="The folder's name (default: <date>-<time>-<name>).")
    ] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Cross-validate a config: K folds of its training data, one run each, in runs/cv/<id>/.

    Folds come from scikit-learn (StratifiedKFold for classes, KFold for regression,
    TimeSeriesSplit for timeseries) and are saved in folds.csv. Each fold's held-out part is
    its run's validation data: early stopping and the monitor watch it. The test split stays
    held out. summary.json holds the mean and standard deviation of every metric.
    """
    from ..sweep.cv import CvRequest, create_cv
    from ..sweep.spec import check_sweep_id

    if cv_id is not None:
        check_sweep_id(cv_id)
    request = CvRequest(config, list(set_ or ()), folds, repeats, seed, cv_id)
    folder, spec, study, url = create_cv(request, runs_dir)
    stdout_console().print(
        f"Cross-validation {spec.id}: {folds} folds x {repeats}, {spec.trials} runs, {workers} worker(s); "
        f"folder {folder}",
        highlight=False,
        soft_wrap=True,
    )
    _execute(folder, spec, study, url, workers, None, False, show=_show(folder))


@app.command()
@handle_errors
def resume(cv: CvRef, workers: WorkersOption = 1, runs_dir: RunsDir = Path("runs")) -> None:
    """Continue a cross-validation after Ctrl-C, a crash or SIGKILL: finished folds are kept,
    interrupted ones continue from their last complete epoch, waiting ones run."""
    from ..sweep.cv import resolve_cv
    from ..sweep.session import open_sweep, stale_trials

    folder = resolve_cv(cv, runs_dir)
    folder, spec, study, url = open_sweep(str(folder), None, runs_dir)
    stale = stale_trials(folder, spec, study, url)
    waiting = sum(1 for t in study.trials() if t.state == "waiting")
    console = stdout_console()
    if not stale and not waiting:
        console.print(f"Nothing to resume in {folder}: no fold is waiting or interrupted.", highlight=False)
        _show(folder)(console, [])
        return
    console.print(
        f"Resuming cross-validation {spec.id}: {len(stale)} fold(s) to continue, {waiting} waiting, "
        f"{workers} worker(s)",
        highlight=False,
        soft_wrap=True,
    )
    _execute(folder, spec, study, url, workers, None, False, recover_stale=True, show=_show(folder))


@app.command()
@handle_errors
def summary(
    cv: CvRef,
    json_: Annotated[bool, typer.Option("--json", help="Print summary.json.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Each fold's metrics, their mean and standard deviation (rewrites summary.json)."""
    import json

    from ..sweep.cv import resolve_cv
    from ..sweep.cv_results import write_cv_summary

    data = write_cv_summary(resolve_cv(cv, runs_dir))
    if json_:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    print_cv_table(stdout_console(wide=True), data)


def print_cvs(console, runs_dir: Path) -> None:
    """`dlcli runs`: one table per cross-validation, its folds grouped under it."""
    from rich.text import Text

    from ..sweep.cv_results import list_cvs

    for entry in list_cvs(runs_dir):
        if "problem" in entry:
            console.print(Text(f"Cross-validation {entry['path']}: damaged ({entry['problem']})", style="bold red"))
            continue
        cv = entry["cv"]
        print_cv_table(
            console,
            entry,
            title=f"Cross-validation {entry['path']}/: {cv['folds']} folds x {cv['repeats']}; "
            f"{entry['completed']}/{entry['planned']} folds completed",
        )
