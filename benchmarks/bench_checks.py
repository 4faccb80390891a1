"""What the data checks and the YAML limits cost (issue 15).

- data checks: `dlcli.data.checks.check_dataset` on IMDB-sized float inputs (25,000 x 10,000
  float32 multi-hot rows, 1 GB), MNIST-sized uint8 images (skipped by type) and float images,
  against one pass of `x.sum()` over the same tensor (the floor of any full check) and, where
  given, a plain training epoch's time from RESULTS.md to compare with by hand.
- YAML: `load_config` of an alias bomb (9 repeats, 30 levels), of the deepest file the loader
  refuses and of the widest (10,001 values), each refused; median of several runs.

`--quick` uses sizes a hundred times smaller, to check the script runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dlcli.config import DataConfig, load_config
from dlcli.data import DataInfo, Dataset
from dlcli.data.checks import check_dataset
from dlcli.errors import ConfigError


def median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_data(scale: int, reps: int) -> None:
    cases = {
        "imdb multi-hot float32": (
            torch.zeros(25_000 // scale, 10_000),
            torch.randint(0, 2, (25_000 // scale,)),
            "binary",
            2,
        ),
        "mnist uint8 images": (
            torch.zeros(60_000 // scale, 1, 28, 28, dtype=torch.uint8),
            torch.randint(0, 10, (60_000 // scale,)),
            "multiclass",
            10,
        ),
        "mnist float32 images": (
            torch.rand(60_000 // scale, 1, 28, 28),
            torch.randint(0, 10, (60_000 // scale,)),
            "multiclass",
            10,
        ),
    }
    print(f"{'data':24} {'MB':>8} {'check s':>9} {'x.sum() s':>10}")
    for name, (x, y, task, classes) in cases.items():
        data = Dataset(info=DataInfo(tuple(x.shape[1:]), task, classes), x_train=x, y_train=y)
        check = median_seconds(lambda data=data: check_dataset(data, DataConfig(dataset="npz")), reps)
        floor = median_seconds(lambda x=x: x.sum(), reps) if x.is_floating_point() else 0.0
        print(f"{name:24} {x.numel() * x.element_size() / 1e6:8.0f} {check:9.4f} {floor:10.4f}")


def bench_yaml(reps: int) -> None:
    base = "name: t\ndata: {dataset: synthetic}\nmodel: {preset: mlp}\n"
    bomb = ["x0: &x0 [" + ", ".join(["lol"] * 9) + "]"]
    bomb += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 30)]
    files = {
        "alias bomb 9^30": base + "\n".join(bomb) + "\n",
        "alias chain, depth 40": base + "x0: &x0 [1]\n" + "".join(f"x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, 40)),
        "5,000 nested brackets": base + "x: " + "[" * 5000 + "]" * 5000 + "\n",
        "10,001 values": base + "x: [" + ", ".join(["1"] * 10_001) + "]\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp) / "c.yaml"
            path.write_text(text)

            def load(path: Path = path, name: str = name) -> None:
                try:
                    load_config(path)
                except ConfigError:
                    return
                raise AssertionError(f"{name} was accepted")

            print(f"{name:24} refused in {median_seconds(load, reps):.4f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes 100x smaller, one repetition")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    bench_data(100 if args.quick else 1, reps)
    bench_yaml(reps)


if __name__ == "__main__":
    main()
