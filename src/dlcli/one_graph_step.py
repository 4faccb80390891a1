"""training.compile on the CPU: the whole training step as one compiled graph.

Compiling the model and the optimizer's update separately leaves autograd's engine, the
gradient tensors and two graph calls between them, which dominate a small model's step on
the CPU. Traced as one function (gradients by `torch.func.grad` over the model called with
its own parameters, then PyTorch's functional optimizer update on the optimizer's own state
tensors) the step compiles to a single graph that updates the parameters in place. The
optimizer object stays the one source of its state, so checkpoints, resume and learning-rate
schedules see no difference.

Where this does not apply (see `one_graph_blocker`), training.compile keeps two graphs.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

if TYPE_CHECKING:
    from .steps import StepMath

Update = Callable[..., None]  # called as update(grads=[...], lr=tensor)


def one_graph_blocker(
    model: torch.nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    device: torch.device,
    world_size: int,
    updates: Any = None,
) -> Optional[str]:
    """Why the step cannot be one graph, or None when it can. `updates`: the step's
    steps.UpdateOptions (accumulation and clipping happen between backward and the update)."""
    if optimizer is None:
        return "evaluation only (no optimizer)"
    if updates is not None and updates.accumulation > 1:
        return "gradient accumulation: one graph cannot hold a window of micro-batches"
    if updates is not None and updates.clip is not None:
        return "gradient clipping runs between the gradients and the update"
    if device.type != "cpu":
        # Measured and tested on the CPU only; on CUDA the fused update and CUDA graphs
        # (compile: reduce-overhead) already take the per-kernel launch cost away.
        return "not on the CPU"
    if world_size > 1:
        return "data parallelism averages gradients in autograd's hooks, which the traced step skips"
    if next(model.buffers(), None) is not None:
        # A batch norm's running statistics are updated in place during the forward, which a
        # function differentiated by torch.func must not do to a tensor it did not create.
        return "the model has buffers (batch norm running statistics)"
    for module in model.modules():
        # A module says so where torch.func cannot differentiate it (packed sequences).
        reason = getattr(module, "not_differentiable_by_torch_func", None)
        if reason:
            return reason
    if len(optimizer.param_groups) != 1 or _update_of(optimizer) is None:
        return f"no functional update for {type(optimizer).__name__}"
    named = {id(p) for p in model.parameters()}
    params = optimizer.param_groups[0]["params"]
    if not all(id(p) in named for p in params):
        return "the optimizer updates tensors that are not the model's parameters"
    if not all(p.requires_grad for p in params):
        return "the optimizer holds frozen parameters (requires_grad false)"
    return None


def _update_of(optimizer: torch.optim.Optimizer) -> Optional[Callable[[torch.optim.Optimizer, list], Update]]:
    # AdamW is an Adam with decoupled weight decay in recent PyTorch, its own class before.
    if isinstance(optimizer, torch.optim.Adam):
        return _adam_update
    if isinstance(optimizer, torch.optim.AdamW):
        return _adamw_update
    if isinstance(optimizer, torch.optim.SGD):
        return _sgd_update
    if isinstance(optimizer, torch.optim.RMSprop):
        return _rmsprop_update
    return None


# Each binds PyTorch's own functional update (the one `optimizer.step()` calls, single-tensor
# form) to the optimizer's state tensors and options; the learning rate stays a tensor, so a
# schedule changing it does not compile the step again.


def _adam_update(optimizer: torch.optim.Optimizer, params: list) -> Update:
    from torch.optim.adam import adam

    return _adam_family_update(adam, optimizer, params)


def _adamw_update(optimizer: torch.optim.Optimizer, params: list) -> Update:
    from torch.optim.adamw import adamw

    return _adam_family_update(adamw, optimizer, params)


def _adam_family_update(update: Callable, optimizer: torch.optim.Optimizer, params: list) -> Update:
    group, state = optimizer.param_groups[0], optimizer.state
    # Recent PyTorch's AdamW is an Adam whose group says so; the older AdamW has its own update.
    extra = {"decoupled_weight_decay": group["decoupled_weight_decay"]} if "decoupled_weight_decay" in group else {}
    return functools.partial(
        _call_with_grads,
        update,
        params,
        [state[p]["exp_avg"] for p in params],
        [state[p]["exp_avg_sq"] for p in params],
        [state[p]["max_exp_avg_sq"] for p in params] if group["amsgrad"] else [],
        [state[p]["step"] for p in params],
        foreach=False,
        amsgrad=group["amsgrad"],
        beta1=group["betas"][0],
        beta2=group["betas"][1],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        **extra,
    )


def _sgd_update(optimizer: torch.optim.Optimizer, params: list) -> Update:
    from torch.optim.sgd import sgd

    group, state = optimizer.param_groups[0], optimizer.state
    buffers = [state[p]["momentum_buffer"] for p in params] if group["momentum"] else [None] * len(params)
    return functools.partial(
        _call_with_grads,
        sgd,
        params,
        buffers,
        foreach=False,
        weight_decay=group["weight_decay"],
        momentum=group["momentum"],
        dampening=group["dampening"],
        nesterov=group["nesterov"],
        maximize=group["maximize"],
    )


def _rmsprop_update(optimizer: torch.optim.Optimizer, params: list) -> Update:
    from torch.optim.rmsprop import rmsprop

    group, state = optimizer.param_groups[0], optimizer.state
    return functools.partial(
        _call_with_grads,
        rmsprop,
        params,
        [state[p]["square_avg"] for p in params],
        [state[p]["grad_avg"] for p in params] if group["centered"] else [],
        [state[p]["momentum_buffer"] for p in params] if group["momentum"] else [],
        [state[p]["step"] for p in params],
        foreach=False,
        maximize=group["maximize"],
        alpha=group["alpha"],
        eps=group["eps"],
        weight_decay=group["weight_decay"],
        momentum=group["momentum"],
        centered=group["centered"],
    )


def _options(group: dict) -> dict:
    """What the bound update took from a parameter group: all but the parameters and the rate."""
    return {k: v for k, v in group.items() if k not in ("params", "lr")}


def _call_with_grads(
    update: Callable, params: list, *state: Any, grads: list, lr: torch.Tensor, **options: Any
) -> None:
    update(params, grads, *state, lr=lr, **options)


class OneGraphStep:
    """The compiled training step as one graph: (loss, metric sum) of a batch, the parameters
    updated in place.

    The first call runs eagerly: PyTorch's optimizer creates its state then (or has it from a
    checkpoint), and the graph reads and updates those very tensors afterwards. Should the
    optimizer get new state or groups later (load_state_dict), the next call primes again.
    `fallback` says why the trainer must go back to two graphs: a parameter that got no
    gradient (the optimizer skips it; the graph would not), or an option other than the
    learning rate that changed after the graph bound it.
    """

    def __init__(self, math: StepMath, optimizer: torch.optim.Optimizer, mode: Optional[str]) -> None:
        self.math = math
        self.optimizer = optimizer
        self.params: list[torch.Tensor] = list(optimizer.param_groups[0]["params"])
        names = {id(p): name for name, p in math.model.named_parameters()}
        self.names = [names[id(p)] for p in self.params]
        self.primed = False
        self.fallback: Optional[str] = None
        self._bound: tuple = ()  # the optimizer's state and group the update was bound to
        self._options: dict = {}  # their options then, all but the learning rate
        self._lr_value = float("nan")
        self._lr = torch.zeros((), dtype=torch.float64)
        self._update: Optional[Update] = None
        # Inductor's pattern matcher turns `mm(a, b) + x` into addmm and drops an `alpha` on
        # the add (torch 2.14): an L2 weight decay (`grad.add(param, alpha=decay)`) became a
        # decay of 1, weights wrong by lr * param per step. Without the matcher the step is
        # correct and, for the MLP, as fast (0.14 s per 300 steps either way).
        from torch._inductor import list_mode_options

        options = {**list_mode_options(mode or "default"), "pattern_matcher": False}
        self._graph = torch.compile(self._step, dynamic=False, options=options)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        optimizer = self.optimizer
        groups = optimizer.param_groups
        state, group = self._bound or (None, None)
        if self.primed and (len(groups) != 1 or optimizer.state is not state or groups[0] is not group):
            self.primed = False  # state or groups replaced: bind the update to the new ones
        if not self.primed:
            return self._eager_step(xb, yb)
        group = groups[0]
        if _options(group) != self._options:
            self.fallback = "an optimizer option other than the learning rate changed during training"
            return self._eager_step(xb, yb)
        lr = group["lr"]
        if lr != self._lr_value:
            self._lr.fill_(lr)
            self._lr_value = lr
        with torch.no_grad():  # the update is not differentiated; torch.func.grad ignores this
            return self._graph(xb, yb, self._lr)

    def _eager_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        math, optimizer = self.math, self.optimizer
        out, loss = math.forward_loss(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        without = [name for name, p in zip(self.names, self.params) if p.grad is None]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # the graph computes its own gradients
        if without:
            self.fallback = f"parameters without a gradient ({', '.join(without[:3])}), which the optimizer skips"
        elif len(optimizer.param_groups) != 1:
            self.fallback = "the optimizer has more than one parameter group"
        elif not self.primed:
            update_of = _update_of(optimizer)
            assert update_of is not None  # one_graph_blocker checked
            self._update = update_of(optimizer, self.params)
            self._bound = (optimizer.state, optimizer.param_groups[0])
            self._options = _options(optimizer.param_groups[0])
            self.primed = True
        return loss.detach(), math.metric_sum(out.detach(), yb)

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        math = self.math

        def loss_of(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            def model(x: torch.Tensor) -> torch.Tensor:
                return torch.func.functional_call(math.model, params, (x,))

            out, loss = math.forward_loss(xb, yb, model)
            with torch.no_grad():
                metric = math.metric_sum(out.detach().float(), yb)
            return loss, (loss.detach(), metric)

        grads, (loss, metric) = torch.func.grad(loss_of, has_aux=True)(dict(zip(self.names, self.params)))
        assert self._update is not None
        self._update(grads=[grads[name] for name in self.names], lr=lr)
        return loss, metric
