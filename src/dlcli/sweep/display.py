"""What a sweep shows while it runs: a live table of trials on a terminal, plain lines in a pipe.

Like the training progress display it takes an injectable Rich Console (tests render into a
StringIO) and refreshes a few times a second, reading a running trial's progress from its
metrics.csv.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import DlcliError
from ..progress import format_seconds
from ..rundir import METRICS_FILE, read_metrics
from ..runs import STATUS_STYLE
from .space import params_label, yaml_text
from .spec import SweepSpec, best_value

REFRESH_S = 0.5
LIVE_ROWS = 30  # more trials than this: the running ones and the most recent others


def _short_keys(spec: SweepSpec) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    for p in spec.space:
        name = p.key.split(".")[-1]
        names.append((p.key, p.key if name.isdigit() or any(n == name for _, n in names) else name))
    return names


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}".rstrip("0").rstrip(".")
    return yaml_text(value)


class SweepDisplay:
    def __init__(self, console: Console, spec: SweepSpec, sweep_dir: Path, *, live: Optional[bool] = None) -> None:
        self.console = console
        self.spec = spec
        self.sweep_dir = Path(sweep_dir)
        self.live_mode = console.is_terminal if live is None else live
        self.rows: dict[int, dict[str, Any]] = {}
        self.views: dict[int, Any] = {}
        self._live: Any = None
        self._last = 0.0
        self.best: Optional[tuple[int, float]] = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, known_rows: list) -> None:
        """Begin with what the study already holds (a resumed sweep's finished trials)."""
        for r in known_rows:
            self.rows[r.number] = {
                "status": r.status,
                "params": r.params,
                "value": r.value,
                "best_epoch": r.best_epoch,
                "epochs": r.epochs,
                "seconds": r.seconds,
                "error": r.error,
            }
            self._note_best(r.number, r.status, r.value)
        if self.live_mode:
            from rich.live import Live

            self._live = Live(self._table(), console=self.console, auto_refresh=False, transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.stop()
            self._live = None

    def _note_best(self, number: int, status: str, value: Optional[float]) -> bool:
        if status != "completed" or value is None:
            return False
        if self.best is None or (value > self.best[1] if self.spec.direction == "max" else value < self.best[1]):
            self.best = (number, value)
            return True
        return False

    # -- events from the workers ----------------------------------------------------------

    def event(self, kind: str, view: Any) -> None:
        self._event(kind, view)
        if not self.live_mode:
            try:
                self.console.file.flush()  # a line per event as it happens, even into a log file
            except (AttributeError, OSError, ValueError):
                pass

    def _event(self, kind: str, view: Any) -> None:
        self.views[view.number] = view
        row = self.rows.setdefault(view.number, {})
        row.update(
            {
                "status": view.status,
                "params": view.params,
                "value": view.value,
                "best_epoch": view.best_epoch,
                "epochs": view.epochs_done,
                "total": view.epochs,
                "error": view.error,
                "seconds": (view.finished or time.time()) - view.started,
            }
        )
        if self.live_mode:
            self.refresh(force=True)
            return
        label = params_label(view.params, width=100)
        unit = "Fold" if self.spec.kind == "cv" else "Trial"  # a cross-validation's trials are its folds
        if kind == "started":
            how = "continues" if view.resumed else "started"
            self.console.print(f"{unit} {view.number} {how}: {label}", highlight=False, soft_wrap=True)
            return
        took = format_seconds(row["seconds"])
        metric = self.spec.metric
        if view.status == "completed":
            best = self._note_best(view.number, view.status, view.value) and self.spec.kind != "cv"
            self.console.print(
                f"{unit} {view.number} completed in {took}: {metric} {fmt_value(view.value)} "
                f"(epoch {view.best_epoch}){'  best so far' if best else ''}",
                highlight=False,
                soft_wrap=True,
            )
        elif view.status == "pruned":
            self.console.print(
                f"{unit} {view.number} pruned after epoch {view.epochs_done} ({took}): {metric} {fmt_value(view.value)}",
                highlight=False,
                soft_wrap=True,
            )
        elif view.status == "interrupted":
            self.console.print(
                f"{unit} {view.number} interrupted after {took}; its folder keeps every complete epoch",
                highlight=False,
                soft_wrap=True,
            )
        else:
            self.console.print(
                f"{unit} {view.number} failed after {took}: {view.error}", highlight=False, soft_wrap=True
            )

    def refresh(self, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if not force and now - self._last < REFRESH_S:
            return
        self._last = now
        self._live.update(self._table(), refresh=True)

    # -- the table -------------------------------------------------------------------------

    def _progress(self, number: int) -> None:
        """A running trial's epochs and best value so far, from its metrics.csv."""
        view = self.views.get(number)
        row = self.rows[number]
        if view is None or row.get("status") != "running":
            return
        try:
            _, metrics = read_metrics(view.folder / METRICS_FILE)
        except DlcliError:
            return
        row["value"], row["best_epoch"] = best_value(metrics, self.spec.metric, self.spec.direction)
        row["epochs"] = metrics[-1]["epoch"] if metrics else 0
        row["seconds"] = time.time() - view.started

    def _table(self) -> Table:
        spec = self.spec
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.get("status", "?")] = counts.get(row.get("status", "?"), 0) + 1
        done = sum(counts.get(s, 0) for s in ("completed", "pruned", "failed"))
        title = f"Sweep {spec.id}: {spec.method}, {done}/{spec.trials} trials done" + "".join(
            f", {n} {s}" for s, n in sorted(counts.items()) if s not in ("completed",)
        )
        if self.best is not None:
            title += f"; best {spec.metric} {fmt_value(self.best[1])} (trial {self.best[0]})"
        table = Table(title=title, title_justify="left")
        table.add_column("trial", justify="right")
        table.add_column("status")
        keys = _short_keys(spec)
        for _, name in keys:
            table.add_column(name, justify="right")
        table.add_column("epochs", justify="right")
        table.add_column(spec.metric, justify="right")
        table.add_column("time", justify="right")
        numbers = sorted(self.rows)
        if len(numbers) > LIVE_ROWS:
            running = [n for n in numbers if self.rows[n].get("status") == "running"]
            others = [n for n in numbers if n not in running][-(LIVE_ROWS - len(running)) :]
            numbers = sorted(set(running) | set(others))
        for number in numbers:
            self._progress(number)
            row = self.rows[number]
            status = row.get("status", "?")
            epochs = row.get("epochs")
            total = row.get("total")
            cells = [fmt_value(row.get("params", {}).get(key)) for key, _ in keys]
            value = fmt_value(row.get("value"))
            if row.get("best_epoch") is not None:
                value += f" ({row['best_epoch']})"
            table.add_row(
                str(number),
                Text(status, style=STATUS_STYLE.get(status, "")),
                *cells,
                f"{epochs if epochs is not None else '-'}{'/' + str(total) if total else ''}",
                value,
                format_seconds(row["seconds"]) if row.get("seconds") is not None else "-",
            )
        return table
