"""The training loop: batches from in-memory tensors, train, evaluate, fit with callbacks.

No file I/O, no YAML, no printing: the engine gets built objects and reports through
callbacks, so it can be tested alone in milliseconds. The per-step path does exactly what
a hand-written PyTorch loop does (slice, convert, forward, loss, backward, step, one metric
sum) and nothing that forces a device synchronisation: losses and metric sums stay on the
device in a list and are reduced a few times a second, which is also when divergence is
checked and progress callbacks run.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from .errors import TrainingDiverged, TrainingInterrupted
from .one_graph_step import OneGraphStep, one_graph_blocker

REPORT_INTERVAL_S = 0.25  # how often running metrics are reduced and shown
SYNC_STEPS = 25  # under data parallelism: steps between the collective stop/divergence checks
# run.json's compiled_step where the step cannot be one graph; the reason follows.
TWO_GRAPHS = "two graphs (forward and backward; optimizer update): "


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
    ) -> None:
        self.device = torch.device(device)
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
        x, y, bs = self.x, self.y, self.batch_size
        order = self._order()
        for start in range(0, self.n, bs):
            if order is not None:
                idx = order[start : start + bs]
                global_n = len(idx)
                if self.world_size > 1:
                    if global_n < self.world_size:
                        break  # a last batch too small to give every process a sample is dropped
                    idx = idx.tensor_split(self.world_size)[self.rank]
                xb, yb = x[idx], y[idx]
            else:
                end = min(start + bs, self.n)
                global_n = end - start
                if self.world_size > 1:  # evaluation: every sample once, on some process
                    bounds = torch.arange(start, end).tensor_split(self.world_size)[self.rank]
                    if len(bounds) == 0:
                        continue
                    lo = int(bounds[0])
                    xb, yb = x[lo : lo + len(bounds)], y[lo : lo + len(bounds)]
                else:
                    xb, yb = x[start:end], y[start:end]
            xb, yb = self._on_device(xb, yb)
            if self.transform is not None:
                xb = self.transform(xb, self.epoch, start // bs)
            yield xb, yb, global_n


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
    ) -> None:
        self.model = model
        self._optimizer = optimizer
        self.loss_fn = loss_fn
        self.metric_sum = metric_sum
        self.metric_name = metric_name
        self.metric_per_sample = metric_per_sample
        self.device = torch.device(device)
        self.autocast = precision == "bf16"
        self.schedule = schedule
        self.callbacks = list(callbacks)
        self.control = control or RunControl()
        self.all_reduce = all_reduce  # sums a tensor over ranks (data parallelism)
        self.world_size = world_size
        # Replay each full-size training step from a CUDA graph (see GraphedStep); on the CPU
        # the same step runs eagerly, which is how the tests check it.
        self.cuda_graph = cuda_graph
        self._graphed: Optional[GraphedStep] = None
        # torch.compile covers the whole step, not only the model. On the CPU, where it can,
        # the step is one graph (OneGraphStep: gradients and update traced together). Else
        # forward, loss and metric are one graph (its backward compiled with it) and the
        # optimizer's update another, which on the CPU is where an MLP's eager step loses most
        # (a kernel per parameter per op). The compiled forward serves evaluation (compiled
        # again once, for eval mode). A changed learning rate recompiles that update once;
        # after that PyTorch treats it as a variable (the one graph takes it as a tensor).
        # compile_seconds: the first compiled training step and the first evaluation batch,
        # nearly all of which is compiling.
        self.compile_mode = compile_mode
        # These modes replay CUDA graphs, whose outputs the next replay overwrites: the step's
        # loss and metric, kept until the next report, are copied out of them.
        self._graph_outputs = compile_mode in ("reduce-overhead", "max-autotune")
        self.compile_seconds = 0.0
        self._forward_metric: Callable = self._loss_and_metric
        self._update: Callable = self._optimizer_update
        self._one_graph: Optional[OneGraphStep] = None
        self.compiled_step: Optional[str] = None  # how the step was compiled, for run.json
        if compile_mode is not None:
            _quiet_compile_notes()
            blocker = one_graph_blocker(model, optimizer, self.device, world_size)
            if blocker is None:
                self._one_graph = OneGraphStep(self, compile_mode)
                self.compiled_step = "one graph: gradients and optimizer update together"
            else:
                self.compiled_step = TWO_GRAPHS + blocker
            # dynamic=False: one graph per batch shape (the full batch, the last one, evaluation's).
            # Left to itself, torch.compile answers the first short last batch with a graph for
            # any batch size, and every later full batch runs that slower, general graph.
            self._forward_metric = torch.compile(self._loss_and_metric, mode=compile_mode, dynamic=False)
            # A fused optimizer (Adam, AdamW) already updates every parameter in one kernel,
            # faster than the kernel torch.compile would generate for it; others are compiled.
            if self._optimizer is None or not all(g.get("fused") for g in self._optimizer.param_groups):
                self._update = torch.compile(self._optimizer_update)
        self._compiled_train = self._compiled_eval = compile_mode is None
        self.epoch = 0
        self.epochs = 0
        self.steps_per_epoch = 0
        self.stop_training = False
        self.history: list[dict[str, float]] = []
        self.running = Running()
        # Per-step values of the current epoch, kept on the device (no sync per step): the
        # steps since the last report as single values, the earlier ones stacked per report.
        # Stacking a few times a second frees the single values soon; kept for a whole epoch,
        # thousands of them scattered the CPU heap (measured: +30-50 MB for the MLP).
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

    def _forward_loss(
        self, xb: torch.Tensor, yb: torch.Tensor, model: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, loss); `model` replaces self.model where the step calls it functionally."""
        model = model or self.model
        if self.autocast:
            # A recorded graph must not keep autocast's cache of cast weights (PyTorch's rule).
            with torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cuda_graph):
                out = model(xb)
                return out, self.loss_fn(out.float(), yb)
        out = model(xb)
        return out, self.loss_fn(out, yb)

    def _loss_and_metric(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, metric sum) of one batch: what torch.compile turns into one graph."""
        out, loss = self._forward_loss(xb, yb)
        with torch.no_grad():
            metric = self.metric_sum(out.detach().float(), yb)
        return loss, metric

    def _optimizer_update(self) -> None:
        self.optimizer.step()

    def _eager_step(self, xb: torch.Tensor, yb: torch.Tensor, global_n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimisation step; (loss, metric sum, samples), both still on the device."""
        if self.compile_mode is not None:
            return self._compiled_step(xb, yb, global_n)
        out, loss = self._forward_loss(xb, yb)
        n = len(yb)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss, n, global_n)
        self.optimizer.step()
        return loss.detach(), self.metric_sum(out, yb), n

    def _backward(self, loss: torch.Tensor, n: int, global_n: int) -> None:
        if self.world_size > 1 and self.all_reduce is not None:
            # DDP averages gradients over ranks; weighting by the local share makes the
            # result the mean over the global batch even when the shares are unequal.
            (loss * (n * self.world_size / global_n)).backward()
        else:
            loss.backward()

    def _compiled_step(
        self, xb: torch.Tensor, yb: torch.Tensor, global_n: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        one_graph = self._one_graph
        # The one-graph step's first call runs eagerly; its second is the one that compiles.
        compiling = not self._compiled_train and (one_graph is None or one_graph.primed)
        started = time.perf_counter() if compiling else None
        n = len(yb)
        if one_graph is not None:
            loss, metric = one_graph(xb, yb)
            if one_graph.fallback is not None:  # this step ran eagerly; the next ones two graphs
                self._one_graph = None
                self.compiled_step = TWO_GRAPHS + one_graph.fallback
        else:
            if self._graph_outputs:
                torch.compiler.cudagraph_mark_step_begin()
            loss, metric = self._forward_metric(xb, yb)
            self.optimizer.zero_grad(set_to_none=True)
            self._backward(loss, n, global_n)
            self._update()
        if started is not None:
            self.compile_seconds += time.perf_counter() - started
            self._compiled_train = True
        if self._graph_outputs:
            return loss.detach().clone(), metric.clone(), n
        return loss.detach(), metric, n

    def _eager_steps(self, batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for xb, yb, global_n in batches:
            yield self._eager_step(xb, yb, global_n)

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
        if self.cuda_graph:
            if self._graphed is None or self._graphed.batches is not batches:
                self._graphed = GraphedStep(self, batches, record=self.device.type == "cuda")
            steps = self._graphed.epoch()
        else:
            steps = self._eager_steps(batches)
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
        for xb, yb, _ in batches:
            if self.compile_mode is not None:
                started = None if self._compiled_eval else time.perf_counter()
                if self._graph_outputs:
                    torch.compiler.cudagraph_mark_step_begin()
                loss, metric = self._forward_metric(xb, yb)
                if self._graph_outputs:
                    loss, metric = loss.clone(), metric.clone()
                if started is not None:
                    self.compile_seconds += time.perf_counter() - started
                    self._compiled_eval = True
            elif self.autocast:
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    out = self.model(xb).float()
                loss, metric = self.loss_fn(out, yb), self.metric_sum(out, yb)
            else:
                out = self.model(xb)
                loss, metric = self.loss_fn(out, yb), self.metric_sum(out, yb)
            losses.append(loss.float() * len(yb))
            metrics.append(metric.float())
            samples += len(yb)
        self.model.train(was_training)
        # One batch (a table's validation split): its values as they are, no stacking.
        loss_sum = float(losses[0] if len(losses) == 1 else torch.stack(losses).sum()) if losses else 0.0
        metric_sum = float(metrics[0] if len(metrics) == 1 else torch.stack(metrics).sum()) if metrics else 0.0
        return self._epoch_totals(loss_sum, metric_sum, samples, prefix)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            raise RuntimeError("This Trainer was built without an optimizer: it can only evaluate.")
        return self._optimizer

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


# What torch.compile logs as warnings on every CPU run though nothing is wrong: the C++
# toolchain looking for a CUDA it does not need, and the optimizer's profiling label.
_COMPILE_NOTES = ("No CUDA runtime is found", "Profiler record function")


class _CompileNoteFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(note in message for note in _COMPILE_NOTES)


def _quiet_compile_notes() -> None:
    def filter_handlers() -> None:
        for name in list(logging.Logger.manager.loggerDict):
            if name == "torch" or name.startswith("torch."):
                for handler in logging.getLogger(name).handlers:
                    if not any(isinstance(f, _CompileNoteFilter) for f in handler.filters):
                        handler.addFilter(_CompileNoteFilter())

    filter_handlers()
    import torch._dynamo  # noqa: F401  (their import logs the first note and makes more loggers)
    import torch.utils.cpp_extension  # noqa: F401

    filter_handlers()


WARMUP_STEPS = 3  # eager steps before recording, on a side stream: PyTorch's recipe for graphs


class GraphedStep:
    """A whole training step (batch gather, forward, loss, backward, optimizer, metric) recorded
    once as a CUDA graph and replayed for every full-size batch.

    A small model's step on a GPU is bound by the host: each of its couple of hundred kernels
    costs a Python call and a launch, while the GPU itself is busy for a fraction of that time
    (measured for the course's CNN on an H200: 0.35 ms busy in a 2.4 ms step). One replay
    launches them all. A graph works on fixed addresses, so the step reads its batch through
    `index`, a fixed tensor the host fills with the batch's sample indices, and writes its loss
    and metric into per-epoch buffers at a step counter kept on the device; per step the host
    copies the indices and calls replay, and nothing waits for the GPU.

    Eager steps: the first WARMUP_STEPS (so that lazily created optimizer state and library
    handles exist before recording), and any batch of another size (an epoch's last). The step
    is recorded again when the learning rate has changed, because the optimizer's kernels take
    it as a fixed argument. With `record=False` the same step body runs eagerly every time.
    """

    def __init__(self, trainer: Trainer, batches: Batches, record: bool) -> None:
        self.trainer = trainer
        self.batches = batches
        self.record = record
        self.batch_size = batches.batch_size
        device = batches.x.device
        self.index = torch.zeros(self.batch_size, dtype=torch.int64, device=device)
        full_batches = batches.n // self.batch_size
        self.losses = torch.zeros(max(full_batches, 1), dtype=torch.float32, device=device)
        self.metrics = torch.zeros(max(full_batches, 1), dtype=torch.float64, device=device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.graph: Any = None
        self.recorded_lrs: Optional[list] = None
        self.recordings = 0
        self.eager_steps_left = WARMUP_STEPS
        self.side_stream = torch.cuda.Stream(device) if record else None

    def _body(self) -> None:
        """What the graph holds. Gradients are None when it is recorded, so backward writes
        them afresh on every replay instead of adding to the previous step's."""
        trainer = self.trainer
        xb, yb = self.batches.take(self.index)
        out, loss = trainer._forward_loss(xb, yb)
        loss.backward()
        trainer.optimizer.step()
        self.losses.index_copy_(0, self.counter, loss.detach().float().reshape(1))
        self.metrics.index_copy_(0, self.counter, trainer.metric_sum(out, yb).double().reshape(1))
        self.counter.add_(1)

    def _lrs(self) -> list:
        return [group["lr"] for group in self.trainer.optimizer.param_groups]

    def _record(self) -> None:
        self.trainer.optimizer.zero_grad(set_to_none=True)
        self.graph = None  # frees the previous recording's memory pool first
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.side_stream):  # the warm-up's stream, whose library
            self._body()  # handles and workspaces exist already
        self.graph = graph

    def _eager(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        trainer = self.trainer
        with warnings.catch_warnings():
            # PyTorch warns once that a capturable optimizer stepping outside a graph is slower.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            if self.side_stream is None or self.recordings:  # warm-up before the first recording only
                return trainer._eager_step(*self.batches.take(idx), len(idx))
            current = torch.cuda.current_stream()
            self.side_stream.wait_stream(current)
            with torch.cuda.stream(self.side_stream):
                result = trainer._eager_step(*self.batches.take(idx), len(idx))
            current.wait_stream(self.side_stream)
            return result

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """The epoch's steps: (loss, metric sum, samples) each, on the device."""
        self.counter.zero_()
        if self.recorded_lrs is not None and self.recorded_lrs != self._lrs():
            self.recorded_lrs = None  # record again at the first full-size step
        replays = 0
        for idx in self.batches.indices():
            if len(idx) != self.batch_size or self.eager_steps_left > 0:
                self.eager_steps_left = max(self.eager_steps_left - 1, 0)
                yield self._eager(idx)
                continue
            self.index.copy_(idx, non_blocking=True)
            if self.recorded_lrs is None:
                if self.record:
                    self._record()
                self.recorded_lrs = self._lrs()
                self.recordings += 1
            if self.record:
                self.graph.replay()
            else:
                self.trainer.optimizer.zero_grad(set_to_none=True)
                self._body()
            yield self.losses[replays], self.metrics[replays], self.batch_size
            replays += 1


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
