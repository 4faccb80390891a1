"""The dlcli command line: the only place that prints errors and chooses exit codes.

Heavy modules (torch, matplotlib) are imported inside the commands that need them, so
`dlcli --help` answers at once.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

app = typer.Typer(
    name="dlcli",
    help="Train, inspect and compare deep-learning experiments described in YAML files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds the run folders.")]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a config key by dotted path, e.g. training.epochs=1 (repeatable)."),
]


def _stdout_console(wide: bool = False):
    """Console for results; `wide` tables are not squeezed to 80 columns in a pipe."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if wide and not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=160)
    return console


def _error_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """Print one paragraph to stderr and exit; never a traceback for a user's mistake."""
    from rich.text import Text

    _error_console().print(Text(f"Error: {message}"))
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import DlcliError

        try:
            return fn(*args, **kwargs)
        except DlcliError as exc:
            fail(exc.full_message(), exc.exit_code)
        except KeyboardInterrupt:
            _error_console().print("Interrupted.")
            raise typer.Exit(130)
        except MemoryError:
            fail("Out of memory. Use a smaller training.batch_size or data.max_train_samples.", 1)
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                fail(f"The disk is full ({exc.filename or 'writing the run folder'}). Free some space; "
                     "files already written in the run folder are complete.", 1)
            raise

    return wrapper


def _load(config: Path, overrides: Optional[list[str]]):
    from .config import load_config

    return load_config(config, tuple(overrides or ()))


@app.command()
@handle_errors
def train(
    config: Annotated[Optional[Path], typer.Argument(help="Experiment YAML file (or a run folder's config.yaml).", show_default=False)] = None,
    set_: SetOption = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this folder from its last complete epoch.")] = None,
    runs_dir: RunsDir = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final result.")] = False,
    nproc: Annotated[int, typer.Option("--nproc", help="Train data-parallel with N processes on this machine (via torch's elastic launcher).", min=1)] = 1,
) -> None:
    """Train a model as the experiment file says, and keep everything in a new run folder."""
    from .config import dump_config

    if (config is None) == (resume is None):
        fail("give either a CONFIG file or --resume RUN_FOLDER (not both, not neither). "
             "For example: dlcli train configs/mnist_cnn.yaml")
    resume_dir = None
    if resume is not None:
        from .rundir import resolve_run
        from .training import load_run_config

        resume_dir = resolve_run(resume, runs_dir)
        cfg = load_run_config(resume_dir, tuple(set_ or ()))
    else:
        cfg = _load(config, set_)
    if print_config:
        sys.stdout.write(dump_config(cfg))
        return
    if nproc > 1:
        from .distributed import launch

        raise typer.Exit(launch(nproc, sys.argv))
    with _located(cfg):
        _run_training(cfg, runs_dir, resume_dir, quiet)


class _located:
    """Adds the file and line (or --set) to config errors found after loading, such as an
    unknown dataset name or a loss that does not fit the data."""

    def __init__(self, config) -> None:
        self.config = config

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        from .config import locate
        from .errors import ConfigError

        if isinstance(exc, ConfigError):
            locate(self.config, exc)
        return False


def _run_training(cfg, runs_dir: Path, resume_dir: Optional[Path], quiet: bool) -> None:
    from .distributed import distributed_from_env
    from .engine import RunControl
    from .errors import DlcliError, TrainingInterrupted
    from .training import train as run_train

    console = _stdout_console()
    control = RunControl()
    dist = distributed_from_env()

    def request_stop(signum, frame):
        control.signal = signal.Signals(signum).name
        # A second Ctrl-C stops at once (the run folder still holds the last complete epoch).
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        outcome = run_train(cfg, runs_dir=runs_dir, console=console, resume_dir=resume_dir, control=control,
                            quiet=quiet, command=sys.argv, dist=dist)
    except TrainingInterrupted as exc:
        run_dir = getattr(exc, "run_dir", None)
        failure = getattr(exc, "failure", None)
        if failure:
            fail(f"data-parallel training stopped because {failure} (run folder: {run_dir})", 1)
        if dist.is_main:
            _error_console().print(
                f"Interrupted by {exc.signal_name}; the run folder keeps every complete epoch. "
                f"Resume with: dlcli train --resume {run_dir}"
            )
        raise typer.Exit(exc.exit_code)
    except DlcliError as exc:
        run_dir = getattr(exc, "run_dir", None)
        if run_dir is not None and dist.is_main:
            exc.message += f" (run folder: {run_dir})"
        if dist.world_size > 1:
            dist.abort_others(exc.full_message())
        raise
    except BaseException as exc:
        if dist.world_size > 1 and not isinstance(exc, (SystemExit, typer.Exit)):
            dist.abort_others(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        dist.close()
    if not dist.is_main:
        return
    results = "  ".join(f"{k}: {v:.4f}" for k, v in outcome.results.items() if isinstance(v, float))
    if outcome.best.get("value") is not None:
        best = f"best {outcome.best['monitor']}: {outcome.best['value']:.4f} (epoch {outcome.best['epoch']})"
        results = f"{results}  {best}" if results else best
    if results:
        console.print(results)
    console.print(f"Run folder: {outcome.run_dir}")


@app.command()
@handle_errors
def summary(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file or run folder.", show_default=False)],
    set_: SetOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add activation, kernel, stride, padding and multiply-adds per layer.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the same data as JSON.")] = False,
) -> None:
    """Print the model's layers, output shapes and parameter counts (no data needed)."""
    import json

    from .models import build_model
    from .summary import render_summary, summary_data
    from .training import plan_experiment

    cfg = _load(config, set_)
    with _located(cfg):
        plan = plan_experiment(cfg)
    model = build_model(plan.model_plan)
    data = summary_data(model, plan)
    if json_:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        render_summary(data, _stdout_console(wide=True), verbose)


@app.command()
@handle_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="One or more run folders.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default: the run folder; required for several runs).")] = None,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="Column of metrics.csv to plot (repeatable; default: loss and the metric).")] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Draw training and validation curves (loss.png, accuracy.png) from metrics.csv."""
    from .plots import plot_runs
    from .rundir import METRICS_FILE, read_metrics, resolve_run

    folders = [resolve_run(r, runs_dir) for r in runs]
    if len(folders) > 1 and out is None:
        fail("several runs are drawn into one set of PNGs: give --out FOLDER for them.")
    loaded = []
    for folder in folders:
        columns, rows = read_metrics(folder / METRICS_FILE)
        loaded.append((folder.name, columns, rows))
    written = plot_runs(loaded, metric, out or folders[0])
    for path in written:
        _stdout_console().print(f"Wrote {path}")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    from .progress import format_seconds

    return format_seconds(float(seconds))


STATUS_STYLE = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red",
                "killed": "red", "damaged": "bold red"}


@app.command("runs")
@handle_errors
def runs_command(
    dir_: Annotated[Path, typer.Option("--dir", "--runs-dir", help="Folder that holds the run folders.")] = Path("runs"),
    json_: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the runs, newest first: status, epochs, best validation metric, test accuracy, duration."""
    import json

    from rich.table import Table
    from rich.text import Text

    from .runs import list_runs

    records = list_runs(dir_)
    if json_:
        sys.stdout.write(json.dumps([r.to_dict() for r in records], indent=2) + "\n")
        return
    console = _stdout_console(wide=True)
    if not records:
        console.print(f"No runs in {dir_}/ yet. Start one with: dlcli train CONFIG")
        return
    table = Table(title=f"Runs in {dir_}/", title_justify="left")
    for col, justify in (("id", "left"), ("name", "left"), ("status", "left"), ("epochs", "right"),
                         ("best val", "right"), ("at epoch", "right"), ("test", "right"), ("duration", "right")):
        table.add_column(col, justify=justify, no_wrap=col == "id")
    for r in records:
        status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
        if r.problem:
            status.append(f" ({r.problem})", style="dim")
        test_key = f"test_{r.metric}" if r.metric else None
        best = f"{r.best_name}: {_fmt(r.best_value)}" if r.best_value is not None else "-"
        table.add_row(r.id, r.name or "-", status, f"{r.epochs_done}/{r.epochs if r.epochs else '?'}", best,
                      _fmt(r.best_epoch), _fmt(r.test.get(test_key)) if test_key else "-", _duration(r.duration_seconds))
    console.print(table)


@app.command()
@handle_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders (or ids under --runs-dir).", show_default=False)],
    runs_dir: RunsDir = Path("runs"),
    json_: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Metrics of several runs side by side (final, best, best epoch) and the config keys that differ."""
    import json

    from rich.table import Table

    from .rundir import resolve_run
    from .runs import comparison

    if len(runs) < 2:
        fail("compare needs at least two runs, e.g. dlcli compare runs/A runs/B")
    folders = [resolve_run(r, runs_dir) for r in runs]
    data = comparison(folders)
    if json_:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    console = _stdout_console(wide=True)
    table = Table(title="Metrics", title_justify="left")
    table.add_column("")
    for r in data["runs"]:
        table.add_column(r["id"], justify="right")
    recs = data["runs"]
    keys = []
    for r in recs:
        keys += [k for k in r["final"] if k not in keys and k not in ("lr", "seconds")]
    table.add_row("status", *[r["status"] for r in recs])
    table.add_row("epochs", *[str(r["epochs_done"]) for r in recs])
    for key in keys:
        table.add_row(f"final {key}", *[_fmt(r["final"].get(key)) for r in recs])
    table.add_row("best " + (recs[0]["best_name"] or "metric"),
                  *[f"{_fmt(r['best_value'])} (epoch {_fmt(r['best_epoch'])})" for r in recs])
    test_keys = []
    for r in recs:
        test_keys += [k for k in r["test"] if k not in test_keys and isinstance(r["test"][k], float)]
    for key in test_keys:
        table.add_row(key, *[_fmt(r["test"].get(key)) for r in recs])
    table.add_row("duration", *[_duration(r["duration_seconds"]) for r in recs])
    console.print(table)
    diffs = data["config_differences"]
    if not diffs:
        console.print("The configs are identical.")
        return
    dt = Table(title="Config differences", title_justify="left")
    dt.add_column("key")
    for r in recs:
        dt.add_column(r["id"])
    for key, values in diffs.items():
        dt.add_row(key, *[_fmt(v) for v in values])
    console.print(dt)


@app.command()
@handle_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (or id under --runs-dir).", show_default=False)],
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="best or last.")] = "best",
    split: Annotated[str, typer.Option("--split", help="test or val.")] = "test",
    runs_dir: RunsDir = Path("runs"),
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Recompute a checkpoint's metrics; for classification print and draw the confusion matrix."""
    import json

    from rich.table import Table
    from rich.text import Text

    from .evaluation import evaluate_run
    from .plots import plot_confusion
    from .rundir import resolve_run, write_json

    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint must be best or last, not {checkpoint!r}.")
    if split not in ("test", "val"):
        fail(f"--split must be test or val, not {split!r}.")
    folder = resolve_run(run, runs_dir)
    result = evaluate_run(folder, checkpoint, split)
    write_json(folder / f"evaluation-{split}-{checkpoint}.json", result)
    if "confusion" in result:
        plot_confusion(result["confusion"], result["class_names"], folder / "confusion.png",
                       f"{folder.name}: {split} split, {checkpoint} checkpoint (epoch {result['epoch']})")
    if json_:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    console = _stdout_console(wide=True)
    metrics = "  ".join(f"{k}: {v:.4f}" for k, v in result.items() if isinstance(v, float))
    console.print(f"{folder.name} - {checkpoint} checkpoint (epoch {result['epoch']}) on the {split} split "
                  f"({result['samples']} samples): {metrics}")
    if "confusion" in result:
        names = result["class_names"]
        table = Table(title="Confusion matrix (rows: true class, columns: predicted)", title_justify="left")
        table.add_column("")
        for name in names:
            table.add_column(name, justify="right")
        for i, (name, row) in enumerate(zip(names, result["confusion"])):
            cells = [Text(str(c), style="bold green" if i == j else "") for j, c in enumerate(row)]
            table.add_row(Text(f"{name} ({sum(row)})"), *cells)
        console.print(table)
        console.print(f"Wrote {folder / 'confusion.png'}")


def main() -> None:
    # Under torchrun only rank 0 should talk; others stay quiet unless they fail.
    app()


if __name__ == "__main__":
    main()
