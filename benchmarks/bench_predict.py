"""dlcli predict and export against what a user would otherwise write, in one process.

1. `dlcli predict`'s throughput on the MNIST CNN over the 10,000 test images (read from the IDX
   file), against a hand-written `torch.inference_mode()` loop over the same decoded tensors:
   both sides time the model pass only (predict's own `predict_inputs`, the loop's batches);
   decoding is timed separately, for the IDX file and for the same images as PNG files.
2. ONNX Runtime on the exported CNN against eager PyTorch, images per second at batch 1 and 256.

It trains a one-epoch CNN first (or uses --run). Alternates which side runs first; medians.
    .venv/bin/python benchmarks/bench_predict.py --data ../shared/data [--quick]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def train_cnn(data_root: str, runs: Path, max_train: int) -> Path:
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.training import train

    config = load_config(
        ROOT / "configs/mnist_cnn.yaml",
        [f"data.root={data_root}", "training.epochs=1", f"data.max_train_samples={max_train}", "device=cpu"],
    )
    return train(config, runs_dir=runs, console=Console(file=io.StringIO()), quiet=True, draw_plots=False).run_dir


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="data.root holding mnist/")
    parser.add_argument("--run", help="an existing MNIST CNN run folder")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 images, 2 repetitions: checks the script")
    args = parser.parse_args()
    reps = 2 if args.quick else args.reps
    from dlcli.data.vision import read_idx
    from dlcli.export import export_run
    from dlcli.loading import load_run
    from dlcli.predict import PredictOptions, predict_inputs, read_inputs

    work = Path(tempfile.mkdtemp(prefix="dlcli-bench-predict-"))
    run = Path(args.run) if args.run else train_cnn(args.data, work / "runs", 2000 if args.quick else 60000)
    loaded = load_run(run, "best", "cpu")
    idx = Path(args.data) / "mnist" / "t10k-images-idx3-ubyte.gz"
    n = 1000 if args.quick else 10000
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; run {run.name}; {n} images")

    # -- decoding ------------------------------------------------------------------------------
    images = read_idx(idx)[:n]
    png_dir = work / "png"
    png_dir.mkdir()
    from PIL import Image

    for i, image in enumerate(images):
        Image.fromarray(image).save(png_dir / f"{i:05d}.png")
    options = PredictOptions()
    idx_s = statistics.median(timed(lambda: read_inputs(loaded, [str(idx)], options), reps))
    png_s = statistics.median(timed(lambda: read_inputs(loaded, [str(png_dir)], options), reps))
    print(
        f"decoding: IDX file {idx_s:.3f} s (10,000 images in the file), {n} PNG files {png_s:.3f} s "
        f"({n / png_s:,.0f} images/s)"
    )

    # -- the model pass: dlcli predict against a hand-written inference_mode loop ------------------
    inputs = read_inputs(loaded, [str(png_dir)], options)
    x = inputs.x
    model = loaded.model

    def hand_loop():
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), 1024):
                xb = x[i : i + 1024].float() * (1 / 255)
                outs.append(torch.softmax(model(xb.contiguous(memory_format=torch.channels_last)), 1))
        return torch.cat(outs)

    def dlcli_pass():
        return predict_inputs(loaded, inputs, 1024)

    ours, theirs = [], []
    for rep in range(reps):
        for who in ("dlcli", "hand") if rep % 2 == 0 else ("hand", "dlcli"):
            (ours if who == "dlcli" else theirs).extend(timed(dlcli_pass if who == "dlcli" else hand_loop, 1))
    m, t = statistics.median(ours), statistics.median(theirs)
    print(
        f"predict model pass: dlcli {n / m:,.0f} images/s, hand-written inference_mode loop {n / t:,.0f} "
        f"images/s: throughput ratio {t / m:.3f} (target >= 0.9)"
    )

    # -- ONNX Runtime against eager ---------------------------------------------------------------
    import onnxruntime as ort

    onnx_path = work / "model.onnx"
    export_run(loaded, "onnx", onnx_path)
    from dlcli.export import exportable_module, input_spec

    eager = exportable_module(loaded, input_spec(loaded))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x_np = x.numpy()
    for batch in (1, 256):
        count = min(len(x), 2000 if batch == 1 else len(x))
        chunks = [x[i : i + batch] for i in range(0, count - count % batch, batch)]
        np_chunks = [c.numpy() for c in chunks]

        def run_eager(chunks=chunks):
            with torch.inference_mode():
                for c in chunks:
                    eager(c)

        def run_ort(np_chunks=np_chunks):
            for c in np_chunks:
                session.run(None, {"input": c})

        e = statistics.median(timed(run_eager, reps))
        o = statistics.median(timed(run_ort, reps))
        done = len(chunks) * batch
        print(
            f"batch {batch:>3}: eager PyTorch {done / e:,.0f} images/s, onnxruntime {done / o:,.0f} images/s "
            f"(onnxruntime / eager {e / o:.2f}x)"
        )
    del x_np


if __name__ == "__main__":
    sys.exit(main())
