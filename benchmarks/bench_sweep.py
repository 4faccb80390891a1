"""The sweep's own cost per trial, against the trial's own `dlcli train` time (target: <= 1.5 s).

A sweep runs each trial as `python -m dlcli train <trial>/config.yaml --sweep-trial <trial>`.
What it adds to that process's own wall time is its overhead: claiming the trial and telling
its result (storage I/O), resolving and writing the trial's config, starting the process, and,
when it prunes, the trial's Optuna import and per-epoch reports. This script measures, for the
same N learning rates of a small synthetic config:

- plain: N x `python -m dlcli train CONFIG --set optimizer.lr=V --quiet`, one after another,
  each timed from start to exit (what the trial costs anyway);
- sweep: `python -m dlcli sweep CONFIG -p optimizer.lr=[V1..VN] --workers 1` (grid, no pruning);
- sweep+pruning: the same with `--prune median --prune-startup-trials N` (every epoch is
  reported to Optuna and the pruner asked, but the startup count keeps it from pruning, so
  the work is the same).

Overhead per trial = (sweep wall - sum of plain walls) / N, so the sweep's own start (imports,
checking the space, creating the study) is included, spread over the N trials. That start is
also timed alone (`dlcli sweep ... --dry-run`, which checks everything and runs nothing), and
the overhead is printed without it too: the cost each further trial adds. Repetitions rotate
which variant runs first; medians are reported. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.5


def config(samples: int, epochs: int) -> dict:
    return {
        "name": "bench",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "synthetic",
            "validation_split": 0.2,
            "synthetic": {
                "task": "multiclass",
                "input_shape": [20],
                "classes": 3,
                "samples": samples,
                "test_samples": 200,
            },
        },
        "model": {"preset": "mlp", "hidden": [32]},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": epochs, "batch_size": 32},
    }


def run(cmd: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="trials per sweep (and plain runs per repetition)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions, alternating which variant runs first")
    parser.add_argument("--samples", type=int, default=2000, help="synthetic training samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 trials, 1 repetition, 1 epoch: checks the script runs")
    parser.add_argument("--json", help="write the results to this file too")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.reps, args.epochs = 2, 1, 1
    rates = [round(0.001 * (i + 1), 6) for i in range(args.trials)]
    grid = "[" + ",".join(str(r) for r in rates) + "]"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))  # the same threads for every variant
    dlcli = [sys.executable, "-m", "dlcli"]
    results: dict[str, list[float]] = {"plain": [], "sweep": [], "sweep+pruning": [], "start": []}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        cfg = work / "bench.yaml"
        cfg.write_text(yaml.safe_dump(config(args.samples, args.epochs), sort_keys=False))

        def plain(rep: int) -> float:
            return sum(
                run(
                    [
                        *dlcli,
                        "train",
                        str(cfg),
                        "--set",
                        f"optimizer.lr={r}",
                        "--quiet",
                        "--runs-dir",
                        str(work / f"plain-{rep}"),
                    ],
                    work,
                    env,
                )
                for r in rates
            )

        def sweep(rep: int, prune: bool) -> float:
            extra = ["--prune", "median", "--prune-startup-trials", str(args.trials)] if prune else []
            return run(
                [
                    *dlcli,
                    "sweep",
                    str(cfg),
                    "-p",
                    f"optimizer.lr={grid}",
                    "--workers",
                    "1",
                    *extra,
                    "--runs-dir",
                    str(work / f"sweep-{rep}-{int(prune)}"),
                ],
                work,
                env,
            )

        def start(rep: int) -> float:
            return run([*dlcli, "sweep", str(cfg), "-p", f"optimizer.lr={grid}", "--dry-run"], work, env)

        variants = [
            ("plain", plain),
            ("sweep", lambda rep: sweep(rep, False)),
            ("sweep+pruning", lambda rep: sweep(rep, True)),
            ("start", start),
        ]
        for rep in range(args.reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for name, fn in order:
                seconds = fn(rep)
                results[name].append(seconds)
                what = "checking the sweep (--dry-run)" if name == "start" else f"for {args.trials} trials"
                print(f"rep {rep + 1}: {name:<14} {seconds:7.2f} s {what}", flush=True)
    plain_s = statistics.median(results["plain"])
    start_s = statistics.median(results["start"])
    report = {
        "trials": args.trials,
        "epochs": args.epochs,
        "samples": args.samples,
        "reps": args.reps,
        "plain_total_s": round(plain_s, 3),
        "plain_per_trial_s": round(plain_s / args.trials, 3),
    }
    report["sweep_start_s"] = round(start_s, 3)
    print(
        f"\nplain dlcli train: {plain_s / args.trials:.2f} s per trial (median of {args.reps}); "
        f"the sweep's start alone (--dry-run): {start_s:.2f} s"
    )
    for name in ("sweep", "sweep+pruning"):
        total = statistics.median(results[name])
        overhead = (total - plain_s) / args.trials
        further = (total - plain_s - start_s) / args.trials
        verdict = "meets" if overhead <= TARGET_S else "MISSES"
        print(
            f"{name:<14} {total / args.trials:.2f} s per trial: overhead {overhead:+.2f} s per trial with the start "
            f"spread over {args.trials} trials ({verdict} the {TARGET_S} s target), {further:+.2f} s per further trial"
        )
        report[f"{name}_total_s"] = round(total, 3)
        report[f"{name}_overhead_per_trial_s"] = round(overhead, 3)
        report[f"{name}_overhead_per_further_trial_s"] = round(further, 3)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
