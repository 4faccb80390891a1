"""Commands that look inside models, runs and this machine: summary, plot, runs, compare, evaluate, info."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .common import (
    Checkpoint,
    CheckpointOption,
    RunsDir,
    SetOption,
    Split,
    choice,
    fail,
    handle_errors,
    load_experiment,
    located,
    stdout_console,
)

if TYPE_CHECKING:
    from rich.console import JustifyMethod

app = typer.Typer()


@app.command()
@handle_errors
def summary(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file or run folder.", show_default=False)],
    set_: SetOption = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Add activation, kernel, stride, padding and multiply-adds per layer."),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the same data as JSON.")] = False,
) -> None:
    """Print the layer table of a model.

    Layers, output shapes and parameter counts, as Keras's summary(); needs no data.
    """
    import json

    from ..plan import plan_experiment
    from ..summary import render_summary, summary_data

    cfg = load_experiment(config, set_)
    with located(cfg):
        plan = plan_experiment(cfg)
    phases = None
    if cfg.training.fine_tune is not None:  # which parts are frozen needs the model's modules: built, untrained
        from ..fine_tune import planned_phases

        with located(cfg):
            phases = planned_phases(plan.model_plan, cfg.training)
    data = summary_data(plan.model_plan, plan, phases)  # analytic: without fine_tune nothing is built
    if json_:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        render_summary(data, stdout_console(wide=True), verbose)


@app.command()
@handle_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="One or more run folders.", show_default=False)],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Folder for the PNGs (default: the run folder; required for several runs)."),
    ] = None,
    metric: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metric", "-m", help="Column of metrics.csv to plot (repeatable; default: loss and the metric)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace PNGs in --out that dlcli did not draw.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Draw training and validation curves.

    Writes loss.png and accuracy.png (or --metric NAME) from metrics.csv alone.
    """
    from ..plots import default_metrics, is_dlcli_png, plot_runs
    from ..rundir import METRICS_FILE, check_output_file, read_metrics, resolve_run

    folders = [resolve_run(r, runs_dir) for r in runs]
    if len(folders) > 1 and out is None:
        fail("several runs are drawn into one set of PNGs: give --out FOLDER for them.")
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; plot writes its PNGs into a folder.")
    loaded = []
    for folder in folders:
        columns, rows = read_metrics(folder / METRICS_FILE)
        loaded.append((folder.name, columns, rows))
    if out is not None:  # the PNGs about to be written: none a file of the user's, unless --force
        for name in metric or default_metrics(loaded[0][1]):
            check_output_file(out / f"{name}.png", option="--out", force=force, written_by_dlcli=is_dlcli_png)
    written = plot_runs(loaded, metric, out or folders[0])
    for path in written:
        stdout_console().print(f"Wrote {path}")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    from ..progress import format_seconds

    return format_seconds(float(seconds))


@app.command("runs")
@handle_errors
def runs_command(
    dir_: Annotated[Path, typer.Option("--dir", "--runs-dir", help="Folder that holds the run folders.")] = Path(
        "runs"
    ),
    json_: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the runs, newest first.

    Status, epochs, best validation metric and its epoch, test accuracy, duration.
    """
    import json

    from rich.table import Table
    from rich.text import Text

    from ..runs import STATUS_STYLE, list_runs

    records = list_runs(dir_)
    if json_:
        sys.stdout.write(json.dumps([r.to_dict() for r in records], indent=2) + "\n")
        return
    console = stdout_console(wide=True)
    from ..sweep.results import list_sweeps
    from .cv import print_cvs

    sweeps = list_sweeps(dir_)
    if not records and not sweeps and not (dir_ / "cv").is_dir():
        console.print(f"No runs in {dir_}/ yet. Start one with: dlcli train CONFIG")
        return
    if not records:
        _print_sweeps(console, sweeps)
        print_cvs(console, dir_)
        return
    table = Table(title=f"Runs in {dir_}/", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("id", "left"),
        ("name", "left"),
        ("status", "left"),
        ("epochs", "right"),
        ("best val", "right"),
        ("at epoch", "right"),
        ("test", "right"),
        ("duration", "right"),
    )
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=col == "id")
    for r in records:
        status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
        if r.problem:
            status.append(f" ({r.problem})", style="dim")
        test_key = f"test_{r.metric}" if r.metric else None
        best = f"{r.best_name}: {_fmt(r.best_value)}" if r.best_value is not None else "-"
        table.add_row(
            r.id,
            r.name or "-",
            status,
            f"{r.epochs_done}/{r.epochs if r.epochs else '?'}",
            best,
            _fmt(r.best_epoch),
            _fmt(r.test.get(test_key)) if test_key else "-",
            _duration(r.duration_seconds),
        )
    console.print(table)
    _print_sweeps(console, sweeps)
    print_cvs(console, dir_)


def _print_sweeps(console, sweeps) -> None:
    """One table per sweep (newest first): its trials with their values and status."""
    from rich.table import Table
    from rich.text import Text

    from ..runs import STATUS_STYLE
    from ..sweep.display import fmt_value
    from ..sweep.space import params_label

    for sw in sweeps:
        if sw.problem:
            console.print(Text(f"Sweep {sw.path}: damaged ({sw.problem})", style="bold red"))
            continue
        best = sw.best()
        finished = sum(1 for t in sw.trials if t.status in ("completed", "pruned", "failed"))
        title = f"Sweep {sw.path}/: {sw.method} over {', '.join(sw.space)}; {finished}/{sw.planned} trials finished" + (
            f"; best {sw.metric} {fmt_value(best.value)} (trial {best.number})" if best else ""
        )
        table = Table(title=title, title_justify="left")
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("trial", "right"),
            ("status", "left"),
            ("params", "left"),
            ("epochs", "right"),
            (f"best {sw.metric}", "right"),
            ("at epoch", "right"),
            ("test", "right"),
            ("duration", "right"),
        )
        for col, justify in columns:
            table.add_column(col, justify=justify, no_wrap=col == "params")
        for t in sw.trials:
            status = Text(t.status, style=STATUS_STYLE.get(t.status, ""))
            if t.problem:
                status.append(f" ({t.problem})", style="dim")
            test_key = f"test_{t.metric}" if t.metric else None
            table.add_row(
                str(t.number),
                status,
                params_label(t.params),
                f"{t.epochs_done}/{t.epochs or '?'}",
                _fmt(t.value),
                _fmt(t.best_epoch),
                _fmt(t.test.get(test_key)) if test_key else "-",
                _duration(t.duration_seconds),
            )
        console.print(table)


@app.command()
@handle_errors
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run folders (or ids under --runs-dir).", show_default=False)
    ],
    runs_dir: RunsDir = Path("runs"),
    json_: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare runs side by side.

    Final and best metrics (with the best epoch) and the config keys that differ.
    """
    import json

    from rich.table import Table

    from ..rundir import resolve_run
    from ..runs import comparison

    if len(runs) < 2:
        fail("compare needs at least two runs, e.g. dlcli compare runs/A runs/B")
    folders = [resolve_run(r, runs_dir) for r in runs]
    data = comparison(folders)
    if json_:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    console = stdout_console(wide=True)
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
    table.add_row(
        "best " + (recs[0]["best_name"] or "metric"),
        *[f"{_fmt(r['best_value'])} (epoch {_fmt(r['best_epoch'])})" for r in recs],
    )
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
    checkpoint: CheckpointOption = Checkpoint.best.value,
    split: Annotated[
        str, typer.Option("--split", help="test or val.", parser=choice(Split, "--split"))
    ] = Split.test.value,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per forward pass.", min=1)] = 1024,
    top_losses: Annotated[
        int,
        typer.Option(
            "--top-losses",
            help="List the K examples with the highest loss (and draw top_losses.png for images).",
            min=0,
            metavar="K",
        ),
    ] = 0,
    runs_dir: RunsDir = Path("runs"),
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Re-evaluate a checkpoint of a run.

    Recomputes the metrics on the test or validation split. Classification: the confusion
    matrix (confusion.png) and a classification report (precision, recall, F1, support per
    class; macro and weighted averages); binary tasks also ROC-AUC, PR-AUC and the decision
    threshold (roc.png, pr.png). Regression: MAE, RMSE and R^2 (predicted_vs_true.png).
    """
    import json

    from ..evaluation import evaluate_run_in_full
    from ..rundir import resolve_run, write_json

    folder = resolve_run(run, runs_dir)
    which, part = checkpoint, split
    evaluation = evaluate_run_in_full(folder, which, part, batch_size, top_losses)
    result = evaluation.result
    write_json(folder / f"evaluation-{part}-{which}.json", result)
    written = _evaluation_plots(
        evaluation, folder, f"{folder.name}: {part} split, {which} checkpoint (epoch {result['epoch']})"
    )
    if json_:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    console = stdout_console(wide=True)
    metrics = "  ".join(f"{k}: {v:.4f}" for k, v in result.items() if isinstance(v, float))
    console.print(
        f"{folder.name} - {which} checkpoint (epoch {result['epoch']}) on the {part} split "
        f"({result['samples']} samples): {metrics}"
    )
    if isinstance(result.get("baseline"), str):  # a time series: the model against the naive forecast
        console.print(result["baseline"], highlight=False)
    if "confusion" in result:
        _print_confusion(console, result)
    if "classification_report" in result:
        _print_report(console, result["classification_report"])
    if "top_losses" in result:
        _print_top_losses(console, result["top_losses"])
    for path in written:
        console.print(f"Wrote {path}", highlight=False)


def _evaluation_plots(evaluation, folder: Path, title: str) -> list[Path]:
    """confusion.png, roc.png and pr.png, predicted_vs_true.png, top_losses.png: those that fit."""
    from ..plots import plot_confusion, plot_predicted_vs_true, plot_roc_pr, plot_top_losses

    result, written = evaluation.result, []
    if "confusion" in result:
        plot_confusion(result["confusion"], result["class_names"], folder / "confusion.png", title)
        written.append(folder / "confusion.png")
    if evaluation.scores is not None:
        positive = evaluation.labels == 1
        plot_roc_pr(
            evaluation.scores,
            positive,
            folder / "roc.png",
            folder / "pr.png",
            title,
            result["roc_auc"],
            result["pr_auc"],
        )
        written += [folder / "roc.png", folder / "pr.png"]
    if evaluation.predicted_values is not None:
        names = result.get("class_names") or []
        plot_predicted_vs_true(
            evaluation.predicted_values, evaluation.true_values, names, folder / "predicted_vs_true.png", title
        )
        written.append(folder / "predicted_vs_true.png")
    if evaluation.images:
        plot_top_losses(
            evaluation.images,
            result["top_losses"],
            folder / "top_losses.png",
            f"{title}\npredicted / true / loss / probability",
        )
        written.append(folder / "top_losses.png")
    return written


def _print_confusion(console, result: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    names = result["class_names"]
    table = Table(title="Confusion matrix (rows: true class, columns: predicted)", title_justify="left")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for i, (name, row) in enumerate(zip(names, result["confusion"])):
        cells = [Text(str(c), style="bold green" if i == j else "") for j, c in enumerate(row)]
        table.add_row(Text(f"{name} ({sum(row)})"), *cells)
    console.print(table)


def _print_report(console, report: dict) -> None:
    """scikit-learn's classification report as a table: classes, then accuracy and the averages."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Classification report", title_justify="left")
    for col in ("", "precision", "recall", "f1-score", "support"):
        table.add_column(col, justify="left" if not col else "right")
    averages = [k for k in report if k.endswith(" avg")]
    for name, row in report.items():
        if name == "accuracy" or name in averages:
            continue
        table.add_row(Text(name), *[f"{row[m]:.4f}" for m in ("precision", "recall", "f1-score")], str(row["support"]))
    if "accuracy" in report:
        support = str(report[averages[0]]["support"]) if averages else ""
        table.add_row(Text("accuracy", style="bold"), "", "", f"{report['accuracy']:.4f}", support)
    for name in averages:
        row = report[name]
        table.add_row(
            Text(name, style="bold"),
            *[f"{row[m]:.4f}" for m in ("precision", "recall", "f1-score")],
            str(row["support"]),
        )
    console.print(table)


def _print_top_losses(console, rows: list) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"The {len(rows)} examples with the highest loss", title_justify="left")
    for col in ("index", "source", "true", "predicted", "probability", "loss"):
        table.add_column(col, justify="right" if col in ("index", "probability", "loss") else "left")
    for row in rows:
        probability = "-" if row["probability"] is None else f"{row['probability']:.4f}"
        table.add_row(
            str(row["index"]),
            Text(row["source"]),
            Text(str(row["true"])),
            Text(str(row["predicted"])),
            probability,
            f"{row['loss']:.4f}",
        )
    console.print(table)


@app.command()
@handle_errors
def info(
    json_: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show what this machine offers for training: CPU capability, native bf16, CUDA GPUs.

    training.precision: bf16 pays on a CPU whose `bf16 native` is yes (AVX512-BF16 or AMX)
    and on a GPU whose bf16 is yes (Ampere or newer), for models that do enough work per step;
    `precision: auto` shows which it would take.
    """
    import json

    from ..devices import device_report

    report = device_report()
    if json_:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    console = stdout_console()
    cpu = report["cpu"]
    console.print(f"torch {report['torch']}")
    console.print(
        f"CPU: {cpu['cores']} cores, {cpu['threads']} threads used, capability {cpu['capability']}, "
        f"bf16 native: {'yes' if cpu['bf16_native'] else 'no (training.precision: bf16 is refused)'}"
    )
    console.print(f"  training.precision: auto takes {cpu['precision_auto']}")
    if not report["cuda"]:
        console.print("CUDA: no GPU visible")
    for gpu in report["cuda"]:
        console.print(f"{gpu['device']}: {gpu['name']}, bf16: {'yes' if gpu['bf16'] else 'no'}")
        console.print(f"  training.precision: auto takes {gpu['precision_auto']}")
