"""A sweep from start to end, as `dlcli sweep` runs it: creating or reopening it, running its
trials with the MLflow parent run around them, and the files written when it stops.

Library code: it raises DlcliErrors and reports through the `warn` callable it is given; the
CLI prints, installs the signal handlers (which call `SweepSession.request_stop`) and picks
the exit code from the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import DlcliError
from .results import TrialRow, best_row, rows_from_study, sort_rows, write_summaries
from .spec import BEST_FILE, TRIALS_DIR, SweepSpec, create_sweep_dir, write_spec
from .worker import RunOptions, SweepOutcome, SweepRun, TrialView

MLFLOW_PARENT_FILE = "mlflow_parent.json"
FINISHED = ("completed", "pruned", "failed")

Warn = Callable[[str], None]


def storage_location(storage: str) -> str:
    """--storage as the sweep keeps it: a URL as given, a journal file as an absolute path."""
    from .study import check_storage, is_url

    check_storage(storage)
    return storage if is_url(storage) else str(Path(storage).resolve())


def create_sweep(
    spec: SweepSpec,
    runs_dir: Path,
    storage: Optional[str],
    sweep_id: Optional[str],
    *,
    root: Optional[Path] = None,
    prepare: Optional[Callable[[Path, SweepSpec], None]] = None,
):
    """A new sweep of a planned spec: its folder (under root, default runs/sweeps), the study
    with every planned trial enqueued, and sweep.yaml. `prepare(folder, spec)` runs once the
    folder exists, before the study is made (cross-validation writes folds.csv there). Returns
    (sweep folder, study, storage URL); a sweep that cannot be created leaves no empty sweep
    folder behind."""
    from .space import encode_choice, grid_points
    from .study import Study

    if storage is not None:
        spec.storage = storage_location(storage)
    sweep_dir = create_sweep_dir(runs_dir, spec.name, sweep_id, root=root)
    spec.id = sweep_dir.name
    url = spec.storage_url(sweep_dir)
    points = grid_points(spec.space)[: spec.trials] if spec.method == "grid" else [{} for _ in range(spec.trials)]
    points = [{k: encode_choice(v) for k, v in p.items()} for p in points]
    try:
        if prepare is not None:
            prepare(sweep_dir, spec)
        study = Study.create(spec, url, points)
    except BaseException:
        if not any((sweep_dir / TRIALS_DIR).iterdir()):
            shutil.rmtree(sweep_dir, ignore_errors=True)  # nothing of value in it yet
        raise
    write_spec(sweep_dir, spec)
    return sweep_dir, study, url


def open_sweep(ref: str, storage: Optional[str], runs_dir: Path, *, creator: bool = False):
    """(sweep folder, spec, study, storage URL) of an existing sweep, from its folder or, on a
    machine without the folder, from its storage (the trials it runs then go into a sweep folder
    of the same id here)."""
    from .spec import SweepSpec, read_spec, require_sweep, resolve_sweep, sweeps_root
    from .study import Study

    folder = resolve_sweep(ref, runs_dir)
    if folder is not None:
        spec = read_spec(folder)
        if storage is not None:
            spec.storage = storage_location(storage)
        url = spec.storage_url(folder)
    elif storage is not None:
        url = storage_location(storage)
        spec = SweepSpec.from_data(Study.spec_data_from_storage(url, ref), f"the study {ref!r}")
        spec.storage = url
        folder = sweeps_root(runs_dir) / spec.id
        (folder / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
        write_spec(folder, spec)
    else:
        folder = require_sweep(ref, runs_dir)  # raises, naming what was looked for
    return folder, spec, Study.open(spec, url, creator=creator), url


def mlflow_parent(sweep_dir: Path, spec: SweepSpec, warn: Warn):
    """When the sweep's config logs to MLflow: the sweep's parent run (made once, kept in
    mlflow_parent.json so a resumed sweep continues it), handed to every trial through
    DLCLI_MLFLOW_PARENT_RUN_ID so that each trial's run is its child. (tracking, run id or None)."""
    from ..config import load_config

    tracking = load_config(None, (), raw=spec.base).tracking
    if tracking.mlflow is None:
        return tracking, None
    from ..tracking import start_parent_run

    record = sweep_dir / MLFLOW_PARENT_FILE
    parent = json.loads(record.read_text())["run_id"] if record.is_file() else None
    if parent is None:
        parent = start_parent_run(tracking, f"{spec.kind} {spec.id}", warn=warn)
        if parent is not None:
            from ..rundir import write_json

            write_json(record, {"run_id": parent})
    if parent is not None:
        os.environ["DLCLI_MLFLOW_PARENT_RUN_ID"] = parent  # the trial processes inherit it
    return tracking, parent


def finish_files(sweep_dir: Path, spec: SweepSpec, study: Any, warn: Warn) -> list[TrialRow]:
    """summary.csv, best.yaml and the plots from the study as it stands; its rows."""
    from .plots import plot_sweep

    rows = rows_from_study(sweep_dir, spec, study.trials())
    write_summaries(sweep_dir, spec, rows)
    try:
        plot_sweep(sweep_dir, spec, rows)
    except Exception as exc:  # a plot must never cost a sweep its summary
        warn(f"(plots not drawn: {exc})")
    return rows


def outcome_status(outcome: SweepOutcome) -> str:
    """How a sweep's run of trials ended, in run.json's words."""
    if outcome.stopped == "interrupted":
        return "interrupted"
    return "failed" if outcome.stopped else "completed"


def finished_count(outcome: SweepOutcome) -> int:
    return sum(outcome.counts.get(s, 0) for s in FINISHED)


def counts_text(outcome: SweepOutcome) -> str:
    """e.g. `3 completed, 1 pruned`: the trials of each state, in a fixed order."""
    counts = outcome.counts
    order = (*FINISHED, "interrupted", "running", "waiting")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def cv_parent_metrics(cv_dir: Path, warn: Warn) -> dict[str, float]:
    """A CV's metrics for its MLflow parent run: each fold metric's mean_ and std_, from the
    summary.json written here. A summary that cannot be made is said, and the parent run is
    still finished (with no metrics)."""
    from .cv_results import write_cv_summary

    try:
        summary = write_cv_summary(cv_dir)
    except DlcliError as exc:
        warn(f"Warning: no metrics for the CV's MLflow parent run: {exc.message}")
        return {}
    metrics: dict[str, float] = {}
    for name, value in summary["metrics"].items():
        metrics[f"mean_{name}"], metrics[f"std_{name}"] = value["mean"], value["std"]
    return metrics


class SweepSession:
    """One process's part of a sweep: its trials run by a `SweepRun`, inside the sweep's MLflow
    parent run, and the sweep's files written when they stop."""

    def __init__(
        self,
        sweep_dir: Path,
        spec: SweepSpec,
        study: Any,
        url: str,
        options: RunOptions,
        *,
        warn: Warn,
        on_event: Optional[Callable[[str, TrialView], None]] = None,
    ) -> None:
        self.sweep_dir, self.spec, self.study, self.url = Path(sweep_dir), spec, study, url
        self.warn = warn
        self.runner = SweepRun(self.sweep_dir, spec, study, url, options, on_event=on_event)
        self.tracking: Any = None
        self.parent: Optional[str] = None

    def finished_rows(self) -> list[TrialRow]:
        """The trials the study already holds as finished (a resumed sweep's)."""
        return [r for r in rows_from_study(self.sweep_dir, self.spec, self.study.trials()) if r.status in FINISHED]

    def request_stop(self, reason: str, signal_name: str = "SIGINT") -> None:
        self.runner.request_stop(reason, signal_name)

    def run(self, refresh: Optional[Callable[[], None]] = None) -> SweepOutcome:
        """Run trials until none is left or the sweep stops."""
        self.tracking, self.parent = mlflow_parent(self.sweep_dir, self.spec, self.warn)
        return self.runner.run(refresh=refresh)

    def finish(self, outcome: SweepOutcome) -> list[TrialRow]:
        """summary.csv, best.yaml and the plots; then the MLflow parent run says how it ended."""
        rows = finish_files(self.sweep_dir, self.spec, self.study, self.warn)
        if self.parent is not None:
            from ..tracking import finish_parent_run

            names: tuple[str, ...] = ("sweep.yaml", "summary.csv", "best.yaml")
            metrics: dict[str, float] = {}
            if self.spec.kind == "cv":
                from .cv_results import SUMMARY_JSON

                metrics = cv_parent_metrics(self.sweep_dir, self.warn)
                names += (SUMMARY_JSON,)
            files = [self.sweep_dir / n for n in names] + sorted(self.sweep_dir.glob("*.png"))
            artifacts = [f for f in files if f.is_file()]
            finish_parent_run(
                self.tracking,
                self.parent,
                outcome_status(outcome),
                artifacts=artifacts,
                metrics=metrics,
                warn=self.warn,
            )
        return rows


def stale_trials(sweep_dir: Path, spec: SweepSpec, study: Any, url: str) -> list[int]:
    """Trials the study says are running whose worker is gone (what `resume` continues)."""
    return SweepRun(sweep_dir, spec, study, url, RunOptions(gpus=[])).find_stale()


def summary_data(folder: Path, spec: SweepSpec, study: Any, url: str, rows: list[TrialRow]) -> dict[str, Any]:
    """`dlcli sweep summary --json`: the sweep, its best trial and every trial, best first."""
    from .study import redact

    best = best_row(rows, spec.direction)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "sweep": {
            "id": spec.id,
            "folder": str(folder),
            "method": spec.method,
            "metric": spec.metric,
            "direction": spec.direction,
            "prune": spec.prune,
            "planned": study.planned(),
            "counts": counts,
            "params": {p.key: p.spec_text() for p in spec.space},
            "storage": redact(url),
        },
        "best": None if best is None else {**best.to_dict(), "config": str(folder / BEST_FILE)},
        "trials": [r.to_dict() for r in sort_rows(rows, spec.direction)],
    }
