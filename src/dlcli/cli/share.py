"""Sharing and writing experiments: `dlcli schema` (a JSON Schema of the config, for editors)
and `dlcli report` (one self-contained HTML page of a run, sweep or cross-validation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import RunsDir, handle_errors, stdout_console

app = typer.Typer()


@app.command()
@handle_errors
def schema(
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the schema to this file instead of standard output.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file that dlcli did not write.")
    ] = False,
) -> None:
    """Print a JSON Schema (draft 2020-12) of the config, generated from the classes dlcli validates
    configs with: editors (VS Code's YAML extension) complete and check configs as they are typed.
    Point a config at it with a first line `# yaml-language-server: $schema=PATH` (docs/config.md)."""
    from ..schema import schema_text, write_schema

    if out is None:
        typer.echo(schema_text(), nl=False)
        return
    write_schema(out, force=force)
    stdout_console().print(f"Wrote {out}")


@app.command()
@handle_errors
def report(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN|SWEEP|CV",
            help="Run, sweep or cross-validation folder (or an id under --runs-dir, runs/sweeps or runs/cv).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the report here (default: report.html in the folder).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file that dlcli did not write.")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write one self-contained HTML page of a run, a sweep or a cross-validation.

    A run: its result, curves, confusion matrix and evaluation, model, config (what differs from
    the defaults marked), environment, timings and files. A sweep: its trials sortable by the
    objective, the objective plot, the overlaid curves and the best config. A cross-validation:
    each fold's metrics, their mean and standard deviation. Nothing in it points outside the
    file: it opens offline from any folder, and prints cleanly."""
    from ..report_sweep import write_any_report

    path = Path(run)
    if not path.exists() and "/" not in run and run not in (".", ".."):
        candidates = [runs_dir / run, runs_dir / "sweeps" / run, runs_dir / "cv" / run]
        path = next((c for c in candidates if c.is_dir()), path)
    written = write_any_report(path, out, force=force)
    stdout_console().print(f"Wrote {written}")
