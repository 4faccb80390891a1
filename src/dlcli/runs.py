"""Reading run folders back for `dlcli runs` and `dlcli compare`.

A damaged or half-written folder is described as such (status "damaged" with the reason)
instead of breaking the listing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import DlcliError
from .metrics import best_index
from .rundir import CONFIG_FILE, METRICS_FILE, RESULTS_FILE, RUN_FILE, read_json, read_metrics


@dataclass
class RunRecord:
    id: str
    path: str
    name: Optional[str] = None
    status: str = "damaged"
    problem: Optional[str] = None
    epochs_done: int = 0
    epochs: Optional[int] = None
    metric: Optional[str] = None  # accuracy or mae
    best_name: Optional[str] = None  # the column the best value comes from
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    final: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    duration_seconds: Optional[float] = None
    created_at: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# How `dlcli runs`, a sweep's tables and its live display colour each status of a run or trial.
STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "pruned": "magenta",
    "interrupted": "yellow",
    "failed": "red",
    "killed": "red",
    "damaged": "bold red",
    "waiting": "dim",
}


def process_alive(pid: int) -> bool:
    """Whether a process of this machine still runs (a zombie, killed but not yet reaped by
    its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # no /proc (not Linux): trust the signal test
        return True


def best_of(rows: list[dict], column: str) -> tuple[Optional[float], Optional[int]]:
    """Best value of a column and its epoch."""
    index = best_index([r.get(column) for r in rows], column)
    if index is None:
        return None, None
    return rows[index][column], rows[index]["epoch"]


def read_run(folder: Path) -> RunRecord:
    record = RunRecord(id=folder.name, path=str(folder))
    problems = []
    try:
        info = read_json(folder / RUN_FILE)
    except DlcliError as exc:
        record.problem = exc.message
        return record
    record.name = info.get("name")
    record.status = info.get("status", "damaged")
    record.epochs = info.get("epochs")
    record.duration_seconds = info.get("duration_seconds")
    record.created_at = info.get("created_at")
    if record.status == "running" and info.get("host") == socket.gethostname() and info.get("pid"):
        if not process_alive(int(info["pid"])):
            record.status = "killed"  # its process is gone without saying so: resume it
    if (folder / METRICS_FILE).exists():
        try:
            columns, rows = read_metrics(folder / METRICS_FILE)
        except DlcliError as exc:
            problems.append(exc.message)
            columns, rows = [], []
        if rows:
            record.epochs_done = rows[-1]["epoch"]
            record.final = {k: v for k, v in rows[-1].items() if k not in ("epoch",)}
            record.metric = columns[2] if len(columns) > 2 else None
            watched = f"val_{record.metric}" if f"val_{record.metric}" in columns else record.metric
            if watched:
                record.best_name = watched
                record.best_value, record.best_epoch = best_of(rows, watched)
    if (folder / RESULTS_FILE).exists():
        try:
            results = read_json(folder / RESULTS_FILE)
            record.test = {k: v for k, v in results.items() if k.startswith("test_")}
        except DlcliError as exc:
            problems.append(exc.message)
    if not (folder / CONFIG_FILE).exists():
        problems.append("config.yaml is missing")
    if problems:
        record.problem = "; ".join(problems)
    return record


def list_runs(root: Path) -> list[RunRecord]:
    """Every run folder under root, newest first (ids begin with the start time)."""
    if not root.is_dir():
        return []
    folders = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and not (p.name in ("sweeps", "cv") and not (p / RUN_FILE).exists())
    ]  # sweeps and cross-validations are listed apart
    return [read_run(p) for p in sorted(folders, key=lambda p: p.name, reverse=True)]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value, for comparing configs."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: node}


def config_differences(folders: list[Path]) -> dict[str, list[Any]]:
    """Config keys whose values differ between runs (ids and names excluded)."""
    import yaml

    from .config import parse_yaml

    flat = []
    for folder in folders:
        path = folder / CONFIG_FILE
        try:  # the config loader's limits: a hand-edited config.yaml cannot stall the listing
            flat.append(flatten(parse_yaml(path.read_text(encoding="utf-8"), str(path))[0] or {}))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, DlcliError):
            flat.append({})
    keys = sorted(set().union(*flat))
    missing = object()
    diffs = {}
    for key in keys:
        values = [f.get(key, missing) for f in flat]
        if any(v != values[0] for v in values[1:]):
            diffs[key] = [None if v is missing else v for v in values]
    return diffs


def comparison(folders: list[Path]) -> dict[str, Any]:
    records = [read_run(f) for f in folders]
    return {"runs": [r.to_dict() for r in records], "config_differences": config_differences(folders)}
