"""Transfer learning's targets (issue #28), measured through `dlcli.training.train`.

--part speed: seconds per epoch of torchvision's ResNet-18 on 28x28 Fashion-MNIST images with
  its backbone frozen (training.fine_tune, feature extraction) against full training, the two
  alternated in one process (medians of --reps each; the ratio is what counts on a shared machine).
--part demo: configs/mnist_pretrain.yaml trained once, then configs/fashion_finetune.yaml on
  1,000 Fashion-MNIST images from that run against the same config from scratch (no weights,
  no freezing), with seeds 0, 1, 2: test accuracy mean and sd of each.
--part torchvision: the same with ResNet-18: a short MNIST run saved as a state-dict file
  (torch.save of its best weights), fine-tuned from that file against scratch.

MNIST is looked for under --mnist-root (../shared/data here); Fashion-MNIST is found by the
dataset kind itself (Debian's /usr/share/datasets/fashion-mnist). Results go to stdout as JSON
lines and, with --out, to a JSON file.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dlcli.config import load_config  # noqa: E402
from dlcli.training import train  # noqa: E402


def run(config_path: Path, runs: Path, overrides: list[str]) -> dict:
    """One `dlcli train` in this process (quiet); its results, history and folder."""
    outcome = train(load_config(config_path, overrides), runs_dir=runs, console=Console(file=io.StringIO()))
    return {"run_dir": str(outcome.run_dir), "results": outcome.results, "history": outcome.history}


def speed(work: Path, reps: int, samples: int) -> dict:
    """Frozen-backbone vs full-training epochs of ResNet-18 on 28x28 images, alternated."""
    base = [
        "data.dataset=fashion_mnist",
        f"data.max_train_samples={samples}",
        "data.validation_split=0",
        "device=cpu",
        "training.epochs=2",  # the first epoch warms up; the second is timed
        "training.batch_size=128",
    ]
    cfg = ROOT / "configs" / "fashion_mnist_resnet.yaml"
    times: dict[str, list[float]] = {"full": [], "frozen": []}
    for rep in range(reps):
        order = ["full", "frozen"] if rep % 2 == 0 else ["frozen", "full"]
        for kind in order:
            extra = ["training.fine_tune={freeze: backbone}"] if kind == "frozen" else []
            result = run(cfg, work / kind, [*base, "data.augment=null", "training.schedule=null", *extra])
            times[kind].append(result["history"][-1]["seconds"])
            print(json.dumps({"part": "speed", "kind": kind, "rep": rep, "seconds": times[kind][-1]}), flush=True)
    full, frozen = statistics.median(times["full"]), statistics.median(times["frozen"])
    return {
        "samples": samples,
        "reps": reps,
        "full_s": full,
        "frozen_s": frozen,
        "speedup": full / frozen,
        "times": times,
        "threads": torch.get_num_threads(),
    }


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "all": values}


def compare(work: Path, config: Path, weights: str, seeds: list[int], extra: list[str]) -> dict:
    """Fine-tuned from `weights` against scratch (no weights, no fine_tune), per seed."""
    tuned, scratch = [], []
    for seed in seeds:
        common = [f"seed={seed}", *extra]
        a = run(config, work / "tuned", [*common, f"model.weights={weights}"])
        b = run(config, work / "scratch", [*common, "training.fine_tune=null"])
        tuned.append(a["results"]["test_accuracy"])
        scratch.append(b["results"]["test_accuracy"])
        print(json.dumps({"seed": seed, "fine_tuned": tuned[-1], "scratch": scratch[-1]}), flush=True)
    return {
        "fine_tuned": mean_sd(tuned),
        "scratch": mean_sd(scratch),
        "difference": statistics.mean(tuned) - statistics.mean(scratch),
    }


def demo(work: Path, mnist_root: str, seeds: list[int]) -> dict:
    started = time.perf_counter()
    pre = run(ROOT / "configs" / "mnist_pretrain.yaml", work / "pre", [f"data.root={mnist_root}", "device=cpu"])
    print(
        json.dumps({"part": "demo", "pretrain": pre["results"], "seconds": time.perf_counter() - started}), flush=True
    )
    result = compare(work, ROOT / "configs" / "fashion_finetune.yaml", pre["run_dir"], seeds, ["device=cpu"])
    return {"pretrain_test_accuracy": pre["results"]["test_accuracy"], **result}


def torchvision_demo(
    work: Path, mnist_root: str, seeds: list[int], epochs: int, pre_samples: int, pre_epochs: int
) -> dict:
    """ResNet-18 pretrained on an MNIST subset, saved as a plain state-dict file, fine-tuned from it."""
    model = ["model={torchvision: resnet18}", "device=cpu"]
    pre = run(
        ROOT / "configs" / "mnist_pretrain.yaml",
        work / "tv_pre",
        [*model, f"data.root={mnist_root}", f"data.max_train_samples={pre_samples}", f"training.epochs={pre_epochs}"],
    )
    state = torch.load(Path(pre["run_dir"]) / "checkpoints" / "best.pt", weights_only=True)["model"]
    file = work / "resnet18_mnist.pt"
    torch.save(state, file)
    print(json.dumps({"part": "torchvision", "pretrain": pre["results"]}), flush=True)
    extra = [*model, f"training.epochs={epochs}", "training.fine_tune.freeze_epochs=2"]
    result = compare(work, ROOT / "configs" / "fashion_finetune.yaml", str(file), seeds, extra)
    return {
        "pretrain_samples": pre_samples,
        "pretrain_epochs": pre_epochs,
        "epochs": epochs,
        "pretrain": pre["results"],
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "demo", "torchvision"], required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048, help="speed: training images per epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mnist-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--tv-epochs", type=int, default=8)
    parser.add_argument("--tv-pretrain-samples", type=int, default=10000)
    parser.add_argument("--tv-pretrain-epochs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.part == "speed":
            result = speed(work, args.reps, args.samples)
        elif args.part == "demo":
            result = demo(work, args.mnist_root, args.seeds)
        else:
            result = torchvision_demo(
                work, args.mnist_root, args.seeds, args.tv_epochs, args.tv_pretrain_samples, args.tv_pretrain_epochs
            )
    result = {"part": args.part, **result}
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
