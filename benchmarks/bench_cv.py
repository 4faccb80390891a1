"""`dlcli cv` on the shipped tables against scikit-learn on the same rows and the same folds.

For each config (default: the four shipped tables), runs `python -m dlcli cv CONFIG --folds 5`
(one worker), then reads the CV folder's folds.csv and computes, beside it, scikit-learn's
LogisticRegression (LinearRegression for a regression table) with standardisation fitted on
each fold's training rows (a StandardScaler in a pipeline), on exactly the rows dlcli's folds
trained and validated on: the pool loaded by dlcli itself, with the test split held out.
Reported: both 5-fold means and standard deviations (numpy's std, ddof=0) of validation
accuracy (MAE for regression) and their difference (targets: 0.03 accuracy, 3 MAE units).

Then the same CV of one config (--parallel-config) with `--workers 2`, against its serial wall
time (target: at most 0.6x); the load average is printed beside it, since a busy machine
cannot show the speed-up. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("iris_mlp", "wine_mlp", "breast_cancer_binary", "diabetes_regression")
TARGETS = {"accuracy": 0.03, "mae": 3.0}


def run_cv(config: Path, runs: Path, folds: int, workers: int, cv_id: str, repeats: int = 1) -> tuple[Path, float]:
    """The CV folder of `dlcli cv` and its wall time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "dlcli", "cv", str(config), "--folds", str(folds)]
    cmd += ["--repeats", str(repeats), "--workers", str(workers), "--runs-dir", str(runs), "--id", cv_id]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dlcli cv {config} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return runs / "cv" / cv_id, wall


def sklearn_on_the_same_folds(config: Path, folder: Path) -> tuple[str, list[float]]:
    """(metric, per-fold values) of the linear baseline on dlcli's own pool and folds."""
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import accuracy_score, mean_absolute_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dlcli.data import load_dataset
    from dlcli.data.splits import read_folds
    from dlcli.sweep.cv import CvRequest, pool_config

    pool = pool_config(CvRequest(config, [], folds=5))
    data = load_dataset(pool.data, pool.seed)
    x, y = data.x_train.numpy().astype(np.float64), data.y_train.numpy()
    regression = data.info.task == "regression"
    y = y.reshape(len(y), -1)[:, 0] if regression else np.rint(y.reshape(len(y), -1)[:, 0]).astype(int)
    folds = read_folds(folder / "folds.csv")
    values = []
    for fold in range(folds.count):
        held = folds.held_out(fold)
        model = make_pipeline(StandardScaler(), LinearRegression() if regression else LogisticRegression(max_iter=5000))
        model.fit(x[~held], y[~held])
        predicted = model.predict(x[held])
        values.append(mean_absolute_error(y[held], predicted) if regression else accuracy_score(y[held], predicted))
    return ("mae" if regression else "accuracy"), values


def compare(configs: list[str], folds: int, runs: Path) -> tuple[list[dict], dict[str, float]]:
    rows, walls = [], {}
    for name in configs:
        config = ROOT / "configs" / f"{name}.yaml"
        folder, wall = run_cv(config, runs, folds, 1, f"{name}-serial")
        walls[name] = wall
        summary = json.loads((folder / "summary.json").read_text())
        metric, baseline = sklearn_on_the_same_folds(config, folder)
        ours = summary["metrics"][f"val_{metric}"]
        row = {
            "config": name,
            "metric": f"val_{metric}",
            "dlcli_mean": ours["mean"],
            "dlcli_std": ours["std"],
            "sklearn_mean": float(np.mean(baseline)),
            "sklearn_std": float(np.std(baseline)),
            "wall_s": round(wall, 1),
            "dlcli_folds": [f["metrics"].get(f"val_{metric}") for f in summary["folds"]],
            "sklearn_folds": [float(v) for v in baseline],
        }
        row["difference"] = row["dlcli_mean"] - row["sklearn_mean"]
        row["within_target"] = abs(row["difference"]) <= TARGETS[metric]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows, walls


def time_workers(name: str, folds: int, runs: Path, walls: dict[str, float], reps: int, repeats: int = 1) -> dict:
    """--workers 2 against --workers 1 on one config: `reps` pairs run back to back (serial
    first, then parallel), so both see about the same load; medians and every pair. Two workers
    cannot take a K-fold run below ceil(K x repeats / 2) / (K x repeats) of its serial time:
    0.6 for 5 folds, 0.5 for 5 folds repeated twice."""
    config = ROOT / "configs" / f"{name}.yaml"
    pairs = []
    for rep in range(reps):
        reused = rep == 0 and name in walls and repeats == 1
        serial = walls[name] if reused else run_cv(config, runs, folds, 1, f"{name}-s{rep}", repeats)[1]
        load = os.getloadavg()[0]
        parallel = run_cv(config, runs, folds, 2, f"{name}-p{rep}", repeats)[1]
        pairs.append({"serial_s": round(serial, 1), "workers2_s": round(parallel, 1), "load_1min": round(load, 2)})
    ratios = sorted(p["workers2_s"] / p["serial_s"] for p in pairs)
    return {
        "config": name,
        "folds": folds,
        "repeats": repeats,
        "pairs": pairs,
        "median_ratio": round(ratios[len(ratios) // 2], 3),
        "cpus": os.cpu_count(),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--parallel-config", default="wine_mlp", help="config timed with --workers 2 (or none)")
    parser.add_argument("--parallel-reps", type=int, default=1, help="serial/parallel pairs timed back to back")
    parser.add_argument("--parallel-repeats", type=int, default=1, help="--repeats of the timed CV")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        load_before = os.getloadavg()
        rows, walls = compare(args.configs, args.folds, runs)
        parallel = None
        if args.parallel_config != "none":
            parallel = time_workers(
                args.parallel_config, args.folds, runs, walls, args.parallel_reps, args.parallel_repeats
            )
            print(json.dumps(parallel), flush=True)
    print("\n| config | metric | dlcli mean | dlcli std | scikit-learn mean | scikit-learn std | difference |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['metric']} | {r['dlcli_mean']:.4f} | {r['dlcli_std']:.4f} | "
            f"{r['sklearn_mean']:.4f} | {r['sklearn_std']:.4f} | {r['difference']:+.4f} |"
        )
    if args.out:
        result = {"rows": rows, "parallel": parallel, "load_average_at_start": load_before}
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
