"""The yardstick: a hand-written PyTorch training loop over whole in-memory tensors.

What a careful person writes without a framework: uint8 images sliced by a seeded
permutation and converted per batch, forward, cross-entropy, backward, Adam step, and the
running loss and accuracy kept on the device (as any loop that reports them must), then a
validation pass. Run alone (`python benchmarks/plain_loop.py --case mlp`) it is the process
whose peak memory `dlcli train` is compared with; with `--test` it also evaluates the test set
after training, as `dlcli train` does (`bench_process.py` times both as whole processes).

Every config in configs/ that trains in reasonable time on a CPU has a case here (`CASES`): the
same model written directly in torch.nn, the optimizer and learning rate its config names (with
Keras's defaults, as dlcli uses them), the same batch size and validation rows, and its data
prepared as the config says (`load_case`): IMDB's multi-hot rows as float32, the tables
standardised with their training rows' mean and std.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
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
REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "examples" / "tabular"

# What each case trains, as its config in configs/ says. dataset: where load_case finds the data;
# val: the validation split (the last fraction, as Keras), val_size: validation rows from the start;
# task: multiclass (cross-entropy), binary (one logit, binary cross-entropy) or regression (mse);
# lr and optimizer as the config names them, schedule: a per-epoch learning-rate schedule.
CASES: dict[str, dict] = {
    "mlp": {"dataset": "fashion_mnist", "batch": 32, "val": 0.0},
    "cnn": {"dataset": "mnist", "batch": 128, "val": 0.1},
    "lstm": {"dataset": "imdb", "batch": 128, "val": 0.2, "task": "binary", "optimizer": "rmsprop"},
    # The config also augments its training batches (flips, 2-pixel shifts); the benchmark turns
    # that off in dlcli's run (dlcli_sets), as this loop has none: it compares the model's step.
    "resnet": {
        "dataset": "fashion_mnist",
        "batch": 128,
        "val": 0.1,
        "schedule": "cosine",
        "dlcli_sets": ["data.augment.horizontal_flip=false", "data.augment.crop_padding=0"],
    },
    "imdb_binary": {
        "dataset": "imdb_multi_hot",
        "batch": 512,
        "val_size": 10_000,
        "task": "binary",
        "optimizer": "rmsprop",
    },
    "imdb_conv1d": {"dataset": "imdb", "batch": 128, "val": 0.2, "task": "binary", "optimizer": "rmsprop"},
    "mnist_lenet5": {"dataset": "mnist", "batch": 128, "val": 0.1, "schedule": "cosine"},
    "iris_mlp": {"dataset": "csv", "table": "iris.csv", "target": "species", "batch": 16, "val": 0.2, "lr": 0.005},
    "wine_mlp": {"dataset": "csv", "table": "wine.csv", "target": "cultivar", "batch": 16, "val": 0.2, "lr": 0.01},
    "breast_cancer_binary": {
        "dataset": "csv",
        "table": "breast_cancer.csv",
        "target": "diagnosis",
        "task": "binary",
        "batch": 16,
        "val": 0.2,
    },
    "diabetes_regression": {
        "dataset": "csv",
        "table": "diabetes.csv",
        "target": "progression",
        "task": "regression",
        "batch": 16,
        "val": 0.2,
        "lr": 0.01,
    },
    # configs/synthetic_quick.yaml: 1,000 generated samples of 20 features in 3 classes, 200 for testing
    "synthetic_quick": {"dataset": "synthetic", "batch": 32, "val": 0.2, "lr": 0.01},
}
IMDB_TRAIN_ROWS = 25_000


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


def _keras_imdb(root: str, num_words: int = 10_000):
    """IMDB's reviews as keras.datasets.imdb.load_data(num_words=...) gives them (through dlcli's
    reader, as the LSTM case does: preparing the data is not what is timed)."""
    import sys

    sys.path.insert(0, str(REPO / "src"))
    from dlcli.data.imdb import keras_sequences

    path = next(p for p in (Path(root) / "imdb.npz", Path(root) / "imdb" / "imdb.npz") if p.is_file())
    return keras_sequences(path, num_words)


def multi_hot(reviews, width: int = 10_000) -> torch.Tensor:
    """The course's vectorize_sequences, straight into float32: a 1.0 at each word of a review."""
    rows = np.zeros((len(reviews), width), dtype=np.float32)
    for i, review in enumerate(reviews):
        rows[i, review] = 1.0
    return torch.from_numpy(rows)


def imdb_validation_size(max_train: int | None, size: int = 10_000) -> int:
    """configs/imdb_binary.yaml holds out the first 10,000 of 25,000 reviews; on the first
    max_train reviews only, the same share of them."""
    if not max_train or max_train >= IMDB_TRAIN_ROWS:
        return size
    return max_train * size // IMDB_TRAIN_ROWS


def stratified_order(labels: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    """The seeded, stratified row order dlcli splits users' tables by (dlcli.data.splits), so the
    hand loop gets the same rows: test first, then validation, training the rest. Where one
    writes sklearn's train_test_split(stratify=y), the rows differ but the work is the same."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if labels is None:
        return perm
    labels = labels[perm]
    grouped = np.argsort(labels, kind="stable")
    sorted_labels = labels[grouped]
    counts = np.bincount(sorted_labels)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    key = (np.arange(n) - starts[sorted_labels] + 0.5) / counts[sorted_labels]
    ties = rng.random(n)
    return perm[grouped[np.lexsort((ties, key))]]


def load_table(spec: dict, max_train: int | None = None, seed: int = 0):
    """A CSV of numbers and one target column, as the table configs prepare it: 20% of the rows
    for testing and 20% of the rest for validation (stratified by class), every feature
    standardised with the training rows' mean and std; class labels in sorted order.
    Returns (x, y, x_val, y_val, x_test, y_test), float32 features."""
    with open(TABLES / spec["table"], newline="") as f:
        header, *rows = list(csv.reader(f))
    target = header.index(spec["target"])
    features = np.array([[float(c) for j, c in enumerate(r) if j != target] for r in rows])
    texts = [r[target] for r in rows]
    task = spec.get("task", "multiclass")
    if task == "regression":
        labels, y = None, np.array([float(t) for t in texts], dtype=np.float32).reshape(-1, 1)
    else:
        numeric = all(t.replace(".", "", 1).isdigit() for t in texts)
        classes = sorted(set(texts), key=float if numeric else None)
        labels = np.array([classes.index(t) for t in texts], dtype=np.int64)
        y = labels.astype(np.float32).reshape(-1, 1) if task == "binary" else labels
    n = len(rows)
    n_test = n - int(n * 0.8)
    n_val = (n - n_test) - int((n - n_test) * (1 - spec["val"]))
    order = stratified_order(labels, n, seed)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :][:max_train]
    columns = features[train].T  # one column at a time, summed in dlcli's order: the same float32 values
    mean = np.array([c.mean() for c in columns])
    std = np.array([c.std() or 1.0 for c in columns])

    def split(rows_):
        return torch.from_numpy(((features[rows_] - mean) / std).astype(np.float32)), torch.from_numpy(y[rows_])

    return (*split(train), *split(val), *split(test))


def load_synthetic(spec: dict, max_train: int | None = None, seed: int = 0):
    """configs/synthetic_quick.yaml's generated data (dlcli's `synthetic` dataset: class centers
    and Gaussian noise from one seeded generator), the last 20% of the 1,000 held out."""
    features, classes, samples, test_samples = 20, 3, 1000, 200
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=gen) * (2.0 / math.sqrt(features))
    y = torch.randint(0, classes, (samples + test_samples,), generator=gen)
    x = centers[y] + 1.0 * torch.randn(samples + test_samples, features, generator=gen)
    x_train, y_train = x[:samples][:max_train], y[:samples][:max_train]
    cut = int(len(x_train) * (1 - spec["val"]))
    return x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:], x[samples:], y[samples:]


def load_case(case: str, root: str, max_train: int | None = None, test: bool = False):
    """(x, y, x_val, y_val, x_test, y_test) of a case, prepared as its config says; the test
    split only with `test` (else None, None). x_val is None where the config holds none out."""
    spec = CASES[case]
    dataset = spec["dataset"]
    if dataset == "csv":
        x, y, xv, yv, xt, yt = load_table(spec, max_train)
    elif dataset == "synthetic":
        x, y, xv, yv, xt, yt = load_synthetic(spec, max_train)
    elif dataset in ("imdb", "imdb_multi_hot"):
        reviews, labels, test_reviews, test_labels = _keras_imdb(root)
        if max_train:
            reviews, labels = reviews[:max_train], labels[:max_train]
        if dataset == "imdb":
            from dlcli.data.sequences import pad_sequences

            def encode(r):
                return torch.from_numpy(pad_sequences(r, 500))
        else:
            encode = multi_hot
        x, y = encode(reviews), torch.from_numpy(labels).float().reshape(-1, 1)
        if dataset == "imdb":  # the last fifth held out
            cut = int(len(x) * (1 - spec["val"]))
            x, y, xv, yv = x[:cut], y[:cut], x[cut:], y[cut:]
        else:  # the first reviews held out
            size = imdb_validation_size(max_train, spec["val_size"])
            x, y, xv, yv = x[size:], y[size:], x[:size], y[:size]
        xt = encode(test_reviews) if test else None
        yt = torch.from_numpy(test_labels).float().reshape(-1, 1) if test else None
    else:
        x, y, xv, yv = load_tensors(dataset, root, spec["val"], max_train)
        if test:
            xt = torch.from_numpy(read_idx(find(root, dataset, "t10k-images-idx3-ubyte"))).unsqueeze(1)
            yt = torch.from_numpy(read_idx(find(root, dataset, "t10k-labels-idx1-ubyte")).astype(np.int64))
        else:
            xt = yt = None
    if not test:
        xt = yt = None
    return x, y, xv, yv, xt, yt


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


class Conv1dClassifier(nn.Module):
    """configs/imdb_conv1d.yaml by hand: Embedding 128, Conv1D 32x7 relu, max-pool 5, Conv1D
    32x7 relu, the maximum over the steps, Dense 1."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10_000, 128)
        self.conv1 = nn.Conv1d(128, 32, 7)
        self.conv2 = nn.Conv1d(32, 32, 7)
        self.fc = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embedding(x).transpose(1, 2)  # (batch, channels, steps) for the convolutions
        h = F.max_pool1d(F.relu(self.conv1(h)), 5)
        return self.fc(F.relu(self.conv2(h)).amax(2))


def make_model(case: str) -> nn.Module:
    if case == "lstm":
        return LstmClassifier()
    if case == "imdb_conv1d":
        return Conv1dClassifier()
    if case == "imdb_binary":  # the course's IMDB classifier on 10,000-wide multi-hot rows
        return nn.Sequential(nn.Linear(10_000, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    if case == "mnist_lenet5":  # LeNet-5 with relu and max pooling, "same" padding on the first convolution
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        )
    if case == "iris_mlp":
        return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    if case == "wine_mlp":
        return nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    if case == "breast_cancer_binary":
        return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    if case == "diabetes_regression":
        return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 1))
    if case == "synthetic_quick":
        return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))
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
    spec = CASES.get(case, {})
    lr = spec.get("lr", 1e-3)
    if case == "lstm" or spec.get("optimizer") == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-7)
    return torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)


def make_schedule(case: str, optimizer: torch.optim.Optimizer, epochs: int):
    """The config's per-epoch learning-rate schedule (stepped after each epoch), or None."""
    if CASES.get(case, {}).get("schedule") == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def hand_written_epoch(
    model, optimizer, x, y, batch_size, generator, x_val=None, y_val=None, precision="fp32", task=None
):
    """One epoch, as lean as a plain loop gets: per-step values stay on the device, summed once.
    task: multiclass, binary or regression (mse, and the mean absolute error as the metric);
    by default binary for float targets, else multiclass."""
    device = next(model.parameters()).device
    autocast = precision == "bf16"
    model.train()
    order = torch.randperm(len(x), generator=generator)
    if order.device != x.device:
        order = order.to(x.device)
    copy = x.device != device
    task = task or ("binary" if y.dtype == torch.float32 else "multiclass")
    binary = task == "binary"  # 0/1 targets (N, 1): sigmoid + binary cross-entropy on logits
    regression = task == "regression"
    loss_fn = F.mse_loss if regression else F.binary_cross_entropy_with_logits if binary else F.cross_entropy
    metric = "mae" if regression else "accuracy"

    def prepare(xb):  # uint8 images -> float in [0, 1]; word ids stay int64
        return xb.float().div_(255) if xb.dtype == torch.uint8 else xb

    def count_correct(out, yb):  # regression: the sum of absolute errors
        if regression:
            return (out - yb).abs().sum()
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
    correct = float(torch.stack(corrects).sum())
    logs = {"loss": loss_sum / len(x), metric: correct / len(x)}
    if x_val is not None:
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            val_loss, val_correct = 0.0, 0
            for start in range(0, len(x_val), max(batch_size, 512)):
                xb = prepare(x_val[start : start + max(batch_size, 512)].to(device))
                yb = y_val[start : start + max(batch_size, 512)].to(device)
                out = model(xb).float()
                val_loss += float(loss_fn(out, yb)) * len(yb)
                val_correct += float(count_correct(out, yb))
        logs.update({"val_loss": val_loss / len(x_val), f"val_{metric}": val_correct / len(x_val)})
    return logs


def evaluate(model, x, y, batch_size: int, task: str = "multiclass") -> dict:
    """The test split's loss and accuracy (mean absolute error for regression), as after training."""
    device = next(model.parameters()).device
    loss_fn = {"regression": F.mse_loss, "binary": F.binary_cross_entropy_with_logits}.get(task, F.cross_entropy)
    model.eval()
    total_loss, total_metric = 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(x), max(batch_size, 512)):
            xb, yb = (
                x[start : start + max(batch_size, 512)].to(device),
                y[start : start + max(batch_size, 512)].to(device),
            )
            out = model(xb.float().div_(255) if xb.dtype == torch.uint8 else xb)
            total_loss += float(loss_fn(out, yb)) * len(yb)
            if task == "regression":
                total_metric += float((out - yb).abs().sum())
            elif task == "binary":
                total_metric += float(((out > 0) == (yb > 0.5)).sum())
            else:
                total_metric += float((out.argmax(1) == yb).sum())
    metric = "mae" if task == "regression" else "accuracy"
    return {"test_loss": total_loss / len(x), f"test_{metric}": total_metric / len(x)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=list(CASES), default="mlp")
    parser.add_argument("--data", default="data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-train", type=int, default=None, help="train on the first N samples only")
    parser.add_argument("--test", action="store_true", help="then evaluate the test split, as dlcli train does")
    args = parser.parse_args()
    spec = CASES[args.case]
    task = spec.get("task", "multiclass")
    x, y, xv, yv, xt, yt = load_case(args.case, args.data, args.max_train, test=args.test)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(args.case).to(device)
    optimizer = make_optimizer(args.case, model)
    schedule = make_schedule(args.case, optimizer, args.epochs)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        print(epoch + 1, hand_written_epoch(model, optimizer, x, y, spec["batch"], gen, xv, yv, task=task))
        if schedule is not None:
            schedule.step()
    if xt is not None:
        print("test", evaluate(model, xt, yt, spec["batch"], task))


if __name__ == "__main__":
    main()
