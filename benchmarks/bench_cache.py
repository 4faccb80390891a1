"""data.cache: disk against memory for image folders.

    python benchmarks/bench_cache.py speed    # course-CNN epochs from memory and from a warm disk cache
    python benchmarks/bench_cache.py bounded  # a folder 2x a cgroup memory limit trains with cache: auto
    python benchmarks/bench_cache.py all --quick

`speed` writes an image folder of 28x28 gray PNGs (random pixels: only time is measured), then
alternates runs of the course CNN with `cache: memory` and `cache: disk` (the disk cache built
once first, so the page cache is warm as on a second epoch), and reports the median steady
epoch and the ratio disk / memory, plus the cache build's decode rate against the in-memory
decode's. `bounded` makes a memory cgroup (v1, /sys/fs/cgroup/memory; root needed) with a
limit, writes a folder whose decoded size is at least twice it, trains one epoch of a small
CNN inside the group with `cache: auto`, and reports the peak anonymous memory of the process
(RssAnon, polled: the memory-mapped cache's pages are file pages and do not count) and the
group's peak usage. Generated files are kept in --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CGROUP = Path("/sys/fs/cgroup/memory")


def write_folder(root: Path, count: int, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """`count` PNGs in two class folders (kept when already there)."""
    from PIL import Image

    marker = root / f".made-{count}-{'x'.join(map(str, shape))}"
    if marker.exists():
        return root
    rng = np.random.default_rng(seed)
    h, w, c = shape
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        if c == 1:
            pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
        else:  # smooth colour fields: small files, every pixel still decoded
            pixels = np.broadcast_to(rng.integers(0, 256, (1, 1, c), dtype=np.uint8), (h, w, c)).copy()
        Image.fromarray(pixels).save(folder / f"{i:06d}.png", compress_level=1)
    marker.touch()
    return root


def config(root: Path, cache: str, cache_dir: Path, model: dict, epochs: int, batch: int) -> dict:
    return {
        "name": f"cache-{cache}",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "image_folder",
            "root": str(root),
            "test_split": 0.0,
            "cache": cache,
            "cache_dir": str(cache_dir),
        },
        "model": model,
        "optimizer": {"name": "adam", "lr": 0.001},
        "training": {"epochs": epochs, "batch_size": batch},
    }


def run_dlcli(raw: dict, workdir: Path, env: dict | None = None, preexec=None) -> Path:
    import yaml

    path = workdir / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    runs = workdir / "runs" / raw["name"]
    subprocess.run(
        [sys.executable, "-m", "dlcli", "train", str(path), "--runs-dir", str(runs), "-q"],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        preexec_fn=preexec,
    )
    return max(runs.iterdir(), key=lambda p: p.stat().st_mtime)


def steady_epoch(run: Path) -> float:
    import csv

    with open(run / "metrics.csv") as fh:
        seconds = [float(r["seconds"]) for r in csv.DictReader(fh)]
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def speed(workdir: Path, quick: bool, reps: int) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from dlcli.config import data_config
    from dlcli.data import load_dataset

    count = 2000 if quick else 30000
    root = write_folder(workdir / "gray", count, (28, 28, 1))
    cache_dir = workdir / "cache"
    cnn = {"preset": "cnn"}  # the course CNN: conv 32, pool, conv 64, pool, dropout, dense
    # Decoding: the disk cache's build against the in-memory decode of the same files.
    from dlcli.data.cache import clear_caches

    clear_caches(cache_dir)
    start = time.perf_counter()
    load_dataset(data_config("image_folder", root=str(root), test_split=0.0, cache="memory"), seed=0)
    memory_decode = time.perf_counter() - start
    start = time.perf_counter()
    load_dataset(
        data_config("image_folder", root=str(root), test_split=0.0, cache="disk", cache_dir=str(cache_dir)), seed=0
    )
    disk_build = time.perf_counter() - start
    epochs = {"memory": [], "disk": []}
    for rep in range(reps):
        for cache in ("memory", "disk") if rep % 2 == 0 else ("disk", "memory"):
            run = run_dlcli(config(root, cache, cache_dir, cnn, 3, 128), workdir)
            epochs[cache].append(steady_epoch(run))
    memory, disk = statistics.median(epochs["memory"]), statistics.median(epochs["disk"])
    return {
        "images": count,
        "decode_in_memory_s": round(memory_decode, 2),
        "decode_into_disk_cache_s": round(disk_build, 2),
        "build_over_decode": round(disk_build / memory_decode, 3),
        "epoch_memory_s": round(memory, 3),
        "epoch_disk_s": round(disk, 3),
        "disk_over_memory": round(disk / memory, 3),
        "epochs": epochs,
    }


def bounded(workdir: Path, quick: bool) -> dict:
    if not (CGROUP / "cgroup.procs").exists() or os.geteuid() != 0:
        return {"skipped": "needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory"}
    limit = (600 if quick else 1200) * 2**20
    shape = (224, 224, 3)
    per_image = int(np.prod(shape))
    count = int(2.2 * limit / per_image)
    root = write_folder(workdir / "large", count, shape)
    group = CGROUP / f"dlcli-bench-{os.getpid()}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit))
    small = {
        "layers": [
            {"conv2d": {"filters": 4, "kernel_size": 5, "strides": 4, "activation": "relu"}},
            {"global_avg_pool": {}},
            {"dense": {"units": 1}},
        ]
    }
    peak = {"rss_anon": 0}
    done = threading.Event()

    def watch(pid_file: Path) -> None:
        while not done.is_set():
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("RssAnon:"):
                        peak["rss_anon"] = max(peak["rss_anon"], int(line.split()[1]) * 1024)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, args=(group,), daemon=True)
    watcher.start()
    try:
        run = run_dlcli(
            config(root, "auto", workdir / "cache-large", small, 1, 64),
            workdir,
            preexec=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
        )
        finished = json.loads((run / "run.json").read_text())["status"]
        group_peak = int((group / "memory.max_usage_in_bytes").read_text())
    finally:
        done.set()
        watcher.join()
        try:
            group.rmdir()
        except OSError:
            pass
    return {
        "limit_mb": limit // 2**20,
        "images": count,
        "decoded_mb": count * per_image // 2**20,
        "status": finished,
        "peak_rss_anon_mb": peak["rss_anon"] // 2**20,
        "group_peak_usage_mb": group_peak // 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["speed", "bounded", "all"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dlcli-bench-cache-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.part in ("speed", "all"):
        results["speed"] = speed(workdir, args.quick, 1 if args.quick else args.reps)
    if args.part in ("bounded", "all"):
        results["bounded"] = bounded(workdir, args.quick)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
