"""ResNet-18 on 3x32x32 images at batch 256: where bf16 should pay, dlcli against a hand-written loop.

The speed issue's open question (does bf16 autocast help?) judged on a model large enough for
the GPU to be the bottleneck. Every variant is a real dlcli training run of
`model: {torchvision: resnet18}` on the same synthetic tensors (fp32, bf16, channels-last,
training.compile, training.cuda_graph), beside a hand-written loop over torchvision's
resnet18 in fp32, bf16 and channels-last. Epochs after the first are timed (recording and
compilation stay out); the median is printed, then each side's best and their ratio.
    python benchmarks/gpu_resnet.py                                  # on a CUDA GPU
    python benchmarks/gpu_resnet.py --device cpu --samples 256 --batch 32 --epochs 2 \\
        --dlcli fp32 --hand fp32                                     # a rehearsal on the CPU
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from plain_loop import hand_written_epoch  # noqa: E402

# name -> dlcli overrides
DLCLI_VARIANTS = {
    "fp32": ["training.precision=fp32", "training.channels_last=false"],
    "fp32_cl": ["training.precision=fp32", "training.channels_last=true"],
    "bf16": ["training.precision=bf16", "training.channels_last=false"],
    "bf16_cl": ["training.precision=bf16", "training.channels_last=true"],
    "bf16_cl_compile": ["training.precision=bf16", "training.channels_last=true", "training.compile=true"],
    "bf16_cl_graph": ["training.precision=bf16", "training.channels_last=true", "training.cuda_graph=true"],
    "fp32_cl_graph": ["training.precision=fp32", "training.channels_last=true", "training.cuda_graph=true"],
}
HAND_VARIANTS = {"fp32": ("fp32", False), "fp32_cl": ("fp32", True), "bf16": ("bf16", False), "bf16_cl": ("bf16", True)}


def base_config(args) -> dict:
    return {
        "name": "resnet18_32px",
        "seed": 0,
        "device": args.device,
        "data": {
            "dataset": "synthetic",
            "synthetic": {
                "task": "multiclass",
                "shape": [3, 32, 32],
                "classes": 10,
                "samples": args.samples,
                "test_samples": 0,
                "noise": 1.0,
            },
        },
        "model": {"torchvision": "resnet18"},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam"},
        "training": {"epochs": args.epochs, "batch_size": args.batch},
    }


def dlcli_seconds(args, overrides: list[str]) -> list[float]:
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.training import train

    config = load_config(None, overrides, raw=base_config(args))
    console = Console(file=io.StringIO(), force_terminal=True, width=120)  # the live display renders
    with tempfile.TemporaryDirectory() as runs:
        outcome = train(config, runs_dir=Path(runs), console=console, draw_plots=False)
    return [row["seconds"] for row in outcome.history]


def synthetic_tensors(args):
    """The very tensors dlcli trains on (its synthetic dataset with the same seed)."""
    from dlcli.config import load_config
    from dlcli.data import load_dataset

    config = load_config(None, raw=base_config(args))
    data = load_dataset(config.data, config.seed)
    return data.x_train, data.y_train


def hand_seconds(args, precision: str, channels_last: bool, x, y) -> list[float]:
    import torchvision

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    gen = torch.Generator().manual_seed(0)
    x, y = x.to(device), y.to(device)
    times = []
    for _ in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        hand_written_epoch(model, optimizer, x, y, args.batch, gen, precision=precision)
        times.append(time.perf_counter() - started)
    return times


def median_after_first(times: list[float]) -> float:
    return statistics.median(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--samples", type=int, default=25_600, help="training samples (100 steps of 256)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not timed")
    parser.add_argument("--dlcli", default=",".join(DLCLI_VARIANTS), help="dlcli variants to run")
    parser.add_argument("--hand", default=",".join(HAND_VARIANTS), help="hand-written variants to run")
    parser.add_argument("--json")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"ResNet-18, 3x32x32, batch {args.batch}, {args.samples} samples, {name}, torch {torch.__version__}", flush=True
    )
    rows = []
    x, y = synthetic_tensors(args)
    for variant in filter(None, args.hand.split(",")):
        precision, channels_last = HAND_VARIANTS[variant]
        times = hand_seconds(args, precision, channels_last, x, y)
        rows.append({"who": "hand", "variant": variant, "seconds": median_after_first(times), "all": times})
        print(f"hand  {variant:16s} {rows[-1]['seconds']:.3f} s/epoch", flush=True)
    for variant in filter(None, args.dlcli.split(",")):
        try:
            times = dlcli_seconds(args, DLCLI_VARIANTS[variant])
        except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others
            print(f"dlcli {variant:16s} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            continue
        rows.append({"who": "dlcli", "variant": variant, "seconds": median_after_first(times), "all": times})
        print(f"dlcli {variant:16s} {rows[-1]['seconds']:.3f} s/epoch", flush=True)
    by = {(r["who"], r["variant"]): r["seconds"] for r in rows}
    if ("dlcli", "fp32") in by and ("dlcli", "bf16") in by:
        print(f"bf16 speed-up in dlcli: {by['dlcli', 'fp32'] / by['dlcli', 'bf16']:.2f}x (goal: at least 1.3x)")
    if ("dlcli", "fp32_cl") in by and ("dlcli", "bf16_cl") in by:
        print(f"bf16 speed-up, channels-last: {by['dlcli', 'fp32_cl'] / by['dlcli', 'bf16_cl']:.2f}x")
    best = {
        who: min((r for r in rows if r["who"] == who), key=lambda r: r["seconds"], default=None)
        for who in ("dlcli", "hand")
    }
    if best["dlcli"] and best["hand"]:
        print(
            f"best dlcli {best['dlcli']['variant']} {best['dlcli']['seconds']:.3f} s, best hand-written "
            f"{best['hand']['variant']} {best['hand']['seconds']:.3f} s: ratio "
            f"{best['dlcli']['seconds'] / best['hand']['seconds']:.3f} (goal: at most 1.0)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
