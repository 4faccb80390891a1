"""The training loop: batches from in-memory tensors, train, evaluate, fit with callbacks.

No file I/O, no YAML, no printing: the engine gets built objects and reports through
callbacks, so it can be tested alone in milliseconds. The per-step path does exactly what
a hand-written PyTorch loop does (slice, convert, forward, loss, backward, step, one metric
sum) and nothing that forces a device synchronisation: losses and metric sums stay on the
device in a list and are reduced a few times a second, which is also when divergence is
checked and progress callbacks run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import torch

from .errors import TrainingDiverged, TrainingInterrupted
from .steps import TrainingStep, UpdateOptions, make_step, required_optimizer

REPORT_INTERVAL_S = 0.25  # how often running metrics are reduced and shown
SYNC_STEPS = 25  # under data parallelism: steps between the collective stop/divergence checks


class Batches:
    """Mini-batches sliced from whole tensors by a seeded permutation (no per-sample collate).

    Inputs stay in their stored dtype (uint8 images) until a batch is taken, then become
    float32 times `input_scale` (int64 word ids stay as they are, for an embedding). Under
    data parallelism every rank draws the same permutation and takes its own share of each
    global batch.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        input_scale: Optional[float] = None,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        transform: Optional[Callable[[torch.Tensor, int, int], torch.Tensor]] = None,
        read_ahead: int = 0,
    ) -> None:
        self.device = torch.device(device)
        # Batches gathered this many steps ahead by a background thread: for inputs memory-mapped
        # from a file (a disk cache), whose page faults then overlap the step instead of stalling it.
        # The order is drawn as without it, so the batches are the same.
        self.read_ahead = read_ahead
        # Training batches only: (inputs, epoch, batch index) -> inputs, after conversion
        # (data.augment); the trainer sets `epoch`, so each batch's randomness is reproducible.
        self.transform = transform
        self.epoch = 0
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.input_scale = input_scale
        self.rank, self.world_size = rank, world_size
        self.n = len(x)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def to_device(self) -> Batches:
        """Move the whole tensors to the device once (when they fit), so batches need no copy."""
        self.x = self.x.to(self.device)
        self.y = self.y.to(self.device)
        return self

    def _convert(self, xb: torch.Tensor) -> torch.Tensor:
        if xb.device != self.device:
            xb = xb.to(self.device, non_blocking=True)
        if xb.dtype == torch.int64:  # word ids feed an embedding as they are
            return xb
        if xb.dtype != torch.float32:
            xb = xb.to(torch.float32)
            if self.input_scale is not None and self.input_scale != 1.0:
                xb = xb.mul_(self.input_scale)
        elif self.input_scale is not None and self.input_scale != 1.0:
            xb = xb * self.input_scale
        return xb

    def _order(self) -> Optional[torch.Tensor]:
        """This epoch's permutation on the data's device, or None when not shuffling."""
        if not self.shuffle:
            return None
        order = torch.randperm(self.n, generator=self.generator)
        return order.to(self.x.device, non_blocking=True) if self.x.device != order.device else order

    def indices(self) -> Iterator[torch.Tensor]:
        """Each batch's sample indices, on the data's device (one process): what a recorded
        step reads its batch through. Same permutation, so the same batches, as iterating."""
        order = self._order()
        if order is None:
            order = torch.arange(self.n, device=self.x.device)
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The converted inputs and the targets of the samples `idx`, on the device."""
        return self._on_device(self.x[idx], self.y[idx])

    def _on_device(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if yb.device != self.device:
            yb = yb.to(self.device, non_blocking=True)
        return self._convert(xb), yb

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Yields (inputs, targets, global batch size)."""
        order = self._order()  # drawn here, on the caller's thread, whether or not batches are read ahead
        gathered = self._gathered(order)
        if self.read_ahead > 0:
            gathered = _gathered_ahead(gathered, self.read_ahead)
        for start, xb, yb, global_n in gathered:
            xb, yb = self._on_device(xb, yb)
            if self.transform is not None:
                xb = self.transform(xb, self.epoch, start // self.batch_size)
            yield xb, yb, global_n

    def _gathered(self, order: Optional[torch.Tensor]) -> Iterator[tuple[int, Any, Any, int]]:
        """(first position, inputs, targets, global batch size) of each batch in `order` (None: as
        stored); a lazy generator whose `next` does the gathering, so it can run on
        another thread."""
        x, y, bs = self.x, self.y, self.batch_size
        for start in range(0, self.n, bs):
            if order is not None:
                idx = order[start : start + bs]
                global_n = len(idx)
                if self.world_size > 1:
                    if global_n < self.world_size:
                        break  # a last batch too small to give every process a sample is dropped
                    idx = idx.tensor_split(self.world_size)[self.rank]
                yield start, x[idx], y[idx], global_n
            else:
                end = min(start + bs, self.n)
                global_n = end - start
                if self.world_size > 1:  # evaluation: every sample once, on some process
                    bounds = torch.arange(start, end).tensor_split(self.world_size)[self.rank]
                    if len(bounds) == 0:
                        continue
                    lo = int(bounds[0])
                    yield start, x[lo : lo + len(bounds)], y[lo : lo + len(bounds)], global_n
                else:
                    yield start, x[start:end], y[start:end], global_n


def _gathered_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """`items` as they come, each produced on a background thread up to `depth` items before it
    is asked for. Ending early (a break, an exception, Ctrl-C) cancels what was not started and
    waits for the one in progress, so no thread outlives the loop."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    done = object()

    def produce() -> Any:
        return next(items, done)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlcli-read-ahead")
    pending: deque = deque(pool.submit(produce) for _ in range(depth))
    try:
        while True:
            item = pending.popleft().result()
            if item is done:
                return
            pending.append(pool.submit(produce))
            yield item
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


class EvalMetrics(Protocol):
    """Metrics an evaluation pass accumulates from each batch's outputs (metrics.ValidationMetrics)."""

    def reset(self) -> None: ...
    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None: ...
    def compute(self, all_reduce: Optional[Callable]) -> tuple[dict[str, float], dict[str, Any]]: ...


class Callback:
    """Hooks in Keras's spirit; `trainer.stop_training = True` ends training after the epoch."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, epoch: int, trainer: Trainer) -> None: ...
    def on_progress(self, trainer: Trainer) -> None: ...  # a few times a second
    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class EpochSaver(Callback):
    """A callback that saves what epochs produced, possibly several epochs at once: `note` is
    called at the end of every epoch (in memory, cheap) and `save` with the logs of the epochs
    noted since the last save, when whoever drives it decides (dlcli's RunFolderWriter: at
    most a small share of the training time). Used as a plain callback, it saves every epoch."""

    def note(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None: ...
    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        self.note(epoch, logs, trainer)
        self.save([logs], trainer)


@dataclass
class RunControl:
    """Set from a signal handler; the loop stops at the end of the current step."""

    signal: Optional[str] = None


@dataclass
class Running:
    """The current epoch's running sums, reduced from the device a few times a second."""

    step: int = 0
    samples: int = 0
    loss_sum: float = 0.0
    metric_sum: float = 0.0
    started: float = field(default_factory=time.perf_counter)


class Trainer:
    """Trains one model; `fit` runs epochs, calling callbacks at the boundaries."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Optional[torch.optim.Optimizer],  # None for a trainer that only evaluates
        loss_fn: Callable,
        metric_sum: Callable,
        *,
        metric_name: str = "accuracy",
        metric_per_sample: int = 1,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        schedule: Any = None,
        callbacks: Sequence[Callback] = (),
        control: Optional[RunControl] = None,
        all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        world_size: int = 1,
        cuda_graph: bool = False,
        compile_mode: Optional[str] = None,
        clip: Optional[Callable[[list], None]] = None,
        accumulation: int = 1,
        eval_metrics: Optional[EvalMetrics] = None,
    ) -> None:
        """`schedule`: `step(logs)` after each epoch, and `step_batch()` after each optimizer
        update when its `per_step` is true; `clip(params)`: gradient clipping before each
        update; `accumulation`: micro-batches per update; `eval_metrics`: metrics beyond the
        objective's, computed by every `evaluate` (metrics.ValidationMetrics)."""
        self.model = model
        self._optimizer = optimizer
        self.loss_fn = loss_fn
        self.metric_sum = metric_sum
        self.metric_name = metric_name
        self.metric_per_sample = metric_per_sample
        self.device = torch.device(device)
        self.schedule = schedule
        self.callbacks = list(callbacks)
        self.control = control or RunControl()
        self.all_reduce = all_reduce  # sums a tensor over ranks (data parallelism)
        self.world_size = world_size
        self.compile_mode = compile_mode  # torch.compile's mode, None when eager
        self.eval_metrics = eval_metrics
        self.metric_details: dict[str, dict] = {}  # per split prefix: what eval_metrics add beyond columns
        self.step: TrainingStep = make_step(
            model,
            optimizer,
            loss_fn,
            metric_sum,
            device=self.device,
            precision=precision,
            cuda_graph=cuda_graph,
            compile_mode=compile_mode,
            world_size=world_size,
            data_parallel=all_reduce is not None,
            updates=UpdateOptions(
                clip=clip,
                after_update=schedule.step_batch if getattr(schedule, "per_step", False) else None,
                accumulation=accumulation,
            ),
        )
        self.epoch = 0
        self.epochs = 0
        self.steps_per_epoch = 0
        self.stop_training = False
        self.history: list[dict[str, float]] = []
        self.running = Running()
        # Per-step values of the current epoch, kept on the device (no sync per step): the
        # steps since the last report as single values, the earlier ones stacked per report.
        # Stacking a few times a second frees the single values soon: an epoch's thousands of
        # small tensors kept alive together would scatter the CPU heap.
        self._step_losses: list[torch.Tensor] = []
        self._step_metrics: list[torch.Tensor] = []
        self._step_sizes: list[int] = []
        self._loss_chunks: list[torch.Tensor] = []
        self._metric_chunks: list[torch.Tensor] = []

    # -- metrics -------------------------------------------------------------------

    def _fold_pending(self) -> int:
        """Stack the steps since the last fold into one chunk per value (a few tensors instead
        of one per step); returns the index of the chunk's first step in the epoch."""
        start = len(self._step_sizes) - len(self._step_losses)
        if self._step_losses:
            self._loss_chunks.append(torch.stack(self._step_losses))
            self._metric_chunks.append(torch.stack(self._step_metrics))
            self._step_losses.clear()  # cleared in place: the training loop holds these lists
            self._step_metrics.clear()
        return start

    def _reduce_pending(self) -> None:
        """Fold the steps since the last report into `running`; raise if the loss diverged.

        Only the display uses these partial sums: the epoch's totals are computed once from
        all steps at the end, so they do not depend on when the reports happened to fall.
        """
        if not self._step_losses:
            return
        start = self._fold_pending()
        chunk, metrics = self._loss_chunks[-1], self._metric_chunks[-1]
        losses = chunk.float()
        finite = torch.isfinite(losses)
        sizes = torch.tensor(self._step_sizes[start:], dtype=torch.float32, device=losses.device)
        loss_sum = (losses * sizes).sum()
        metric = metrics.float().sum()
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0, 0])
            raise TrainingDiverged(self.epoch, start + bad + 1, float(losses[bad]))
        self.running.loss_sum += float(loss_sum)
        self.running.metric_sum += float(metric)

    def _step_totals(self) -> tuple[float, float, int]:
        """(loss sum, metric sum, samples) of the epoch from every step, in float64, folding the
        steps not yet folded; raises if a loss diverged. At the end of a short epoch this is
        the only fold: a few tensor operations, where a table's epoch is a few milliseconds."""
        self._fold_pending()
        if not self._step_sizes:
            return 0.0, 0.0, 0
        chunks, metric_chunks = self._loss_chunks, self._metric_chunks
        losses = (chunks[0] if len(chunks) == 1 else torch.cat(chunks)).double()
        metrics = metric_chunks[0] if len(metric_chunks) == 1 else torch.cat(metric_chunks)
        sizes = torch.tensor(self._step_sizes, dtype=torch.float64, device=losses.device)
        loss_sum = float((losses * sizes).sum())
        if not math.isfinite(loss_sum):  # a NaN or infinity in any step makes the sum one
            bad = int((~torch.isfinite(losses)).nonzero()[0, 0])
            raise TrainingDiverged(self.epoch, bad + 1, float(losses[bad]))
        return loss_sum, float(metrics.sum(dtype=torch.float64)), sum(self._step_sizes)

    def running_logs(self) -> dict[str, float]:
        r = self.running
        if r.samples == 0:
            return {}
        return {"loss": r.loss_sum / r.samples, self.metric_name: r.metric_sum / (r.samples * self.metric_per_sample)}

    # -- loops ---------------------------------------------------------------------

    @property
    def compile_seconds(self) -> float:
        """Seconds the first compiled training step and evaluation batch took (0 when eager)."""
        return self.step.compile_seconds

    @property
    def compiled_step(self) -> Optional[str]:
        """How the step was compiled, for run.json (None when eager)."""
        return self.step.compiled_step

    def train_one_epoch(self, batches: Batches) -> dict[str, float]:
        control = self.control
        distributed = self.world_size > 1 and self.all_reduce is not None
        self.model.train()
        self.running = running = Running()
        self.steps_per_epoch = len(batches)
        batches.epoch = self.epoch  # seeds per-batch augmentation by (epoch, batch), even on resume
        self._step_losses, self._step_metrics, self._step_sizes = [], [], []
        self._loss_chunks, self._metric_chunks = [], []
        step_losses, step_metrics, step_sizes = self._step_losses, self._step_metrics, self._step_sizes
        steps = self.step.epoch(batches)
        next_report = running.started + REPORT_INTERVAL_S
        for loss, metric, n in steps:
            step_losses.append(loss)
            step_metrics.append(metric)
            step_sizes.append(n)
            running.step += 1
            running.samples += n
            if distributed:
                if running.step % SYNC_STEPS == 0:
                    next_report = self._sync_check(next_report)
                continue
            if control.signal is not None:
                raise TrainingInterrupted(control.signal)
            now = time.perf_counter()
            if now >= next_report:
                next_report = now + REPORT_INTERVAL_S
                self._reduce_pending()
                for cb in self.callbacks:
                    cb.on_progress(self)
        if distributed:
            self._sync_check(next_report)
        return self._epoch_totals(*self._step_totals())

    def _sync_check(self, next_report: float) -> float:
        """Data parallelism: every process learns at the same step whether any was signalled or
        diverged, so all stop together instead of one waiting forever in a collective."""
        assert self.all_reduce is not None  # called only when there is one
        diverged = None
        try:
            self._reduce_pending()
        except TrainingDiverged as exc:
            diverged = exc
        flags = self.all_reduce(
            torch.tensor([1.0 if self.control.signal else 0.0, 1.0 if diverged else 0.0], dtype=torch.float64)
        )
        if flags[1] > 0:
            raise diverged or TrainingDiverged(self.epoch, self.running.step, float("nan"))
        if flags[0] > 0:
            raise TrainingInterrupted(self.control.signal or "SIGTERM")
        now = time.perf_counter()
        if now >= next_report:
            for cb in self.callbacks:
                cb.on_progress(self)
            return now + REPORT_INTERVAL_S
        return next_report

    def _epoch_totals(self, loss_sum: float, metric_sum: float, samples: int, prefix: str = "") -> dict[str, float]:
        if self.all_reduce is not None:
            totals = self.all_reduce(torch.tensor([loss_sum, metric_sum, float(samples)], dtype=torch.float64))
            loss_sum, metric_sum, samples = float(totals[0]), float(totals[1]), int(totals[2])
        if samples == 0:
            return {}
        return {
            prefix + "loss": loss_sum / samples,
            prefix + self.metric_name: metric_sum / (samples * self.metric_per_sample),
        }

    @torch.inference_mode()
    def evaluate(self, batches: Batches, prefix: str = "") -> dict[str, float]:
        """Mean loss and metric over all batches, in eval mode (dropout off)."""
        was_training = self.model.training
        self.model.eval()
        losses, metrics, samples = [], [], 0
        extra = self.eval_metrics
        if extra is not None:
            extra.reset()
        for xb, yb, _ in batches:
            if extra is None:
                loss, metric = self.step.evaluate_batch(xb, yb)
            else:
                loss, metric, out = self.step.evaluate_outputs(xb, yb)
                extra.update(out, yb)  # counts and scores stay on the device until compute()
            losses.append(loss.float() * len(yb))
            metrics.append(metric.float())
            samples += len(yb)
        self.model.train(was_training)
        # One batch (a table's validation split): its values as they are, no stacking.
        loss_sum = float(losses[0] if len(losses) == 1 else torch.stack(losses).sum()) if losses else 0.0
        metric_sum = float(metrics[0] if len(metrics) == 1 else torch.stack(metrics).sum()) if metrics else 0.0
        logs = self._epoch_totals(loss_sum, metric_sum, samples, prefix)
        if extra is not None and logs:
            values, self.metric_details[prefix] = extra.compute(self.all_reduce)
            logs.update({prefix + name: value for name, value in values.items()})
        return logs

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return required_optimizer(self._optimizer)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def fit(
        self, train: Batches, val: Optional[Batches] = None, epochs: int = 1, start_epoch: int = 0
    ) -> list[dict[str, float]]:
        """Train epochs start_epoch+1 .. epochs; returns the history of per-epoch logs."""
        self.epochs = epochs
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_train_begin(self)
        for epoch in range(start_epoch + 1, epochs + 1):
            self.epoch = epoch
            lr = self.current_lr()
            # What a display shows before the first step: 0 of this epoch's steps, not the
            # last epoch's full count (or 0/0 before the first epoch).
            self.running, self.steps_per_epoch = Running(), len(train)
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch, self)
            started = time.perf_counter()
            logs = {"epoch": epoch, **self.train_one_epoch(train)}
            if val is not None:
                logs.update(self.evaluate(val, prefix="val_"))
            logs["lr"] = lr
            logs["seconds"] = time.perf_counter() - started
            if self.schedule is not None:
                self.schedule.step(logs)
            self.history.append(logs)
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs, self)
            if self.stop_training:
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history


@torch.inference_mode()
def predict(model: torch.nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """All outputs (logits) and targets of the batches, in order, on the CPU."""
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    for xb, yb, _ in batches:
        outputs.append(model(xb).float().cpu())
        targets.append(yb.cpu())
    model.train(was_training)
    return torch.cat(outputs), torch.cat(targets)
