"""Moving digits: video folders made from the real MNIST digits, whose label needs time to tell.

The construction of Moving MNIST (Srivastava, Mansimov and Salakhutdinov, 2015, "Unsupervised
Learning of Video Representations using LSTMs"): a 28x28 digit moving inside a 64x64 frame for
16 frames. Here the digit moves in a straight line (no bouncing) and the label is the direction
of motion, one of four classes: left, right, up, down. No single frame tells it: the digit's
position in any one frame has the same distribution in every class (the coordinate along the
motion is centre + (t - 7.5) * speed, and the other coordinate is drawn the same way with its
own time and speed), and the digits are drawn at random whatever the direction.

    python benchmarks/make_moving_digits.py data/moving_digits             # 2,000 train + 500 test clips
    python benchmarks/make_moving_digits.py data/moving_still --still      # the control: one frame repeated

`--still` writes each clip as one of its frames (at a random time) repeated 16 times: the
control of "needs time", which a model should get no better than chance (0.25) on.

Clips are MP4 (H.264 through PyAV, `pip install "dlcli[video]"`), grayscale content in yuv420p,
written as root/train/<direction>/clip_00000.mp4 and root/test/<direction>/...; the training
clips use MNIST's training digits and the test clips its test digits.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
import time
from pathlib import Path

import numpy as np

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx) per frame
FRAME = 64
DIGIT = 28
FRAMES = 16
SPEEDS = (1, 2)  # pixels per frame
MNIST = Path("/work/shared/data/mnist")


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    sys.exit(f"{folder} has no {stem}(.gz): point --mnist at the folder of MNIST's IDX files.")


def coordinate(rng: np.random.Generator) -> tuple[float, int]:
    """A centre and a speed: positions centre + (t - 7.5) * speed stay inside the frame."""
    speed = int(rng.choice(SPEEDS))
    half = (FRAMES - 1) * speed / 2
    return float(rng.uniform(half, FRAME - DIGIT - half)), speed


def clip(digit: np.ndarray, direction: str, rng: np.random.Generator, still: bool) -> np.ndarray:
    """16 frames 64x64 uint8 of the digit moving in `direction` (or one of them repeated)."""
    dy, dx = DIRECTIONS[direction]
    along, speed = coordinate(rng)
    across, across_speed = coordinate(rng)
    across_t = rng.integers(0, FRAMES)  # the fixed coordinate drawn as a moving one would be
    across_pos = across + (across_t - (FRAMES - 1) / 2) * across_speed
    frames = np.zeros((FRAMES, FRAME, FRAME), dtype=np.uint8)
    sign = dy + dx  # +1 moving down or right, -1 up or left
    for t in range(FRAMES):
        pos = along + sign * (t - (FRAMES - 1) / 2) * speed
        y, x = (pos, across_pos) if dy else (across_pos, pos)
        y, x = int(round(y)), int(round(x))
        frames[t, y : y + DIGIT, x : x + DIGIT] = digit
    if still:
        frames[:] = frames[rng.integers(0, FRAMES)]
    return frames


def write_mp4(path: Path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width = frames.shape[1:]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder to write (train/ and test/ class folders)")
    parser.add_argument("--train", type=int, default=2000, help="training clips (default 2000)")
    parser.add_argument("--test", type=int, default=500, help="test clips (default 500)")
    parser.add_argument("--still", action="store_true", help="each clip one frame repeated: the control")
    parser.add_argument("--mnist", type=Path, default=MNIST, help="the folder of MNIST's IDX files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for split, count, stem in (("train", args.train, "train"), ("test", args.test, "t10k")):
        digits = read_idx(find(args.mnist, f"{stem}-images-idx3-ubyte"))
        names = list(DIRECTIONS)
        for name in names:
            (args.root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            direction = names[i % len(names)]  # balanced classes
            digit = digits[rng.integers(0, len(digits))]
            write_mp4(args.root / split / direction / f"clip_{i:05d}.mp4", clip(digit, direction, rng, args.still))
    seconds = time.perf_counter() - start
    kind = "still (one frame repeated)" if args.still else "moving"
    print(f"Wrote {args.train} training and {args.test} test clips ({kind}) under {args.root} in {seconds:.1f} s.")


if __name__ == "__main__":
    main()
