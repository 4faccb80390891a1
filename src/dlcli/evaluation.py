"""Re-evaluating a saved run: load a checkpoint, recompute the metrics, build a confusion matrix,
a classification report (scikit-learn's shape and definitions), ROC-AUC and PR-AUC for binary
tasks, MAE, RMSE and R^2 for regression, and the examples with the highest loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import DataError


def confusion_matrix(predicted, actual, classes: int) -> list[list[int]]:
    """Rows are the true classes, columns the predicted ones."""
    import torch

    counts = torch.bincount(actual.long() * classes + predicted.long(), minlength=classes * classes)
    return counts.reshape(classes, classes).tolist()


@dataclass
class Evaluation:
    """`result`: what evaluation-<split>-<checkpoint>.json keeps; the rest is for the plots."""

    result: dict[str, Any]
    scores: Any = None  # binary: the positive class's probability per sample
    labels: Any = None  # binary: the true class per sample
    predicted_values: Any = None  # regression: predictions and targets in the targets' units
    true_values: Any = None
    images: list = field(default_factory=list)  # top losses of image data: (C, H, W) tensors in [0, 1]


def evaluate_run(
    run_dir: Path,
    checkpoint: str = "best",
    split: str = "test",
    batch_size: int = 1024,
    top_losses: int = 0,
) -> dict[str, Any]:
    """The evaluation's JSON result (see `evaluate_run_in_full` for the plots' data too)."""
    return evaluate_run_in_full(run_dir, checkpoint, split, batch_size, top_losses).result


def evaluate_run_in_full(
    run_dir: Path,
    checkpoint: str = "best",
    split: str = "test",
    batch_size: int = 1024,
    top_losses: int = 0,
) -> Evaluation:
    from .data import baseline_results, load_dataset
    from .engine import Batches, Trainer, predict
    from .loading import load_run
    from .losses import class_weights, label_smoothing_of, make_objective, prepare_targets
    from .training import class_names_of, objective_in_target_units

    run = load_run(run_dir, checkpoint)
    config, info = run.config, run.plan.info
    data = load_dataset(config.data, config.seed, preprocessing=run.preprocessing or None)
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    if x is None or len(x) == 0:
        other = "val" if split == "test" else "test"
        wanted = f"--top-losses ranks the {split} split's examples, and this" if top_losses else "This"
        raise DataError(f"{wanted} run's data has no {split} split.", hint=f"Use --split {other}.")
    # the loss as training computed it (label smoothing, class weights), so the two test losses agree
    weights = class_weights(config.training.class_weight, class_names_of(info), data.y_train, info.task)
    objective = objective_in_target_units(
        make_objective(run.plan.loss_name, info.task, info.num_classes, label_smoothing_of(config.loss), weights),
        data.preprocessing,
    )
    targets = prepare_targets(y, run.plan.loss_name, info.task)
    batches = Batches(x, targets, batch_size, input_scale=data.input_scale, device=run.device)
    trainer = Trainer(
        run.model,
        None,
        objective.loss_fn,
        objective.metric_sum,
        metric_name=objective.metric_name,
        metric_per_sample=objective.metric_per_sample,
        device=run.device,
    )
    result: dict[str, Any] = {
        "run": run_dir.name,
        "split": split,
        "checkpoint": checkpoint,
        "epoch": run.epoch,
        "samples": len(x),
        **trainer.evaluate(batches),
    }
    result.update(baseline_results(config.data, x, data.preprocessing, result.get("mae")))
    outputs, actual = predict(run.model, batches)
    evaluation = Evaluation(result)
    if info.task == "regression":
        _regression_report(evaluation, outputs, actual, data.preprocessing)
    else:
        _classification_report(evaluation, run, outputs, actual)
    if top_losses:
        sources = data.sample_names(split) if data.sample_names is not None else None
        _top_losses(evaluation, run, outputs, actual, x, data.input_scale, top_losses, sources)
    return evaluation


def _classification_report(evaluation: Evaluation, run, outputs, actual) -> None:
    from .losses import class_probabilities, predicted_classes
    from .metrics import classification_report, multilabel_report, per_column_curves
    from .training import class_names_of, saved_decision_threshold

    info, result = run.plan.info, evaluation.result
    logits = run.plan.model_plan.absorbed_activation
    names = class_names_of(info)
    probabilities = class_probabilities(outputs, info.task, logits).double()
    if info.task == "multilabel":
        truth, guess = actual > 0.5, predicted_classes(outputs, info.task, logits).bool()
        counts = [(guess & truth).sum(0), (guess & ~truth).sum(0), (~guess & truth).sum(0), (~guess & ~truth).sum(0)]
        result["class_names"] = names
        tp, fp, fn, tn = (c.double().tolist() for c in counts)
        result["classification_report"] = multilabel_report(tp, fp, fn, tn, names)
        curves = per_column_curves(probabilities, truth)
        result["roc_auc_per_label"], result["pr_auc_per_label"] = curves["auc"], curves["pr_auc"]
        return
    actual = actual.reshape(-1).long()
    threshold = saved_decision_threshold(run.run_dir, run.config) if info.task == "binary" else None
    if threshold is not None and threshold != 0.5:
        predicted = (probabilities[:, 1] > threshold).long()
    else:
        predicted = predicted_classes(outputs, info.task, logits)
    result["class_names"] = names
    result["confusion"] = confusion_matrix(predicted, actual, len(names))
    report = classification_report(result["confusion"], names)
    result["classification_report"] = report
    result["accuracy"] = report["accuracy"]  # at the run's threshold, as the report counts it
    if info.task == "binary":
        from .metrics import average_precision, roc_auc

        positive = actual == 1
        result["roc_auc"] = roc_auc(probabilities[:, 1], positive)
        result["pr_auc"] = average_precision(probabilities[:, 1], positive)
        result["threshold"] = threshold if threshold is not None else 0.5
        evaluation.scores, evaluation.labels = probabilities[:, 1], actual


def _regression_report(evaluation: Evaluation, outputs, actual, preprocessing: Optional[dict]) -> None:
    """MAE, RMSE and R^2 in the targets' own units (scikit-learn's, averaged over outputs)."""
    import torch

    from .data.preprocessing import output_scaling
    from .metrics import nan_mean, r2_scores

    predicted, truth = outputs.double(), actual.reshape(len(actual), -1).double()
    scaling = output_scaling(preprocessing)
    if scaling is not None:  # a time series trains on scaled targets
        shift, scale = torch.tensor(scaling[0], dtype=torch.float64), torch.tensor(scaling[1], dtype=torch.float64)
        predicted, truth = predicted * scale + shift, truth * scale + shift
    errors = predicted - truth
    result = evaluation.result
    result["mae"] = float(errors.abs().mean(0).mean())
    result["rmse"] = float(torch.sqrt((errors**2).mean(0)).mean())
    result["r2"] = nan_mean(r2_scores(predicted, truth))
    evaluation.predicted_values, evaluation.true_values = predicted, truth


def _top_losses(
    evaluation: Evaluation, run, outputs, actual, x, input_scale, k: int, sample_names: Optional[Sequence[str]] = None
) -> None:
    """The k examples with the highest loss: index, source (the file, or the table's file and
    line, where the data names its samples; else the row in the split), true and predicted
    class, the predicted class's probability and the loss; and, for images, the images."""
    import torch

    from .losses import class_probabilities, per_sample_loss, prepare_targets
    from .training import class_names_of

    info, loss_name = run.plan.info, run.plan.loss_name
    targets = prepare_targets(actual, loss_name, info.task)
    losses = per_sample_loss(outputs.float(), targets, loss_name)
    order = torch.argsort(losses, descending=True, stable=True)[:k].tolist()
    names = class_names_of(info)
    rows = []
    classifying = info.task in ("binary", "multiclass")
    probabilities = (
        class_probabilities(outputs, info.task, run.plan.model_plan.absorbed_activation) if classifying else None
    )
    threshold = evaluation.result.get("threshold", 0.5)
    for index in order:
        source = sample_names[index] if sample_names is not None else f"row {index}"
        row: dict[str, Any] = {"index": index, "source": source, "loss": float(losses[index])}
        if probabilities is not None:
            p = probabilities[index]
            if info.task == "binary" and threshold != 0.5:
                guess = int(p[1] > threshold)
            else:
                guess = int(p.argmax())
            row.update(true=names[int(actual.reshape(-1)[index])], predicted=names[guess], probability=float(p[guess]))
        else:
            row.update(true=actual[index].reshape(-1).tolist(), predicted=outputs[index].reshape(-1).tolist())
            row["probability"] = None
        rows.append(row)
    evaluation.result["top_losses"] = rows
    if len(x.shape) == 4 and classifying:  # images, channels first (x may gather from a disk cache)
        scale = input_scale if input_scale is not None else (1 / 255 if x.dtype == torch.uint8 else 1.0)
        for index in order:
            image = x[index].float() * scale
            low, high = float(image.min()), float(image.max())
            if low < 0 or high > 1:  # standardised inputs: stretched back into [0, 1] to be seen
                image = (image - low) / ((high - low) or 1.0)
            evaluation.images.append(image)
