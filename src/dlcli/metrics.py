"""Which way is better for a metric, and the best value of a series: one rule for all.

Early stopping, best.pt, schedules, plots and run listings all ask the same question.
"""

from __future__ import annotations

from typing import Optional, Sequence


def infer_mode(metric: str, mode: str = "auto") -> str:
    """'max' for accuracy-like metrics, 'min' for losses and errors."""
    if mode != "auto":
        return mode
    return "max" if "acc" in metric else "min"


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
