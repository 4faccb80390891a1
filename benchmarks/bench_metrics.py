"""Two measurements for issue 30's metrics (see benchmarks/README.md):

`--part weights`: class weights on an imbalanced real table. breast_cancer.csv (examples/tabular/)
with the malignant class subsampled to one per ten benign (seeded), trained with and without
`training.class_weight: balanced` at each of 5 seeds (the seed draws the subsample and seeds
the run); prints the minority (malignant) recall and the macro F1 on the test split
(`dlcli evaluate`'s classification report), each run's and their means.

`--part cost`: what training.metrics costs the course's MNIST CNN. One model and one trainer;
the validation pass is timed with and without the metric objects (precision, recall, f1, auc,
pr_auc, top-5 accuracy), alternating, beside training epochs; the cost is the extra seconds of
the validation pass as a share of a whole epoch (training plus plain validation), median over
repetitions. Real MNIST from --data when found, else random images of its shape.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

TABLE = ROOT / "examples" / "tabular" / "breast_cancer.csv"
METRICS = ["precision", "recall", "f1", "auc", "pr_auc", {"top_k_accuracy": {"k": 5}}]


# -- class weights on breast cancer at 1:10 ------------------------------------------------------


def subsampled_table(folder: Path, seed: int, ratio: int = 10) -> tuple[Path, int, int]:
    """breast_cancer.csv with malignant rows kept at one per `ratio` benign, drawn with `seed`."""
    import numpy as np

    header, *rows = TABLE.read_text().splitlines()
    benign = [r for r in rows if r.rsplit(",", 1)[1] == "benign"]
    malignant = [r for r in rows if r.rsplit(",", 1)[1] == "malignant"]
    rng = np.random.default_rng(seed)
    keep = max(len(benign) // ratio, 1)
    chosen = [malignant[i] for i in sorted(rng.choice(len(malignant), keep, replace=False))]
    kept = benign + chosen
    order = rng.permutation(len(kept))
    path = folder / f"breast_cancer_1to{ratio}_seed{seed}.csv"
    path.write_text("\n".join([header, *(kept[i] for i in order)]) + "\n")
    return path, len(benign), keep


def train_and_report(table: Path, seed: int, runs: Path, class_weight, epochs: int) -> dict:
    from rich.console import Console

    from dlcli.config import load_config
    from dlcli.evaluation import evaluate_run
    from dlcli.training import train

    raw = {
        "name": f"bc_seed{seed}_{'balanced' if class_weight else 'plain'}",
        "seed": seed,
        "device": "cpu",
        "data": {
            "dataset": "csv",
            "path": str(table),
            "target": "diagnosis",
            "validation_split": 0.2,
            "test_split": 0.25,
        },
        "model": {"preset": "binary", "hidden": [16, 16]},
        "loss": "binary_crossentropy",
        "optimizer": {"name": "adam", "lr": 0.001},
        "training": {"epochs": epochs, "batch_size": 16, **({"class_weight": class_weight} if class_weight else {})},
    }
    outcome = train(
        load_config(None, raw=raw), runs_dir=runs, console=Console(file=io.StringIO()), quiet=True, draw_plots=False
    )
    report = evaluate_run(outcome.run_dir, "best", "test")["classification_report"]
    return {
        "recall": report["malignant"]["recall"],
        "macro_f1": report["macro avg"]["f1-score"],
        "test_malignant": report["malignant"]["support"],
    }


def class_weight_part(seeds: int, epochs: int) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for seed in range(seeds):
            table, benign, malignant = subsampled_table(folder, seed)
            plain = train_and_report(table, seed, folder / "runs", None, epochs)
            weighted = train_and_report(table, seed, folder / "runs", "balanced", epochs)
            rows.append({"seed": seed, "benign": benign, "malignant": malignant, "plain": plain, "balanced": weighted})
            print(
                f"seed {seed}: {benign} benign, {malignant} malignant ({plain['test_malignant']} in the test split) | "
                f"recall {plain['recall']:.3f} -> {weighted['recall']:.3f} | "
                f"macro F1 {plain['macro_f1']:.3f} -> {weighted['macro_f1']:.3f}",
                flush=True,
            )
    means = {
        side: {m: statistics.mean(r[side][m] for r in rows) for m in ("recall", "macro_f1")}
        for side in ("plain", "balanced")
    }
    print(
        f"mean over {seeds} seeds: malignant recall {means['plain']['recall']:.3f} (plain) -> "
        f"{means['balanced']['recall']:.3f} (balanced); macro F1 {means['plain']['macro_f1']:.3f} -> "
        f"{means['balanced']['macro_f1']:.3f}"
    )
    return {"runs": rows, "means": means}


# -- the metrics' cost on the course CNN -------------------------------------------------------------


def cnn_experiment(data_root: Path, max_train: int, device: str):
    from dlcli.config import load_config
    from dlcli.distributed import Distributed
    from dlcli.plan import plan_experiment
    from dlcli.training import build_experiment, choose_device

    found = (data_root / "mnist" / "train-images-idx3-ubyte.gz").exists()
    data = {"dataset": "mnist", "root": str(data_root), "validation_split": 0.1, "max_train_samples": max_train}
    if not found:
        data = {
            "dataset": "synthetic",
            "validation_split": 0.1,
            "synthetic": {
                "task": "multiclass",
                "input_shape": [1, 28, 28],
                "classes": 10,
                "samples": max_train * 10 // 9,
                "test_samples": 0,
            },
        }
    raw = {
        "name": "cnn_metrics_cost",
        "device": device,
        "data": data,
        "model": {
            "layers": [
                {"conv2d": {"filters": 32, "kernel_size": 3, "activation": "relu"}},
                {"maxpool2d": {"pool_size": 2}},
                {"conv2d": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
                {"maxpool2d": {"pool_size": 2}},
                {"flatten": {}},
                {"dropout": {"rate": 0.5}},
                {"dense": {"units": 10, "activation": "softmax"}},
            ]
        },
        "loss": "categorical_crossentropy",
        "optimizer": {"name": "adam"},
        "training": {"epochs": 1, "batch_size": 128, "metrics": METRICS},
    }
    config = load_config(None, raw=raw)
    plan = plan_experiment(config)
    dist = Distributed()
    exp = build_experiment(config, plan, choose_device(config, dist), dist)
    return exp, dist, found


def cost_part(data_root: Path, max_train: int, reps: int, device: str) -> dict:
    import torch

    from dlcli.engine import Trainer

    exp, dist, real = cnn_experiment(data_root, max_train, device)
    train, val, _ = exp.batches(dist)
    objective = exp.objective
    trainer = Trainer(
        exp.model,
        exp.optimizer,
        objective.loss_fn,
        objective.metric_sum,
        metric_name=objective.metric_name,
        device=exp.device,
    )

    def timed(fn) -> float:
        if exp.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if exp.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def evaluate(with_metrics: bool):
        trainer.eval_metrics = exp.eval_metrics if with_metrics else None
        return trainer.evaluate(val, prefix="val_")

    trainer.epoch = 1
    trainer.train_one_epoch(train)  # warm-up: first-call allocations and kernels
    evaluate(True), evaluate(False)
    epochs, plain, extra = [], [], []
    for rep in range(reps):
        trainer.epoch = rep + 2
        epochs.append(timed(lambda: trainer.train_one_epoch(train)))
        first, second = (True, False) if rep % 2 == 0 else (False, True)  # alternate which goes first
        for flag in (first, second):
            (extra if flag else plain).append(timed(lambda flag=flag: evaluate(flag)))
    logs = evaluate(True)
    epoch = statistics.median(epochs) + statistics.median(plain)
    added = statistics.median(extra) - statistics.median(plain)
    result = {
        "data": "MNIST" if real else "random images of MNIST's shape",
        "device": str(exp.device),
        "train_samples": len(exp.data.x_train),
        "val_samples": len(exp.data.x_val),
        "train_epoch_s": statistics.median(epochs),
        "val_pass_s": statistics.median(plain),
        "val_pass_with_metrics_s": statistics.median(extra),
        "cost_share_of_epoch": added / epoch,
        "columns": sorted(k for k in logs if k.startswith("val_")),
    }
    print(
        f"{result['data']} on {result['device']}: {result['train_samples']} training and {result['val_samples']} "
        f"validation images; training {result['train_epoch_s']:.3f} s, validation {result['val_pass_s']:.3f} s, "
        f"with the metrics {result['val_pass_with_metrics_s']:.3f} s: +{100 * result['cost_share_of_epoch']:.2f} % "
        f"of the epoch (median of {reps})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["weights", "cost", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50, help="weights: epochs per run (the config's 50)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="cost: holds mnist/")
    parser.add_argument("--max-train", type=int, default=54000, help="cost: training images (54,000: all)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {}
    if args.part in ("weights", "all"):
        results["class_weight"] = class_weight_part(args.seeds, args.epochs)
    if args.part in ("cost", "all"):
        results["cost"] = cost_part(args.data, args.max_train, args.reps, args.device)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
