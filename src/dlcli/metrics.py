"""Metrics: which way each is better, which tasks each fits, and how each is computed.

Early stopping, best.pt, schedules, sweeps, plots and run listings all ask which way a metric
is better; the answer is declared here per metric name (`MAXIMISED`), not guessed from it.

The validation metrics of `training.metrics` (Keras's names) are computed as scikit-learn
defines them: threshold metrics (precision, recall, F1, top-k accuracy) from counts kept on
the device during the validation pass, AUC and PR-AUC (scikit-learn's average precision)
exactly from the stored scores, ties handled as scikit-learn's curves handle them. Nothing is
read from the device before the pass ends (`ValidationMetrics.compute`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

# Metrics that are better higher; every other column (losses, errors) is better lower.
MAXIMISED = frozenset({"accuracy", "precision", "recall", "f1", "f1_weighted", "auc", "pr_auc", "r2"})
_TOP_K = re.compile(r"top_\d+_accuracy")
_PREFIXES = ("val_", "test_")

CLASSIFICATION = ("binary", "multiclass", "multilabel")
# The tasks each name of training.metrics fits.
METRIC_TASKS: dict[str, tuple[str, ...]] = {
    "accuracy": CLASSIFICATION,
    "precision": CLASSIFICATION,
    "recall": CLASSIFICATION,
    "f1": CLASSIFICATION,
    "auc": CLASSIFICATION,
    "pr_auc": CLASSIFICATION,
    "top_k_accuracy": ("multiclass",),
    "mae": ("regression",),
    "rmse": ("regression",),
    "r2": ("regression",),
}
# What the model already logs without asking (the objective's metric): listing it adds nothing.
_ALWAYS_LOGGED = {"accuracy": CLASSIFICATION, "mae": ("regression",)}


def base_name(metric: str) -> str:
    """The metric without its split prefix: val_f1 -> f1."""
    for prefix in _PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix) :]
    return metric


def is_maximised(metric: str) -> bool:
    base = base_name(metric)
    # "acc" in the name: per-label accuracies and columns of earlier dlcli versions.
    return base in MAXIMISED or bool(_TOP_K.fullmatch(base)) or "acc" in base


def infer_mode(metric: str, mode: str = "auto") -> str:
    """'max' for metrics that are better higher (accuracy, F1, AUC, R^2...), 'min' for losses and errors."""
    if mode != "auto":
        return mode
    return "max" if is_maximised(metric) else "min"


def is_improvement(value: float, best: Optional[float], mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def best_index(values: Sequence[Optional[float]], metric: str) -> Optional[int]:
    """Index of the best value (the earliest on ties), skipping missing ones."""
    known = {i: v for i, v in enumerate(values) if v is not None}
    if not known:
        return None
    if infer_mode(metric) == "max":
        return max(known, key=known.__getitem__)
    return min(known, key=known.__getitem__)


# -- which metrics a run computes -------------------------------------------------------------


@dataclass(frozen=True)
class MetricRequest:
    name: str  # one of METRIC_TASKS
    k: int = 0  # top_k_accuracy's k

    @property
    def column(self) -> str:
        """Its metrics.csv column without the val_ prefix (top_k_accuracy with k=5: top_5_accuracy)."""
        return f"top_{self.k}_accuracy" if self.name == "top_k_accuracy" else self.name


def requested_metrics(entries: Sequence[Any], task: str, num_classes: int) -> list[MetricRequest]:
    """training.metrics resolved for the data's task: each entry a name or a config object with
    a `top_k_accuracy` field; a metric that does not fit the task is a ConfigError naming those
    that do. The objective's own metric (accuracy, mae) is logged anyway and left out here."""
    requests: list[MetricRequest] = []
    for entry in entries:
        if isinstance(entry, str):
            name, k = entry, 5 if entry == "top_k_accuracy" else 0
        else:
            name, k = "top_k_accuracy", int(entry.top_k_accuracy.k)
        if task not in METRIC_TASKS[name]:
            fitting = [n for n, tasks in METRIC_TASKS.items() if task in tasks]
            raise ConfigError(
                f"training.metrics: {name} does not fit this data, a {task} task; metrics that fit are: "
                f"{', '.join(fitting)}.",
                hint=f"Remove {name} from training.metrics.",
                key="training.metrics",
            )
        if name == "top_k_accuracy" and k >= num_classes:
            raise ConfigError(
                f"training.metrics: top_k_accuracy with k={k} needs more than {k} classes, and this data has "
                f"{num_classes}; every prediction would count as right.",
                hint=f"Use a k below {num_classes}.",
                key="training.metrics",
            )
        request = MetricRequest(name, k)
        if task in _ALWAYS_LOGGED.get(name, ()) or request in requests:
            continue
        requests.append(request)
    return requests


def validation_columns(requests: Sequence[MetricRequest]) -> list[str]:
    return [f"val_{r.column}" for r in requests]


# -- the numbers, from counts and scores --------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    """scikit-learn's zero_division default: 0 where the denominator is 0."""
    return num / den if den else 0.0


def per_class_scores(tp: Sequence[float], fp: Sequence[float], fn: Sequence[float]) -> dict[str, list[float]]:
    """Precision, recall and F1 per class (or label) from its counts, as scikit-learn computes
    them (F1 = 2tp / (2tp + fp + fn), 0 where a denominator is 0)."""
    return {
        "precision": [_ratio(t, t + p) for t, p in zip(tp, fp)],
        "recall": [_ratio(t, t + n) for t, n in zip(tp, fn)],
        "f1": [_ratio(2 * t, 2 * t + p + n) for t, p, n in zip(tp, fp, fn)],
    }


def confusion_counts(confusion: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """(tp, fp, fn) per class of a confusion matrix whose rows are the true classes."""
    k = len(confusion)
    tp = [float(confusion[c][c]) for c in range(k)]
    predicted = [float(sum(confusion[r][c] for r in range(k))) for c in range(k)]
    actual = [float(sum(confusion[c])) for c in range(k)]
    return tp, [p - t for p, t in zip(predicted, tp)], [a - t for a, t in zip(actual, tp)]


def classification_report(confusion: Sequence[Sequence[float]], class_names: Sequence[str]) -> dict[str, Any]:
    """scikit-learn's classification_report(output_dict=True) from a confusion matrix (rows:
    true classes), every class listed: per class precision, recall, f1-score and support, then
    accuracy, macro avg and weighted avg."""
    tp, fp, fn = confusion_counts(confusion)
    return _report(per_class_scores(tp, fp, fn), [t + n for t, n in zip(tp, fn)], class_names, sum(tp))


def multilabel_report(
    tp: Sequence[float], fp: Sequence[float], fn: Sequence[float], tn: Sequence[float], label_names: Sequence[str]
) -> dict[str, Any]:
    """scikit-learn's report for multilabel targets: per label, micro, macro and weighted
    averages; `accuracy` is dlcli's per-label accuracy (the share of right 0/1 decisions)."""
    scores = per_class_scores(tp, fp, fn)
    support = [t + n for t, n in zip(tp, fn)]
    total = sum(tp) + sum(fp) + sum(fn) + sum(tn)
    report = _report(scores, support, label_names, None)
    micro = per_class_scores([sum(tp)], [sum(fp)], [sum(fn)])
    report["micro avg"] = {
        "precision": micro["precision"][0],
        "recall": micro["recall"][0],
        "f1-score": micro["f1"][0],
        "support": int(sum(support)),
    }
    report["accuracy"] = _ratio(sum(tp) + sum(tn), total)
    return report


def _report(
    scores: dict[str, list[float]], support: Sequence[float], names: Sequence[str], correct: Optional[float]
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for i, name in enumerate(names):
        report[str(name)] = {
            "precision": scores["precision"][i],
            "recall": scores["recall"][i],
            "f1-score": scores["f1"][i],
            "support": int(support[i]),
        }
    total = sum(support)
    if correct is not None:
        report["accuracy"] = _ratio(correct, total)
    k = len(names)
    for average, weights in (("macro avg", [1.0 / k] * k), ("weighted avg", [_ratio(s, total) for s in support])):
        report[average] = {
            "precision": sum(w * v for w, v in zip(weights, scores["precision"])),
            "recall": sum(w * v for w, v in zip(weights, scores["recall"])),
            "f1-score": sum(w * v for w, v in zip(weights, scores["f1"])),
            "support": int(total),
        }
    return report


def _curve_counts(scores: Any, positive: Any) -> tuple[Any, Any, Any]:
    """(cumulative true positives, cumulative false positives, the score) at each distinct
    score, highest first: the points of scikit-learn's ROC and precision-recall curves (tied
    scores make one point). In NumPy: one thread, where a few thousand scores cost PyTorch's
    parallel indexing more in thread hand-offs than in work on a busy machine."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(positive).reshape(-1).astype(np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.ones(len(s), dtype=bool)
    last_of_tie[:-1] = s[1:] != s[:-1]
    return np.cumsum(y)[last_of_tie], np.cumsum(1 - y)[last_of_tie], s[last_of_tie]


def curve_points(scores: Any, positive: Any) -> dict[str, list[float]]:
    """The ROC curve (fpr, tpr, from (0, 0)) and the precision-recall curve (recall, precision,
    highest threshold first) at every distinct score: what roc.png and pr.png draw."""
    tps, fps, _ = _curve_counts(scores, positive)
    p, n = float(tps[-1]) if len(tps) else 0.0, float(fps[-1]) if len(fps) else 0.0
    return {
        "fpr": [0.0] + [_ratio(float(f), n) for f in fps],
        "tpr": [0.0] + [_ratio(float(t), p) for t in tps],
        "recall": [_ratio(float(t), p) for t in tps],
        "precision": [_ratio(float(t), float(t + f)) for t, f in zip(tps, fps)],
    }


def roc_auc(scores: Any, positive: Any) -> float:
    """Area under the ROC curve (scikit-learn's roc_auc_score on binary labels); NaN when only
    one class is present, where it is undefined."""
    import numpy as np

    tps, fps, _ = _curve_counts(scores, positive)
    if len(tps) == 0 or tps[-1] == 0 or fps[-1] == 0:
        return math.nan
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the trapezoidal rule


def average_precision(scores: Any, positive: Any) -> float:
    """scikit-learn's average_precision_score: sum over thresholds of (R_n - R_{n-1}) * P_n;
    NaN when there is no positive sample."""
    import numpy as np

    tps, fps, _ = _curve_counts(scores, positive)
    if len(tps) == 0 or tps[-1] == 0:
        return math.nan
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def per_column_curves(probabilities: Any, positive: Any) -> dict[str, list[float]]:
    """ROC-AUC and average precision of each column against its 0/1 targets (one-vs-rest)."""
    import numpy as np

    scores, truth = np.asarray(probabilities, dtype=np.float64), np.asarray(positive)
    return {
        "auc": [roc_auc(scores[:, c], truth[:, c]) for c in range(scores.shape[1])],
        "pr_auc": [average_precision(scores[:, c], truth[:, c]) for c in range(scores.shape[1])],
    }


def nan_mean(values: Sequence[float]) -> float:
    """The mean of the defined values (a class absent from the split has no AUC)."""
    known = [v for v in values if not math.isnan(v)]
    return sum(known) / len(known) if known else math.nan


def best_f1_threshold(scores: Any, positive: Any) -> tuple[float, float]:
    """(threshold, F1): the probability cut that maximises F1 of the positive class, placed
    halfway between the lowest score called positive and the next lower one, so that the rule
    `probability > threshold` reproduces it."""
    import numpy as np

    tps, fps, distinct = _curve_counts(scores, positive)
    positives = float(tps[-1]) if len(tps) else 0.0
    if positives == 0:
        return 0.5, 0.0
    f1 = 2 * tps / (tps + fps + positives)
    best = int(np.argmax(f1))
    cut = float(distinct[best])
    below = float(distinct[best + 1]) if best + 1 < len(distinct) else min(0.0, cut - 1.0)
    return (cut + below) / 2, float(f1[best])


def r2_scores(predicted: torch.Tensor, actual: torch.Tensor) -> list[float]:
    """scikit-learn's r2_score per output (1 - SSE / SST; NaN for a constant target, where
    scikit-learn's default answers 0 or 1 depending on the fit)."""
    p, y = predicted.double(), actual.double()
    sse = ((y - p) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    return [1 - float(e) / float(t) if float(t) > 0 else math.nan for e, t in zip(sse, sst)]


# -- accumulated during a validation pass -------------------------------------------------------


@dataclass(frozen=True)
class TaskOutputs:
    """How the model's outputs become what metrics count: `probabilities(out)` (N x classes,
    binary's two columns) and `classes(out)` (class index, or 0/1 per label) at the default
    cut; regression: `values(out)` in the targets' units."""

    task: str
    num_classes: int
    probabilities: Callable[[Any], Any]
    classes: Callable[[Any], Any]
    values: Callable[[Any], Any] = lambda out: out


class ValidationMetrics:
    """The extra validation metrics of one run, accumulated batch by batch on the device.

    `update(outputs, targets)` adds a batch's counts (and, for AUC and PR-AUC or regression,
    keeps its scores) without reading anything back; `compute()` reduces the pass once and
    returns (the columns' values, details for results.json: per class and weighted values).
    `threshold` is the binary decision threshold (probability > threshold is positive)."""

    def __init__(
        self,
        requests: Sequence[MetricRequest],
        outputs: TaskOutputs,
        class_names: Sequence[str],
        threshold: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.requests = list(requests)
        self.out = outputs
        self.task = outputs.task
        self.class_names = list(class_names)
        self.threshold = threshold
        self.rank, self.world_size = rank, world_size
        names = {r.name for r in self.requests}
        self.keep_scores = bool(names & {"auc", "pr_auc"}) or self.task == "regression"
        self.top_ks = sorted({r.k for r in self.requests if r.name == "top_k_accuracy"})
        self.reset()

    def reset(self) -> None:
        self._counts: Optional[torch.Tensor] = None  # confusion (k*k) or per-label tp, fp, fn, tn
        self._top: Optional[torch.Tensor] = None
        self._scores: list = []
        self._targets: list = []
        self.samples = 0

    def predicted(self, outputs: torch.Tensor) -> torch.Tensor:
        """The class per sample at this run's threshold (binary), else as accuracy counts it."""
        if self.task == "binary" and self.threshold != 0.5:
            return (self.out.probabilities(outputs)[:, 1] > self.threshold).long()
        return self.out.classes(outputs)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        import torch

        outputs = outputs.detach().float()
        self.samples += len(targets)
        if self.task == "regression":
            self._scores.append(outputs)
            self._targets.append(targets.reshape(len(targets), -1).float())
            return
        predicted = self.predicted(outputs)
        if self.task == "multilabel":
            truth = targets > 0.5
            guess = predicted.bool()
            batch = torch.stack(
                [(guess & truth).sum(0), (guess & ~truth).sum(0), (~guess & truth).sum(0), (~guess & ~truth).sum(0)], 1
            )
        else:
            truth = targets.reshape(-1).long()
            k = 2 if self.task == "binary" else self.out.num_classes
            # scatter_add_, not bincount: bincount on a GPU reads the largest index back to size its result.
            batch = torch.zeros(k * k, dtype=torch.int64, device=outputs.device)
            batch.scatter_add_(0, truth * k + predicted.reshape(-1), torch.ones_like(truth))
        self._counts = batch if self._counts is None else self._counts + batch
        if self.top_ks:
            ranked = outputs.topk(max(self.top_ks), 1).indices
            hits = torch.stack([(ranked[:, :k] == truth[:, None]).any(1).sum() for k in self.top_ks])
            self._top = hits if self._top is None else self._top + hits
        if self.keep_scores:
            self._scores.append(outputs)  # probabilities once at the end: one softmax, not one per batch
            self._targets.append(targets if self.task == "multilabel" else targets.reshape(-1))

    def _gathered(self, all_reduce: Optional[Callable]) -> tuple[Any, Any, Any, Any]:
        """(counts, top-k hits, scores, targets) on the CPU, summed or gathered over processes."""
        import torch

        counts = None if self._counts is None else self._counts.cpu().double()
        top = None if self._top is None else self._top.cpu().double()
        scores = targets = None
        if self._scores:
            outputs, targets = torch.cat(self._scores), torch.cat(self._targets)
            if self.task == "regression":  # both in the targets' own units (a time series trains scaled)
                scores, targets = self.out.values(outputs), self.out.values(targets)
            else:
                scores = self.out.probabilities(outputs)
            scores, targets = scores.cpu().double(), targets.cpu()
        if all_reduce is None or self.world_size == 1:
            return counts, top, scores, targets
        # Every process joins every collective, one that had no batch with zeros.
        if self.task != "regression":
            k = self.out.num_classes
            shape = (k, 4) if self.task == "multilabel" else (4 if self.task == "binary" else k * k,)
            counts = all_reduce(counts if counts is not None else torch.zeros(shape, dtype=torch.float64))
        if self.top_ks:
            top = all_reduce(top if top is not None else torch.zeros(len(self.top_ks), dtype=torch.float64))
        if self.keep_scores and (scores is None or targets is None):
            columns = 2 if self.task == "binary" else self.out.num_classes
            scores = torch.zeros((0, columns), dtype=torch.float64)
            targets = torch.zeros(
                (0, columns) if self.task in ("multilabel", "regression") else (0,)
            )  # as update keeps them
        if scores is not None and targets is not None:
            scores, targets = (_gather(t.double(), all_reduce, self.rank, self.world_size) for t in (scores, targets))
        return counts, top, scores, targets

    def compute(self, all_reduce: Optional[Callable] = None) -> tuple[dict[str, float], dict[str, Any]]:
        """(the requested columns' values without prefix, details for results.json)."""
        counts, top, scores, targets = self._gathered(all_reduce)
        if self.task == "regression":
            return self._regression(scores, targets)
        if counts is None:
            return {}, {}
        if self.task == "multilabel":
            tp, fp, fn, tn = (counts[:, i].tolist() for i in range(4))
            per_class = per_class_scores(tp, fp, fn)
            support = [t + n for t, n in zip(tp, fn)]
            accuracy = _ratio(sum(tp) + sum(tn), sum(tp) + sum(fp) + sum(fn) + sum(tn))
        else:
            k = 2 if self.task == "binary" else self.out.num_classes
            confusion = counts.reshape(k, k).tolist()
            tp, fp, fn = confusion_counts(confusion)
            per_class = per_class_scores(tp, fp, fn)
            support = [t + n for t, n in zip(tp, fn)]
            accuracy = _ratio(sum(tp), sum(support))
        curves = self._curves(scores, targets)
        values, details = self._summarise(per_class, support, curves, accuracy, top)
        return values, details

    def best_threshold(self, all_reduce: Optional[Callable] = None) -> tuple[float, float]:
        """(threshold, F1) maximising the positive class's F1 over the scores of the last pass
        (which must have kept them: set keep_scores before it)."""
        _, _, scores, targets = self._gathered(all_reduce)
        if scores is None or targets is None:
            return 0.5, 0.0
        return best_f1_threshold(scores[:, 1], targets.reshape(-1) > 0.5)

    def _curves(self, scores: Any, targets: Any) -> Optional[dict[str, list[float]]]:
        import numpy as np

        if scores is None or targets is None:
            return None
        if self.task == "multilabel":
            positive = np.asarray(targets) > 0.5
        else:  # one-vs-rest: a column of 0/1 per class
            positive = np.asarray(targets).reshape(-1, 1).astype(np.int64) == np.arange(scores.shape[1])
        return per_column_curves(scores, positive)

    def _summarise(
        self, per_class: dict[str, list[float]], support: list[float], curves: Optional[dict], accuracy: float, top: Any
    ) -> tuple[dict[str, float], dict[str, Any]]:
        total = sum(support)
        binary = self.task == "binary"
        values: dict[str, float] = {}
        for name in ("precision", "recall", "f1"):
            # Binary: the positive class's value, as Keras's Precision() and scikit-learn's
            # average="binary"; otherwise the macro average over classes (or labels).
            values[name] = per_class[name][1] if binary else sum(per_class[name]) / len(per_class[name])
        if curves is not None:
            for name in ("auc", "pr_auc"):
                values[name] = curves[name][1] if binary else nan_mean(curves[name])
        values["accuracy"] = accuracy
        details: dict[str, Any] = {
            "f1_weighted": sum(f * s for f, s in zip(per_class["f1"], support)) / total if total else 0.0,
            "per_class": {
                name: {
                    "precision": per_class["precision"][i],
                    "recall": per_class["recall"][i],
                    "f1": per_class["f1"][i],
                    "support": int(support[i]),
                    **({m: curves[m][i] for m in ("auc", "pr_auc")} if curves is not None else {}),
                }
                for i, name in enumerate(self.class_names)
            },
        }
        if binary:
            details["threshold"] = self.threshold
        for i, k in enumerate(self.top_ks):
            values[f"top_{k}_accuracy"] = float(top[i]) / total if total else 0.0
        wanted = {r.column for r in self.requests}
        if binary and self.threshold != 0.5:
            wanted.add("accuracy")  # at this threshold, replacing the objective's count at 0.5
        return {k: v for k, v in values.items() if k in wanted}, details

    def _regression(self, predicted: Any, actual: Any) -> tuple[dict[str, float], dict[str, Any]]:
        if predicted is None or actual is None:
            return {}, {}
        import torch

        # scikit-learn's root_mean_squared_error: per output, then averaged over outputs.
        rmse = torch.sqrt(((predicted.double() - actual.double()) ** 2).mean(0)).mean()
        values = {"rmse": float(rmse), "r2": nan_mean(r2_scores(predicted, actual))}
        wanted = {r.column for r in self.requests}
        return {k: v for k, v in values.items() if k in wanted}, {}


def _gather(tensor: torch.Tensor, all_reduce: Callable, rank: int, world_size: int) -> torch.Tensor:
    """Every process's rows, one after another, with only a summing all-reduce: each process
    writes its rows at its offset into zeros, and the sum is all of them."""
    import torch

    sizes = torch.zeros(world_size, dtype=torch.float64)
    sizes[rank] = len(tensor)
    sizes = all_reduce(sizes)
    offset, total = int(sizes[:rank].sum()), int(sizes.sum())
    full = torch.zeros((total, *tensor.shape[1:]), dtype=torch.float64)
    full[offset : offset + len(tensor)] = tensor
    return all_reduce(full)


def check_training_metrics(training: Any, task: str, num_classes: int, has_validation: bool) -> list[MetricRequest]:
    """training.metrics and training.decision_threshold checked against the data's task (before
    any data is loaded); returns the metrics to compute."""
    requests = requested_metrics(training.metrics, task, num_classes)
    threshold = training.decision_threshold
    if threshold is not None and task != "binary":
        raise ConfigError(
            f"training.decision_threshold: cuts one probability into two classes, and this data is a {task} task "
            "(the class with the highest score is the prediction there).",
            hint="Remove training.decision_threshold; it applies to binary tasks only.",
            key="training.decision_threshold",
        )
    if threshold == "auto" and not has_validation:
        raise ConfigError(
            "training.decision_threshold: auto is chosen on the validation split, and this run has none.",
            hint="Set data.validation_split (e.g. 0.2), or give the threshold as a number.",
            key="training.decision_threshold",
        )
    return requests
