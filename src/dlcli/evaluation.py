"""Re-evaluating a saved run: load a checkpoint, recompute the metrics, build a confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DataError


def confusion_matrix(predicted, actual, classes: int) -> list[list[int]]:
    """Rows are the true classes, columns the predicted ones."""
    import torch

    counts = torch.bincount(actual.long() * classes + predicted.long(), minlength=classes * classes)
    return counts.reshape(classes, classes).tolist()


def evaluate_run(
    run_dir: Path, checkpoint: str = "best", split: str = "test", batch_size: int = 1024
) -> dict[str, Any]:
    from .data import baseline_results, load_dataset
    from .engine import Batches, Trainer, predict
    from .loading import load_run
    from .losses import label_smoothing_of, make_objective, predicted_classes, prepare_targets
    from .training import objective_in_target_units

    run = load_run(run_dir, checkpoint)
    config, info = run.config, run.plan.info
    data = load_dataset(config.data, config.seed, preprocessing=run.preprocessing or None)
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    if x is None or len(x) == 0:
        other = "val" if split == "test" else "test"
        raise DataError(f"This run's data has no {split} split.", hint=f"Use --split {other}.")
    objective = objective_in_target_units(
        # the loss as training computed it (with its label smoothing), so the two test losses agree
        make_objective(run.plan.loss_name, info.task, info.num_classes, label_smoothing_of(config.loss)),
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
    if info.task in ("multiclass", "binary"):
        outputs, actual = predict(run.model, batches)
        predicted = predicted_classes(outputs, info.task, run.plan.model_plan.absorbed_activation)
        actual = actual.reshape(-1).long()
        classes = 2 if info.task == "binary" else info.num_classes
        result["class_names"] = list(info.class_names) if info.class_names else [str(i) for i in range(classes)]
        result["confusion"] = confusion_matrix(predicted, actual, classes)
    return result
