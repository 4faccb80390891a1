"""dlcli's seconds per epoch for the MNIST CNN on a GPU under each speed option.

Answers where bf16 autocast, CUDA graphs (training.cuda_graph, or torch.compile's
reduce-overhead), channels-last weights and the batch size pay on a small model: each
variant is a real dlcli training run whose epochs after the first are timed (so recording
and compilation stay out), and the median of those is printed.
    python benchmarks/gpu_variants.py --data DATA_ROOT
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics

from bench_train import dlcli_epochs, dlcli_overrides


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--batches", default="128")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--graph", default="false,true", help="values of training.cuda_graph to try")
    parser.add_argument("--compile", default="false", help="values of training.compile to try")
    parser.add_argument("--channels-last", default="auto", help="values of training.channels_last to try")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cpu rehearses the script (with --graph false)")
    parser.add_argument("--max-train", type=int, help="train on the first N samples only (a quick rehearsal)")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for batch, precision, graph, compile_, layout in itertools.product(
        map(int, args.batches.split(",")),
        args.precisions.split(","),
        args.graph.split(","),
        args.compile.split(","),
        args.channels_last.split(","),
    ):
        if graph == "true" and compile_ != "false":
            continue  # dlcli refuses the combination
        extra = [
            f"training.batch_size={batch}",
            f"training.precision={precision}",
            f"training.cuda_graph={graph}",
            f"training.compile={compile_}",
            f"training.channels_last={layout}",
        ]
        overrides = dlcli_overrides("cnn", args.data, args.device, args.max_train) + extra
        times = dlcli_epochs("cnn", args.data, args.epochs, args.device, overrides)["seconds"]
        seconds = statistics.median(times[1:] or times)
        rows.append(
            {
                "batch": batch,
                "precision": precision,
                "cuda_graph": graph,
                "compile": compile_,
                "channels_last": layout,
                "seconds": seconds,
                "all": times,
            }
        )
        print(
            f"cnn batch {batch:5d} {precision} cuda_graph={graph:5s} compile={compile_:15s} "
            f"channels_last={layout:5s}: {seconds:.3f} s/epoch",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
