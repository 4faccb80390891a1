"""One training step behind one interface, and the factory that picks how it runs.

Every step computes the same thing (forward, loss, backward, optimizer update, one metric
sum), read in `EagerStep.__call__`. What differs is how it is run:

- `EagerStep`: as a hand-written PyTorch loop would.
- `TwoGraphStep` (training.compile): forward, loss and metric as one compiled graph (its
  backward compiled with it), the optimizer's update as another.
- `OneGraphStep` (training.compile on the CPU, where it applies): gradients and update traced
  together as one graph; see one_graph_step.py.
- `CudaGraphStep` (training.cuda_graph): the whole step recorded once as a CUDA graph and
  replayed.

`make_step` builds the right one from the model, loss, optimizer and precision; the Trainer
keeps the epoch loop, the metric folding, the checks across processes and the callbacks.
Each step yields, per batch, (loss, metric sum, samples) still on the device.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional, Protocol

import torch

from .one_graph_step import OneGraphStep, one_graph_blocker

StepResult = tuple[torch.Tensor, torch.Tensor, int]  # (loss, metric sum, samples) on the device
# run.json's compiled_step where the step cannot be one graph; the reason follows.
TWO_GRAPHS = "two graphs (forward and backward; optimizer update): "
WARMUP_STEPS = 3  # eager steps before recording, on a side stream: PyTorch's recipe for graphs


class StepMath:
    """What every step computes from a batch: the model's outputs and the loss (under bf16
    autocast when asked; the loss and metric in fp32), and the metric sum."""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable,
        metric_sum: Callable,
        device: torch.device,
        bf16: bool = False,
        cache_casts: bool = True,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.metric_sum = metric_sum
        self.device = device
        self.bf16 = bf16
        # A recorded CUDA graph must not keep autocast's cache of cast weights (PyTorch's rule).
        self.cache_casts = cache_casts

    def autocast(self) -> ContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=self.cache_casts)

    def forward_loss(
        self, xb: torch.Tensor, yb: torch.Tensor, model: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, loss); `model` replaces self.model where a step calls it functionally."""
        model = model or self.model
        if self.bf16:
            with self.autocast():
                out = model(xb)
                return out, self.loss_fn(out.float(), yb)
        out = model(xb)
        return out, self.loss_fn(out, yb)

    def loss_and_metric(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, metric sum) of one batch: what evaluation computes, and what torch.compile
        turns into one graph for training."""
        out, loss = self.forward_loss(xb, yb)
        with torch.no_grad():
            metric = self.metric_sum(out.detach().float(), yb)
        return loss, metric

    def loss_metric_outputs(
        self, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, metric sum, outputs in fp32) of one batch: evaluation with validation metrics."""
        out, loss = self.forward_loss(xb, yb)
        out = out.detach().float()
        return loss, self.metric_sum(out, yb), out


def required_optimizer(optimizer: Optional[torch.optim.Optimizer]) -> torch.optim.Optimizer:
    """The optimizer, or the error for a trainer built to evaluate only."""
    if optimizer is None:
        raise RuntimeError("This Trainer was built without an optimizer: it can only evaluate.")
    return optimizer


class TrainingStep(Protocol):
    compiled_step: Optional[str]  # how the step was compiled, for run.json (None: eager)
    compile_seconds: float

    def epoch(self, batches: Any) -> Iterator[StepResult]: ...
    def evaluate_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def evaluate_outputs(
        self, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class UpdateOptions:
    """What happens around each optimizer update: `clip(params)` between backward and the
    update (gradient clipping), `after_update()` after it (a per-step learning-rate schedule),
    and `accumulation` micro-batches per update (gradient accumulation)."""

    clip: Optional[Callable[[list], None]] = None
    after_update: Optional[Callable[[], None]] = None
    accumulation: int = 1


class EagerStep:
    """The step as a hand-written loop runs it."""

    compiled_step: Optional[str] = None
    compile_seconds = 0.0

    def __init__(
        self,
        math: StepMath,
        optimizer: Optional[torch.optim.Optimizer],
        gradient_scale=None,
        updates: UpdateOptions = UpdateOptions(),
    ) -> None:
        self.math = math
        self.optimizer = optimizer
        # Data parallelism: DDP averages gradients over ranks; weighting each rank's loss by its
        # share of the global batch makes that the mean over the global batch even when the
        # shares are unequal. (samples here, global samples) -> factor, or None for one process.
        self.gradient_scale = gradient_scale
        self.updates = updates

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, global_n: int) -> StepResult:
        out, loss = self.math.forward_loss(xb, yb)
        optimizer = self._required_optimizer()
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss, len(yb), global_n)
        self.apply_update()
        return loss.detach(), self.math.metric_sum(out, yb), len(yb)

    def backward(self, loss: torch.Tensor, n: int, global_n: int) -> None:
        """Backward of the loss weighted by this batch's share of `global_n` samples (the global
        batch, or under accumulation the window), so the gradients add up to the mean over them."""
        if self.gradient_scale is not None:
            loss = loss * self.gradient_scale(n, global_n)
        elif n != global_n:
            loss = loss * (n / global_n)
        loss.backward()

    def apply_update(self) -> None:
        """Clip (if asked), update, then tell a per-step schedule."""
        updates = self.updates
        if updates.clip is not None:
            updates.clip([p for g in self._required_optimizer().param_groups for p in g["params"]])
        self._run_update()
        if updates.after_update is not None:
            updates.after_update()

    def _run_update(self) -> None:
        self._required_optimizer().step()

    def micro_batch(self, xb: torch.Tensor, yb: torch.Tensor, window_n: int) -> StepResult:
        """Forward and backward of one micro-batch of a window of `window_n` samples, adding its
        share to the gradients; no update."""
        out, loss = self.math.forward_loss(xb, yb)
        self.backward(loss, len(yb), window_n)
        return loss.detach(), self.math.metric_sum(out, yb), len(yb)

    def epoch(self, batches: Any) -> Iterator[StepResult]:
        if self.updates.accumulation > 1:
            yield from self.accumulated_epoch(batches)
            return
        for xb, yb, global_n in batches:
            yield self(xb, yb, global_n)

    def accumulated_epoch(self, batches: Any) -> Iterator[StepResult]:
        """Gradient accumulation: one update per window of `accumulation` micro-batches, the
        gradients averaged over the samples the window actually holds (an epoch's last window
        may be partial). The window's batches are taken first (inputs only) to count them.
        Under DDP only the window's last micro-batch all-reduces (no_sync on the others)."""
        optimizer = self._required_optimizer()
        iterator = iter(batches)
        while True:
            window = list(itertools.islice(iterator, self.updates.accumulation))
            if not window:
                return
            window_n = sum(global_n for _, _, global_n in window)
            optimizer.zero_grad(set_to_none=True)
            no_sync: Optional[Callable[[], ContextManager]] = getattr(self.math.model, "no_sync", None)
            for i, (xb, yb, _) in enumerate(window):
                last = i == len(window) - 1
                with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                    yield self.micro_batch(xb, yb, window_n)
            window.clear()
            self.apply_update()

    @torch.inference_mode()
    def evaluate_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.math.autocast():
            out = self.math.model(xb).float()
        return self.math.loss_fn(out, yb), self.math.metric_sum(out, yb)

    @torch.inference_mode()
    def evaluate_outputs(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, metric sum, outputs) of one batch: for validation metrics beyond the objective's."""
        with self.math.autocast():
            out = self.math.model(xb).float()
        return self.math.loss_fn(out, yb), self.math.metric_sum(out, yb), out

    def _required_optimizer(self) -> torch.optim.Optimizer:
        return required_optimizer(self.optimizer)


class TwoGraphStep(EagerStep):
    """training.compile: forward, loss and metric as one graph (its backward compiled with it)
    and the optimizer's update as another; on the CPU the whole step as one graph where it
    can (OneGraphStep), falling back to two graphs when it cannot. The compiled forward serves
    evaluation too (compiled again once, for eval mode). compile_seconds: the first compiled
    training step and the first evaluation batch, nearly all of which is compiling."""

    def __init__(
        self,
        math: StepMath,
        optimizer: Optional[torch.optim.Optimizer],
        mode: str,
        world_size: int = 1,
        gradient_scale=None,
        updates: UpdateOptions = UpdateOptions(),
    ) -> None:
        super().__init__(math, optimizer, gradient_scale, updates)
        quiet_compile_notes()
        self.compile_seconds = 0.0
        # These modes replay CUDA graphs, whose outputs the next replay overwrites: the step's
        # loss and metric, kept until the next report, are copied out of them.
        self.graph_outputs = mode in ("reduce-overhead", "max-autotune")
        self.one_graph: Optional[OneGraphStep] = None
        blocker = one_graph_blocker(math.model, optimizer, math.device, world_size, updates)
        if blocker is None:
            assert optimizer is not None  # one_graph_blocker refuses an evaluation-only step
            self.one_graph = OneGraphStep(math, optimizer, mode)
            self.compiled_step = "one graph: gradients and optimizer update together"
        else:
            self.compiled_step = TWO_GRAPHS + blocker
        # dynamic=False: one graph per batch shape (the full batch, the last one, evaluation's).
        # Left to itself, torch.compile answers the first short last batch with a graph for any
        # batch size, and every later full batch runs that slower, general graph.
        self.forward_metric: Callable = torch.compile(math.loss_and_metric, mode=mode, dynamic=False)
        # A fused optimizer (Adam, AdamW) already updates every parameter in one kernel, faster
        # than the kernel torch.compile would generate for it; others are compiled. A changed
        # learning rate recompiles that update once; after that PyTorch treats it as a variable.
        self.update: Callable = self._optimizer_update
        if optimizer is None or not all(g.get("fused") for g in optimizer.param_groups):
            self.update = torch.compile(self._optimizer_update)
        self._compiled_train = self._compiled_eval = False
        self.mode = mode
        self._forward_outputs: Optional[Callable] = None  # evaluation with outputs, compiled when first asked
        self._compiled_eval_outputs = False

    def _optimizer_update(self) -> None:
        self._required_optimizer().step()

    def _run_update(self) -> None:
        self.update()

    def micro_batch(self, xb: torch.Tensor, yb: torch.Tensor, window_n: int) -> StepResult:
        if self.graph_outputs:
            torch.compiler.cudagraph_mark_step_begin()
        loss, metric = self.forward_metric(xb, yb)
        self.backward(loss, len(yb), window_n)
        if self.graph_outputs:
            return loss.detach().clone(), metric.clone(), len(yb)
        return loss.detach(), metric, len(yb)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, global_n: int) -> StepResult:
        one_graph = self.one_graph
        # The one-graph step's first call runs eagerly; its second is the one that compiles.
        compiling = not self._compiled_train and (one_graph is None or one_graph.primed)
        started = time.perf_counter() if compiling else None
        n = len(yb)
        if one_graph is not None:
            loss, metric = one_graph(xb, yb)
            if self.updates.after_update is not None:
                self.updates.after_update()
            if one_graph.fallback is not None:  # this step ran eagerly; the next ones two graphs
                self.one_graph = None
                self.compiled_step = TWO_GRAPHS + one_graph.fallback
        else:
            if self.graph_outputs:
                torch.compiler.cudagraph_mark_step_begin()
            loss, metric = self.forward_metric(xb, yb)
            self._required_optimizer().zero_grad(set_to_none=True)
            self.backward(loss, n, global_n)
            self.apply_update()
        if started is not None:
            self.compile_seconds += time.perf_counter() - started
            self._compiled_train = True
        if self.graph_outputs:
            return loss.detach().clone(), metric.clone(), n
        return loss.detach(), metric, n

    @torch.inference_mode()
    def evaluate_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        started = None if self._compiled_eval else time.perf_counter()
        if self.graph_outputs:
            torch.compiler.cudagraph_mark_step_begin()
        loss, metric = self.forward_metric(xb, yb)
        if self.graph_outputs:
            loss, metric = loss.clone(), metric.clone()
        if started is not None:
            self.compile_seconds += time.perf_counter() - started
            self._compiled_eval = True
        return loss, metric

    @torch.inference_mode()
    def evaluate_outputs(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Compiled like evaluate_batch (its own graph, compiled on first use), with the outputs."""
        if self._forward_outputs is None:
            self._forward_outputs = torch.compile(self.math.loss_metric_outputs, mode=self.mode, dynamic=False)
        started = None if self._compiled_eval_outputs else time.perf_counter()
        if self.graph_outputs:
            torch.compiler.cudagraph_mark_step_begin()
        loss, metric, out = self._forward_outputs(xb, yb)
        if self.graph_outputs:
            loss, metric, out = loss.clone(), metric.clone(), out.clone()
        if started is not None:
            self.compile_seconds += time.perf_counter() - started
            self._compiled_eval_outputs = True
        return loss, metric, out


class CudaGraphStep(EagerStep):
    """training.cuda_graph: each full-size training step replayed from a CUDA graph recorded
    for the epoch's batches (see GraphedStep); on the CPU the same step body runs eagerly,
    which is how the tests check it."""

    def __init__(
        self,
        math: StepMath,
        optimizer: Optional[torch.optim.Optimizer],
        gradient_scale=None,
        updates: UpdateOptions = UpdateOptions(),
    ) -> None:
        super().__init__(math, optimizer, gradient_scale, updates)
        self.graphed: Optional[GraphedStep] = None

    def epoch(self, batches: Any) -> Iterator[StepResult]:
        if self.graphed is None or self.graphed.batches is not batches:
            self.graphed = GraphedStep(self, batches, record=self.math.device.type == "cuda")
        return self.graphed.epoch()


class GraphedStep:
    """A whole training step (batch gather, forward, loss, backward, optimizer, metric) recorded
    once as a CUDA graph and replayed for every full-size batch.

    A small model's step on a GPU is bound by the host: each of its couple of hundred kernels
    costs a Python call and a launch, while the GPU itself is busy for a fraction of that time.
    One replay launches them all. A graph works on fixed addresses, so the step reads its batch
    through `index`, a fixed tensor the host fills with the batch's sample indices, and writes
    its loss and metric into per-epoch buffers at a step counter kept on the device; per step
    the host copies the indices and calls replay, and nothing waits for the GPU.

    Eager steps: the first WARMUP_STEPS (so that lazily created optimizer state and library
    handles exist before recording), and any batch of another size (an epoch's last). The step
    is recorded again when the learning rate has changed, because the optimizer's kernels take
    it as a fixed argument. With `record=False` the same step body runs eagerly every time.
    """

    def __init__(self, step: EagerStep, batches: Any, record: bool) -> None:
        self.step = step
        self.optimizer = step._required_optimizer()
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
        math = self.step.math
        xb, yb = self.batches.take(self.index)
        out, loss = math.forward_loss(xb, yb)
        loss.backward()
        if self.step.updates.clip is not None:
            self.step.updates.clip([p for g in self.optimizer.param_groups for p in g["params"]])
        self.optimizer.step()
        self.losses.index_copy_(0, self.counter, loss.detach().float().reshape(1))
        self.metrics.index_copy_(0, self.counter, math.metric_sum(out, yb).double().reshape(1))
        self.counter.add_(1)

    def _lrs(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _record(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = None  # frees the previous recording's memory pool first
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.side_stream):  # the warm-up's stream, whose library
            self._body()  # handles and workspaces exist already
        self.graph = graph

    def _eager(self, idx: torch.Tensor) -> StepResult:
        with warnings.catch_warnings():
            # PyTorch warns once that a capturable optimizer stepping outside a graph is slower.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            xb, yb = self.batches.take(idx)
            if self.side_stream is None or self.recordings:  # warm-up before the first recording only
                return self.step(xb, yb, len(idx))
            current = torch.cuda.current_stream()
            self.side_stream.wait_stream(current)
            with torch.cuda.stream(self.side_stream):
                result = self.step(xb, yb, len(idx))
            current.wait_stream(self.side_stream)
            return result

    def epoch(self) -> Iterator[StepResult]:
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
                self.optimizer.zero_grad(set_to_none=True)
                self._body()
            yield self.losses[replays], self.metrics[replays], self.batch_size
            replays += 1


def make_step(
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    loss_fn: Callable,
    metric_sum: Callable,
    *,
    device: torch.device,
    precision: str = "fp32",
    cuda_graph: bool = False,
    compile_mode: Optional[str] = None,
    world_size: int = 1,
    data_parallel: bool = False,
    updates: UpdateOptions = UpdateOptions(),
) -> TrainingStep:
    """The training step for these options: recorded as a CUDA graph, compiled, or eager."""
    math = StepMath(model, loss_fn, metric_sum, device, bf16=precision == "bf16", cache_casts=not cuda_graph)
    scale = None
    if data_parallel and world_size > 1:

        def scale(n: int, global_n: int) -> float:
            return n * world_size / global_n

    if cuda_graph:
        if updates.accumulation > 1 or updates.after_update is not None:
            raise ValueError("a CUDA graph step records one whole step at a fixed learning rate")
        return CudaGraphStep(math, optimizer, scale, updates)
    if compile_mode is not None:
        return TwoGraphStep(math, optimizer, compile_mode, world_size, scale, updates)
    return EagerStep(math, optimizer, scale, updates)


# What torch.compile logs as warnings on every CPU run though nothing is wrong: the C++
# toolchain looking for a CUDA it does not need, and the optimizer's profiling label.
_COMPILE_NOTES = ("No CUDA runtime is found", "Profiler record function")


class _CompileNoteFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(note in message for note in _COMPILE_NOTES)


def quiet_compile_notes() -> None:
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
