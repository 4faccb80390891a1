"""The yardstick: a hand-written PyTorch training loop over whole in-memory tensors.

What a careful person writes without a framework: uint8 images sliced by a seeded
permutation and converted per batch, forward, cross-entropy, backward, Adam step, and the
running loss and accuracy kept on the device (as any loop that reports them must), then a
validation pass. Run alone (`python benchmarks/plain_loop.py --case mlp`) it is the process
whose peak memory `dlcli train` is compared with; with `--test` it also reads the test files and
evaluates the test set after training, as `dlcli train` does (`bench_process.py` times both as
whole processes).
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IDX = {
    "x": "train-images-idx3-ubyte",
    "y": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FOLDERS = {
    "mnist": ["mnist", "MNIST/raw", "."],
    "fashion_mnist": ["fashion_mnist", "fashion-mnist", "FashionMNIST/raw", ".", "/usr/share/datasets/fashion-mnist"],
}


def read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def find(root: str, dataset: str, stem: str) -> Path:
    for folder in FOLDERS[dataset]:
        base = Path(folder) if folder.startswith("/") else Path(root) / folder
        for name in (stem + ".gz", stem):
            if (base / name).is_file():
                return base / name
    raise FileNotFoundError(f"{stem} of {dataset} not found under {root}")


def load_tensors(dataset: str, root: str, validation_split: float = 0.0, max_train: int | None = None):
    """uint8 images (N, 1, 28, 28) and int64 labels, validation = the last fraction (as Keras)."""
    x = torch.from_numpy(read_idx(find(root, dataset, IDX["x"]))).unsqueeze(1)
    y = torch.from_numpy(read_idx(find(root, dataset, IDX["y"])).astype(np.int64))
    if max_train:
        x, y = x[:max_train], y[:max_train]
    if validation_split:
        cut = int(len(x) * (1 - validation_split))
        return x[:cut], y[:cut], x[cut:], y[cut:]
    return x, y, None, None


def load_test_tensors(dataset: str, root: str):
    """The test split's uint8 images (N, 1, 28, 28) and int64 labels."""
    x = torch.from_numpy(read_idx(find(root, dataset, IDX["x_test"]))).unsqueeze(1)
    y = torch.from_numpy(read_idx(find(root, dataset, IDX["y_test"])).astype(np.int64))
    return x, y


def evaluate(model, x, y, batch_size: int = 512) -> dict:
    """Test loss and accuracy in eval mode, batches of 512, as a plain script reports them."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].float().div_(255)
            yb = y[start : start + batch_size]
            out = model(xb)
            loss_sum += float(F.cross_entropy(out, yb)) * len(yb)
            correct += int((out.argmax(1) == yb).sum())
    model.train()
    return {"test_loss": loss_sum / len(x), "test_accuracy": correct / len(x)}


def load_imdb_sequences(root: str, length: int = 500, validation_split: float = 0.2, max_train: int | None = None):
    """IMDB's training reviews as int64 word ids (Keras's load_data and pad_sequences, through
    dlcli's readers: the data preparation is not what is timed) and float 0/1 targets (N, 1)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dlcli.data.imdb import keras_sequences, pad_sequences

    path = next(p for p in (Path(root) / "imdb.npz", Path(root) / "imdb" / "imdb.npz") if p.is_file())
    reviews, labels, _, _ = keras_sequences(path, 10_000)
    x = torch.from_numpy(pad_sequences(reviews, length))
    y = torch.from_numpy(labels).float().reshape(-1, 1)
    if max_train:
        x, y = x[:max_train], y[:max_train]
    cut = int(len(x) * (1 - validation_split))
    return x[:cut], y[:cut], x[cut:], y[cut:]


class LstmClassifier(nn.Module):
    """Embedding 32, LSTM 32, Dense 1 on the last hidden state: configs/imdb_lstm.yaml by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10_000, 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embedding(x))
        return self.fc(h[-1])


def make_model(case: str) -> nn.Module:
    if case == "lstm":
        return LstmClassifier()
    if case == "resnet":  # torchvision's ResNet-18 for 1-channel images and 10 classes, as usually adapted
        import torchvision

        model = torchvision.models.resnet18(num_classes=10)
        model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model
    if case == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(1600, 10),
    )


def make_optimizer(case: str, model: nn.Module) -> torch.optim.Optimizer:
    """What each config names, with Keras's defaults as dlcli uses them."""
    if case == "lstm":
        return torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    return torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)


def hand_written_epoch(model, optimizer, x, y, batch_size, generator, x_val=None, y_val=None, precision="fp32"):
    """One epoch, as lean as a plain loop gets: per-step values stay on the device, summed once."""
    device = next(model.parameters()).device
    autocast = precision == "bf16"
    model.train()
    order = torch.randperm(len(x), generator=generator)
    if order.device != x.device:
        order = order.to(x.device)
    copy = x.device != device
    binary = y.dtype == torch.float32  # 0/1 targets (N, 1): sigmoid + binary cross-entropy on logits
    loss_fn = F.binary_cross_entropy_with_logits if binary else F.cross_entropy

    def prepare(xb):  # uint8 images -> float in [0, 1]; word ids stay int64
        return xb.float().div_(255) if xb.dtype == torch.uint8 else xb

    def count_correct(out, yb):
        return ((out > 0) == (yb > 0.5)).sum() if binary else (out.argmax(1) == yb).sum()

    losses, corrects, sizes = [], [], []
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]
        if copy:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        xb = prepare(xb)
        if autocast:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(xb)
                loss = loss_fn(out.float(), yb)
        else:
            out = model(xb)
            loss = loss_fn(out, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        corrects.append(count_correct(out.detach(), yb))
        sizes.append(len(yb))
    loss_sum = float((torch.stack(losses) * torch.tensor(sizes, device=device)).sum())
    correct = int(torch.stack(corrects).sum())
    logs = {"loss": loss_sum / len(x), "accuracy": correct / len(x)}
    if x_val is not None:
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            val_loss, val_correct = 0.0, 0
            for start in range(0, len(x_val), max(batch_size, 512)):
                xb = prepare(x_val[start : start + max(batch_size, 512)].to(device))
                yb = y_val[start : start + max(batch_size, 512)].to(device)
                out = model(xb).float()
                val_loss += float(loss_fn(out, yb)) * len(yb)
                val_correct += int(count_correct(out, yb))
        logs.update(val_loss=val_loss / len(x_val), val_accuracy=val_correct / len(x_val))
    return logs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["mlp", "cnn", "lstm", "resnet"], default="mlp")
    parser.add_argument("--data", default="data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-train", type=int, help="use only the first N training samples")
    parser.add_argument("--test", action="store_true", help="evaluate the test set after training (mlp, cnn)")
    args = parser.parse_args()
    dataset, batch, val = {
        "mlp": ("fashion_mnist", 32, 0.0),
        "cnn": ("mnist", 128, 0.1),
        "lstm": ("imdb", 128, 0.2),
        "resnet": ("fashion_mnist", 128, 0.1),
    }[args.case]
    if dataset == "imdb":
        x, y, xv, yv = load_imdb_sequences(args.data, 500, val, args.max_train)
    else:
        x, y, xv, yv = load_tensors(dataset, args.data, val, args.max_train)
    if args.test and dataset == "imdb":
        parser.error("--test reads IDX test files: only for mlp and cnn")
    x_test, y_test = load_test_tensors(dataset, args.data) if args.test else (None, None)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(args.case).to(device)
    optimizer = make_optimizer(args.case, model)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        print(epoch + 1, hand_written_epoch(model, optimizer, x, y, batch, gen, xv, yv))
    if x_test is not None:
        print(evaluate(model, x_test.to(device), y_test.to(device)))


if __name__ == "__main__":
    main()
