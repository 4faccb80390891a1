"""dlcli's seconds per epoch for the MNIST CNN on a GPU under precision, compile and batch size.

Answers where bf16 autocast and torch.compile pay on a small model: each variant is a real
dlcli training run (two epochs; the second is timed, so compilation stays out).
    python benchmarks/gpu_variants.py --data DATA_ROOT
"""

from __future__ import annotations

import argparse
import json

from bench_train import dlcli_epochs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--batches", default="128,1024")
    parser.add_argument("--compile", default="false,true", help="values of training.compile to try")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for batch in map(int, args.batches.split(",")):
        for precision in ("fp32", "bf16"):
            for compile_ in args.compile.split(","):
                extra = [f"training.batch_size={batch}", f"training.precision={precision}",
                         f"training.compile={compile_}"]
                seconds = dlcli_epochs("cnn", args.data, args.epochs, "cuda", extra)[-1]
                rows.append({"batch": batch, "precision": precision, "compile": compile_, "seconds": seconds})
                print(f"cnn batch {batch:5d} {precision} compile={compile_:15s}: {seconds:.3f} s/epoch", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
