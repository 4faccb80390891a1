"""A sweep's plots: every trial's learning curves overlaid, and the objective against each
parameter. Curves come from each trial's metrics.csv alone, as `dlcli plot` draws them.

For a learning-rate grid the overlay is the course's picture of a normal against a too large
learning rate: one curve per rate, training and validation side by side.
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..plots import COLORS, _pyplot
from ..rundir import atomic_write_bytes
from .display import fmt_value
from .space import Param

LINESTYLES = {"completed": "-", "pruned": "--", "failed": ":", "interrupted": "-.", "killed": "-.", "running": "-."}


def _as_is(x: Any) -> Any:
    return x


def _label_position(x: Any, labels: list[str]) -> int:
    """A categorical value's place on the x axis (after the labels when it is not one of them)."""
    text = fmt_value(x)
    return labels.index(text) if text in labels else len(labels)


def _color(i: int, n: int):
    if n <= len(COLORS):
        return COLORS[i]
    import matplotlib

    return matplotlib.colormaps["tab20"](i % 20)


def _save(fig, plt, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(trials: Sequence[tuple[str, str, list[dict]]], metric: str, out_path: Path, title: str) -> bool:
    """`metric` (left) and `val_<metric>` (right) of every trial, one color per trial; pruned
    trials dashed. Returns False when no trial logged the metric."""
    has_val = any(r.get(f"val_{metric}") is not None for _, _, rows in trials for r in rows)
    has_train = any(r.get(metric) is not None for _, _, rows in trials for r in rows)
    if not has_train and not has_val:
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [(metric, "Training")] + ([(f"val_{metric}", "Validation")] if has_val else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 2.6, 4.8), dpi=100, squeeze=False)
    for ax, (column, word) in zip(axes[0], panels):
        values_seen: list[float] = []
        for i, (label, status, rows) in enumerate(trials):
            points = [(r["epoch"], float(r[column])) for r in rows if r.get(column) is not None]
            points = [(e, v) for e, v in points if math.isfinite(v)]
            if not points:
                continue
            xs, ys = zip(*points)
            values_seen += ys
            ax.plot(
                xs,
                ys,
                LINESTYLES.get(status, "-"),
                marker="o",
                markersize=3,
                color=_color(i, len(trials)),
                label=label if ax is axes[0][0] else None,
            )
        if values_seen and "loss" in metric:
            positive = sorted(v for v in values_seen if v > 0)
            if positive and positive[-1] > 30 * positive[len(positive) // 2]:
                ax.set_yscale("log")  # one diverging trial would flatten all the others
        ax.set_title(f"{word} {metric.replace('_', ' ')}")
        ax.set_xlabel("Epochs")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel(metric.replace("_", " ").capitalize())
    fig.suptitle(title, fontsize=10)
    right = (6.2 * len(panels)) / (6.2 * len(panels) + 2.6)  # the legend takes the rest, beside the panels
    fig.tight_layout(rect=(0, 0, right, 0.97))
    fig.legend(loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8, frameon=False)
    _save(fig, plt, out_path)
    return True


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot_objective(
    space: list[Param],
    points: Sequence[tuple[dict[str, Any], str, Optional[float]]],
    metric: str,
    direction: str,
    out_path: Path,
    title: str,
) -> bool:
    """The objective against each parameter: completed trials as dots, pruned as crosses
    (their best epoch before pruning), the best trial as a star."""
    valued = [(p, s, v) for p, s, v in points if v is not None and math.isfinite(v) and s in ("completed", "pruned")]
    if not valued:
        return False
    plt = _pyplot()
    n = len(space)
    cols = min(n, 3)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.8 * rows_n), dpi=100, squeeze=False)
    done = [(p, v) for p, s, v in valued if s == "completed"]
    best = None
    if done:
        best = (max if direction == "max" else min)(done, key=lambda pv: pv[1])
    for k, param in enumerate(space):
        ax = axes[k // cols][k % cols]
        xs_all = [p.get(param.key) for p, _, _ in valued]
        numeric = param.kind in ("uniform", "loguniform", "int") or (
            param.is_categorical and _numeric(list(param.values))
        )
        pos: Callable[[Any], Any]  # a parameter value -> its place on the x axis
        if numeric:
            pos = _as_is
            numbers = [float(x) for x in xs_all if isinstance(x, (int, float))]
            positive = len(numbers) == len(xs_all) and all(x > 0 for x in numbers)
            spread = positive and max(numbers) / min(numbers) >= 100
            if param.log or spread:
                ax.set_xscale("log")
        else:
            labels = (
                [fmt_value(v) for v in param.values] if param.is_categorical else sorted({fmt_value(x) for x in xs_all})
            )
            pos = functools.partial(_label_position, labels=labels)
            ax.set_xticks(range(len(labels)), labels=labels, rotation=30 if max(map(len, labels)) > 6 else 0)
        for status, marker, label in (("completed", "o", "completed"), ("pruned", "x", "pruned (best before)")):
            pts = [(pos(p.get(param.key)), v) for p, s, v in valued if s == status and param.key in p]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(
                    xs,
                    ys,
                    marker=marker,
                    s=28,
                    color="tab:blue" if status == "completed" else "tab:gray",
                    label=label if k == 0 else None,
                    alpha=0.85,
                )
        if best is not None and param.key in best[0]:
            ax.scatter(
                [pos(best[0][param.key])],
                [best[1]],
                marker="*",
                s=220,
                color="tab:red",
                zorder=3,
                label="best" if k == 0 else None,
            )
        ax.set_xlabel(param.key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    for k in range(n, rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(title, fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, plt, out_path)
    return True


def plot_sweep(
    sweep_dir: Path, spec, rows: list, out_dir: Optional[Path] = None, metrics: Optional[Sequence[str]] = None
) -> list[Path]:
    """curves-<metric>.png for loss and the metric (or those asked for) and objective.png."""
    from ..errors import DlcliError
    from ..plots import default_metrics
    from ..rundir import METRICS_FILE, read_metrics
    from .space import params_label

    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves, columns = [], []
    for r in sorted(rows, key=lambda r: r.number):
        if not r.folder:
            continue
        try:
            cols, metric_rows = read_metrics(Path(sweep_dir) / r.folder / METRICS_FILE)
        except DlcliError:
            continue
        columns += [c for c in cols if c not in columns]
        curves.append((f"#{r.number} {params_label(r.params, width=40)}", r.status, metric_rows))
    written = []
    for metric in metrics or default_metrics(columns):
        path = out_dir / f"curves-{metric}.png"
        pruned = " (dashed: pruned)" if any(status == "pruned" for _, status, _ in curves) else ""
        if curves and plot_curves(curves, metric, path, f"Sweep {spec.id}: {metric} of {len(curves)} trials{pruned}"):
            written.append(path)
    path = out_dir / "objective.png"
    points = [(r.params, r.status, r.value) for r in rows]
    failed = sum(1 for r in rows if r.status == "failed")
    note = f", {failed} failed (not shown)" if failed else ""
    if plot_objective(
        spec.space,
        points,
        spec.metric,
        spec.direction,
        path,
        f"Sweep {spec.id}: best-epoch {spec.metric} per trial{note}",
    ):
        written.append(path)
    return written
