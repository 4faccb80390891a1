"""A cross-validation's results (`dlcli cv`, sweep/cv.py): each fold's metrics, their mean and
standard deviation in `summary.json`, and the listing for `dlcli runs`. Read from the CV's
folder alone, so the sweep session (which hands them to the MLflow parent run), `dlcli runs`
and the report need neither scikit-learn nor the CV's planning code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import DlcliError
from ..rundir import METRICS_FILE, RESULTS_FILE, read_json, read_metrics, write_json
from .spec import TRIALS_DIR, trial_dir_name

CV_DIR = "cv"
CV_FILE = "cv.json"
SUMMARY_JSON = "summary.json"
# Columns of metrics.csv that describe the run's pace, not the model.
NOT_METRICS = ("epoch", "lr", "seconds")


def cv_root(runs_dir: Path) -> Path:
    return Path(runs_dir) / CV_DIR


def _number_leaves(node: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of results.json as dotted names (test_accuracy, test_report.macro avg.f1-score)."""
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_number_leaves(value, f"{prefix}{key}."))
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
        out[prefix[:-1]] = float(node)
    return out


def fold_metrics(folder: Path) -> dict[str, float]:
    """A finished fold's metrics: metrics.csv's row of the weights the run kept (the restored
    best epoch, else the last), and every number results.json holds (its `best` record and
    sample counts aside)."""
    try:
        results = read_json(folder / RESULTS_FILE)
    except DlcliError:
        results = {}
    try:
        _, rows = read_metrics(folder / METRICS_FILE)
    except DlcliError:
        rows = []
    metrics: dict[str, float] = {}
    if rows:
        early = (results.get("best") or {}).get("early_stopping") or {}
        epoch = early.get("best_epoch") if early.get("restored_best_weights") else None
        row = next((r for r in rows if r["epoch"] == epoch), rows[-1])
        metrics.update({k: float(v) for k, v in row.items() if k not in NOT_METRICS and v is not None})
    leaves = _number_leaves({k: v for k, v in results.items() if k not in ("best", "checkpoint")})
    metrics.update({k: v for k, v in leaves.items() if not k.endswith("_samples")})
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and standard deviation (numpy's default, ddof=0, as scikit-learn's scores.std())."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(values)}


def cv_summary(folder: Path) -> dict[str, Any]:
    """summary.json's content: each fold's status and metrics, and each metric's mean and
    standard deviation over the completed folds. No times or paths outside the folder, so an
    interrupted and resumed CV gives the same numbers as an uninterrupted one."""
    from ..runs import read_run
    from .spec import read_spec

    info = read_json(folder / CV_FILE)
    spec = read_spec(folder)
    folds = []
    for number in range(spec.trials):
        run = folder / TRIALS_DIR / trial_dir_name(number, spec.name)
        record = read_run(run) if run.is_dir() else None
        status = "waiting" if record is None else record.status
        repeat, within = divmod(number, int(info["folds"]))
        entry: dict[str, Any] = {"fold": number, "repeat": repeat, "fold_in_repeat": within, "status": status}
        entry["run"] = str(Path(TRIALS_DIR) / run.name)
        entry["metrics"] = fold_metrics(run) if status == "completed" else {}
        folds.append(entry)
    done = [f for f in folds if f["status"] == "completed"]
    names = sorted({k for f in done for k in f["metrics"]})
    metrics = {n: mean_std([f["metrics"][n] for f in done if n in f["metrics"]]) for n in names}
    return {
        "cv": {k: info.get(k) for k in ("id", "folds", "repeats", "seed", "splitter", "task", "samples", "metric")},
        "completed": len(done),
        "planned": spec.trials,
        "metrics": metrics,
        "folds": folds,
    }


def write_cv_summary(folder: Path) -> dict[str, Any]:
    data = cv_summary(folder)
    write_json(folder / SUMMARY_JSON, data)
    return data


def list_cvs(runs_dir: Path) -> list[dict[str, Any]]:
    """`dlcli runs`: every CV folder's summary (read from its folders), newest first."""
    root = cv_root(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted((p for p in root.iterdir() if (p / CV_FILE).is_file()), key=lambda p: p.name, reverse=True):
        try:
            out.append({"path": str(folder), **cv_summary(folder)})
        except DlcliError as exc:
            out.append({"path": str(folder), "problem": exc.message})
    return out
