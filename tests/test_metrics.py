"""training.metrics and `dlcli evaluate`'s report: every number equals scikit-learn's on the same
predictions (to 1e-6), on the shipped tables, an image folder and seeded random scores with ties;
directions are declared; the accumulation reads nothing back per batch; bad input is one paragraph."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke, synthetic_config, trained_run, write_config
from dlcli import metrics as M

sklearn_metrics = pytest.importorskip("sklearn.metrics")
TABLES = Path(__file__).resolve().parents[1] / "examples" / "tabular"
TOL = 1e-6


# -- the functions, against scikit-learn on seeded scores -----------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_and_average_precision_equal_sklearns_with_and_without_ties(seed, ties):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300) * 0.6 + labels * 0.3
    if ties:
        scores = np.round(scores, 1)  # about ten distinct values: many tied scores across classes
    s, y = torch.tensor(scores), torch.tensor(labels).bool()
    assert M.roc_auc(s, y) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=TOL)
    assert M.average_precision(s, y) == pytest.approx(sklearn_metrics.average_precision_score(labels, scores), abs=TOL)


def test_one_class_present_has_no_auc():
    assert math.isnan(M.roc_auc(torch.tensor([0.1, 0.7]), torch.tensor([True, True])))
    assert math.isnan(M.average_precision(torch.tensor([0.1, 0.7]), torch.tensor([False, False])))


@pytest.mark.parametrize("classes", [2, 3, 7])
def test_classification_report_equals_sklearns(classes):
    rng = np.random.default_rng(classes)
    actual = rng.integers(0, classes, 200)
    predicted = np.where(rng.random(200) < 0.6, actual, rng.integers(0, classes, 200))
    predicted[predicted == classes - 1] = 0  # a class never predicted: its precision is 0/0
    names = [f"c{i}" for i in range(classes)]
    confusion = sklearn_metrics.confusion_matrix(actual, predicted, labels=range(classes)).tolist()
    ours = M.classification_report(confusion, names)
    theirs = sklearn_metrics.classification_report(
        actual, predicted, labels=range(classes), target_names=names, output_dict=True, zero_division=0
    )
    assert_same_report(ours, theirs)


def assert_same_report(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs), (set(ours), set(theirs))
    for key, row in theirs.items():
        if isinstance(row, dict):
            for field in ("precision", "recall", "f1-score", "support"):
                assert ours[key][field] == pytest.approx(row[field], abs=TOL), (key, field)
        else:
            assert ours[key] == pytest.approx(row, abs=TOL), key


def test_multilabel_report_equals_sklearns_rows_and_averages():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, (150, 4))
    p = np.where(rng.random((150, 4)) < 0.7, y, 1 - y)
    p[:, 3] = 0  # a label never predicted
    tp, fp, fn, tn = ((p & y).sum(0), (p & ~y & 1).sum(0), (~p & 1 & y).sum(0), ((1 - p) & (1 - y)).sum(0))
    names = list("abcd")
    ours = M.multilabel_report(tp.tolist(), fp.tolist(), fn.tolist(), tn.tolist(), names)
    theirs = sklearn_metrics.classification_report(y, p, target_names=names, output_dict=True, zero_division=0)
    del theirs["samples avg"]  # per-sample averages: not reported
    assert ours.pop("accuracy") == pytest.approx((p == y).mean(), abs=TOL)  # dlcli's per-label accuracy
    assert_same_report(ours, theirs)


def test_best_f1_threshold_is_the_best_cut_and_reproduces_its_f1():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) * 0.7 + labels * 0.25, 2)
    threshold, f1 = M.best_f1_threshold(torch.tensor(scores), torch.tensor(labels).bool())
    assert sklearn_metrics.f1_score(labels, scores > threshold) == pytest.approx(f1, abs=TOL)
    every_cut = [sklearn_metrics.f1_score(labels, scores >= t) for t in np.unique(scores)]
    assert f1 == pytest.approx(max(every_cut), abs=TOL)


def test_directions_are_declared_not_guessed():
    for name in ("val_precision", "val_recall", "val_f1", "val_auc", "val_pr_auc", "val_top_5_accuracy", "test_r2"):
        assert M.infer_mode(name) == "max", name
    for name in ("val_loss", "val_mae", "val_rmse", "loss"):
        assert M.infer_mode(name) == "min", name
    assert M.best_index([0.2, 0.9, 0.5], "val_f1") == 1
    assert M.best_index([0.2, 0.9, 0.5], "val_rmse") == 0


# -- accumulated batch by batch, as the validation pass does ---------------------------------------


def accumulate(task: str, outputs: torch.Tensor, targets: torch.Tensor, requests, threshold=0.5, batch=37):
    from dlcli.losses import class_probabilities, predicted_classes

    num_classes = outputs.shape[1] if task != "binary" else 2
    view = M.TaskOutputs(
        task,
        num_classes,
        lambda out: class_probabilities(out, task, True),
        lambda out: predicted_classes(out, task, True),
    )
    names = [str(i) for i in range(num_classes)]
    metrics = M.ValidationMetrics(requests, view, names, threshold)
    for start in range(0, len(targets), batch):
        metrics.update(outputs[start : start + batch], targets[start : start + batch])
    return metrics.compute()


ALL = [M.MetricRequest(n) for n in ("precision", "recall", "f1", "auc", "pr_auc")]


def test_multiclass_columns_are_sklearns_macro_averages():
    rng = np.random.default_rng(0)
    targets = torch.tensor(rng.integers(0, 5, 500))
    logits = torch.tensor(rng.normal(size=(500, 5)), dtype=torch.float32) + 1.5 * torch.nn.functional.one_hot(targets)
    values, details = accumulate("multiclass", logits, targets, [*ALL, M.MetricRequest("top_k_accuracy", 3)])
    probs = torch.softmax(logits, 1).double().numpy()
    y, p = targets.numpy(), logits.argmax(1).numpy()
    assert values["precision"] == pytest.approx(sklearn_metrics.precision_score(y, p, average="macro"), abs=TOL)
    assert values["recall"] == pytest.approx(sklearn_metrics.recall_score(y, p, average="macro"), abs=TOL)
    assert values["f1"] == pytest.approx(sklearn_metrics.f1_score(y, p, average="macro"), abs=TOL)
    assert details["f1_weighted"] == pytest.approx(sklearn_metrics.f1_score(y, p, average="weighted"), abs=TOL)
    assert values["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, probs, multi_class="ovr"), abs=TOL)
    onehot = np.eye(5)[y]
    assert values["pr_auc"] == pytest.approx(sklearn_metrics.average_precision_score(onehot, probs), abs=TOL)
    assert values["top_3_accuracy"] == pytest.approx(sklearn_metrics.top_k_accuracy_score(y, probs, k=3), abs=TOL)
    per_class_f1 = sklearn_metrics.f1_score(y, p, average=None)
    assert [details["per_class"][str(c)]["f1"] for c in range(5)] == pytest.approx(per_class_f1, abs=TOL)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_columns_are_the_positive_classs_at_the_threshold(threshold):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    logits = torch.tensor(rng.normal(size=(300, 1)) + 1.2 * (y[:, None] - 0.5), dtype=torch.float32)
    targets = torch.tensor(y, dtype=torch.float32).reshape(-1, 1)
    values, details = accumulate("binary", logits, targets, ALL, threshold)
    p1 = torch.sigmoid(logits[:, 0]).double().numpy()
    predicted = (p1 > threshold).astype(int)
    assert values["precision"] == pytest.approx(sklearn_metrics.precision_score(y, predicted), abs=TOL)
    assert values["recall"] == pytest.approx(sklearn_metrics.recall_score(y, predicted), abs=TOL)
    assert values["f1"] == pytest.approx(sklearn_metrics.f1_score(y, predicted), abs=TOL)
    assert values["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, p1), abs=TOL)
    assert values["pr_auc"] == pytest.approx(sklearn_metrics.average_precision_score(y, p1), abs=TOL)
    assert details["threshold"] == threshold
    if threshold != 0.5:  # accuracy at the threshold replaces the objective's count at 0.5
        assert values["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, predicted), abs=TOL)


def test_multilabel_columns_average_the_labels():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (250, 4))
    logits = torch.tensor(rng.normal(size=(250, 4)) + 1.5 * (y - 0.5), dtype=torch.float32)
    values, details = accumulate("multilabel", logits, torch.tensor(y, dtype=torch.float32), ALL)
    predicted = (logits > 0).int().numpy()
    probs = torch.sigmoid(logits).double().numpy()
    assert values["f1"] == pytest.approx(sklearn_metrics.f1_score(y, predicted, average="macro"), abs=TOL)
    assert values["precision"] == pytest.approx(sklearn_metrics.precision_score(y, predicted, average="macro"), abs=TOL)
    assert values["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, probs, average="macro"), abs=TOL)
    assert values["pr_auc"] == pytest.approx(sklearn_metrics.average_precision_score(y, probs), abs=TOL)
    per_label = sklearn_metrics.recall_score(y, predicted, average=None)
    assert [details["per_class"][str(c)]["recall"] for c in range(4)] == pytest.approx(per_label, abs=TOL)


def test_regression_columns_are_sklearns_rmse_and_r2():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(200, 2)) * [3.0, 10.0]
    out = y + rng.normal(size=(200, 2))
    view = M.TaskOutputs("regression", 2, lambda o: o, lambda o: o)
    metrics = M.ValidationMetrics([M.MetricRequest("rmse"), M.MetricRequest("r2")], view, ["a", "b"])
    for start in range(0, 200, 64):
        metrics.update(torch.tensor(out[start : start + 64]), torch.tensor(y[start : start + 64]))
    values, _ = metrics.compute()
    assert values["r2"] == pytest.approx(sklearn_metrics.r2_score(y, out), abs=TOL)
    rmse = np.mean(np.sqrt(((y - out) ** 2).mean(0)))  # root_mean_squared_error's uniform average
    assert values["rmse"] == pytest.approx(rmse, abs=TOL)


def test_a_batch_reads_nothing_back_from_the_device(monkeypatch):
    """Counts and scores stay tensors until compute(): a host read (.item, .tolist, float) per
    batch would stall a GPU, so the update path must not make one."""
    rng = np.random.default_rng(5)
    targets = torch.tensor(rng.integers(0, 4, 64))
    logits = torch.tensor(rng.normal(size=(64, 4)), dtype=torch.float32)
    reads = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (reads.append(_n), _o(self, *a, **k))[1]
        )
    from dlcli.losses import class_probabilities, predicted_classes

    view = M.TaskOutputs(
        "multiclass",
        4,
        lambda o: class_probabilities(o, "multiclass", True),
        lambda o: predicted_classes(o, "multiclass", True),
    )
    metrics = M.ValidationMetrics([*ALL, M.MetricRequest("top_k_accuracy", 2)], view, list("abcd"))
    metrics.update(logits, targets)
    metrics.update(logits, targets)
    assert reads == []
    metrics.compute()
    assert reads  # the one read, at the end of the pass


# -- through dlcli train and dlcli evaluate, on the shipped tables and an image folder --------------


CLASSIFY = ["precision", "recall", "f1", "auc", "pr_auc"]
TABLE_CASES = {
    "iris": ("iris.csv", "species", CLASSIFY),
    "wine": ("wine.csv", "cultivar", [*CLASSIFY, {"top_k_accuracy": {"k": 2}}]),
    "breast_cancer": ("breast_cancer.csv", "diagnosis", CLASSIFY),
    "diabetes": ("diabetes.csv", "progression", ["rmse", "r2"]),
}


def table_config(tmp_path: Path, table: str, **training) -> Path:
    file, target, wanted = TABLE_CASES[table]
    raw = {
        "name": table,
        "device": "cpu",
        "data": {
            "dataset": "csv",
            "path": str(TABLES / file),
            "target": target,
            "validation_split": 0.2,
            "test_split": 0.2,
        },
        "model": {"preset": "mlp", "hidden": [8]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 3, "batch_size": 32, "metrics": wanted, **training},
    }
    return write_config(tmp_path / f"{table}.yaml", raw)


def split_outputs(run_dir: Path, checkpoint: str, split: str):
    """The run's model's outputs and targets on a split, computed independently of the metrics."""
    from dlcli.data import load_dataset
    from dlcli.engine import Batches, predict
    from dlcli.loading import load_run
    from dlcli.losses import prepare_targets

    run = load_run(run_dir, checkpoint, device="cpu")
    data = load_dataset(run.config.data, run.config.seed, preprocessing=run.preprocessing)
    x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
    targets = prepare_targets(y, run.plan.loss_name, run.plan.info.task)
    outputs, targets = predict(run.model, Batches(x, targets, 64, input_scale=data.input_scale))
    return run, outputs, targets, data


def sklearn_view(run, outputs, targets):
    """(true classes, probabilities, predicted classes at 0.5 / argmax) as scikit-learn takes them."""
    from dlcli.losses import class_probabilities, predicted_classes

    task, logits = run.plan.info.task, run.plan.model_plan.absorbed_activation
    probs = class_probabilities(outputs, task, logits).double().numpy()
    return targets.reshape(-1).long().numpy(), probs, predicted_classes(outputs, task, logits).numpy()


@pytest.mark.parametrize("table", list(TABLE_CASES))
def test_validation_columns_equal_sklearn_on_the_shipped_tables(tmp_path, table):
    run_dir = trained_run(table_config(tmp_path, table), tmp_path / "runs")
    header, *rows = (run_dir / "metrics.csv").read_text().splitlines()
    last = dict(zip(header.split(","), map(float, rows[-1].split(","))))
    run, outputs, targets, _ = split_outputs(run_dir, "last", "val")
    if run.plan.info.task == "regression":
        y, p = targets.double().numpy(), outputs.double().numpy()
        assert last["val_r2"] == pytest.approx(sklearn_metrics.r2_score(y, p), abs=TOL)
        assert last["val_rmse"] == pytest.approx(sklearn_metrics.root_mean_squared_error(y, p), abs=TOL)
        return
    y, probs, predicted = sklearn_view(run, outputs, targets)
    binary = run.plan.info.task == "binary"
    average = "binary" if binary else "macro"
    assert last["val_precision"] == pytest.approx(
        sklearn_metrics.precision_score(y, predicted, average=average, zero_division=0), abs=TOL
    )
    assert last["val_recall"] == pytest.approx(sklearn_metrics.recall_score(y, predicted, average=average), abs=TOL)
    assert last["val_f1"] == pytest.approx(sklearn_metrics.f1_score(y, predicted, average=average), abs=TOL)
    auc = (
        sklearn_metrics.roc_auc_score(y, probs[:, 1])
        if binary
        else sklearn_metrics.roc_auc_score(y, probs, multi_class="ovr")
    )
    assert last["val_auc"] == pytest.approx(auc, abs=TOL)
    onehot = np.eye(probs.shape[1])[y]
    ap = (
        sklearn_metrics.average_precision_score(y, probs[:, 1])
        if binary
        else sklearn_metrics.average_precision_score(onehot, probs)
    )
    assert last["val_pr_auc"] == pytest.approx(ap, abs=TOL)
    if "val_top_2_accuracy" in last:
        assert last["val_top_2_accuracy"] == pytest.approx(sklearn_metrics.top_k_accuracy_score(y, probs, k=2), abs=TOL)


@pytest.mark.parametrize("table", list(TABLE_CASES))
def test_evaluate_report_equals_sklearn_on_the_shipped_tables(tmp_path, table):
    run_dir = trained_run(table_config(tmp_path, table), tmp_path / "runs")
    result = invoke("evaluate", run_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == json.loads((run_dir / "evaluation-test-best.json").read_text())
    run, outputs, targets, _ = split_outputs(run_dir, "best", "test")
    if run.plan.info.task == "regression":
        y, p = targets.double().numpy(), outputs.double().numpy()
        assert report["r2"] == pytest.approx(sklearn_metrics.r2_score(y, p), abs=TOL)
        assert report["mae"] == pytest.approx(sklearn_metrics.mean_absolute_error(y, p), abs=TOL)
        assert report["rmse"] == pytest.approx(sklearn_metrics.root_mean_squared_error(y, p), abs=TOL)
        assert (run_dir / "predicted_vs_true.png").stat().st_size > 0
        return
    y, probs, predicted = sklearn_view(run, outputs, targets)
    names = report["class_names"]
    theirs = sklearn_metrics.classification_report(
        y, predicted, labels=range(len(names)), target_names=names, output_dict=True, zero_division=0
    )
    assert_same_report(report["classification_report"], theirs)
    if run.plan.info.task == "binary":
        assert report["roc_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, probs[:, 1]), abs=TOL)
        assert report["pr_auc"] == pytest.approx(sklearn_metrics.average_precision_score(y, probs[:, 1]), abs=TOL)
        assert report["threshold"] == 0.5
        assert (run_dir / "roc.png").stat().st_size > 0 and (run_dir / "pr.png").stat().st_size > 0
    else:
        assert not (run_dir / "roc.png").exists()


def image_folder(root: Path, per_class: int = 12) -> Path:
    """Three classes of 8x8 RGB images: a bright square in a class's own corner, with noise."""
    rng = np.random.default_rng(0)
    corners = {"cat": (0, 0), "dog": (0, 4), "owl": (4, 0)}
    for name, (r, c) in corners.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (8, 8, 3)).astype(np.uint8)
            pixels[r : r + 4, c : c + 4] = rng.integers(120, 256, (4, 4, 3))
            Image.fromarray(pixels).save(root / name / f"{name}{i}.png")
    return root


def test_an_image_folder_report_top_losses_and_their_grid(tmp_path):
    root = image_folder(tmp_path / "images")
    raw = {
        "name": "pics",
        "device": "cpu",
        "data": {"dataset": "image_folder", "root": str(root), "validation_split": 0.25, "test_split": 0.25},
        "model": {"preset": "mlp", "hidden": [16]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 3, "batch_size": 8, "metrics": ["f1", "auc"]},
    }
    run_dir = trained_run(write_config(tmp_path / "pics.yaml", raw), tmp_path / "runs")
    result = invoke("evaluate", run_dir, "--top-losses", 4)
    assert result.exit_code == 0, result.output
    assert "Classification report" in result.output and "highest loss" in result.output
    report = json.loads((run_dir / "evaluation-test-best.json").read_text())
    run, outputs, targets, _ = split_outputs(run_dir, "best", "test")
    y, probs, predicted = sklearn_view(run, outputs, targets)
    theirs = sklearn_metrics.classification_report(
        y, predicted, labels=range(3), target_names=["cat", "dog", "owl"], output_dict=True, zero_division=0
    )
    assert_same_report(report["classification_report"], theirs)
    top = report["top_losses"]
    losses = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
    expected = torch.argsort(losses, descending=True, stable=True)[:4].tolist()
    assert [row["index"] for row in top] == expected
    assert [row["loss"] for row in top] == pytest.approx(losses[expected].tolist(), abs=TOL)
    for row in top:
        assert set(row) == {"index", "source", "true", "predicted", "probability", "loss"}
        assert row["true"] == ["cat", "dog", "owl"][int(targets[row["index"]])]
        assert row["probability"] == pytest.approx(float(probs[row["index"]].max()), abs=TOL)
        source = Path(row["source"])  # the image's own file, in its class's folder
        assert source.is_file() and source.parent.name == row["true"] and root in source.parents
    picture = Image.open(run_dir / "top_losses.png")
    assert picture.size[0] > 400  # a grid of four, not one image


def test_monitor_and_early_stopping_maximise_a_declared_metric(tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        synthetic_config(
            epochs=6, metrics=["f1"], monitor="val_f1", early_stopping={"monitor": "val_f1", "patience": 6}
        ),
    )
    run_dir = trained_run(config, tmp_path / "runs")
    header, *rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert "val_f1" in header.split(",")
    f1 = [float(r.split(",")[header.split(",").index("val_f1")]) for r in rows]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best"]["value"] == pytest.approx(max(f1))
    assert results["best"]["early_stopping"]["best"] == pytest.approx(max(f1))
    assert {"test_f1", "test_f1_weighted", "test_per_class"} <= set(results)


# -- bad input: exit 2, one paragraph, no traceback --------------------------------------------------


def one_paragraph(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "\n\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text


def test_a_metric_that_does_not_fit_the_task_names_those_that_do(tmp_path):
    raw = synthetic_config(metrics=["auc"])
    raw["data"]["synthetic"]["task"] = "regression"
    raw["loss"] = "mse"
    result = invoke("train", write_config(tmp_path / "c.yaml", raw), "--runs-dir", tmp_path / "runs")
    one_paragraph(result, "auc does not fit", "mae, rmse, r2")
    assert not (tmp_path / "runs").exists()


def test_an_unknown_metric_name_suggests_the_nearest(tmp_path):
    result = invoke("train", write_config(tmp_path / "c.yaml", synthetic_config(metrics=["f_1"])))
    one_paragraph(result, "training.metrics", "'f1'")


def test_top_k_must_leave_some_classes_out(tmp_path):
    config = write_config(tmp_path / "c.yaml", synthetic_config(metrics=[{"top_k_accuracy": {"k": 3}}]))
    one_paragraph(invoke("train", config, "--runs-dir", tmp_path / "runs"), "k=3", "3 classes")


def test_decision_threshold_on_a_non_binary_task(tmp_path):
    config = write_config(tmp_path / "c.yaml", synthetic_config(decision_threshold=0.3))
    one_paragraph(invoke("train", config, "--runs-dir", tmp_path / "runs"), "decision_threshold", "multiclass")


def test_top_losses_on_a_run_without_a_test_split(tmp_path):
    raw = synthetic_config()
    raw["data"]["synthetic"]["test_samples"] = 0
    run_dir = trained_run(write_config(tmp_path / "c.yaml", raw), tmp_path / "runs")
    one_paragraph(invoke("evaluate", run_dir, "--top-losses", 5), "--top-losses", "no test split", "--split val")


@pytest.mark.e2e  # runs the C++ compiler: tens of seconds on a cold cache
def test_compiled_evaluation_gives_the_eager_columns(tmp_path):
    """training.compile evaluates through its own compiled graph with the outputs: same columns."""
    import shutil

    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    runs = tmp_path / "runs"
    wanted = dict(epochs=2, metrics=["f1", "auc", {"top_k_accuracy": {"k": 2}}])
    eager = trained_run(write_config(tmp_path / "e.yaml", synthetic_config(**wanted)), runs)
    compiled = trained_run(write_config(tmp_path / "c.yaml", synthetic_config(compile=True, **wanted)), runs)

    def columns(run_dir):
        header, *rows = (run_dir / "metrics.csv").read_text().splitlines()
        names = header.split(",")
        return {
            n: [float(r.split(",")[names.index(n)]) for r in rows] for n in ("val_f1", "val_auc", "val_top_2_accuracy")
        }

    ours, theirs = columns(eager), columns(compiled)
    for name in ours:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-4), name


@pytest.mark.e2e
def test_two_processes_gather_the_validation_metrics_of_one(tmp_path):
    """Under --nproc 2 each process evaluates its share; counts are summed and scores gathered,
    so the columns equal a single process's."""
    import subprocess
    import sys

    from dlcli.rundir import read_metrics

    raw = synthetic_config(epochs=2, batch_size=16, metrics=["f1", "auc", "pr_auc", {"top_k_accuracy": {"k": 2}}])
    raw["data"]["synthetic"].update(samples=400, test_samples=50)
    config = write_config(tmp_path / "dp.yaml", raw)
    for runs, extra in (("single", []), ("double", ["--nproc", "2"])):
        done = subprocess.run(
            [sys.executable, "-m", "dlcli", "train", str(config), "--runs-dir", runs, "-q", *extra],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr + done.stdout
    (one,), (two,) = list((tmp_path / "single").iterdir()), list((tmp_path / "double").iterdir())
    _, rows_one = read_metrics(one / "metrics.csv")
    _, rows_two = read_metrics(two / "metrics.csv")
    for a, b in zip(rows_one, rows_two):
        for key in ("val_f1", "val_auc", "val_pr_auc", "val_top_2_accuracy"):
            assert b[key] == pytest.approx(a[key], abs=2e-3), key


def test_the_logged_columns_include_the_metrics_in_config_order():
    """What early stopping, training.monitor and a sweep's --metric may name (plan.logged_columns)."""
    from dlcli.config import load_config
    from dlcli.plan import logged_columns, plan_experiment

    config = load_config(None, raw=synthetic_config(metrics=["auc", "f1", {"top_k_accuracy": {"k": 2}}, "f1"]))
    assert logged_columns(plan_experiment(config)) == [
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "val_auc",
        "val_f1",
        "val_top_2_accuracy",
    ]


def test_a_time_series_reports_rmse_and_r2_in_the_targets_units(tmp_path):
    """A time series trains on scaled targets; its columns and evaluate's numbers are in units."""
    from dlcli.data.preprocessing import output_scaling

    rows = ["date,level"] + [
        f"2020-01-{1 + i // 24:02d}T{i % 24:02d}:00,{100 + 10 * math.sin(i / 5) + i / 10:.4f}" for i in range(240)
    ]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    raw = {
        "name": "series",
        "device": "cpu",
        "data": {
            "dataset": "timeseries",
            "path": str(tmp_path / "s.csv"),
            "time_column": "date",
            "target": "level",
            "window": {"length": 6, "horizon": 1},
        },
        "model": {"layers": [{"flatten": {}}, {"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 1}}]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 3, "batch_size": 16, "metrics": ["rmse", "r2"]},
    }
    run_dir = trained_run(write_config(tmp_path / "s.yaml", raw), tmp_path / "runs")
    header, *lines = (run_dir / "metrics.csv").read_text().splitlines()
    last = dict(zip(header.split(","), map(float, lines[-1].split(","))))
    run, outputs, targets, data = split_outputs(run_dir, "last", "val")
    shift, scale = (np.array(v) for v in output_scaling(data.preprocessing))
    assert not np.allclose(scale, 1.0)  # the targets really are scaled
    y, p = targets.double().numpy() * scale + shift, outputs.double().numpy() * scale + shift
    assert last["val_rmse"] == pytest.approx(sklearn_metrics.root_mean_squared_error(y, p), rel=1e-5)
    assert last["val_r2"] == pytest.approx(sklearn_metrics.r2_score(y, p), abs=TOL)
    assert last["val_mae"] == pytest.approx(sklearn_metrics.mean_absolute_error(y, p), rel=1e-5)
    report = json.loads(invoke("evaluate", run_dir, "--json", "--split", "val", "--checkpoint", "last").output)
    assert report["rmse"] == pytest.approx(last["val_rmse"], rel=1e-5)
    assert report["r2"] == pytest.approx(last["val_r2"], abs=TOL)


def test_top_losses_of_a_table_name_the_file_line_of_each_example(tmp_path):
    run_dir = trained_run(table_config(tmp_path, "iris"), tmp_path / "runs")
    result = invoke("evaluate", run_dir, "--top-losses", 6)
    assert result.exit_code == 0, result.output
    top = json.loads((run_dir / "evaluation-test-best.json").read_text())["top_losses"]
    lines = (TABLES / "iris.csv").read_text().splitlines()
    column = lines[0].split(",").index("species")
    assert len(top) == 6
    for row in top:
        file, line = row["source"].rsplit(", line ", 1)
        assert Path(file).name == "iris.csv"
        assert lines[int(line) - 1].split(",")[column] == row["true"]  # that line is this example
    assert len({row["source"] for row in top}) == 6


def test_a_sweep_can_maximise_a_metric_from_training_metrics(tmp_path):
    from dlcli.config import load_config
    from dlcli.sweep.spec import resolve_objective

    config = load_config(None, raw=synthetic_config(metrics=["f1", "auc"]))
    assert resolve_objective(config, "val_f1", "auto") == ("val_f1", "max")
    assert resolve_objective(config, "val_auc", "auto") == ("val_auc", "max")
    swept = invoke(
        "sweep", "run", write_config(tmp_path / "s.yaml", synthetic_config(epochs=1, metrics=["f1"])),
        "-p", "optimizer.lr=[0.001,0.01]", "--metric", "val_f1", "--runs-dir", tmp_path / "runs", "--dry-run",
    )  # fmt: skip
    assert swept.exit_code == 0, swept.output
    assert "val_f1" in swept.output
