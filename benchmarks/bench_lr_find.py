"""Does `dlcli lr-find`'s suggestion train as well as a learning-rate grid? (issue #31's table)

For each shipped config: `dlcli lr-find` (its `valley` suggestion), then 3 epochs of
`dlcli train` at that rate, against a 5-point grid (1e-4 ... 1) run with `dlcli sweep` for 3
epochs. The loss compared is the best epoch's validation loss, or the training loss where the
config holds out no validation data. A suggestion "holds" when its loss is within 10 % of the
grid's best point and its run did not diverge (every loss finite, the last epoch's training
loss below the first's).

    python benchmarks/bench_lr_find.py --data ../shared/data --workdir /tmp/bench-lr-find
    python benchmarks/bench_lr_find.py --configs iris_mlp,wine_mlp   # a subset

Prints one row per config as Markdown; the last columns train 3 epochs at the steepest-slope
suggestion too, for comparison.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = (
    "fashion_mnist_mlp",
    "mnist_cnn",
    "imdb_binary",
    "iris_mlp",
    "wine_mlp",
    "breast_cancer_binary",
    "diabetes_regression",
    "imdb_lstm",
)
GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
EPOCHS = 3
ROOT = Path(__file__).resolve().parent.parent


def dlcli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dlcli", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"dlcli {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def data_sets(name: str, data: str) -> list[str]:
    """The --set options that point a config at the shared data (MNIST, IMDB)."""
    return ["--set", f"data.root={data}"] if name.startswith(("mnist", "imdb")) else []


def losses(metrics_csv: Path) -> tuple[str, list[float], list[float]]:
    """(the compared column, its values per epoch, the training loss per epoch)."""
    rows = list(csv.DictReader(metrics_csv.open()))
    column = "val_loss" if rows and rows[0].get("val_loss") not in (None, "") else "loss"
    return column, [float(r[column]) for r in rows], [float(r["loss"]) for r in rows]


def suggested(name: str, common: list[str], runs: Path) -> tuple[float, float, float]:
    """(the valley suggestion, the steepest-slope one, the wall time of the lr-find command)."""
    started = time.perf_counter()
    out = dlcli("lr-find", f"configs/{name}.yaml", *common, "--allow-repeat", "--runs-dir", str(runs))
    seconds = time.perf_counter() - started
    valley = re.search(r"--set optimizer\.lr=([0-9.e+-]+)", out)
    steep = re.search(r"steepest slope: ([0-9.e+-]+)", out)
    if not (valley and steep):
        raise SystemExit(f"no suggestion in the output of lr-find on {name}:\n{out}")
    return float(valley.group(1)), float(steep.group(1)), seconds


def train_at(name: str, lr: float, common: list[str], runs: Path) -> Path:
    dlcli("train", f"configs/{name}.yaml", *common, "--set", f"optimizer.lr={lr}", "--runs-dir", str(runs), "--quiet")
    return max(runs.iterdir(), key=lambda p: p.stat().st_mtime) / "metrics.csv"


def grid_best(name: str, column: str, common: list[str], runs: Path) -> tuple[float, float]:
    """(the best trial's rate, its best epoch's value of `column`), from the sweep's own trials."""
    points = ",".join(f"{lr:g}" for lr in GRID)
    dlcli(
        "sweep", "run", f"configs/{name}.yaml", *common, "-p", f"optimizer.lr=[{points}]",
        "--metric", column, "--direction", "min", "--runs-dir", str(runs),
    )  # fmt: skip
    best = (math.nan, math.inf)
    for metrics in sorted((runs / "sweeps").glob("*/trials/*/metrics.csv")):
        _, values, _ = losses(metrics)
        lr = float(re.search(r"lr: ([0-9.e+-]+)", (metrics.parent / "config.yaml").read_text()).group(1))
        finite = [v for v in values if math.isfinite(v)]
        if finite and min(finite) < best[1]:
            best = (lr, min(finite))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the folder holding mnist/ and imdb/")
    parser.add_argument("--workdir", default="/tmp/bench-lr-find")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()
    data = str(Path(args.data).resolve())
    print(
        "| config | lr-find s | valley | its best loss | grid best (lr) | ratio | diverged | holds "
        "| steep | its loss | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        work = Path(args.workdir) / name
        common = [*data_sets(name, data), "--set", f"training.epochs={EPOCHS}"]
        lr, steep, seconds = suggested(name, common, work / "lr-find-runs")
        column, values, train_losses = losses(train_at(name, lr, common, work / "runs"))
        _, steep_values, _ = losses(train_at(name, steep, common, work / "steep-runs"))
        diverged = not all(math.isfinite(v) for v in values + train_losses) or train_losses[-1] >= train_losses[0]
        grid_lr, grid_loss = grid_best(name, column, common, work / "grid")
        ratio = min(values) / grid_loss
        holds = ratio <= 1.10 and not diverged
        print(
            f"| {name} | {seconds:.1f} | {lr:.3g} | {column} {min(values):.4f} | {grid_loss:.4f} ({grid_lr:g}) "
            f"| {ratio:.3f} | {'yes' if diverged else 'no'} | {'yes' if holds else '**no**'} "
            f"| {steep:.3g} | {min(steep_values):.4f} | {min(steep_values) / grid_loss:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
