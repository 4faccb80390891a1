"""Whole processes: `dlcli train` against a plain PyTorch script, start to exit (issue 14, item 3).

A user waits for the whole process: start-up, data loading, training, the test evaluation and
everything written on the way (summary, metrics, checkpoints, results, plots). This times, as
separate processes, alternating which goes first,

    python -m dlcli train configs/fashion_mnist_mlp.yaml --set training.epochs=2 --quiet --runs-dir TMP
    python benchmarks/plain_loop.py --case mlp --epochs 2 --test

on the same IDX files (the folder dlcli finds, passed to both), and prints each median, the
ratio dlcli / plain (target: at most 1.10) and the machine. After every dlcli process it checks
that the run folder is complete (plots included) and completed, then removes it.

`--profile` instead shows where dlcli's extra time goes, with measures that do not need a quiet
machine: import time per package (`python -X importtime`, dlcli's and the plain script's),
inclusive seconds of dlcli's phases from `python -m cProfile` (inflated by the profiler where
Python code dominates: read them as shares), and counts of what the process does (fsync calls,
files written and how often, which heavy packages it imported) and how long the interpreter
took to exit.

    python benchmarks/bench_process.py                     # median of 5 each (about a minute on two cores)
    python benchmarks/bench_process.py --reps 7 --json process.json
    python benchmarks/bench_process.py --quick             # 2,000 training samples, 2 reps: checks it runs
    python benchmarks/bench_process.py --profile --quick   # where the time goes, on tiny sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's dlcli, in this process and (PYTHONPATH) the children

CONFIG = "configs/fashion_mnist_mlp.yaml"
RUN_FILES = (
    "config.yaml",
    "run.json",
    "summary.txt",
    "metrics.csv",
    "results.json",
    "loss.png",
    "accuracy.png",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
)
# Packages whose presence at exit --profile reports: what dlcli may import that the run needs or not.
WATCHED_MODULES = (
    "numpy",
    "torch._dynamo",
    "matplotlib",
    "matplotlib.pyplot",
    "PIL",
    "pydantic",
    "yaml",
    "rich",
    "rich.live",
    "typer",
    "optuna",
    "mlflow",
    "tensorboard",
    "torch.utils.tensorboard",
    "torchvision",
    "sympy",
)


# -- the two commands ---------------------------------------------------------------------


def find_data(root: str) -> Path:
    """The folder holding Fashion-MNIST's four IDX files, found as dlcli finds them from `root`."""
    from dlcli.data.vision import find_idx_files

    files = find_idx_files(Path(root), "fashion_mnist")
    if files is None:
        raise SystemExit(f"Fashion-MNIST not found from {root} (nor in Debian's /usr/share/datasets/fashion-mnist).")
    folders = {p.parent for p in files.values()}
    if len(folders) != 1:
        raise SystemExit(f"Fashion-MNIST's files are spread over {sorted(map(str, folders))}; give --data one folder.")
    return folders.pop().resolve()


def child_env() -> dict[str, str]:
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def dlcli_command(args, data: Path, runs_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "dlcli", "train", CONFIG, "--set", f"training.epochs={args.epochs}"]
    cmd += ["--set", f"data.root={data}", "--set", f"device={args.device}", "--quiet", "--runs-dir", str(runs_dir)]
    if args.max_train:
        cmd += ["--set", f"data.max_train_samples={args.max_train}"]
    return cmd


def plain_command(args, data: Path) -> list[str]:
    cmd = [sys.executable, str(HERE / "plain_loop.py"), "--case", "mlp", "--epochs", str(args.epochs), "--test"]
    cmd += ["--data", str(data), "--device", args.device]
    if args.max_train:
        cmd += ["--max-train", str(args.max_train)]
    return cmd


def run_process(cmd: list[str], prefix: tuple[str, ...] = ()) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one whole process; exits with its stderr if it failed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([*cmd[:1], *prefix, *cmd[1:]], cwd=ROOT, env=child_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout + proc.stderr


def check_run_folder(output: str) -> Path:
    """The run folder named on dlcli's last line, complete and completed."""
    found = re.findall(r"^Run folder: (.+)$", output, re.MULTILINE)
    if not found:
        raise SystemExit(f"dlcli printed no run folder:\n{output[-2000:]}")
    run_dir = Path(found[-1].strip())
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    status = json.loads((run_dir / "run.json").read_text()).get("status") if not missing else None
    if missing or status != "completed":
        raise SystemExit(f"{run_dir} is incomplete when dlcli exits: missing {missing}, status {status}.")
    return run_dir


# -- the machine --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory_gib = round(kib / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    probe = "import torch; print(torch.__version__, torch.get_num_threads())"
    torch_version, threads = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_version,
        "torch_threads": int(threads),
    }


def file_system(path: Path) -> str:
    """The type of the file system holding `path` (fsync costs differ: ext4 vs tmpfs)."""
    target = str(path.resolve())
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fs = line.split()[:3]
            inside = mount == "/" or target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, fs
    except OSError:
        pass
    return kind


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- timing -------------------------------------------------------------------------------


def bench(args, data: Path, runs_dir: Path) -> dict[str, Any]:
    commands = {"dlcli": dlcli_command(args, data, runs_dir), "plain": plain_command(args, data)}
    for name, cmd in commands.items():
        print(f"{name}: {' '.join(cmd)}")
    times: dict[str, list[float]] = {"dlcli": [], "plain": []}
    cpu: dict[str, list[float]] = {"dlcli": [], "plain": []}
    for rep in range(-args.warmup, args.reps):
        order = ["dlcli", "plain"] if rep % 2 == 0 else ["plain", "dlcli"]
        line = []
        for name in order:
            wall, used, output = run_process(commands[name])
            if name == "dlcli":
                shutil.rmtree(check_run_folder(output))
            if rep >= 0:
                times[name].append(wall)
                cpu[name].append(used)
            line.append(f"{name} {wall:.2f} s (CPU {used:.2f} s)")
        print(f"{'warm-up' if rep < 0 else f'rep {rep + 1}'}: " + ", ".join(line), flush=True)
    med = {name: statistics.median(values) for name, values in times.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "commands": commands,
        "seconds": times,
        "cpu_seconds": cpu,
        "median_s": med,
        "median_cpu_s": med_cpu,
        "ratio": med["dlcli"] / med["plain"],
        "cpu_ratio": med_cpu["dlcli"] / med_cpu["plain"],
    }


# -- --profile: where the time goes ---------------------------------------------------------

# dlcli's phases and the parts inside them, as "module:qualified.name" (resolved to the code's
# file and line in this checkout) or "module:<module>" for the time importing a module.
PARTS = (
    ("start-up: import dlcli.cli (typer, rich)", "dlcli.cli:<module>"),
    ("config: load_config", "dlcli.config:load_config"),
    ("plan: plan_experiment", "dlcli.plan:plan_experiment"),
    ("device: choose_device", "dlcli.training:choose_device"),
    ("build_experiment", "dlcli.training:build_experiment"),
    ("  data: load_dataset", "dlcli.data:load_dataset"),
    ("  model: build_network", "dlcli.plan:build_network"),
    ("  optimizer: build_optimizer", "dlcli.optim:build_optimizer"),
    ("open_run_folder", "dlcli.training:open_run_folder"),
    ("  summary_text", "dlcli.summary:summary_text"),
    ("batches: Experiment.batches", "dlcli.training:Experiment.batches"),
    ("make_trainer", "dlcli.training:make_trainer"),
    ("fit", "dlcli.engine:Trainer.fit"),
    ("  train_one_epoch", "dlcli.engine:Trainer.train_one_epoch"),
    ("  run folder: RunFolderWriter.on_epoch_end", "dlcli.callbacks:RunFolderWriter.on_epoch_end"),
    ("    capture: Checkpointer.note", "dlcli.checkpoint:Checkpointer.note"),
    ("    metrics.csv: MetricsLogger.save", "dlcli.callbacks:MetricsLogger.save"),
    ("    checkpoints: Checkpointer.save", "dlcli.checkpoint:Checkpointer.save"),
    ("    run.json: RunRecorder.save", "dlcli.callbacks:RunRecorder.save"),
    ("finish_run", "dlcli.training:finish_run"),
    ("  test: Trainer.evaluate", "dlcli.engine:Trainer.evaluate"),
    ("  plots: plot_run", "dlcli.plots:plot_run"),
    ("  run.json: RunFolder.finish", "dlcli.training:RunFolder.finish"),
    ("atomic writes (all files)", "dlcli.rundir:atomic_write_bytes"),
    ("  os.fsync", "posix:fsync"),
    ("  sync_folder (once, at the end)", "dlcli.rundir:sync_folder"),
    ("import matplotlib", "matplotlib:<module>"),
    ("import matplotlib.figure", "matplotlib.figure:<module>"),
    ("import matplotlib.pyplot", "matplotlib.pyplot:<module>"),
    ("import torch._dynamo (Adam's first step)", "torch._dynamo:<module>"),
    ("import pydantic", "pydantic:<module>"),
)

COUNTER = r"""
import atexit, json, os, runpy, sys, time
out, target, sys.argv = sys.argv[1], sys.argv[2], sys.argv[2:]
counts = {"fsync": 0, "replaced": {}}
_fsync, _replace = os.fsync, os.replace
def fsync(fd):
    counts["fsync"] += 1
    return _fsync(fd)
def replace(src, dst, *args, **kwargs):
    name = os.path.basename(dst)
    counts["replaced"][name] = counts["replaced"].get(name, 0) + 1
    return _replace(src, dst, *args, **kwargs)
os.fsync, os.replace = fsync, replace
def report():  # registered first, so it runs after every other exit handler
    watched = json.loads(os.environ["BENCH_WATCHED"])
    with open(out, "w") as fh:
        json.dump({"counts": counts, "modules": {m: m in sys.modules for m in watched},
                   "module_count": len(sys.modules), "exit_started": time.time()}, fh)
atexit.register(report)
if target == "-m":  # python -m MODULE ARGS...
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:  # python SCRIPT ARGS...
    runpy.run_path(target, run_name="__main__")
"""


def count(cmd: list[str], report: Path) -> tuple[dict[str, Any], str]:
    """Run `cmd` (python ...) with fsync and rename calls counted; the report, and the output."""
    env_watch = json.dumps(WATCHED_MODULES)
    os.environ["BENCH_WATCHED"] = env_watch
    _, _, output = run_process([cmd[0], "-c", COUNTER, str(report), *cmd[1:]])
    ended = time.time()
    counted = json.loads(report.read_text())
    counted["exit_s"] = round(ended - counted.pop("exit_started"), 3)
    return counted, output


def _code_key(target: str) -> Optional[tuple[str, int, str]]:
    """pstats' (file, line, name) of a "module:qualname" target in this checkout's code."""
    import importlib
    import importlib.util
    import inspect

    module, name = target.split(":")
    if module == "posix":
        return ("~", 0, f"<built-in method posix.{name}>")
    if name == "<module>":
        spec = importlib.util.find_spec(module)
        return (spec.origin, 1, "<module>") if spec and spec.origin else None
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        code = inspect.unwrap(obj).__code__
    except (ImportError, AttributeError):
        return None
    return (code.co_filename, code.co_firstlineno, code.co_name)


def import_seconds(stderr: str) -> dict[str, float]:
    """Self import time per top-level package from `python -X importtime`'s report."""
    per_package: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            own, _, name = line.split(":", 1)[1].split("|")
            per_package[name.strip().split(".")[0]] += int(own) / 1e6
    return dict(per_package)


def profile(args, data: Path, runs_dir: Path, work: Path) -> dict[str, Any]:
    dl, plain = dlcli_command(args, data, runs_dir), plain_command(args, data)
    print(f"dlcli: {' '.join(dl)}\nplain: {' '.join(plain)}\n")
    result: dict[str, Any] = {"commands": {"dlcli": dl, "plain": plain}}

    # 1. Imports, by top-level package: what dlcli imports beyond the plain script.
    walls = {}
    imports = {}
    for name, cmd in (("dlcli", dl), ("plain", plain)):
        walls[name], _, output = run_process(cmd, ("-X", "importtime"))
        imports[name] = import_seconds(output)
        if name == "dlcli":
            shutil.rmtree(check_run_folder(output))
    result["imports_s"] = imports
    print(
        f"imports (self time summed per package; whole processes took dlcli {walls['dlcli']:.2f} s, "
        f"plain {walls['plain']:.2f} s):"
    )
    print(f"  all packages: dlcli {sum(imports['dlcli'].values()):.3f} s, plain {sum(imports['plain'].values()):.3f} s")
    extra = sorted(((s, p) for p, s in imports["dlcli"].items() if p not in imports["plain"]), reverse=True)
    print(f"  packages only dlcli imports: {sum(s for s, _ in extra):.3f} s")
    for seconds, package in extra[:15]:
        print(f"    {seconds:7.3f} s  {package}")

    # 2. dlcli's phases under cProfile (inclusive seconds).
    prof = work / "dlcli.prof"
    wall, _, output = run_process(dl, ("-m", "cProfile", "-o", str(prof)))
    shutil.rmtree(check_run_folder(output))
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    parts = {}
    print(f"\ndlcli's parts under cProfile (inclusive seconds, calls; the process took {wall:.2f} s profiled):")
    for label, target in PARTS:
        key = _code_key(target)
        entry = stats.get(key) if key else None
        seconds = entry[3] if entry else None
        calls = entry[1] if entry else 0
        parts[label.strip()] = {"seconds": seconds, "calls": calls}
        shown = f"{seconds:7.3f} s  {calls:5d}x" if seconds is not None else "      -  (not called)"
        print(f"  {shown}  {label}")
    result["profile_s"] = parts

    # 3. Counts: fsync calls, files written (and how often), heavy modules present at exit, and
    # how long each process took to end after its last exit handler.
    result["counts"] = {}
    print("\ncounts:")
    for name, cmd in (("dlcli", dl), ("plain", plain)):
        counted, output = count(cmd, work / f"counts-{name}.json")
        if name == "dlcli":
            shutil.rmtree(check_run_folder(output))
        result["counts"][name] = counted
        written = ", ".join(f"{file} {n}x" for file, n in sorted(counted["counts"]["replaced"].items()))
        present = [m for m, here in counted["modules"].items() if here]
        print(f"  {name}: fsync calls {counted['counts']['fsync']}; files written atomically: {written or 'none'}")
        print(f"    {counted['module_count']} modules at exit; of the watched ones: {', '.join(present)}")
        print(f"    exit after the last exit handler (interpreter teardown): {counted['exit_s']:.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each (median reported); default 5")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first (file caches); default 1")
    parser.add_argument(
        "--data",
        default="data",
        help="where to look for Fashion-MNIST, as data.root (default: data, then Debian's "
        "/usr/share/datasets/fashion-mnist, as dlcli looks)",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-train", type=int, help="only the first N training samples (both sides)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs-dir", help="where dlcli's run folders go (default: a new temporary folder)")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 training samples, 2 reps, no warm-up: a smoke check"
    )
    parser.add_argument("--profile", action="store_true", help="where dlcli's time goes instead of the timing")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.max_train = args.max_train or 2000
        args.reps, args.warmup = min(args.reps, 2), 0

    data = find_data(args.data)
    work = Path(tempfile.mkdtemp(prefix="bench-process-"))
    runs_dir = Path(args.runs_dir) if args.runs_dir else work / "runs"
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['usable_cores']} of {info['cores']} cores usable, {info['memory_gib']} GiB; "
        f"{info['platform']}; Python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads)"
    )
    print(f"data: {data}; run folders on {file_system(runs_dir.parent)}; load average {load()}")
    try:
        result = profile(args, data, runs_dir, work) if args.profile else bench(args, data, runs_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(machine=info, data=str(data), load_average_end=load())
    if not args.profile:
        med, cpu = result["median_s"], result["median_cpu_s"]
        print(
            f"\nmedian of {args.reps}: dlcli {med['dlcli']:.3f} s, plain {med['plain']:.3f} s; "
            f"ratio {result['ratio']:.3f} (target <= 1.10)"
        )
        print(
            f"CPU time, median: dlcli {cpu['dlcli']:.3f} s, plain {cpu['plain']:.3f} s; ratio {result['cpu_ratio']:.3f}"
        )
    print(f"load average at the end: {result['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
