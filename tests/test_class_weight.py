"""training.class_weight (in the loss, as Keras weighs samples; "balanced" as scikit-learn
computes it) and training.decision_threshold (auto: the best validation F1, used by evaluate and
predict)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke, synthetic_config, trained_run, write_config
from test_metrics import one_paragraph  # exit 2, one paragraph, no traceback, the words

MODEL = {"preset": "mlp", "hidden": [8]}


def two_gaussians(path: Path, n_major: int = 4000, n_minor: int = 200, seed: int = 0) -> Path:
    """Two overlapping 2-D Gaussian classes at 20:1 (means 1.5 standard deviations apart), seeded."""
    rng = np.random.default_rng(seed)
    major = rng.normal(0.0, 1.0, (n_major, 2))
    minor = rng.normal(1.5 / np.sqrt(2), 1.0, (n_minor, 2))
    rows = [(a, b, "common") for a, b in major] + [(a, b, "rare") for a, b in minor]
    order = rng.permutation(len(rows))
    lines = ["x1,x2,label"] + [f"{rows[i][0]:.6f},{rows[i][1]:.6f},{rows[i][2]}" for i in order]
    path.write_text("\n".join(lines) + "\n")
    return path


def gaussian_config(tmp_path: Path, name: str, **training) -> Path:
    raw = {
        "name": name,
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "csv",
            "path": str(two_gaussians(tmp_path / "gaussians.csv")),
            "target": "label",
            "validation_split": 0.2,
            "test_split": 0.25,
        },
        "model": MODEL,
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 4, "batch_size": 64, **training},
    }
    return write_config(tmp_path / f"{name}.yaml", raw)


def minority_recall(run_dir: Path) -> float:
    result = invoke("evaluate", run_dir, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["classification_report"]["rare"]["recall"]


def test_balanced_weights_raise_the_minority_recall(tmp_path):
    plain = trained_run(gaussian_config(tmp_path, "plain"), tmp_path / "runs")
    weighted = trained_run(gaussian_config(tmp_path, "weighted", class_weight="balanced"), tmp_path / "runs")
    before, after = minority_recall(plain), minority_recall(weighted)
    assert after - before >= 0.15, (before, after)


def test_balanced_is_sklearns_formula_on_the_training_split_and_recorded(tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    from dlcli.data import load_dataset
    from dlcli.loading import load_run

    run_dir = trained_run(gaussian_config(tmp_path, "w", epochs=1, class_weight="balanced"), tmp_path / "runs")
    recorded = json.loads((run_dir / "results.json").read_text())["class_weight"]
    run = load_run(run_dir, "last", device="cpu")
    data = load_dataset(run.config.data, run.config.seed, preprocessing=run.preprocessing)
    labels = data.y_train.numpy()
    expected = compute_class_weight("balanced", classes=np.arange(2), y=labels)
    names = list(run.plan.info.class_names)
    assert [recorded[n] for n in names] == pytest.approx(expected.tolist(), abs=1e-12)


def test_the_weighted_loss_is_the_batch_mean_of_weighted_sample_losses():
    from dlcli.losses import make_objective

    torch.manual_seed(0)
    logits, y = torch.randn(10, 3), torch.randint(0, 3, (10,))
    weights = [0.5, 2.0, 3.0]
    loss = make_objective("sparse_categorical_crossentropy", "multiclass", 3, 0.1, weights).loss_fn(logits, y)
    per = torch.nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)
    assert float(loss) == pytest.approx(float((per * torch.tensor(weights)[y]).mean()), rel=1e-6)
    out, target = torch.randn(10, 1), torch.randint(0, 2, (10, 1)).float()
    bce = make_objective("binary_crossentropy", "binary", 2, 0.0, [1.0, 4.0]).loss_fn(out, target)
    per = torch.nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
    assert float(bce) == pytest.approx(float((per * (1 + 3 * target)).mean()), rel=1e-6)


def test_a_mapping_weighs_the_named_classes_and_leaves_the_others_at_one(tmp_path):
    run_dir = trained_run(gaussian_config(tmp_path, "m", epochs=1, class_weight={"rare": 5}), tmp_path / "runs")
    assert json.loads((run_dir / "results.json").read_text())["class_weight"] == {"common": 1.0, "rare": 5.0}


def test_class_weights_are_exact_on_resume(tmp_path):
    runs = tmp_path / "runs"
    straight = trained_run(gaussian_config(tmp_path, "straight", epochs=3, class_weight="balanced"), runs)
    halted = trained_run(gaussian_config(tmp_path, "halted", epochs=1, class_weight="balanced"), runs)
    resumed = invoke("train", "--resume", halted, "--set", "training.epochs=3", "--runs-dir", runs, "-q")
    assert resumed.exit_code == 0, resumed.output

    def rows(run_dir):  # every value but the timing column
        lines = (run_dir / "metrics.csv").read_text().splitlines()
        return [line.rsplit(",", 1)[0] for line in lines]

    assert rows(straight) == rows(halted)


def test_an_unknown_class_names_the_nearest(tmp_path):
    config = gaussian_config(tmp_path, "bad", class_weight={"rar": 2.0})
    one_paragraph(invoke("train", config, "--runs-dir", tmp_path / "runs"), "'rar'", "common, rare", "'rare'")
    assert not (tmp_path / "runs").exists()


def test_a_negative_weight_is_refused(tmp_path):
    config = gaussian_config(tmp_path, "bad", class_weight={"rare": -1.0})
    one_paragraph(invoke("train", config, "--runs-dir", tmp_path / "runs"), "training.class_weight", "negative")


def test_class_weight_on_regression_is_refused(tmp_path):
    raw = synthetic_config(class_weight="balanced")
    raw["data"]["synthetic"]["task"] = "regression"
    raw["loss"] = "mse"
    config = write_config(tmp_path / "c.yaml", raw)
    one_paragraph(invoke("train", config, "--runs-dir", tmp_path / "runs"), "training.class_weight", "real numbers")


# -- the decision threshold ---------------------------------------------------------------------------


def test_auto_threshold_is_saved_and_used_by_evaluate_and_predict(tmp_path):
    from sklearn.metrics import f1_score

    run_dir = trained_run(gaussian_config(tmp_path, "t", decision_threshold="auto"), tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    threshold = results["decision_threshold"]
    assert 0 < threshold < 1 and threshold != 0.5
    report = json.loads(invoke("evaluate", run_dir, "--json").output)
    assert report["threshold"] == threshold
    assert report["classification_report"]["rare"]["f1-score"] == pytest.approx(
        results["test_per_class"]["rare"]["f1"], abs=1e-9
    )
    # predict on the table's own rows: its decisions are probability > the saved threshold
    out = tmp_path / "p.csv"
    assert invoke("predict", run_dir, tmp_path / "gaussians.csv", "--out", out).exit_code == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    p_rare = np.array([float(r["p_rare"]) for r in rows])
    assert [r["predicted"] == "rare" for r in rows] == (p_rare > threshold).tolist()
    truth = [r["true"] == "rare" for r in rows]
    assert f1_score(truth, p_rare > threshold) >= f1_score(truth, p_rare > 0.5) - 0.05


def test_the_auto_threshold_maximises_validation_f1(tmp_path):
    from sklearn.metrics import f1_score

    import test_metrics

    run_dir = trained_run(gaussian_config(tmp_path, "t", decision_threshold="auto"), tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    run, outputs, targets, _ = test_metrics.split_outputs(run_dir, "best", "val")
    y, probs, _ = test_metrics.sklearn_view(run, outputs, targets)
    chosen = f1_score(y, probs[:, 1] > results["decision_threshold"])
    assert chosen == pytest.approx(results["decision_threshold_val_f1"], abs=1e-9)
    assert chosen >= max(f1_score(y, probs[:, 1] >= t) for t in np.unique(probs[:, 1])) - 1e-9


def test_a_given_threshold_decides_the_test_metrics_and_the_report(tmp_path):
    from sklearn.metrics import classification_report

    import test_metrics

    run_dir = trained_run(gaussian_config(tmp_path, "t", epochs=2, decision_threshold=0.2), tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["decision_threshold"] == 0.2
    report = json.loads(invoke("evaluate", run_dir, "--json").output)
    assert report["threshold"] == 0.2
    run, outputs, targets, _ = test_metrics.split_outputs(run_dir, "best", "test")
    y, probs, _ = test_metrics.sklearn_view(run, outputs, targets)
    theirs = classification_report(
        y, (probs[:, 1] > 0.2).astype(int), target_names=["common", "rare"], output_dict=True, zero_division=0
    )
    test_metrics.assert_same_report(report["classification_report"], theirs)
    assert results["test_accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-9)
