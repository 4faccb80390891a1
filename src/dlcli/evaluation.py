"""Re-evaluating a saved run: load a checkpoint, recompute the metrics, build a confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import CheckpointError, DataError
from .rundir import CHECKPOINTS, load_checkpoint


def confusion_matrix(predicted, actual, classes: int) -> list[list[int]]:
    """Rows are the true classes, columns the predicted ones."""
    import torch

    counts = torch.bincount(actual.long() * classes + predicted.long(), minlength=classes * classes)
    return counts.reshape(classes, classes).tolist()


def evaluate_run(run_dir: Path, checkpoint: str = "best", split: str = "test") -> dict[str, Any]:
    import torch

    from .data import load_dataset
    from .engine import Batches, Trainer, predict
    from .losses import make_objective, prepare_targets
    from .models import build_model, use_channels_last
    from .training import load_run_config, model_signature, plan_experiment

    config = load_run_config(run_dir)
    plan = plan_experiment(config)
    path = run_dir / CHECKPOINTS / f"{checkpoint}.pt"
    state = load_checkpoint(path)
    device = torch.device("cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu")
    model = build_model(plan.model_plan, initial_weights=False)  # the checkpoint's weights replace them
    if state.get("signature") not in (None, model_signature(model)):
        raise CheckpointError(f"{path} holds weights of a different model than the run's config.yaml builds.",
                              hint="The config may have been edited after training; restore it or train again.")
    model.load_state_dict(state["model"])
    model.to(device)
    use_channels_last(model, config.training.channels_last)  # the layout it was trained in

    data = load_dataset(config.data, config.seed)
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
    if x is None or len(x) == 0:
        other = "val" if split == "test" else "test"
        raise DataError(f"This run's data has no {split} split.", hint=f"Use --split {other}.")
    info = plan.info
    objective = make_objective(plan.loss_name, info.task, info.num_classes)
    targets = prepare_targets(y, plan.loss_name, info.task)
    batches = Batches(x, targets, 1024, input_scale=data.input_scale, device=device)
    trainer = Trainer(model, None, objective.loss_fn, objective.metric_sum, metric_name=objective.metric_name,
                      metric_per_sample=objective.metric_per_sample, device=device)
    result: dict[str, Any] = {
        "run": run_dir.name,
        "split": split,
        "checkpoint": checkpoint,
        "epoch": state.get("epoch"),
        "samples": len(x),
        **trainer.evaluate(batches),
    }
    if info.task in ("multiclass", "binary"):
        outputs, actual = predict(model, batches)
        predicted = (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.argmax(1)
        actual = actual.reshape(-1).long()
        classes = 2 if info.task == "binary" else info.num_classes
        result["class_names"] = list(info.class_names) if info.class_names else [str(i) for i in range(classes)]
        result["confusion"] = confusion_matrix(predicted, actual, classes)
    return result
