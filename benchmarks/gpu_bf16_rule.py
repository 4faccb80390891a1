"""When does bf16 autocast pay on a GPU? fp32 against bf16 training steps for models of growing
work per step, each with its floating-point operations counted, to set `training.precision: auto`'s
rule on CUDA (the speed issue: bf16 "on GPUs only where measurements show it pays").

Each case is a hand-written step (forward, cross-entropy, backward, fused Adam) on synthetic
tensors already on the device, channels-last for convolutions in both precisions (the faster
layout for each on tensor cores), timed after warm-up with the device synchronised. The work per
step is counted by torch.utils.flop_counter on one step (forward and backward). Prints one row per
case: GFLOP per step, fp32 and bf16 milliseconds per step, bf16/fp32, achieved TFLOP/s.
    python benchmarks/gpu_bf16_rule.py                       # on a CUDA GPU, about 2 minutes
    python benchmarks/gpu_bf16_rule.py --device cpu --cases cnn --steps 2 --warmup 1   # rehearsal
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def course_model(config_name: str, shape: tuple[int, ...]):
    from dlcli.config import load_config
    from dlcli.models import build_model, plan_network

    config = load_config(HERE.parent / "configs" / config_name)
    return build_model(plan_network(config.model, shape, 10, "softmax", ("softmax",)))


def torchvision_model(name: str):
    import torchvision

    return (
        getattr(torchvision.models, name)(num_classes=10)
        if "3d" not in name
        else torchvision.models.video.r3d_18(num_classes=10)
    )


# name -> (model maker, input shape without the batch, batch size)
CASES = {
    "mlp": (lambda: course_model("fashion_mnist_mlp.yaml", (1, 28, 28)), (1, 28, 28), 128),
    "cnn": (lambda: course_model("mnist_cnn.yaml", (1, 28, 28)), (1, 28, 28), 128),
    "cnn_b1024": (lambda: course_model("mnist_cnn.yaml", (1, 28, 28)), (1, 28, 28), 1024),
    "resnet18_32": (lambda: torchvision_model("resnet18"), (3, 32, 32), 256),
    "resnet18_64": (lambda: torchvision_model("resnet18"), (3, 64, 64), 256),
    "resnet18_128": (lambda: torchvision_model("resnet18"), (3, 128, 128), 128),
    "resnet18_224": (lambda: torchvision_model("resnet18"), (3, 224, 224), 128),
    "resnet50_224": (lambda: torchvision_model("resnet50"), (3, 224, 224), 64),
    "r3d18_8x56": (lambda: torchvision_model("r3d_18"), (3, 8, 56, 56), 32),
    "r3d18_16x112": (lambda: torchvision_model("r3d_18"), (3, 16, 112, 112), 32),
}


def step_function(model, optimizer, device, bf16: bool):
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = loss_fn(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def gflop_per_step(make, shape, batch) -> float:
    """Forward and backward floating-point operations of one step, counted on the CPU at batch 2
    and scaled (every counted operation is linear in the batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = make()
    x = torch.randn(2, *shape)
    with FlopCounterMode(display=False) as counter:
        model(x).float().sum().backward()
    return counter.get_total_flops() / 2 * batch / 1e9


def time_case(make, shape, batch, device, bf16: bool, warmup: int, steps: int) -> float:
    torch.manual_seed(0)
    model = make().to(device)
    memory_format = torch.channels_last if len(shape) == 3 else torch.channels_last_3d
    convolutional = any(isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) for m in model.modules())
    if convolutional:
        model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), fused=device.type == "cuda")
    x = torch.randn(batch, *shape, device=device)
    if convolutional:
        x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)
    step = step_function(model, optimizer, device, bf16)
    for _ in range(warmup):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(
        f"{'case':14} {'batch':>5} {'GFLOP/step':>10} {'fp32 ms':>8} {'bf16 ms':>8} {'bf16/fp32':>9} {'fp32 TF/s':>9}"
    )
    rows = []
    for name in args.cases.split(","):
        make, shape, batch = CASES[name]
        work = gflop_per_step(make, shape, batch)
        fp32 = time_case(make, shape, batch, device, False, args.warmup, args.steps)
        bf16 = time_case(make, shape, batch, device, True, args.warmup, args.steps)
        rows.append({"case": name, "batch": batch, "gflop": work, "fp32_s": fp32, "bf16_s": bf16})
        print(
            f"{name:14} {batch:5d} {work:10.2f} {fp32 * 1e3:8.2f} {bf16 * 1e3:8.2f} {bf16 / fp32:9.3f}"
            f" {work / fp32 / 1e3:9.1f}",
            flush=True,
        )
        del make
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
