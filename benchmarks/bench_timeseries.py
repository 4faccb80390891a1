"""The timeseries dataset's windows: their cost in time and in memory.

    .venv/bin/python benchmarks/bench_timeseries.py --speed     # gathered vs precomputed epochs
    .venv/bin/python benchmarks/bench_timeseries.py --memory    # 1,000,000 x 10 rows, length 500

speed: one series small enough to precompute (20,000 rows x 10 features, windows of 50 rows,
40 MB as one tensor). For an LSTM and a dense model (flatten, 64, 1), the same Trainer trains
epochs alternately on the windows as dlcli keeps them (`WindowedSeries`: the rows stored once,
each batch gathered by index arithmetic) and on the same windows precomputed as one windows x
length x features tensor, both through `engine.Batches` with the same seeded shuffle. The
ratio is the median of the pairs' ratios (gathered / precomputed), the first pair left out.
Target: at most 1.10.

memory: `dlcli train` in a child process on a 1,000,000-row x 10-feature series with windows
of 500 rows and a small dense model, for max_train_samples windows (2,000 batches of 32 by
default); prints the child's peak resident memory beside the 20 GB that the materialised
training windows would take (windows x 500 x 10 x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def write_series(path: Path, rows: int, features: int, seed: int = 0) -> Path:
    """A smooth random walk per column with noise, written as a plain CSV (pyarrow when present)."""
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(0, 0.1, size=(rows, features)), axis=0) + rng.normal(0, 1, size=(rows, features))
    names = [f"f{j}" for j in range(features)]
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        pacsv.write_csv(pa.table({n: values[:, j] for j, n in enumerate(names)}), path)
    except ImportError:
        np.savetxt(path, values, delimiter=",", header=",".join(names), comments="", fmt="%.6g")
    return path


def series_config(path: Path, length: int, layers: list, **data) -> dict:
    return {
        "name": "bench_timeseries",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "timeseries",
            "path": str(path),
            "target": "f0",
            "window": {"length": length, "horizon": 1},
            **data,
        },
        "model": {"layers": layers},
        "loss": "mse",
        "optimizer": {"name": "adam", "lr": 0.001},
        "training": {"epochs": 1, "batch_size": 64},
    }


MODELS = {
    "lstm": [{"lstm": {"units": 32}}, {"dense": {"units": 1}}],
    "dense": [{"flatten": {}}, {"dense": {"units": 64, "activation": "relu"}}, {"dense": {"units": 1}}],
}


def speed(reps: int, rows: int, length: int) -> dict:
    import torch

    from dlcli.config import load_config
    from dlcli.data import load_dataset
    from dlcli.engine import Batches, Trainer
    from dlcli.losses import make_objective
    from dlcli.plan import build_network, plan_experiment
    from dlcli.training import objective_in_target_units

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        path = write_series(Path(folder) / "series.csv", rows, 10)
        for name, layers in MODELS.items():
            config = load_config(None, raw=series_config(path, length, layers, validation_split=0.0, test_split=0.0))
            plan = plan_experiment(config)
            data = load_dataset(config.data, 0)
            gathered = data.x_train
            precomputed = gathered[torch.arange(len(gathered))].contiguous()
            torch.manual_seed(0)
            model = build_network(plan, torch.device("cpu"), False)
            objective = objective_in_target_units(
                make_objective(plan.loss_name, plan.info.task, plan.info.num_classes), data.preprocessing
            )
            trainer = Trainer(
                model,
                torch.optim.Adam(model.parameters(), lr=1e-3),
                objective.loss_fn,
                objective.metric_sum,
                metric_name=objective.metric_name,
            )

            def epoch(x, trainer=trainer, y=data.y_train) -> float:
                batches = Batches(x, y, 64, shuffle=True, generator=torch.Generator().manual_seed(1))
                started = time.perf_counter()
                trainer.train_one_epoch(batches)
                return time.perf_counter() - started

            ratios, lazy_times, eager_times = [], [], []
            for rep in range(reps + 1):
                if rep % 2:
                    eager, lazy = epoch(precomputed), epoch(gathered)
                else:
                    lazy, eager = epoch(gathered), epoch(precomputed)
                if rep:  # the first pair warms up
                    ratios.append(lazy / eager)
                    lazy_times.append(lazy)
                    eager_times.append(eager)
            results[name] = {
                "windows": len(gathered),
                "gathered_s": statistics.median(lazy_times),
                "precomputed_s": statistics.median(eager_times),
                "ratio": statistics.median(ratios),
                "precomputed_mb": precomputed.numel() * 4 / 2**20,
                "stored_mb": gathered.numel() * gathered.element_size() / 2**20,
            }
            print(
                f"{name:6s} {len(gathered)} windows: gathered {results[name]['gathered_s']:.3f} s/epoch, "
                f"precomputed {results[name]['precomputed_s']:.3f} s/epoch, ratio {results[name]['ratio']:.3f} "
                f"(median of {reps} pairs; stored {results[name]['stored_mb']:.1f} MB against "
                f"{results[name]['precomputed_mb']:.1f} MB precomputed)",
                flush=True,
            )
    return results


def memory(rows: int, features: int, length: int, train_windows: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        path = write_series(Path(folder) / "big.csv", rows, features)
        written = time.perf_counter() - started
        layers = [{"flatten": {}}, {"dense": {"units": 16, "activation": "relu"}}, {"dense": {"units": 1}}]
        config = series_config(
            path,
            length,
            layers,
            validation_split=0.02,
            test_split=0.02,
            max_train_samples=train_windows,
        )
        config["training"]["batch_size"] = 32
        config_path = Path(folder) / "big.yaml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-m", "dlcli", "train", str(config_path), "--runs-dir", str(Path(folder) / "runs"), "-q"],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if child.returncode:
        raise SystemExit(child.stdout + child.stderr)
    train_rows = rows - 2 * (rows - int(rows * 0.98))
    all_windows = train_rows - 2 * (length - 1) - 1
    materialised_gb = all_windows * length * features * 4 / 1e9
    result = {
        "rows": rows,
        "features": features,
        "length": length,
        "trained_windows": train_windows,
        "training_windows_in_the_split": all_windows,
        "peak_rss_mb": peak_kb / 1024,
        "series_mb": rows * features * 4 / 2**20,
        "materialised_training_windows_gb": materialised_gb,
        "train_seconds": seconds,
        "csv_seconds": written,
    }
    print(
        f"{rows:,} rows x {features} features, windows of {length}: dlcli train ({train_windows:,} training windows of "
        f"{all_windows:,}, validation and test evaluated) peaked at {result['peak_rss_mb']:.0f} MB resident; the series "
        f"is {result['series_mb']:.0f} MB as float32, the training windows materialised would be "
        f"{materialised_gb:.1f} GB ({seconds:.0f} s)",
        flush=True,
    )
    print(child.stdout.strip())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true", help="gathered against precomputed epochs")
    parser.add_argument("--memory", action="store_true", help="peak memory on a 1,000,000-row series")
    parser.add_argument("--reps", type=int, default=7, help="speed: timed pairs per model")
    parser.add_argument("--speed-rows", type=int, default=20_000)
    parser.add_argument("--speed-length", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1_000_000, help="memory: rows of the series")
    parser.add_argument("--length", type=int, default=500, help="memory: window length")
    parser.add_argument("--train-windows", type=int, default=64_000, help="memory: max_train_samples")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not (args.speed or args.memory):
        args.speed = args.memory = True
    results = {}
    if args.speed:
        results["speed"] = speed(args.reps, args.speed_rows, args.speed_length)
    if args.memory:
        results["memory"] = memory(args.rows, 10, args.length, args.train_windows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
