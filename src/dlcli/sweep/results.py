"""A sweep's results: rows per trial, summary.csv, best.yaml, and the listing for `dlcli runs`.

`rows_from_study` reads the study (the truth when trials ran on several machines);
`list_sweeps` reads only the sweep folders, so `dlcli runs` needs neither Optuna nor the
database.
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import DlcliError
from ..rundir import METRICS_FILE, atomic_write_text, read_json, read_metrics
from ..runs import process_alive
from .space import yaml_text
from .spec import (
    BEST_FILE,
    SUMMARY_CSV,
    SWEEP_FILE,
    TRIAL_FILE,
    TRIALS_DIR,
    SweepSpec,
    best_value,
    best_yaml_text,
    sweeps_root,
)

ORDER = {"completed": 0, "pruned": 1, "running": 2, "interrupted": 2, "killed": 2, "waiting": 3, "failed": 4}


@dataclass
class TrialRow:
    number: int
    status: str  # completed, pruned, running, interrupted, killed, waiting, failed
    value: Optional[float]  # the objective; for a pruned or unfinished trial its best epoch so far
    best_epoch: Optional[int]
    epochs: Optional[int]  # epochs completed
    seconds: Optional[float]  # time its trial process(es) ran
    params: dict[str, Any]
    folder: Optional[str] = None  # relative to the sweep folder
    error: Optional[str] = None
    host: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _owner_gone(attrs: dict[str, Any]) -> bool:
    if attrs.get("host") != socket.gethostname() or not attrs.get("worker_pid"):
        return False
    return not process_alive(int(attrs["worker_pid"]))


def _folder_progress(folder: Path, spec: SweepSpec) -> tuple[Optional[float], Optional[int], Optional[int]]:
    try:
        _, rows = read_metrics(folder / METRICS_FILE)
    except DlcliError:
        return None, None, None
    value, epoch = best_value(rows, spec.metric, spec.direction)
    return value, epoch, int(rows[-1]["epoch"]) if rows else 0


def rows_from_study(sweep_dir: Path, spec: SweepSpec, trials: list) -> list[TrialRow]:
    """One row per trial of the study (study.TrialInfo), with progress read from the trial's
    folder where the study has none (a running or interrupted trial)."""
    rows = []
    for t in trials:
        attrs = t.attrs
        status = t.state
        if status == "running":
            if attrs.get("status") == "interrupted":
                status = "interrupted"
            elif _owner_gone(attrs):
                status = "killed"
        value = t.value if status == "completed" else attrs.get("best_value")
        best_epoch, epochs = attrs.get("best_epoch"), attrs.get("epochs")
        folder = attrs.get("folder")
        if status in ("running", "interrupted", "killed") and folder:
            value, best_epoch, epochs = _folder_progress(Path(sweep_dir) / folder, spec)
        rows.append(
            TrialRow(
                number=t.number,
                status=status,
                value=value,
                best_epoch=best_epoch,
                epochs=epochs,
                seconds=attrs.get("seconds"),
                params=t.params,
                folder=folder,
                error=attrs.get("error"),
                host=attrs.get("host"),
            )
        )
    return rows


def sort_rows(rows: list[TrialRow], direction: str) -> list[TrialRow]:
    """Best first: completed trials by their value, then pruned, unfinished, waiting, failed."""

    def key(r: TrialRow):
        value = r.value if r.value is not None else float("inf") if direction == "min" else float("-inf")
        return (ORDER.get(r.status, 5), -value if direction == "max" else value, r.number)

    return sorted(rows, key=key)


def best_row(rows: list[TrialRow], direction: str) -> Optional[TrialRow]:
    done = [r for r in rows if r.status == "completed" and r.value is not None]
    return sort_rows(done, direction)[0] if done else None


def summary_csv_text(spec: SweepSpec, rows: list[TrialRow]) -> str:
    keys = [p.key for p in spec.space]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "status", spec.metric, "best_epoch", "epochs", "seconds", *keys, "folder", "error"])
    for r in sort_rows(rows, spec.direction):
        writer.writerow(
            [
                r.number,
                r.status,
                "" if r.value is None else repr(r.value),
                "" if r.best_epoch is None else r.best_epoch,
                "" if r.epochs is None else r.epochs,
                "" if r.seconds is None else r.seconds,
                *["" if k not in r.params else _cell(r.params[k]) for k in keys],
                r.folder or "",
                r.error or "",
            ]
        )
    return out.getvalue()


def _cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else yaml_text(value)


def write_summaries(sweep_dir: Path, spec: SweepSpec, rows: list[TrialRow]) -> Optional[TrialRow]:
    """summary.csv, and best.yaml once a trial has completed; returns the best row."""
    atomic_write_text(Path(sweep_dir) / SUMMARY_CSV, summary_csv_text(spec, rows))
    best = best_row(rows, spec.direction)
    if best is not None and best.value is not None and spec.kind != "cv":  # folds have no "best" config
        atomic_write_text(Path(sweep_dir) / BEST_FILE, best_yaml_text(spec, best.number, best.params, best.value))
    return best


# -- `dlcli runs`: sweeps read from their folders alone ------------------------------------


@dataclass
class TrialListing:
    number: int
    id: str
    status: str
    params: dict[str, Any]
    epochs_done: int
    epochs: Optional[int]
    value: Optional[float]
    best_epoch: Optional[int]
    test: dict[str, Any]
    metric: Optional[str]
    duration_seconds: Optional[float]
    problem: Optional[str] = None


@dataclass
class SweepListing:
    id: str
    path: str
    method: str = "?"
    metric: str = "?"
    direction: str = "max"
    planned: Optional[int] = None
    space: list[str] = field(default_factory=list)
    trials: list[TrialListing] = field(default_factory=list)
    problem: Optional[str] = None

    def best(self) -> Optional[TrialListing]:
        done = [t for t in self.trials if t.status == "completed" and t.value is not None]
        if not done:
            return None
        return (max if self.direction == "max" else min)(done, key=lambda t: float(t.value or 0.0))


def read_sweep_listing(folder: Path) -> SweepListing:
    from ..runs import read_run
    from .spec import read_spec

    listing = SweepListing(id=folder.name, path=str(folder))
    try:
        spec = read_spec(folder)
    except DlcliError as exc:
        listing.problem = exc.message
        return listing
    listing.method, listing.metric, listing.direction, listing.planned = (
        spec.method,
        spec.metric,
        spec.direction,
        spec.trials,
    )
    listing.space = [f"{p.key}={p.spec_text()}" for p in spec.space]
    trials_dir = folder / TRIALS_DIR
    for trial in sorted(trials_dir.iterdir() if trials_dir.is_dir() else []):
        if not trial.is_dir():
            continue
        record = read_run(trial)
        try:
            info = read_json(trial / TRIAL_FILE)
        except DlcliError:
            info = {}
        number = int(info.get("number", trial.name.split("-")[0] if trial.name[:4].isdigit() else -1))
        value, best_epoch, _ = _folder_progress(trial, spec)
        listing.trials.append(
            TrialListing(
                number=number,
                id=trial.name,
                status=record.status,
                params=info.get("params", {}),
                epochs_done=record.epochs_done,
                epochs=record.epochs,
                value=value,
                best_epoch=best_epoch,
                test=record.test,
                metric=record.metric,
                duration_seconds=record.duration_seconds,
                problem=record.problem,
            )
        )
    return listing


def list_sweeps(runs_dir: Path) -> list[SweepListing]:
    """Every sweep under runs/sweeps, newest first."""
    root = sweeps_root(runs_dir)
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.is_dir() and (p / SWEEP_FILE).exists()]
    return [read_sweep_listing(p) for p in sorted(folders, key=lambda p: p.name, reverse=True)]
