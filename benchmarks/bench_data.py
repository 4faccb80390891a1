"""Loading users' data: CSV parsing against pandas, PNG decoding against a PIL loop, and an image
folder made from Fashion-MNIST trained against the IDX files.

    python benchmarks/bench_data.py csv     # 1,000,000 x 20 numeric CSV: dlcli vs pandas.read_csv
    python benchmarks/bench_data.py png     # 60,000 28x28 PNGs: dlcli's parallel decode vs a PIL loop
    python benchmarks/bench_data.py folder  # Fashion-MNIST as PNG folders: same test accuracy as IDX?
    python benchmarks/bench_data.py all --quick   # every part on a tiny size, to check the script

Timings alternate which side runs first over --reps repetitions and report medians and the
ratio dlcli / reference, measured in one process on the same files. Generated files are kept in
--workdir (default: a temporary folder) and reused when they are already there. See
benchmarks/README.md for the targets.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(pairs: dict, reps: int) -> dict[str, float]:
    """Median seconds of each named function, each repetition in a rotated order, after one
    untimed call of each (imports, the page cache)."""
    names = list(pairs)
    for name in names:
        pairs[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            times[name].append(timed(pairs[name]))
    return {n: statistics.median(t) for n, t in times.items()}


# ----------------------------------------------------------------------------- csv


def write_numeric_csv(path: Path, rows: int, cols: int, seed: int = 0) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(f"c{i}" for i in range(cols)) + "\n")
        for start in range(0, rows, 100_000):
            block = rng.standard_normal((min(100_000, rows - start), cols)) * 100
            np.savetxt(fh, block, delimiter=",", fmt="%.6g")
    return path


def bench_csv(workdir: Path, rows: int, cols: int, reps: int, engines: list[str]) -> dict:
    from dlcli.config import DataConfig
    from dlcli.data import load_dataset, tabular

    path = write_numeric_csv(workdir / f"numeric_{rows}x{cols}.csv", rows, cols)
    size_mb = path.stat().st_size / 2**20
    pairs = {}
    try:
        import pandas as pd

        pairs["pandas.read_csv"] = lambda: pd.read_csv(path)
    except ImportError:
        print("pandas is not installed: no reference timing (pip install pandas)")

    def dlcli_read(engine: str):
        def run():
            tabular._CACHE.clear()  # a fresh parse every time, not the cached table
            tabular.read_table(path, engine=engine)

        return run

    for engine in engines:
        pairs[f"dlcli read_table ({engine})"] = dlcli_read(engine)

    def dlcli_load():
        tabular._CACHE.clear()
        load_dataset(DataConfig(dataset="csv", path=str(path), target=f"c{cols - 1}", test_split=0.2), seed=0)

    pairs["dlcli load_dataset (auto: parse, split, fit, encode)"] = dlcli_load
    medians = alternate(pairs, reps)
    result = {"rows": rows, "cols": cols, "file_mb": round(size_mb, 1), "seconds": medians}
    print(f"\nCSV {rows:,} x {cols} ({size_mb:.0f} MB), median of {reps}:")
    reference = medians.get("pandas.read_csv")
    for name, seconds in medians.items():
        ratio = f"  {seconds / reference:5.2f}x pandas" if reference and name != "pandas.read_csv" else ""
        print(f"  {name:55s} {seconds:8.3f}s{ratio}")
    if reference:
        result["ratio_read_table_auto"] = medians.get("dlcli read_table (auto)", float("nan")) / reference
    return result


# ----------------------------------------------------------------------------- png


def write_pngs(folder: Path, count: int, data_root: str | None) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.png" for i in range(count)]
    if all(p.exists() for p in paths[-3:]) and paths[0].exists():
        return paths
    images = None
    if data_root:
        from dlcli.data.vision import find_idx_files, read_idx

        for name in ("fashion_mnist", "mnist"):
            files = find_idx_files(Path(data_root), name)
            if files:
                images = read_idx(files["x_train"])
                break
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (min(count, 60000), 28, 28), dtype=np.uint8)
    for i, path in enumerate(paths):
        Image.fromarray(images[i % len(images)]).save(path)
    return paths


def bench_png(workdir: Path, count: int, reps: int, data_root: str | None, workers: int | None) -> dict:
    from PIL import Image

    from dlcli.data.images import decode_files

    paths = write_pngs(workdir / f"png_{count}", count, data_root)

    def pil_loop():
        out = np.empty((len(paths), 1, 28, 28), dtype=np.uint8)
        for i, path in enumerate(paths):
            with Image.open(path) as image:
                out[i, 0] = np.asarray(image.convert("L"))
        return out

    reference = pil_loop()
    decoded, errors = decode_files(paths, (28, 28), 1, workers=workers, parallel_from=1)
    assert not errors and np.array_equal(decoded, reference), "dlcli's decode differs from the PIL loop"
    medians = alternate(
        {
            "PIL loop (one thread)": pil_loop,
            f"dlcli decode_files (workers={workers or os.cpu_count()})": lambda: decode_files(
                paths, (28, 28), 1, workers=workers, parallel_from=1
            ),
            "dlcli decode_files (workers=1)": lambda: decode_files(paths, (28, 28), 1, workers=1),
        },
        reps,
    )
    try:
        import pyspng

        decoder = f"libspng through pyspng {pyspng.__version__} (the fast-png extra), PIL for other files"
    except ImportError:
        decoder = "PIL (pyspng is not installed: pip install -e '.[fast-png]')"
    print(f"\n{count:,} PNGs of 28x28 on {os.cpu_count()} CPUs, median of {reps}; dlcli decodes with {decoder}:")
    base = medians["PIL loop (one thread)"]
    for name, seconds in medians.items():
        print(f"  {name:45s} {seconds:8.3f}s  {base / seconds:5.2f}x the loop's speed")
    parallel = next(v for k, v in medians.items() if k.startswith("dlcli decode_files (workers=") and "=1)" not in k)
    return {"files": count, "cpus": os.cpu_count(), "decoder": decoder, "seconds": medians, "speedup": base / parallel}


# ----------------------------------------------------------------------------- folder


def write_image_folder(data_root: Path, dataset: str, out: Path, limit: int | None) -> Path:
    """train/<k_name>/<i>.png and test/<k_name>/<i>.png from the four IDX files (the first
    `limit` training images when given; every test image)."""
    from PIL import Image

    from dlcli.data.vision import DIGIT_CLASSES, FASHION_CLASSES, find_idx_files, read_idx

    files = find_idx_files(data_root, dataset)
    if files is None:
        raise SystemExit(f"No {dataset} IDX files under {data_root} (or Debian's package); give --data ROOT.")
    names = FASHION_CLASSES if dataset == "fashion_mnist" else DIGIT_CLASSES
    marker = out / f".complete-{limit}"
    if marker.exists():
        return out
    for split, x_key, y_key in (("train", "x_train", "y_train"), ("test", "x_test", "y_test")):
        images, labels = read_idx(files[x_key]), read_idx(files[y_key])
        count = len(images) if limit is None or split == "test" else min(limit, len(images))
        for k, name in enumerate(names):
            (out / split / f"{k}_{name.replace('/', '-')}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            k = int(labels[i])
            Image.fromarray(images[i]).save(out / split / f"{k}_{names[k].replace('/', '-')}" / f"{i:05d}.png")
    marker.touch()
    return out


def bench_folder(workdir: Path, data_root: str, dataset: str, epochs: int, limit: int | None) -> dict:
    """The course MLP on the IDX files and on the same images as PNG folders: same test accuracy,
    and the same pixels (each training image's bytes, counted, match the IDX file's)."""
    from collections import Counter

    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.data import load_dataset
    from dlcli.training import train

    root = Path(data_root)
    folder = write_image_folder(root, dataset, workdir / f"{dataset}_folder_{limit}", limit)
    common = [f"training.epochs={epochs}", "device=auto"]
    if limit is not None:
        common.append(f"data.max_train_samples={limit}")
    idx_config = load_config(
        ROOT / "configs/fashion_mnist_mlp.yaml",
        common + [f"data.dataset={dataset}", f"data.root={root}", "data.download=false"],
    )
    folder_config = load_config(
        ROOT / "configs/fashion_mnist_mlp.yaml", common + ["data.dataset=image_folder", f"data.root={folder}"]
    )
    idx_data = load_dataset(idx_config.data, 0)
    folder_data = load_dataset(folder_config.data, 0)

    def multiset(x, y):
        return Counter((bytes(img.numpy().tobytes()), int(label)) for img, label in zip(x, y))

    same_train = multiset(idx_data.x_train, idx_data.y_train) == multiset(folder_data.x_train, folder_data.y_train)
    same_test = multiset(idx_data.x_test, idx_data.y_test) == multiset(folder_data.x_test, folder_data.y_test)
    print(f"\nSame pixels and labels: training set {same_train}, test set {same_test}")
    results = {}
    with tempfile.TemporaryDirectory() as runs:
        for name, config in (("idx", idx_config), ("image_folder", folder_config)):
            outcome = train(
                config, runs_dir=Path(runs), console=Console(file=io.StringIO()), quiet=True, draw_plots=False
            )
            results[name] = outcome.results
            print(
                f"  {name:13s} test accuracy {outcome.results['test_accuracy']:.4f} "
                f"({outcome.results['test_samples']} test images, {epochs} epochs)"
            )
    difference = abs(results["idx"]["test_accuracy"] - results["image_folder"]["test_accuracy"])
    note = " (a --quick run trains too little for the target to apply)" if limit is not None else ""
    print(f"  difference {difference:.4f} (target: at most 0.01){note}")
    return {
        "dataset": dataset,
        "epochs": epochs,
        "limit": limit,
        "same_train_pixels": same_train,
        "same_test_pixels": same_test,
        "results": results,
        "difference": difference,
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["csv", "png", "folder", "all"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: checks the script runs")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=20)
    parser.add_argument("--engines", default="auto,numpy", help="csv readers to time (auto, pyarrow, numpy, python)")
    parser.add_argument("--files", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="a data.root with IDX files")
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workdir", default=None, help="keep generated files here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.rows, args.files, args.epochs = 1, 20_000, 600, 1
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.part in ("csv", "all"):
            results["csv"] = bench_csv(workdir, args.rows, args.cols, args.reps, args.engines.split(","))
        if args.part in ("png", "all"):
            results["png"] = bench_png(workdir, args.files, args.reps, args.data, args.workers)
        if args.part in ("folder", "all"):
            dataset = args.dataset
            from dlcli.data.vision import find_idx_files

            if dataset == "fashion_mnist" and find_idx_files(Path(args.data), dataset) is None and args.quick:
                dataset = "mnist"  # the quick check runs wherever MNIST is
            results["folder"] = bench_folder(workdir, args.data, dataset, args.epochs, 2000 if args.quick else None)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
