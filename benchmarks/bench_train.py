"""dlcli's training speed against a hand-written PyTorch loop, in one process, same tensors.

For each case (the course's Fashion-MNIST MLP and MNIST CNN; with --cases also the IMDB LSTM and
torchvision's ResNet-18 on Fashion-MNIST) it alternates which of the two
runs first over several repetitions and prints the median seconds per epoch of each and
their ratio. dlcli runs through `dlcli.training.train` (the path `dlcli train` takes) with the
live progress display rendering into a terminal-like console. It also measures peak memory
of whole processes (`dlcli train` against `benchmarks/plain_loop.py`), the start-up time of
`dlcli --help` and `dlcli summary`, and seconds per epoch at 10,000, 30,000 and 60,000
training samples. Real data is used when found (--data), else synthetic data of the same
shapes. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from plain_loop import hand_written_epoch, load_imdb_sequences, load_tensors, make_model, make_optimizer  # noqa: E402

CASES = {
    "mlp": {"config": "configs/fashion_mnist_mlp.yaml", "dataset": "fashion_mnist", "batch": 32, "val": 0.0},
    "cnn": {"config": "configs/mnist_cnn.yaml", "dataset": "mnist", "batch": 128, "val": 0.1},
    # IMDB word sequences of 500: Embedding 32, LSTM 32, Dense 1; rmsprop, 20% validation
    "lstm": {"config": "configs/imdb_lstm.yaml", "dataset": "imdb", "batch": 128, "val": 0.2},
    # torchvision's ResNet-18 adapted to 1x28x28 and 10 classes; adam, 10% validation
    "resnet": {"config": "configs/fashion_mnist_resnet.yaml", "dataset": "fashion_mnist", "batch": 128, "val": 0.1},
}


def dlcli_epochs(case: str, data_root: str | None, epochs: int, device: str, extra: list[str]) -> list[float]:
    """Seconds of each epoch of a real dlcli training run (progress display on)."""
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.training import train

    spec = CASES[case]
    overrides = [f"training.epochs={epochs}", f"device={device}", "data.download=false", *extra]
    overrides.append(f"data.root={data_root}")
    config = load_config(ROOT / spec["config"], overrides)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)  # the live display renders
    with tempfile.TemporaryDirectory() as runs:
        outcome = train(config, runs_dir=Path(runs), console=console, draw_plots=False)
    return [row["seconds"] for row in outcome.history]


def synthetic_idx_root() -> str:
    """Random uint8 images in IDX files of MNIST's shapes, read by both dlcli and the hand loop."""
    import numpy as np

    root = Path(tempfile.mkdtemp(prefix="dlcli-bench-"))
    rng = np.random.default_rng(0)
    for folder in ("mnist", "fashion_mnist"):
        (root / folder).mkdir()
        for split, n in (("train", 60_000), ("t10k", 10_000)):
            for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
                array = rng.integers(0, 256 if kind.startswith("images") else 10, shape, dtype=np.uint8)
                header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in shape)
                (root / folder / f"{split}-{kind}-ubyte").write_bytes(header + array.tobytes())
    write_synthetic_imdb(root / "imdb" / "imdb.npz", rng)
    return str(root)


def write_synthetic_imdb(path: Path, rng, reviews: int = 25_000) -> None:
    """Random reviews in Keras's imdb.npz layout, of IMDB's size (lengths around its mean of 230 words)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "test"):
        lengths = rng.integers(50, 420, reviews)
        xs = np.empty(reviews, dtype=object)
        for i, n in enumerate(lengths):
            xs[i] = rng.integers(1, 20_000, n).tolist()
        arrays[f"x_{split}"] = xs
        arrays[f"y_{split}"] = rng.integers(0, 2, reviews)
    np.savez(path, **arrays)


def hand_epochs(
    case: str, data_root: str | None, epochs: int, device: str, precision: str, max_train: int | None
) -> list[float]:
    spec = CASES[case]
    if spec["dataset"] == "imdb":
        x, y, xv, yv = load_imdb_sequences(data_root, 500, spec["val"], max_train)
    else:
        x, y, xv, yv = load_tensors(spec["dataset"], data_root, spec["val"], max_train)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = make_model(case).to(dev)
    if dev.type == "cuda":
        x, y = x.to(dev), y.to(dev)
        xv, yv = (xv.to(dev), yv.to(dev)) if xv is not None else (None, None)
    optimizer = make_optimizer(case, model)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        hand_written_epoch(model, optimizer, x, y, spec["batch"], gen, xv, yv, precision)
        times.append(time.perf_counter() - started)
    return times


def compare(case: str, args) -> dict:
    """Alternate dlcli and the hand loop; median over the epochs after each run's first."""
    mine, theirs, first = [], [], []
    extra = [f"training.precision={args.precision}", *args.set]
    if args.max_train:
        extra.append(f"data.max_train_samples={args.max_train}")
    for rep in range(args.reps):
        order = ("dlcli", "hand") if rep % 2 == 0 else ("hand", "dlcli")
        for who in order:
            if who == "dlcli":
                times = dlcli_epochs(case, args.data, args.epochs, args.device, extra)
                mine += times[1:] if len(times) > 1 else times
                first.append(times[0])
            else:
                times = hand_epochs(case, args.data, args.epochs, args.device, args.precision, args.max_train)
                theirs += times[1:] if len(times) > 1 else times
    m, t = statistics.median(mine), statistics.median(theirs)
    return {
        "case": case,
        "dlcli_s": m,
        "hand_s": t,
        "ratio": m / t,
        "dlcli_all": mine,
        "hand_all": theirs,
        "dlcli_first_epochs": first,  # with training.compile: the first holds a cold compile, the rest a cached one
    }


# Forked from a small wrapper process: a child's ru_maxrss starts from its parent's resident size
# at fork time, so forking straight from this (large) process would inflate both numbers alike.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory of a command's process (Linux reports ru_maxrss in KiB)."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, cwd=ROOT)
    maxrss, code = proc.stdout.split()[-2:]
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return int(maxrss) / 1024


def memory(case: str, args) -> dict:
    spec = CASES[case]
    runs = tempfile.mkdtemp()
    sets = ["--set", "training.epochs=1", "--set", f"device={args.device}", "--set", "data.download=false"]
    sets += ["--set", f"data.root={args.data}"]
    dl = peak_rss_mb([sys.executable, "-m", "dlcli", "train", spec["config"], "--runs-dir", runs, *sets])
    plain_cmd = [
        sys.executable,
        str(HERE / "plain_loop.py"),
        "--case",
        case,
        "--epochs",
        "1",
        "--device",
        args.device,
        "--data",
        args.data,
    ]
    plain = peak_rss_mb(plain_cmd)
    return {"case": case, "dlcli_mb": dl, "plain_mb": plain, "ratio": dl / plain}


def startup(args) -> dict:
    def median_time(cmd: list[str], n: int = 5) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    dlcli = str(Path(sys.executable).with_name("dlcli"))
    return {
        "help_s": median_time([dlcli, "--help"]),
        "summary_s": median_time([dlcli, "summary", "configs/mnist_cnn.yaml"]),
    }


def scaling(args) -> list[dict]:
    """The MLP at 10,000, 30,000 and 60,000 samples, the hand-written loop beside it: the time per
    sample should stay flat for both (the machine's speed drifts, so the hand loop is the yardstick)."""
    rows = []
    for n in (10_000, 30_000, 60_000):
        extra = [f"data.max_train_samples={n}", f"training.precision={args.precision}", *args.set]
        mine = statistics.median(dlcli_epochs("mlp", args.data, 3, args.device, extra)[1:])
        theirs = statistics.median(hand_epochs("mlp", args.data, 3, args.device, args.precision, n)[1:])
        rows.append({"samples": n, "seconds_per_epoch": mine, "hand_seconds_per_epoch": theirs})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        help="data.root holding mnist/ (Fashion-MNIST is found as dlcli finds it, e.g. "
        "Debian's package); default: ../shared/data if it exists, else synthetic IDX files",
    )
    parser.add_argument(
        "--cases",
        default="mlp,cnn",
        help="comma list of: mlp, cnn, lstm (IMDB LSTM), resnet "
        "(ResNet-18 on Fashion-MNIST); the last two take minutes per epoch on a CPU",
    )
    parser.add_argument("--reps", type=int, default=4, help="repetitions, alternating which runs first")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first of each run is not timed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--max-train", type=int, default=None, help="train on the first N samples only")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for dlcli's runs only, e.g. training.cuda_graph=true (repeatable)",
    )
    parser.add_argument("--skip", default="", help="comma list of parts to skip: speed,memory,startup,scaling")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.data is None and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
        args.data = str(ROOT.parent / "shared" / "data")
    synthetic = args.data is None or not Path(args.data).is_dir()
    if synthetic:
        args.data = synthetic_idx_root()
    skip = set(filter(None, args.skip.split(",")))
    if any(o.startswith("training.compile=") for o in args.set):
        # A fresh on-disk compile cache: the first dlcli run compiles cold, later ones find
        # PyTorch's cached kernels, as a second `dlcli train` of the same model would.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlcli-bench-inductor-")
    report: dict = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "device": args.device + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
        "data": "synthetic IDX files of the same shapes" if synthetic else args.data,
        "precision": args.precision,
        "dlcli_overrides": args.set,
    }
    print(
        f"machine: {report['machine']}\ndevice: {report['device']}  data: {report['data']}  precision: {args.precision}"
        + (f"  dlcli --set {' '.join(args.set)}" if args.set else "")
    )
    if "speed" not in skip:
        report["speed"] = []
        for case in args.cases.split(","):
            r = compare(case, args)
            report["speed"].append(r)
            print(
                f"speed  {case}: dlcli {r['dlcli_s']:.3f} s/epoch, hand-written {r['hand_s']:.3f} s/epoch, "
                f"ratio {r['ratio']:.3f}; dlcli's first epochs {', '.join(f'{x:.2f}' for x in r['dlcli_first_epochs'])} s",
                flush=True,
            )
    if "memory" not in skip:
        report["memory"] = []
        for case in args.cases.split(","):
            r = memory(case, args)
            report["memory"].append(r)
            print(
                f"memory {case}: dlcli train {r['dlcli_mb']:.0f} MB, plain loop {r['plain_mb']:.0f} MB, "
                f"ratio {r['ratio']:.3f}",
                flush=True,
            )
    if "startup" not in skip:
        report["startup"] = startup(args)
        print(
            f"startup: dlcli --help {report['startup']['help_s']:.3f} s, "
            f"dlcli summary configs/mnist_cnn.yaml {report['startup']['summary_s']:.3f} s",
            flush=True,
        )
    if "scaling" not in skip:
        report["scaling"] = scaling(args)
        for row in report["scaling"]:
            n = row["samples"]
            print(
                f"scaling mlp {n:>6} samples: dlcli {row['seconds_per_epoch']:.3f} s/epoch "
                f"({row['seconds_per_epoch'] / n * 1e6:.1f} us/sample), hand-written "
                f"{row['hand_seconds_per_epoch']:.3f} s/epoch ({row['hand_seconds_per_epoch'] / n * 1e6:.1f} us/sample)",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
