"""Using a trained model: `dlcli predict` on new inputs and `dlcli export` to ONNX or pt2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (
    Checkpoint,
    CheckpointOption,
    ExportFormat,
    RunsDir,
    choice,
    error_console,
    fail,
    handle_errors,
    stdout_console,
)

app = typer.Typer()


@app.command()
@handle_errors
def predict(
    run: Annotated[str, typer.Argument(help="Run folder or id.", show_default=False)],
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Files or folders as the run's data takes them (images, .csv, .txt, .npz, IDX); - reads text from standard input.",
            show_default=False,
        ),
    ] = None,
    checkpoint: CheckpointOption = Checkpoint.best.value,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the predictions here instead of standard output.")
    ] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Only the K most probable classes per input.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Inputs per forward pass.", min=1)] = 1024,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: the run's).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="JSON lines instead of CSV.")] = False,
    text: Annotated[Optional[str], typer.Option("--text", help="Text runs: predict on this text.")] = None,
    invert: Annotated[
        bool,
        typer.Option("--invert", help="Images: invert gray levels (dark strokes on white -> MNIST's white on black)."),
    ] = False,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Mark unreadable inputs in an error column and go on.")
    ] = False,
    all_windows: Annotated[
        bool,
        typer.Option("--all-windows", help="Time series: forecast from every window of the file, not only the last."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file that dlcli did not write.")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Predict with a trained run on new inputs.

    One output row per input, in input order: the input's name, the predicted class, its
    probability and one probability column per class (or --top-k columns); regression runs give
    the predicted values. When the inputs carry labels (a folder laid out by class, a table with
    the target column, IDX label files), true label and correct columns are added and the
    accuracy is printed at the end (on standard error, so the CSV stays clean). Time-series
    runs forecast from each file's last window (every window with --all-windows), with the time
    stamps of its last row and of the forecast, in the target's units.
    """
    from ..loading import load_run
    from ..predict import PredictOptions, predict_inputs, prediction_rows, read_inputs
    from ..rundir import resolve_run

    if out is not None and out.is_dir():
        fail(f"--out {out} is a folder; give a file path such as {out / 'predictions.csv'}.")
    folder = resolve_run(run, runs_dir)
    if out is not None:
        _check_out(out, inputs or [], folder, force)
    loaded = load_run(folder, checkpoint, device)
    options = PredictOptions(text=text, invert=invert, skip_bad=skip_bad, all_windows=all_windows)
    read = read_inputs(loaded, list(inputs or []), options)
    predictions = predict_inputs(loaded, read, batch_size)
    columns, rows = prediction_rows(read, predictions, top_k)
    body = _json_lines(rows) if json_ else _csv(columns, rows)
    if out is None:
        sys.stdout.write(body)
        sys.stdout.flush()
    else:
        from ..rundir import atomic_write_text

        atomic_write_text(out, body)
    _report(read, columns, rows, predictions.task, out)


def _check_out(out: Path, inputs: list[str], run_dir: Path, force: bool) -> None:
    from ..rundir import check_output_file

    check_output_file(
        out,
        option="--out",
        inputs=_input_files(inputs),
        run_dir=run_dir,
        allowed_in_run=("predictions",),
        force=force,
        written_by_dlcli=_is_predictions_file,
    )


def _report(read, columns: list[str], rows: list[dict], task: str, out: Optional[Path]) -> None:
    """Notes, unreadable inputs, accuracy or error where labels are known: on standard error, so
    the predictions on standard output stay clean CSV."""
    from ..predict import accuracy, mean_absolute_error

    err = error_console()
    for note in read.notes:
        err.print(f"Note: {note}", markup=False, highlight=False)
    if read.errors:
        err.print(f"{len(read.errors)} of {len(read.names)} inputs could not be read (see the error column).")
    acc = accuracy(rows)
    if acc is not None:
        judged = sum(1 for r in rows if "correct" in r)
        err.print(f"accuracy: {acc:.4f} ({sum(1 for r in rows if r.get('correct'))}/{judged} inputs with labels)")
    mae = mean_absolute_error(rows, columns) if task == "regression" else None
    if mae is not None:
        err.print(f"mean absolute error: {mae:.4f}")
    if out is not None:
        err.print(f"{len(rows)} predictions written to {out}", markup=False, highlight=False)


def _input_files(inputs: list[str]) -> list[Path]:
    """The files an output must not replace: those named, and those inside folders named."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file()]
        elif path.exists():
            files.append(path)
    return files


def _is_predictions_file(path: Path) -> bool:
    """Whether the file is predictions dlcli wrote: a CSV whose header starts with `input`, or
    JSON lines with an "input" key."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith("input,") or first.rstrip("\n") == "input" or first.startswith('{"input": ')


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _csv(columns: list[str], rows: list[dict]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _json_lines(rows: list[dict]) -> str:
    import json

    return "".join(json.dumps(row) + "\n" for row in rows)


@app.command()
@handle_errors
def export(
    run: Annotated[str, typer.Argument(help="Run folder or id.", show_default=False)],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="onnx or pt2 (torch.export).",
            parser=choice(ExportFormat, "--format", " (TorchScript is deprecated upstream)"),
        ),
    ] = ExportFormat.onnx.value,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="The model file (default: RUN/export/FORMAT/model.FORMAT).")
    ] = None,
    checkpoint: CheckpointOption = Checkpoint.best.value,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file that dlcli did not export.")
    ] = False,
    input_layout: Annotated[
        Optional[str],
        typer.Option(
            "--input-layout",
            help="Images and clips: the order of the axes the model takes, e.g. NHWC or NTHWC as PIL and "
            "NumPy decode them (default: as the data stores them, NCHW or NCTHW; an .npz run's data.layout).",
            show_default=False,
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Export a trained run as a self-contained model file, verified right after export.

    Input scaling and standardisation are inside the graph and its outputs are probabilities;
    the batch axis is dynamic. The file is run with onnxruntime (onnx) or torch.export.load
    (pt2) at batch sizes 1 and 3 and must match the eager model to 1e-5. export.json beside it
    names the input, the class order and the preprocessing that remains outside the graph.
    """
    from ..export import default_path, export_run
    from ..loading import load_run
    from ..rundir import resolve_run

    folder = resolve_run(run, runs_dir)
    which, fmt = checkpoint, format_
    loaded = load_run(folder, which, "cpu")
    sidecar = export_run(loaded, fmt, out, force=force, input_layout=input_layout)
    worst = max(sidecar["verified"]["max_abs_difference"].values())
    console = stdout_console()
    path = Path(out) if out is not None else default_path(loaded, fmt)
    console.print(f"Exported {folder.name} ({which} checkpoint, epoch {sidecar['epoch']}) as {fmt}: {path}")
    console.print(
        f"Verified at batch sizes 1 and 3: largest difference from the eager model {worst:.2g}. "
        f"Input {sidecar['input']['dtype']} {sidecar['input']['shape']}; see {path.parent / 'export.json'}."
    )
