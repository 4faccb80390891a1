"""`dlcli cache list | clear`: the decoded samples image and video folders keep on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import handle_errors, stdout_console

app = typer.Typer(help="The disk caches of decoded images and clips (data.cache: disk).", no_args_is_help=True)

CacheDir = Annotated[
    Optional[Path],
    typer.Option("--cache-dir", help="The cache folder (default: $DLCLI_CACHE_DIR, else dlcli/ in ~/.cache)."),
]


@app.command("list")
@handle_errors
def list_(cache_dir: CacheDir = None) -> None:
    """List the caches: key, kind, samples, size, and whether each is complete."""
    from ..data.cache import cache_root, list_caches
    from ..devices import human

    root = cache_root(str(cache_dir) if cache_dir else None)
    entries = list_caches(root)
    console = stdout_console()
    if not entries:
        console.print(f"No caches in {root}.", highlight=False)
        return
    for entry in entries:
        options = ", ".join(f"{k} {v}" for k, v in entry.options.items())
        state = "" if entry.complete else "  (unfinished: resumed or rebuilt when next needed)"
        console.print(
            f"{entry.key}  {entry.kind}  {entry.count} samples  {human(entry.bytes)}  {options}{state}",
            highlight=False,
            markup=False,
        )
    console.print(f"{len(entries)} caches, {human(sum(e.bytes for e in entries))} in {root}", highlight=False)


@app.command()
@handle_errors
def clear(cache_dir: CacheDir = None) -> None:
    """Remove every cache (they are rebuilt when a run needs them again)."""
    from ..data.cache import cache_root, clear_caches
    from ..devices import human

    root = cache_root(str(cache_dir) if cache_dir else None)
    count, freed = clear_caches(root)
    stdout_console().print(f"Removed {count} caches ({human(freed)}) from {root}.", highlight=False)
