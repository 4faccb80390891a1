"""The first epoch against the steady ones: dlcli and a hand-written loop, each in fresh processes.

A process's first epoch pays what later ones find ready (lazy initialisation inside PyTorch,
the allocator's first pages, the interpreter's first pass over the code, the live display's
first draw), so every repetition here is a new process: one `dlcli` run (bench_train's
`dlcli_epochs`: `dlcli.training.train` with the live display rendering, the config's defaults:
fp32, eager) and one run of the hand-written loop (plain_loop's `hand_written_epoch` on the same
tensors), alternating which goes first. Each trains `--epochs` epochs and reports every epoch's
wall seconds (dlcli's as metrics.csv has them), process CPU seconds and minor page faults.

It prints, as medians over the repetitions: each side's first epoch, its steady epoch (the
median of the epochs after the first) and their ratio (target for dlcli: at most 1.3, or the
hand loop's ratio as large: then the rest is the library's), the extra seconds of the first
epoch, and dlcli / hand for the first and the steady epochs. CPU seconds and page faults move
less with other processes than wall time does; the load average before and after is printed
beside the numbers. See benchmarks/README.md.

    python benchmarks/bench_first_epoch.py                 # the MLP, 5 pairs (about 2 minutes on two cores)
    python benchmarks/bench_first_epoch.py --reps 7 --json first.json
    python benchmarks/bench_first_epoch.py --case cnn --data ../shared/data --epochs 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def usage() -> tuple[float, int, int]:
    """(CPU seconds, minor page faults, major page faults: read from disk) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_minflt, r.ru_majflt


def metered(function: Callable, spent: list[list], new_epoch: bool) -> Callable:
    """`function` adding its CPU seconds and page faults to `spent` ([CPU, minor, major] per
    epoch): to a new epoch's entry where `new_epoch` (training), else to the last one (validation)."""

    def measured(*args, **kwargs):
        before = usage()
        result = function(*args, **kwargs)
        after = usage()
        if new_epoch or not spent:
            spent.append([0.0, 0, 0])
        for i, (a, b) in enumerate(zip(before, after)):
            spent[-1][i] += b - a
        return result

    return measured


def child(side: str, args) -> dict:
    """One side's run in this (fresh) process: each epoch's wall seconds, CPU seconds, page faults."""
    sys.path.insert(0, str(HERE))
    import bench_train

    spent: list[list] = []
    if side == "dlcli":
        from dlcli.engine import Trainer

        # An epoch's `seconds` cover its training and its validation pass (evaluate with "val_"),
        # not the test evaluation after the last epoch.
        evaluate = Trainer.evaluate
        validation = metered(evaluate, spent, new_epoch=False)

        def evaluate_metered(self, batches, prefix: str = ""):
            return (validation if prefix == "val_" else evaluate)(self, batches, prefix)

        Trainer.train_one_epoch = metered(Trainer.train_one_epoch, spent, new_epoch=True)  # type: ignore[method-assign]
        Trainer.evaluate = evaluate_metered  # type: ignore[method-assign]
        extra = [*bench_train.dlcli_overrides(args.case, args.data, args.device, None), *args.set]
        run = bench_train.dlcli_epochs(args.case, args.data, args.epochs, args.device, extra)
        seconds, cycles = run["seconds"], run["cycles"]
    else:
        bench_train.hand_written_epoch = metered(bench_train.hand_written_epoch, spent, new_epoch=True)
        run = bench_train.hand_epochs(args.case, args.data, args.epochs, args.device, "fp32", None)
        seconds, cycles = run["seconds"], run["seconds"]
    return {
        "side": side,
        "seconds": seconds,
        "cycles": cycles,  # dlcli: with its work between epochs (display, metrics.csv, checkpoints)
        "cpu": [c for c, _, _ in spent],
        "faults": [f for _, f, _ in spent],
        "major_faults": [m for _, _, m in spent],  # pages read from disk: a cold page cache (a fresh install)
    }


def run_child(side: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--case", args.case]
    cmd += ["--epochs", str(args.epochs), "--device", args.device, "--data", args.data]
    for value in args.set:
        cmd += ["--set", value]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def first_and_steady(values: list[float]) -> tuple[float, float]:
    return values[0], statistics.median(values[1:])


def summarise(runs: list[dict], key: str) -> dict:
    """Medians over the processes of the first epoch, the steady epoch and their ratio."""
    firsts, steadies = zip(*(first_and_steady(r[key]) for r in runs))
    # Counts (page faults) can be 0 in a steady epoch: no ratio then.
    ratios = [f / s for f, s in zip(firsts, steadies)] if all(steadies) else [math.nan]
    return {
        "first": statistics.median(firsts),
        "steady": statistics.median(steadies),
        "ratio": statistics.median(ratios),
        "extra": statistics.median(f - s for f, s in zip(firsts, steadies)),
        # Other processes only ever add time: the fastest first and steady epochs over the
        # processes are the closest to the machine's own speed when it is shared.
        "fastest_ratio": min(firsts) / min(steadies) if min(steadies) else math.nan,
        "firsts": list(firsts),
        "steadies": list(steadies),
    }


def main() -> None:
    sys.path.insert(0, str(HERE))
    import bench_train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="mlp", choices=list(bench_train.CASES))
    parser.add_argument(
        "--data", default="data", help="data.root (Fashion-MNIST is found as dlcli finds it, e.g. Debian's package)"
    )
    parser.add_argument("--reps", type=int, default=5, help="pairs of fresh processes, alternating which goes first")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process: the first, then the steady ones")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads of both sides (OMP_NUM_THREADS); default: PyTorch's (one per core). On a machine "
        "that other work shares, 1 keeps PyTorch's threads from waiting on each other",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dlcli's runs only")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", choices=["dlcli", "hand"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch and a steady one")
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    load_before = os.getloadavg()
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {"dlcli": [], "hand": []}
    for rep in range(args.reps):
        for side in ("dlcli", "hand") if rep % 2 == 0 else ("hand", "dlcli"):
            run = run_child(side, args)
            runs[side].append(run)
            print(
                f"{rep + 1} {side:5}: epochs {', '.join(f'{s:.3f}' for s in run['seconds'])} s; "
                f"CPU {', '.join(f'{c:.2f}' for c in run['cpu'])} s; page faults {', '.join(map(str, run['faults']))} "
                f"(from disk {', '.join(map(str, run['major_faults']))}); "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    report: dict = {
        "case": args.case,
        "reps": args.reps,
        "epochs": args.epochs,
        "threads": args.threads,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "minutes": (time.perf_counter() - started) / 60,
    }
    for key in ("seconds", "cpu", "faults"):
        report[key] = {side: summarise(side_runs, key) for side, side_runs in runs.items()}
    report["dlcli_cycles"] = summarise(runs["dlcli"], "cycles")
    report["runs"] = runs
    wall, cpu = report["seconds"], report["cpu"]
    d, h = wall["dlcli"], wall["hand"]
    print(
        f"\n{args.case}, median of {args.reps} fresh-process pairs, {args.epochs} epochs each, "
        f"{f'{args.threads} thread(s)' if args.threads else 'PyTorch default threads'} "
        f"(load average {load_before[0]:.2f} before, {report['load_after'][0]:.2f} after, "
        f"{report['minutes']:.1f} min):"
    )
    for side, name in (("dlcli", "dlcli"), ("hand", "hand-written")):
        w, c, f = wall[side], cpu[side], report["faults"][side]
        print(
            f"  {name:12} first {w['first']:.3f} s, steady {w['steady']:.3f} s, first/steady {w['ratio']:.2f} "
            f"(+{w['extra']:.3f} s); CPU first/steady {c['ratio']:.2f} (+{c['extra']:.3f} s); "
            f"page faults first {f['first']:.0f}, steady {f['steady']:.0f}; fastest first / fastest steady "
            f"{min(w['firsts']):.3f} / {min(w['steadies']):.3f} s = {w['fastest_ratio']:.2f}"
        )
    print(
        f"  dlcli / hand: first {d['first'] / h['first']:.2f}, steady {d['steady'] / h['steady']:.2f}; "
        f"first-epoch extra {d['extra']:.3f} s against {h['extra']:.3f} s; dlcli's first cycle (with its "
        f"work after the epoch) / steady {report['dlcli_cycles']['ratio']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
