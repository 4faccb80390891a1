"""Sharing and writing experiments: `dlcli schema` (a JSON Schema of the config, for editors)
and `dlcli report` (one self-contained HTML page of a run)."""

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
    run: Annotated[str, typer.Argument(help="Run folder (or id under --runs-dir).", show_default=False)],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the report here (default: report.html in the run).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --out file that dlcli did not write.")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write one self-contained HTML page of a run: its result, curves, confusion matrix, model,
    config (what differs from the defaults marked), environment, timings and files. Nothing in it
    points outside the file: it opens offline from any folder, and prints cleanly."""
    from ..report import write_report
    from ..rundir import resolve_run

    folder = resolve_run(run, runs_dir)
    path = write_report(folder, out, force=force)
    stdout_console().print(f"Wrote {path}")
