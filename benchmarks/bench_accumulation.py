"""Peak memory of gradient accumulation (issue 31): the course's MNIST CNN (configs/mnist_cnn.yaml's
layers) trained by dlcli's Trainer on random 28x28 images, each setting in a fresh process:
batch 64; batch 64 with gradient_accumulation_steps 8 (effective 512); batch 512.

Prints each setting's peak resident memory, the part of it that training added (above the
process's peak before training, with torch, the model, optimizer and data built), and that
part's ratio to batch 64's. CPU only; no timing.

    .venv/bin/python benchmarks/bench_accumulation.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

SETTINGS = [("batch 64", 64, 1), ("batch 64, accumulation 8", 64, 8), ("batch 512", 512, 1)]
SAMPLES = 4096


def child(batch: int, k: int) -> None:
    import torch
    import torch.nn.functional as F

    from dlcli.engine import Batches, Trainer

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(1600, 10),
    )
    x = torch.randint(0, 256, (SAMPLES, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (SAMPLES,))
    trainer = Trainer(
        model,
        torch.optim.Adam(model.parameters()),
        F.cross_entropy,
        lambda out, yb: (out.argmax(1) == yb).sum(),
        accumulation=k,
    )
    batches = Batches(x, y, batch, shuffle=True, generator=torch.Generator().manual_seed(0), input_scale=1 / 255)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # torch, model, optimizer and data built
    trainer.fit(batches, epochs=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kb": before, "peak_kb": after}))


def main() -> None:
    if len(sys.argv) == 3:
        child(int(sys.argv[1]), int(sys.argv[2]))
        return
    results = {}
    for name, batch, k in SETTINGS:
        out = subprocess.run(
            [sys.executable, __file__, str(batch), str(k)], capture_output=True, text=True, check=True
        ).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])

    def training_kb(r: dict) -> int:
        return r["peak_kb"] - r["before_kb"]

    base = training_kb(results["batch 64"])
    for name, r in results.items():
        print(
            f"{name:28s} peak RSS {r['peak_kb'] / 1024:7.1f} MiB, of which training {training_kb(r) / 1024:6.1f} MiB "
            f"({training_kb(r) / base:.2f}x batch 64)"
        )


if __name__ == "__main__":
    main()
