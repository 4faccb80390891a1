"""`dlcli report SWEEP | CV`: one self-contained HTML page of a sweep or a cross-validation,
and the choice between those and a run's page (report.py) for a folder.

The same rules as a run's report: images inline as PNG data URIs, nothing fetched, real
headings and tables, alt text, a print stylesheet, the same bytes when rebuilt but for the
generated-at line. A sweep's trials table comes sorted by the objective, best first; a small
inline script lets a reader sort it by another column, and the page reads and prints the same
without it. Read from the folders alone (no Optuna storage is opened).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .errors import RunDirError
from .report import GENERATOR, _e, _figure, _fmt, _table, page

# Sorts a table by the clicked column (numbers as numbers, blanks last); keyboard reachable.
_SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, index) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = th.textContent;
    button.title = "Sort by " + th.textContent;
    th.textContent = "";
    th.appendChild(button);
    button.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      function key(row) {
        var text = row.cells[index].textContent.trim();
        var number = parseFloat(text);
        return text === "" ? null : (isNaN(number) ? text : number);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var order = x < y ? -1 : (x > y ? 1 : 0);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def folder_kind(folder: Path) -> str:
    """run, sweep or cv; a RunDirError (exit 2) for a folder that is none of them."""
    from .rundir import RUN_FILE
    from .sweep.cv_results import CV_FILE
    from .sweep.spec import SWEEP_FILE

    if not folder.is_dir():
        raise RunDirError(
            f"{str(folder)!r} is not a run folder (no such folder).",
            hint="Give a path such as runs/<id>, runs/sweeps/<id> or runs/cv/<id>; `dlcli runs` lists them.",
        )
    if (folder / SWEEP_FILE).is_file():
        return "cv" if (folder / CV_FILE).is_file() else "sweep"
    if (folder / RUN_FILE).is_file():
        return "run"
    raise RunDirError(
        f"{str(folder)!r} is not a run folder: it has no run.json (nor a sweep's sweep.yaml).",
        hint="Give a folder that dlcli train, dlcli sweep or dlcli cv created, such as runs/<id>.",
    )


def write_any_report(folder: Path, out: Optional[Path] = None, *, force: bool = False) -> Path:
    """The report of a run, sweep or cross-validation folder, written to out (default:
    report.html in the folder)."""
    from .report import write_page, write_report

    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "run":
        return write_report(folder, out, force=force)
    return write_page(folder, out, build_cv_report if kind == "cv" else build_sweep_report, force=force)


# ----------------------------------------------------------------------------- a sweep


def build_sweep_report(folder: Path, generated_at: Optional[str] = None) -> str:
    from .sweep.results import read_sweep_listing
    from .sweep.spec import BEST_FILE

    listing = read_sweep_listing(folder)
    if listing.problem:
        raise RunDirError(f"{folder} cannot be reported: {listing.problem}")
    finished = sum(1 for t in listing.trials if t.status in ("completed", "pruned", "failed"))
    best = listing.best()
    body = [
        f"<h1>Sweep {_e(listing.id)}</h1>",
        f"<p>{_e(listing.method)} search over {_e(', '.join(listing.space))}; objective {_e(listing.metric)} "
        f"({'higher' if listing.direction == 'max' else 'lower'} is better, each trial's best epoch); "
        f"{finished} of {listing.planned} trials finished.</p>",
    ]
    if best is not None:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        body.append(
            f"<p>Best: trial {best.number} ({_e(params)}), {_e(listing.metric)} {_e(_fmt(best.value))} "
            f"at epoch {_e(best.best_epoch)}.</p>"
        )
    body += ["<h2>Trials</h2>", _trials_table(listing)]
    body += _sweep_figures(folder, listing.metric)
    body.append("<h2>Best config</h2>")
    if (folder / BEST_FILE).is_file():
        body.append(f"<pre>{_e((folder / BEST_FILE).read_text(encoding='utf-8'))}</pre>")
    else:
        body.append("<p>No trial has completed yet, so there is no best config.</p>")
    return page(f"Sweep {listing.id}: dlcli sweep report", body, generated_at, script=_SORT_SCRIPT)


def _trials_table(listing: Any) -> str:
    keys = sorted({k for t in listing.trials for k in t.params})
    reverse = listing.direction == "max"
    done = [t for t in listing.trials if t.value is not None]
    done.sort(key=lambda t: (-(t.value or 0.0) if reverse else (t.value or 0.0), t.number))
    rest = sorted((t for t in listing.trials if t.value is None), key=lambda t: t.number)
    header = ("trial", "status", listing.metric, "at epoch", "epochs", *keys, "seconds")
    rows = [
        (
            t.number,
            t.status,
            _fmt(t.value),
            _fmt(t.best_epoch),
            f"{t.epochs_done}/{t.epochs or '?'}",
            *[_fmt(t.params.get(k)) for k in keys],
            _fmt(round(t.duration_seconds, 1) if t.duration_seconds is not None else None),
        )
        for t in [*done, *rest]
    ]
    caption = f"Trials by {listing.metric}, best first (select a column heading to sort by it)"
    numeric = (0, 2, 3, *range(5, 5 + len(keys) + 1))
    return _table(header, rows, caption=caption, numeric=numeric, css_class="sortable")


def _sweep_figures(folder: Path, metric: str) -> list[str]:
    out = ["<h2>Objective</h2>"]
    objective = folder / "objective.png"
    if objective.is_file():
        alt = f"Scatter of each trial's {metric} against each searched parameter; the values are in the Trials table."
        out.append(_figure(objective.read_bytes(), alt, f"{metric} of each trial against each parameter"))
    else:
        out.append("<p>No objective plot yet (dlcli sweep plot draws it once a trial has finished).</p>")
    return out + _curve_figures(folder, "trial")


def _curve_figures(folder: Path, unit: str) -> list[str]:
    """The overlaid learning curves the sweep machinery drew (curves-<metric>.png)."""
    curves = sorted(folder.glob("curves-*.png"))
    out = ["<h2>Learning curves, overlaid</h2>"]
    if not curves:
        out.append("<p>No curves yet (dlcli sweep plot draws them once an epoch has finished).</p>")
    for path in curves:
        name = path.stem.removeprefix("curves-")
        alt = (
            f"Line charts of {name} per epoch, training and validation side by side, one line per {unit}; "
            f"each {unit}'s values are in its run folder's metrics.csv."
        )
        out.append(_figure(path.read_bytes(), alt, f"{name} of every {unit} per epoch"))
    return out


# ----------------------------------------------------------------------------- a cross-validation


def build_cv_report(folder: Path, generated_at: Optional[str] = None) -> str:
    from .sweep.cv_results import cv_summary

    summary = cv_summary(folder)
    cv = summary["cv"]
    metrics = summary["metrics"]
    body = [
        f"<h1>Cross-validation {_e(cv['id'])}</h1>",
        f"<p>{_e(cv['folds'])} folds x {_e(cv['repeats'])} repeat(s) of {_e(cv['samples'])} training samples, made "
        f"by scikit-learn's {_e(cv['splitter'])} (seed {_e(cv['seed'])}); {summary['completed']} of "
        f"{summary['planned']} folds completed. Each fold's held-out part was its run's validation data "
        "(early stopping and the monitor watched it); the test split was held out of every fold.</p>",
    ]
    if summary["completed"] < summary["planned"]:
        body.append(
            '<p class="note">Not every fold has completed: the means are over the completed folds only. '
            f"Continue with: dlcli cv resume {_e(folder)}</p>"
        )
    rows = [(name, _fmt(m["mean"]), _fmt(m["std"]), m["n"]) for name, m in metrics.items()]
    body += [
        "<h2>Mean and standard deviation</h2>",
        _table(
            ("metric", "mean", "standard deviation", "folds"),
            rows,
            caption="Over the completed folds (standard deviation with ddof=0, as numpy's std)",
            numeric=(1, 2, 3),
        ),
    ]
    names = list(metrics)
    fold_rows = [
        (f["fold"], f["repeat"], f["status"], f["run"], *[_fmt(f["metrics"].get(n)) for n in names])
        for f in summary["folds"]
    ]
    body += [
        "<h2>Folds</h2>",
        _table(
            ("fold", "repeat", "status", "run folder", *names),
            fold_rows,
            caption="Each fold's metrics (validation at the weights the run kept; test on the held-out test split)",
            numeric=(0, 1, *range(4, 4 + len(names))),
        ),
    ]
    body += _curve_figures(folder, "fold")
    return page(f"Cross-validation {cv['id']}: dlcli cv report", body, generated_at)


__all__ = ["GENERATOR", "build_cv_report", "build_sweep_report", "folder_kind", "write_any_report"]
