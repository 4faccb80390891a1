"""dlcli's training speed against a hand-written PyTorch loop, in one process, same tensors.

Every config in configs/ that trains in reasonable time on a CPU is a case (`--cases all`; the
default is the course's Fashion-MNIST MLP and MNIST CNN). For each, it alternates which of
dlcli and the hand-written loop (benchmarks/plain_loop.py: the same model in torch.nn, optimizer,
batch size, validation rows and tensors) runs first over several repetitions and prints the
median seconds per epoch of each and their ratio; the small tables and the synthetic data
train a whole run of their config's epochs in a second or two, so for them it compares the
total of all epochs after the first. dlcli runs through `dlcli.training.train` (the path
`dlcli train` takes) with the live progress display rendering into a terminal-like console.
It also checks that both sides train on identical tensors and end with similar losses,
measures peak memory of whole processes (`dlcli train` against `benchmarks/plain_loop.py`),
the start-up time of `dlcli --help` and `dlcli summary`, and seconds per epoch at 10,000,
30,000 and 60,000 training samples. Real data is used when found (--data), else synthetic
data of the same shapes. See benchmarks/README.md.
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
from typing import Callable, Optional

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import plain_loop  # noqa: E402
from plain_loop import (  # noqa: E402
    hand_written_epoch,
    imdb_validation_size,
    load_case,
    make_model,
    make_optimizer,
    make_schedule,
)

CONFIGS = {  # the slowest last, so that `--cases all` reports the quick ones first
    "mlp": "configs/fashion_mnist_mlp.yaml",
    "cnn": "configs/mnist_cnn.yaml",
    # the course's IMDB classifier: float32 multi-hot rows of 10,000, batch 512, the first 10,000 held out
    "imdb_binary": "configs/imdb_binary.yaml",
    # Embedding 128, two Conv1D 32x7, max pooling; word sequences of 500, batch 128, 20% validation
    "imdb_conv1d": "configs/imdb_conv1d.yaml",
    # LeNet-5 with relu and max pooling, a cosine learning-rate schedule; batch 128, 10% validation
    "mnist_lenet5": "configs/mnist_lenet5.yaml",
    # small tables from examples/tabular/, standardised: a run of their config's epochs takes seconds
    "iris_mlp": "configs/iris_mlp.yaml",
    "wine_mlp": "configs/wine_mlp.yaml",
    "breast_cancer_binary": "configs/breast_cancer_binary.yaml",
    "diabetes_regression": "configs/diabetes_regression.yaml",
    "synthetic_quick": "configs/synthetic_quick.yaml",
    # IMDB word sequences of 500: Embedding 32, LSTM 32, Dense 1; rmsprop, 20% validation
    "lstm": "configs/imdb_lstm.yaml",
    # torchvision's ResNet-18 adapted to 1x28x28 and 10 classes; adam with a cosine schedule, 10%
    # validation (the config's augmentation off on both sides: see plain_loop.CASES)
    "resnet": "configs/fashion_mnist_resnet.yaml",
    # Not here: configs/imdb_sweep.yaml is a sweep (20 trials of imdb_binary's model with other
    # sizes, dropout and learning rates); its trials train as imdb_binary does, and the sweep's
    # own cost per trial is what bench_sweep.py measures.
}
CASES = {name: {"config": config, **plain_loop.CASES[name]} for name, config in CONFIGS.items()}
# Epochs of a few milliseconds (tens of steps): the timed unit is the total of a whole run of
# the config's epochs after the first, not one epoch.
WHOLE_RUN = ("iris_mlp", "wine_mlp", "breast_cancer_binary", "diabetes_regression", "synthetic_quick")
DEFAULT_CASES = "mlp,cnn"
# How far the two runs' last losses may drift apart (relative). The loop scales images as x / 255
# and dlcli as x * (1/255), which differ in the last bit for some pixels; ResNet-18 (batch norm,
# Adam) amplifies that: on 600 samples, two epochs of the loop alone with either scaling ended at
# losses 0.4835 and 0.5000 (the latter exactly dlcli's). The other models stay within 0.1%.
LOSS_TOLERANCE = {"resnet": 0.15}


def dlcli_overrides(case: str, data_root: str, device: str, max_train: int | None) -> list[str]:
    """`--set` values that point dlcli's run of a case at the benchmark's data and size."""
    spec = CASES[case]
    sets = [f"device={device}"]
    if spec["dataset"] == "csv":  # the config's path is relative to the checkout
        sets.append(f"data.path={ROOT / 'examples' / 'tabular' / spec['table']}")
    elif spec["dataset"] != "synthetic":  # the files' kinds: tables and generated data have no root
        sets += ["data.download=false", f"data.root={data_root}"]
    sets += spec.get("dlcli_sets", [])
    if max_train:
        sets.append(f"data.max_train_samples={max_train}")
        if "val_size" in spec:  # imdb_binary holds out the first 10,000: the same share of fewer
            sets.append(f"data.validation_size={imdb_validation_size(max_train, spec['val_size'])}")
    return sets


def config_epochs(case: str) -> int:
    from dlcli.config import load_config

    return load_config(ROOT / CASES[case]["config"]).training.epochs


def dlcli_epochs(
    case: str, data_root: str, epochs: int, device: str, extra: list[str], between: Optional[Callable] = None
) -> dict:
    """A real dlcli training run (progress display on): each epoch's `seconds` (training and
    validation, as metrics.csv has them), each epoch's `cycles` (the same plus everything
    between epochs: the display, metrics.csv, checkpoints, run.json), the last epoch's logs and
    the `initial` weights and random state of its training. `extra` are --set values after the
    benchmark's own."""
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.engine import Callback
    from dlcli.training import train

    class EpochClock(Callback):  # the run's last callback: an epoch ends after the others' work
        def __init__(self) -> None:
            self.starts: list[float] = []  # each epoch's start: after the last one's work (and --paired's hand epoch)
            self.ends: list[float] = []  # each epoch's end, after the other callbacks' work

        def on_train_begin(self, trainer) -> None:
            self.initial = [p.detach().clone() for p in trainer.model.parameters()]
            cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
            self.rng = (torch.get_rng_state(), cuda)  # what dropout draws from
            self.starts, self.ends = [time.perf_counter()], []

        def on_epoch_end(self, epoch, logs, trainer) -> None:
            self.ends.append(time.perf_counter())
            if between is not None:  # --paired: a hand-loop epoch after each of dlcli's
                between((self.initial, self.rng))
            self.starts.append(time.perf_counter())  # the next cycle starts after it

    overrides = [f"training.epochs={epochs}", *extra]
    config = load_config(ROOT / CASES[case]["config"], overrides)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)  # the live display renders
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as runs:
        outcome = train(config, runs_dir=Path(runs), console=console, draw_plots=False, extra_callbacks=[clock])
        run_info = json.loads((outcome.run_dir / "run.json").read_text())
    return {
        "run_info": run_info,  # what the run chose (precision, compile) and recorded
        "seconds": [row["seconds"] for row in outcome.history],
        "cycles": [end - start for start, end in zip(clock.starts, clock.ends)],
        "logs": outcome.history[-1],
        "initial": (clock.initial, clock.rng),
    }


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
    case: str,
    data_root: str | None,
    epochs: int,
    device: str,
    precision: str,
    max_train: int | None,
    initial: list | None = None,
) -> dict:
    """The hand-written loop on the same tensors: each epoch's seconds and the last epoch's logs.
    `initial`: the weights and global random state (dropout's) of a dlcli run to start from, so
    that the two runs' losses can be compared; the time does not depend on them."""
    spec = CASES[case]
    x, y, xv, yv, _, _ = load_case(case, data_root, max_train)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = make_model(case)
    if initial is not None:
        copy_weights(initial[0], model, case)
        cpu_rng, cuda_rng = initial[1]
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None and dev.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng)
    model = model.to(dev)
    if dev.type == "cuda":
        x, y = x.to(dev), y.to(dev)
        xv, yv = (xv.to(dev), yv.to(dev)) if xv is not None else (None, None)
    optimizer = make_optimizer(case, model)
    schedule = make_schedule(case, optimizer, epochs)
    task = spec.get("task", "multiclass")
    gen = torch.Generator().manual_seed(0)
    times, logs = [], {}
    for _ in range(epochs):
        started = time.perf_counter()
        logs = hand_written_epoch(model, optimizer, x, y, spec["batch"], gen, xv, yv, precision, task=task)
        times.append(time.perf_counter() - started)
        if schedule is not None:  # after the epoch, as dlcli steps its schedule
            schedule.step()
    return {"seconds": times, "logs": logs}


def copy_weights(initial: list, model: torch.nn.Module, case: str) -> None:
    """dlcli's initial weights into the hand-written model, parameter by parameter in order
    (the same layers in the same order have the same parameters: a check on its own)."""
    params = list(model.parameters())
    shapes = [tuple(p.shape) for p in params], [tuple(p.shape) for p in initial]
    if shapes[0] != shapes[1]:
        raise SystemExit(f"{case}: the hand-written model's parameters {shapes[0]} are not dlcli's {shapes[1]}")
    with torch.no_grad():
        for p, q in zip(params, initial):
            p.copy_(q)


def timed(values: list[float], whole_run: bool) -> list[float]:
    """What one run contributes: its epochs after the first (warm-up: allocations, oneDNN's
    kernels), or for a whole-run case their total."""
    rest = values[1:] if len(values) > 1 else values
    return [sum(rest)] if whole_run else rest


def compare(case: str, args) -> dict:
    """Alternate dlcli and the hand loop; the median over the epochs after each run's first
    (whole-run cases: the median over the repetitions of the total of those epochs)."""
    whole_run = case in WHOLE_RUN
    epochs = config_epochs(case) if whole_run else args.epochs
    mine, cycles, theirs, first = [], [], [], []
    last_logs: dict = {}
    initial = None  # dlcli's first run's initial weights; the first repetition runs dlcli first
    extra = [*dlcli_overrides(case, args.data, args.device, args.max_train), f"training.precision={args.precision}"]
    extra += args.set
    for rep in range(args.reps):
        order = ("dlcli", "hand") if rep % 2 == 0 else ("hand", "dlcli")
        for who in order:
            if who == "dlcli":
                run = dlcli_epochs(case, args.data, epochs, args.device, extra)
                mine += timed(run["seconds"], whole_run)
                cycles += timed(run["cycles"], whole_run)
                first.append(run["seconds"][0])
                initial = initial or run["initial"]
            else:
                run = hand_epochs(case, args.data, epochs, args.device, args.precision, args.max_train, initial)
                theirs += timed(run["seconds"], whole_run)
            last_logs.setdefault(who, run["logs"])  # the first repetition's, for the loss check
    m, c, t = statistics.median(mine), statistics.median(cycles), statistics.median(theirs)
    return {
        "case": case,
        "unit": f"total of epochs 2-{epochs}" if whole_run else "epoch",
        "epochs_per_run": epochs,
        "dlcli_s": m,
        "hand_s": t,
        "ratio": m / t,
        "dlcli_with_writes_s": c,  # between epochs too: display, metrics.csv, checkpoints, run.json
        "ratio_with_writes": c / t,
        "dlcli_all": mine,
        "hand_all": theirs,
        "dlcli_first_epochs": first,  # with training.compile: the first holds a cold compile, the rest a cached one
        "dlcli_last_logs": last_logs["dlcli"],
        "hand_last_logs": last_logs["hand"],
    }


def compare_paired(case: str, args) -> dict:
    """--paired: each dlcli epoch followed at once by a hand-loop epoch (in dlcli's epoch-end
    callback, on the same tensors, from dlcli's initial weights), so each pair meets the same
    machine. On a shared machine whose speed drifts over minutes this measures a few percent
    where alternating whole runs cannot. The ratio is the median of the pairs' ratios, the
    first pair (warm-up) left out."""
    x, y, xv, yv, _, _ = load_case(case, args.data, args.max_train)
    spec = CASES[case]
    task = spec.get("task", "multiclass")
    dev = torch.device(args.device)
    hand: dict = {"seconds": []}

    def hand_epoch(initial) -> None:
        if "model" not in hand:
            torch.manual_seed(0)
            model = make_model(case)
            copy_weights(initial[0], model, case)
            hand["model"] = model.to(dev)
            hand["optimizer"] = make_optimizer(case, hand["model"])
            hand["schedule"] = make_schedule(case, hand["optimizer"], epochs)
            hand["gen"] = torch.Generator().manual_seed(0)
        started = time.perf_counter()
        hand["logs"] = hand_written_epoch(
            hand["model"], hand["optimizer"], x, y, spec["batch"], hand["gen"], xv, yv, args.precision, task=task
        )
        hand["seconds"].append(time.perf_counter() - started)
        if hand["schedule"] is not None:
            hand["schedule"].step()

    extra = [*dlcli_overrides(case, args.data, args.device, args.max_train), f"training.precision={args.precision}"]
    # A table or synthetic_quick: its config's epochs, reps times over, in one run.
    epochs = (config_epochs(case) if case in WHOLE_RUN else args.epochs) * args.reps
    run = dlcli_epochs(case, args.data, epochs, args.device, extra + args.set, between=hand_epoch)
    mine, theirs = run["seconds"][1:], hand["seconds"][1:]
    ratios = [a / b for a, b in zip(mine, theirs)]
    return {
        "case": case,
        "unit": "epoch",
        "epochs_per_run": epochs,
        "dlcli_s": statistics.median(mine),
        "hand_s": statistics.median(theirs),
        "ratio": statistics.median(ratios),
        "pair_ratios": ratios,
        "dlcli_with_writes_s": statistics.median(run["cycles"][1:]),
        "ratio_with_writes": statistics.median(run["cycles"][1:]) / statistics.median(theirs),
        "dlcli_all": mine,
        "hand_all": theirs,
        "dlcli_first_epochs": run["seconds"][:1],
        "dlcli_last_logs": run["logs"],
        "hand_last_logs": hand["logs"],
    }


def losses_agree(dlcli_logs: dict, hand_logs: dict, tolerance: float = 0.02) -> list[str]:
    """Where the two runs' last-epoch losses differ by more than `tolerance` (relative): they
    started from the same weights and random state and drew the same batches, so only float
    rounding (channels-last convolutions, x * (1/255) against x / 255) separates them; more
    means they do not train the same model on the same data in the same way."""
    problems = []
    for key in ("loss", "val_loss"):
        if key in dlcli_logs and key in hand_logs:
            a, b = dlcli_logs[key], hand_logs[key]
            if abs(a - b) > tolerance * max(abs(a), abs(b), 1e-3):
                problems.append(f"{key} {a:.4g} against {b:.4g}")
    return problems


def same_tensors(case: str, args) -> dict:
    """Check that the hand loop's tensors are dlcli's: the training and validation inputs and
    targets of both loaders, compared element by element (dlcli's targets as its loss takes them)."""
    from dlcli.config import load_config
    from dlcli.data import load_dataset
    from dlcli.losses import prepare_targets, resolve_loss_name

    config = load_config(ROOT / CASES[case]["config"], dlcli_overrides(case, args.data, args.device, args.max_train))
    data = load_dataset(config.data, config.seed)
    loss = resolve_loss_name(config.loss, data.info.task)
    theirs = dict(zip(("x", "y", "x_val", "y_val"), load_case(case, args.data, args.max_train)[:4]))
    mine = {
        "x": data.x_train,
        "y": prepare_targets(data.y_train, loss, data.info.task),
        "x_val": data.x_val,
        "y_val": prepare_targets(data.y_val, loss, data.info.task),
    }
    differ = []
    for key, a in mine.items():
        b = theirs[key]
        if (a is None) != (b is None):
            differ.append(f"{key}: {'dlcli has none' if a is None else 'the loop has none'}")
        elif a is not None and not (a.shape == b.shape and torch.equal(a.to(b.dtype), b)):
            differ.append(f"{key}: dlcli {tuple(a.shape)} {a.dtype}, the loop {tuple(b.shape)} {b.dtype}")
    return {
        "case": case,
        "same": not differ,
        "differences": differ,
        "train": list(data.x_train.shape),
        "validation_rows": len(data.x_val) if data.x_val is not None else 0,
        "dlcli_dtype": str(data.x_train.dtype).removeprefix("torch."),
        "hand_dtype": str(theirs["x"].dtype).removeprefix("torch."),
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
    """One epoch and the test evaluation as whole processes: `dlcli train` and `plain_loop.py --test`."""
    runs = tempfile.mkdtemp()
    sets = []
    for value in ["training.epochs=1", *dlcli_overrides(case, args.data, args.device, args.max_train)]:
        sets += ["--set", value]
    dl = peak_rss_mb([sys.executable, "-m", "dlcli", "train", CASES[case]["config"], "--runs-dir", runs, *sets])
    plain_cmd = [sys.executable, str(HERE / "plain_loop.py"), "--case", case, "--epochs", "1", "--test"]
    plain_cmd += ["--device", args.device, "--data", args.data]
    if args.max_train:
        plain_cmd += ["--max-train", str(args.max_train)]
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
        extra = [*dlcli_overrides("mlp", args.data, args.device, None), *extra]
        mine = statistics.median(dlcli_epochs("mlp", args.data, 3, args.device, extra)["seconds"][1:])
        theirs = statistics.median(hand_epochs("mlp", args.data, 3, args.device, args.precision, n)["seconds"][1:])
        rows.append({"samples": n, "seconds_per_epoch": mine, "hand_seconds_per_epoch": theirs})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        help="data.root holding mnist/ and imdb/ (Fashion-MNIST is found as dlcli finds it, e.g. "
        "Debian's package; the tables are the checkout's examples/tabular/); default: ../shared/data "
        "if it exists, else synthetic IDX and imdb.npz files of the same shapes",
    )
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma list of: {', '.join(CASES)}; or all (default: {DEFAULT_CASES}). lstm and resnet take "
        "minutes per epoch on a CPU; the tables and synthetic_quick train a whole run of their config's epochs",
    )
    parser.add_argument("--reps", type=int, default=4, help="repetitions, alternating which runs first")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="one dlcli run of epochs x reps epochs (a table: its config's epochs x reps), each followed "
        "by a hand-loop epoch (the ratio: the median of the pairs'); for the few-percent questions on a "
        "machine whose speed drifts",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="epochs per run; the first of each run is not timed (the tables and synthetic_quick "
        "run their config's epochs)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--max-train",
        type=int,
        default=None,
        help="train on the first N samples only, in the speed and memory parts (imdb_binary then holds "
        "out the same 40%% for validation; the tables: N training rows at most)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for dlcli's runs only, e.g. training.cuda_graph=true (repeatable)",
    )
    parser.add_argument("--skip", default="", help="comma list of parts to skip: tensors,speed,memory,startup,scaling")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.data is None and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
        args.data = str(ROOT.parent / "shared" / "data")
    synthetic = args.data is None or not Path(args.data).is_dir()
    if synthetic:
        args.data = synthetic_idx_root()
    skip = set(filter(None, args.skip.split(",")))
    cases = list(CASES) if args.cases == "all" else args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}; cases are: {', '.join(CASES)}, or all")
    # dlcli's runs of recurrent models tell glibc's malloc to keep freed memory for reuse
    # (devices.py), which this process then keeps for the hand loop too: set it first, so
    # neither side's speed depends on which ran first. The memory part compares whole
    # processes, the hand loop's untouched.
    from dlcli.devices import keep_freed_memory_for_reuse

    keep_freed_memory_for_reuse()
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
    if "tensors" not in skip:
        report["tensors"] = []
        for case in cases:
            r = same_tensors(case, args)
            report["tensors"].append(r)
            print(
                f"tensors {case}: "
                + ("identical" if r["same"] else "DIFFERENT (" + "; ".join(r["differences"]) + ")")
                + f", training {' x '.join(map(str, r['train']))}, validation rows {r['validation_rows']}; "
                f"dlcli stores {r['dlcli_dtype']}, the loop {r['hand_dtype']}",
                flush=True,
            )
    if "speed" not in skip:
        report["speed"] = []
        for case in cases:
            r = compare_paired(case, args) if args.paired else compare(case, args)
            report["speed"].append(r)
            per = "s/epoch" if r["unit"] == "epoch" else f"s for {r['unit']}"
            print(
                f"speed  {case}: dlcli {r['dlcli_s']:.3f} {per}, hand-written {r['hand_s']:.3f} {per}, "
                f"ratio {r['ratio']:.3f}; with dlcli's work between epochs {r['dlcli_with_writes_s']:.3f} "
                f"(ratio {r['ratio_with_writes']:.3f}); dlcli's first epochs "
                f"{', '.join(f'{x:.2f}' for x in r['dlcli_first_epochs'])} s",
                flush=True,
            )
            tolerance = LOSS_TOLERANCE.get(case, 0.02)
            problems = losses_agree(r["dlcli_last_logs"], r["hand_last_logs"], tolerance)
            print(
                f"losses {case} (epoch {r['epochs_per_run']}, first repetition): "
                + ", ".join(
                    f"{k} dlcli {r['dlcli_last_logs'][k]:.4f} / hand {v:.4f}"
                    for k, v in r["hand_last_logs"].items()
                    if k in r["dlcli_last_logs"]
                )
                + (f"; DIFFERENT: {', '.join(problems)}" if problems else f"; within {tolerance:.0%}"),
                flush=True,
            )
    if "memory" not in skip:
        report["memory"] = []
        for case in cases:
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
