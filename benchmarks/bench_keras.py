"""The course's MNIST CNN in Keras 3 (torch backend, its default settings) against dlcli in fp32 and
with `training.precision: auto`, in one run on one machine: steady epoch times and the ratios.
(the speed issue's target: Keras at least 3x slower than dlcli's CNN where the CPU has native bf16)

Keras trains `configs/mnist_cnn.yaml`'s network as the course writes it: Conv2D 32 and 64 (3x3,
ReLU), max pooling, Flatten, Dropout 0.5, Dense 10 softmax; Adam, categorical cross-entropy,
batch 128, `validation_split=0.1`; images as float32 / 255 in Keras's channels-last order.
It runs in its own process (KERAS_BACKEND=torch must be set before Keras is imported), on the same
PyTorch, with the same thread count. dlcli runs the shipped config on the same files. The
three alternate, `--reps` times; each run's epochs after the first are its steady epochs.

    pip install keras          # or: pip install --target DIR keras, then --keras-path DIR
    python benchmarks/bench_keras.py --data ../shared/data --epochs 3 --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

KERAS_WORKER = """
import json, sys, time
import numpy as np
import keras
from keras import layers
from dlcli.data.vision import read_idx

from pathlib import Path

root, epochs = Path(sys.argv[1]) / "mnist", int(sys.argv[2])

def idx(name):
    return read_idx(root / name if (root / name).exists() else root / (name + ".gz"))

x = idx("train-images-idx3-ubyte").astype("float32")[..., None] / 255.0
y = keras.utils.to_categorical(idx("train-labels-idx1-ubyte"), 10)
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
    layers.MaxPooling2D(pool_size=(2, 2)),
    layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
    layers.MaxPooling2D(pool_size=(2, 2)),
    layers.Flatten(),
    layers.Dropout(0.5),
    layers.Dense(10, activation="softmax"),
])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        seconds.append(time.perf_counter() - self.start)

seconds = []
history = model.fit(x, y, batch_size=128, epochs=epochs, validation_split=0.1, verbose=0, callbacks=[Clock()])
print(json.dumps({"seconds": seconds, "val_accuracy": history.history["val_accuracy"][-1],
                  "keras": keras.__version__, "backend": keras.backend.backend()}))
"""


def keras_epochs(data: str, epochs: int, keras_path: str | None) -> dict:
    env = dict(os.environ, KERAS_BACKEND="torch")
    paths = [p for p in (keras_path, str(HERE.parent / "src"), env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.run(
        [sys.executable, "-c", KERAS_WORKER, data, str(epochs)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"Keras's run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data.root holding mnist/ (MNIST's IDX files)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--keras-path", help="a folder to put first on Keras's PYTHONPATH (pip install --target)")
    parser.add_argument("--json")
    args = parser.parse_args()
    from bench_train import dlcli_epochs, dlcli_overrides
    from dlcli.devices import cpu_bf16_native

    base = dlcli_overrides("cnn", args.data, "cpu", None)
    sides = {"keras": [], "dlcli fp32": [], "dlcli auto": []}
    notes: dict = {}
    for rep in range(args.reps):
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        for side in order:
            if side == "keras":
                run = keras_epochs(args.data, args.epochs, args.keras_path)
                notes["keras"] = {k: run[k] for k in ("keras", "backend", "val_accuracy")}
            else:
                precision = "fp32" if side == "dlcli fp32" else "auto"
                result = dlcli_epochs("cnn", args.data, args.epochs, "cpu", [*base, f"training.precision={precision}"])
                run = {"seconds": result["seconds"]}
                info, logs = result["run_info"], result["logs"]
                notes[side] = {"precision": info.get("precision"), "val_accuracy": logs.get("val_accuracy")}
            sides[side] += run["seconds"][1:]
            print(f"rep {rep + 1} {side:10}: epochs {', '.join(f'{s:.2f}' for s in run['seconds'])} s", flush=True)
    medians = {side: statistics.median(times) for side, times in sides.items()}
    print(f"\nnative bf16 on this CPU: {cpu_bf16_native()}; {notes}")
    print(f"{'side':12} {'median steady epoch s':>22} {'Keras / this':>13}")
    for side, median in medians.items():
        print(f"{side:12} {median:22.2f} {medians['keras'] / median:13.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": medians, "epochs": sides, "notes": notes}, indent=1))


if __name__ == "__main__":
    main()
