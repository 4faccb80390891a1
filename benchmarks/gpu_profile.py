"""Where a CNN training step's time goes on a GPU: launch latency, and a profile of 50 steps.

python benchmarks/gpu_profile.py --data DATA_ROOT
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from plain_loop import load_tensors, make_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    dev = torch.device("cuda")
    a = torch.ones(16, device=dev)
    for _ in range(100):
        a.add_(1)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(2000):
        a.add_(1)
    torch.cuda.synchronize()
    print(f"launch: {1e6 * (time.perf_counter() - started) / 2000:.1f} us per tiny kernel (queued, then synchronised)")

    x, y, _, _ = load_tensors("mnist", args.data, 0.0, 128 * 60)
    x, y = x.to(dev), y.to(dev)
    model = make_model("cnn").to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    def steps(n):
        for i in range(n):
            xb = x[i * 128 : (i + 1) * 128].float().div_(255)
            yb = y[i * 128 : (i + 1) * 128]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    steps(10)
    torch.cuda.synchronize()
    for label, fused in (("foreach Adam", False), ("fused Adam", True)):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, fused=fused)
        steps(5)
        torch.cuda.synchronize()
        started = time.perf_counter()
        steps(50)
        torch.cuda.synchronize()
        print(f"{label}: {1e3 * (time.perf_counter() - started) / 50:.2f} ms per step (batch 128)")
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as prof:
        steps(50)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))


if __name__ == "__main__":
    main()
