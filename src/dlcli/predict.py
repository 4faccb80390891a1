"""Predictions of a trained run on new inputs.

Inputs are read into exactly the tensors the run's dataset makes (same dtype, size, channels
and scaling; a table's saved column statistics; a text run's vocabulary), and then go through
the same `Batches` and model as `dlcli evaluate`, so predicting on the files of a run's own
test split reproduces its evaluation exactly. Each dataset kind reads its own inputs
(`DatasetSource.read_inputs`, in its module in data/).
No printing here: the CLI writes the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .data import source
from .data.inputs import Inputs, PredictOptions, ReadRequest
from .errors import DataError, printable
from .loading import LoadedRun

__all__ = ["Inputs", "PredictOptions", "Predictions", "predict_inputs", "prediction_rows", "read_inputs"]


def read_inputs(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """Read INPUT... (and --text / `-`) as the run's data takes them."""
    if not inputs and options.text is None:
        raise DataError(
            "No input was given to predict on.",
            hint='Name files or folders (or --text "..." / - for standard input for text runs).',
        )
    request = ReadRequest(run.config.data, run.plan.info, run.preprocessing, list(inputs), options, str(run.run_dir))
    read = source(run.config.data.dataset).read_inputs(request)
    if not read.names:
        raise DataError(
            f"The inputs ({', '.join(inputs) or '--text'}) hold nothing to predict on.",
            hint="Check the paths: folders are searched for the files the run's data takes.",
        )
    return _with_printable_names(read)


def _with_printable_names(read: Inputs) -> Inputs:
    """The inputs with names and messages safe to print and to write into --out."""
    names = [printable(name) for name in read.names]
    if names != read.names:
        count = sum(a != b for a, b in zip(names, read.names))
        read.notes.append(
            f"{count} input name{'s' if count != 1 else ''} hold bytes that are not UTF-8; they are written with "
            "\\xNN escapes (the file name's bytes in hexadecimal)."
        )
        read.names = names
    read.errors = {index: printable(message) for index, message in read.errors.items()}
    return read


# -- from inputs to predictions -------------------------------------------------------------


@dataclass
class Predictions:
    task: str
    class_names: list[str]  # classes (multiclass, binary), labels (multilabel) or outputs (regression)
    probabilities: Any  # N x classes (binary: 2 columns); regression: the predicted values
    predicted: Any  # class index (multiclass, binary), 0/1 per label (multilabel), None (regression)
    labels: Any = None  # true targets, when known


def predict_inputs(run: LoadedRun, inputs: Inputs, batch_size: int = 1024) -> Predictions:
    """Run the model on the readable inputs with evaluate's batching, and turn outputs into predictions."""
    import torch

    from .data.preprocessing import output_scaling
    from .engine import Batches, predict
    from .losses import class_probabilities, predicted_classes
    from .training import saved_decision_threshold

    info = run.plan.info
    x = inputs.x
    dummy = torch.zeros(len(x), dtype=torch.long)
    batches = Batches(x, dummy, batch_size, input_scale=inputs.input_scale, device=run.device)
    outputs = predict(run.model, batches)[0] if len(x) else torch.zeros(0, max(info.num_classes, 1))
    logits = run.plan.model_plan.absorbed_activation  # else the model already ends in its activation
    scaling = output_scaling(run.preprocessing) if info.task == "regression" else None
    if scaling is not None:  # trained on scaled targets: back to the targets' units
        outputs = outputs * torch.tensor(scaling[1]) + torch.tensor(scaling[0])
    names = list(info.class_names) if info.class_names else [str(i) for i in range(info.num_classes)]
    if info.task == "regression":
        return Predictions("regression", names, outputs, None, inputs.labels)
    if info.task == "binary":
        names = names[:2] if len(names) >= 2 else ["0", "1"]
    probabilities = class_probabilities(outputs, info.task, logits)
    predicted = predicted_classes(outputs, info.task, logits)
    threshold = saved_decision_threshold(run.run_dir, run.config) if info.task == "binary" else None
    if threshold is not None and threshold != 0.5:  # training.decision_threshold, as evaluate uses it
        predicted = (probabilities[:, 1] > threshold).long()
    return Predictions(info.task, names, probabilities, predicted, inputs.labels)


def prediction_rows(inputs: Inputs, preds: Predictions, top_k: Optional[int] = None) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per input in input order; probabilities per class or the top k."""
    names = preds.class_names
    k = len(names)
    if top_k is not None and preds.task in ("multiclass", "binary") and not 1 <= top_k <= k:
        raise DataError(
            f"--top-k {top_k} is more than this run's {k} classes."
            if top_k > k
            else f"--top-k must be at least 1, not {top_k}.",
            hint=f"Use --top-k between 1 and {k}.",
        )
    columns = ["input", *inputs.columns]
    if preds.task in ("multiclass", "binary"):
        columns += ["predicted", "probability"]
        columns += (
            [f"top{i}{part}" for i in range(1, top_k + 1) for part in ("", "_probability")]
            if top_k
            else [f"p_{n}" for n in names]
        )
    elif preds.task == "multilabel":
        columns += ["predicted"] + [f"p_{n}" for n in names]
    else:
        columns += names if k > 1 else ["predicted"]
    has_labels = preds.labels is not None
    labeled = (lambda r: True) if not isinstance(preds.labels, list) else (lambda r: preds.labels[r] is not None)
    if has_labels:
        columns += (
            ["true", "correct"] if preds.task != "regression" else [f"true_{n}" for n in names] if k > 1 else ["true"]
        )
    if inputs.errors:
        columns.append("error")

    rows: list[dict] = []
    readable = inputs.readable
    position = {index: row for row, index in enumerate(readable)}
    for index, name in enumerate(inputs.names):
        row: dict[str, Any] = {"input": name, **{c: values[index] for c, values in inputs.columns.items()}}
        if index in inputs.errors:
            row["error"] = inputs.errors[index]
            rows.append(row)
            continue
        r = position[index]
        p = preds.probabilities[r]
        if preds.task in ("multiclass", "binary"):
            c = int(preds.predicted[r])
            row["predicted"], row["probability"] = names[c], float(p[c])
            if top_k:
                values, order = p.topk(top_k)
                for i, (v, o) in enumerate(zip(values.tolist(), order.tolist()), 1):
                    row[f"top{i}"], row[f"top{i}_probability"] = names[o], v
            else:
                row.update({f"p_{n}": float(v) for n, v in zip(names, p.tolist())})
            if has_labels and labeled(r):
                truth = int(preds.labels[r])
                row["true"], row["correct"] = names[truth], truth == c
        elif preds.task == "multilabel":
            chosen = preds.predicted[r].tolist()
            row["predicted"] = ";".join(n for n, on in zip(names, chosen) if on)
            row.update({f"p_{n}": float(v) for n, v in zip(names, p.tolist())})
            if has_labels and labeled(r):
                true_bits = [int(v > 0.5) for v in preds.labels[r].tolist()]
                row["true"] = ";".join(n for n, on in zip(names, true_bits) if on)
                row["correct"] = true_bits == chosen
        else:
            values = p.reshape(-1).tolist()
            row.update(dict(zip(names if k > 1 else ["predicted"], values)))
            if has_labels and labeled(r):
                truth = preds.labels[r].reshape(-1).tolist()
                row.update(dict(zip([f"true_{n}" for n in names] if k > 1 else ["true"], truth)))
        rows.append(row)
    return columns, rows


def accuracy(rows: list[dict]) -> Optional[float]:
    """Share of correct rows among those with a known label (None when none has one)."""
    judged = [r["correct"] for r in rows if "correct" in r]
    return sum(judged) / len(judged) if judged else None


def mean_absolute_error(rows: list[dict], columns: list[str]) -> Optional[float]:
    pairs = [
        (c[5:] if c.startswith("true_") else "predicted", c) for c in columns if c == "true" or c.startswith("true_")
    ]
    errors = [abs(r[p] - r[t]) for r in rows if "error" not in r for p, t in pairs if t in r]
    return sum(errors) / len(errors) if errors else None
