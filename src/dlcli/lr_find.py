"""`dlcli lr-find`: fastai's learning-rate range test on a fresh model built from a config.

The rate grows exponentially from `start_lr` towards `end_lr` over `num_it` optimizer steps
(step i uses start * (end / start) ** (i / num_it), as fastai's LRFinder), cycling through the
training batches if asked; the loss is smoothed as fastai's Recorder does (a debiased moving
average, beta 0.98), and the test stops once the smoothed loss exceeds 4 times its minimum.
The suggestions are fastai's: `valley` (the longest valley of the loss curve, a third of the
way down it) and `steep` (the steepest descent), both on the curve less its first tenth and
last five points. The model, optimizer and data are built as `dlcli train` builds them and
thrown away after: the config file and every run folder stay untouched; the only output is a
new folder holding lr_find.csv and lr_find.png.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import Config
from .errors import ConfigError, RunDirError
from .rundir import atomic_write_text, new_run_id

BETA = 0.98  # fastai's AvgSmoothLoss
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its minimum
CSV_FILE = "lr_find.csv"
PNG_FILE = "lr_find.png"


@dataclass
class LrFindResult:
    folder: Path
    lrs: list[float]  # the rate of each step taken
    losses: list[float]  # each step's training loss
    smoothed: list[float]  # fastai's smoothed loss after each step
    valley: float
    steep: float
    stopped_early: bool  # the smoothed loss diverged before num_it steps
    batches: int  # training batches in one pass over the data


def check_range(start_lr: float, end_lr: float, num_it: int) -> None:
    if not (start_lr > 0 and math.isfinite(start_lr) and math.isfinite(end_lr)):
        raise ConfigError(
            f"--start-lr must be a positive number, found {start_lr}.", hint="For example --start-lr 1e-7."
        )
    if end_lr <= start_lr:
        raise ConfigError(
            f"--end-lr ({end_lr:g}) must be above --start-lr ({start_lr:g}): the test raises the rate from one to the other.",
            hint="For example --start-lr 1e-7 --end-lr 10 (fastai's defaults).",
        )
    if num_it < 10:
        raise ConfigError(
            f"--num-it must be at least 10 steps, found {num_it}: the suggestion skips the first tenth and the last 5.",
            hint="Use --num-it 100 (fastai's default).",
        )


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's `valley` (fastai.callback.schedule.valley): the longest decreasing stretch of
    the loss (a longest decreasing subsequence), and the rate half-way through its middle third."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def steep(lrs: list[float], losses: list[float]) -> float:
    """fastai's `steep`: the rate where the loss falls fastest against log(lr)."""
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(losses) - 1)]
    return float(lrs[min(range(len(slopes)), key=slopes.__getitem__)])


def suggestions(lrs: list[float], smoothed: list[float], num_it: int) -> tuple[float, float]:
    """(valley, steep) on the curve less its first num_it // 10 and last 5 points, cut at the
    first non-finite loss (as fastai's lr_find)."""
    lrs, losses = lrs[num_it // 10 : -5], smoothed[num_it // 10 : -5]
    finite = next((i for i, v in enumerate(losses) if not math.isfinite(v)), len(losses))
    lrs, losses = lrs[:finite], losses[:finite]
    if len(losses) < 2:
        raise ConfigError(
            f"The loss diverged after {len(smoothed)} steps, too early to suggest a rate "
            f"(the suggestion skips the first {num_it // 10} and the last 5 steps).",
            hint="Lower --start-lr, or raise --num-it so the rate grows more slowly.",
        )
    return valley(lrs, losses), steep(lrs, losses)


def run_range_test(
    step: Any,  # a steps.EagerStep: step(inputs, targets, samples) -> (loss, metric sum, samples)
    optimizer: Any,
    train: Any,
    start_lr: float,
    end_lr: float,
    num_it: int,
) -> tuple[list[float], list[float], list[float], bool]:
    """The sweep itself: (rates, losses, smoothed losses, stopped early)."""
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    passes = 0
    while len(lrs) < num_it:
        passes += 1
        train.epoch = passes  # seeds augmentation per pass, as per epoch in training
        for xb, yb, n in train:
            lr = start_lr * (end_lr / start_lr) ** (len(lrs) / num_it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = float(step(xb, yb, n)[0])
            lrs.append(lr)
            losses.append(loss)
            average = BETA * average + (1 - BETA) * loss
            smooth = average / (1 - BETA ** len(lrs))
            smoothed.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(smooth) or smooth > DIVERGED * best:
                return lrs, losses, smoothed, True
            if len(lrs) >= num_it:
                break
    return lrs, losses, smoothed, False


def lr_find(
    config: Config,
    *,
    runs_dir: Path,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    allow_repeat: bool = False,
) -> LrFindResult:
    """The range test for this config; its files go into a new folder under runs_dir/lr-find."""
    from .distributed import Distributed
    from .optim import make_clipper
    from .plan import plan_experiment
    from .steps import UpdateOptions, make_step
    from .training import build_experiment, check_device_options, choose_device

    check_range(start_lr, end_lr, num_it)
    dist = Distributed()
    plan = plan_experiment(config)
    device = choose_device(config, dist)
    check_device_options(config, device)
    exp = build_experiment(config, plan, device, dist)
    train, _, _ = exp.batches(dist)
    if num_it > len(train) and not allow_repeat:
        raise ConfigError(
            f"--num-it {num_it} is more steps than the training data has batches ({len(train)} batches of "
            f"{config.training.batch_size}): the test would go over the same samples again.",
            hint=f"Pass --allow-repeat to cycle through the data (as fastai does), or use --num-it {len(train)} or fewer.",
        )
    objective = exp.objective
    step = make_step(
        exp.model,
        exp.optimizer,
        objective.loss_fn,
        objective.metric_sum,
        device=device,
        precision=exp.precision.precision,
        updates=UpdateOptions(clip=make_clipper(config.optimizer)),
    )
    exp.model.train()
    lrs, losses, smoothed, stopped = run_range_test(step, exp.optimizer, train, start_lr, end_lr, num_it)
    best_valley, best_steep = suggestions(lrs, smoothed, num_it)
    folder = _new_folder(Path(runs_dir) / "lr-find", config.name)
    rows = "".join(f"{i + 1},{lr!r},{loss!r},{s!r}\n" for i, (lr, loss, s) in enumerate(zip(lrs, losses, smoothed)))
    atomic_write_text(folder / CSV_FILE, "step,lr,loss,smoothed_loss\n" + rows)
    from .plots import plot_lr_find

    cut = lrs[: max(len(lrs) - 5, 2)]  # fastai's plot leaves out the last 5 points (skip_end)
    plot_lr_find(cut, smoothed[: len(cut)], {"valley": best_valley, "steep": best_steep}, folder / PNG_FILE)
    return LrFindResult(folder, lrs, losses, smoothed, best_valley, best_steep, stopped, len(train))


def _new_folder(root: Path, name: str) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        base = new_run_id(name, time.time())
        for attempt in range(1, 1000):
            path = root / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise RunDirError(
            f"Cannot create a folder under {root}: {exc.strerror or exc}.",
            hint="Choose a writable folder with --runs-dir PATH.",
        ) from None
    raise RunDirError(f"Could not find a free folder name under {root}.")


def set_line(lr: float) -> str:
    """The --set option that trains with this rate."""
    return f"--set optimizer.lr={lr:.3g}"


def describe(result: LrFindResult, num_it: int, repeat_note: Optional[str] = None) -> list[str]:
    """What the command prints."""
    steps = len(result.lrs)
    ended = (
        f"stopped after {steps} steps: the smoothed loss passed {DIVERGED:g}x its minimum"
        if result.stopped_early
        else f"{steps} steps"
    )
    lines = [
        f"Learning-rate range test: {result.lrs[0]:.1e} to {result.lrs[-1]:.1e} ({ended}).",
        f"Suggested (valley): {result.valley:.3g}    steepest slope: {result.steep:.3g}",
        f"Train with: {set_line(result.valley)}",
    ]
    if repeat_note:
        lines.insert(1, repeat_note)
    lines.append(f"Plot and values: {result.folder}")
    return lines
