"""torchvision's r3d_18 on 16x112x112 RGB clips at batch 32: fp32 against bf16 and channels-last-3d,
dlcli against a hand-written loop (the video issue's GPU question).

Every dlcli variant is a real training run of `model: {torchvision: r3d_18}` on the same synthetic
clips (rank-5 batches: samples, channels, frames, height, width); the hand-written loop trains
torchvision's r3d_18 on the very same tensors. One step is about 80 GFLOP per clip forward and
backward. Epochs after the first are timed (recording and cuDNN's autotuning stay out); the
median is printed, then each side's best and their ratio.
    python benchmarks/gpu_video.py                                   # on a CUDA GPU
    python benchmarks/gpu_video.py --device cpu --samples 4 --batch 2 --epochs 2 \\
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

# name -> dlcli overrides (training.channels_last stores Conv3d weights channels-last-3d)
DLCLI_VARIANTS = {
    "fp32": ["training.precision=fp32", "training.channels_last=false"],
    "fp32_cl3d": ["training.precision=fp32", "training.channels_last=true"],
    "bf16": ["training.precision=bf16", "training.channels_last=false"],
    "bf16_cl3d": ["training.precision=bf16", "training.channels_last=true"],
}
HAND_VARIANTS = {
    "fp32": ("fp32", False),
    "fp32_cl3d": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16_cl3d": ("bf16", True),
}


def base_config(args) -> dict:
    return {
        "name": "r3d_18_clips",
        "seed": 0,
        "device": args.device,
        "data": {
            "dataset": "synthetic",
            "synthetic": {
                "task": "multiclass",
                "input_shape": [args.frames, args.size, args.size, 3],  # frames, height, width, channels
                "classes": 10,
                "samples": args.samples,
                "test_samples": 0,
                "noise": 1.0,
            },
        },
        "model": {"torchvision": "r3d_18"},
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
    model = torchvision.models.video.r3d_18(num_classes=10).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
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
    parser.add_argument("--samples", type=int, default=320, help="training clips (10 steps of 32)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112, help="height and width of the frames")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed")
    parser.add_argument("--dlcli", default=",".join(DLCLI_VARIANTS), help="dlcli variants to run")
    parser.add_argument("--hand", default=",".join(HAND_VARIANTS), help="hand-written variants to run")
    parser.add_argument("--json")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"r3d_18, {args.frames}x{args.size}x{args.size}x3 clips, batch {args.batch}, {args.samples} clips, {name}, "
        f"torch {torch.__version__}",
        flush=True,
    )
    started = time.perf_counter()
    rows = []
    x, y = synthetic_tensors(args)
    steps = -(-args.samples // args.batch)
    for variant in filter(None, args.hand.split(",")):
        precision, channels_last = HAND_VARIANTS[variant]
        times = hand_seconds(args, precision, channels_last, x, y)
        rows.append({"who": "hand", "variant": variant, "seconds": median_after_first(times), "all": times})
        print(f"hand  {variant:10s} {rows[-1]['seconds']:.3f} s/epoch ({rows[-1]['seconds'] / steps:.3f} s/step)")
    for variant in filter(None, args.dlcli.split(",")):
        try:
            times = dlcli_seconds(args, DLCLI_VARIANTS[variant])
        except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others
            print(f"dlcli {variant:10s} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            continue
        rows.append({"who": "dlcli", "variant": variant, "seconds": median_after_first(times), "all": times})
        print(f"dlcli {variant:10s} {rows[-1]['seconds']:.3f} s/epoch ({rows[-1]['seconds'] / steps:.3f} s/step)")
    by = {(r["who"], r["variant"]): r["seconds"] for r in rows}
    for who in ("dlcli", "hand"):
        if (who, "fp32") in by and (who, "bf16") in by:
            print(f"bf16 speed-up ({who}): {by[who, 'fp32'] / by[who, 'bf16']:.2f}x")
        if (who, "bf16") in by and (who, "bf16_cl3d") in by:
            print(f"channels-last-3d speed-up at bf16 ({who}): {by[who, 'bf16'] / by[who, 'bf16_cl3d']:.2f}x")
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
    print(f"whole run: {time.perf_counter() - started:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
