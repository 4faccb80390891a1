"""Optimizers and learning-rate schedules by name.

Defaults are Keras's (Adam and RMSprop eps 1e-7, RMSprop lr 0.001 and rho 0.9, SGD lr 0.01),
because the course's reference results come from Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, cast

from .config import OptimizerConfig, ScheduleConfig
from .errors import ConfigError
from .metrics import infer_mode
from .registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class OptimizerSpec:
    defaults: dict[str, Any]  # option -> Keras default
    make: Callable[..., Any]  # (params, **options) -> torch optimizer


def _sgd(params, lr, momentum, nesterov, weight_decay):
    import torch

    if nesterov and not momentum:
        raise ConfigError(
            "optimizer.nesterov: Nesterov momentum needs optimizer.momentum > 0.", key="optimizer.nesterov"
        )
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


# `implementation` carries how the update runs (fused, capturable; see build_optimizer), not
# what it computes, straight through to PyTorch.
def _adam(params, lr, beta_1, beta_2, eps, weight_decay, **implementation):
    import torch

    return torch.optim.Adam(params, lr=lr, betas=(beta_1, beta_2), eps=eps, weight_decay=weight_decay, **implementation)


def _adamw(params, lr, beta_1, beta_2, eps, weight_decay, **implementation):
    import torch

    return torch.optim.AdamW(
        params, lr=lr, betas=(beta_1, beta_2), eps=eps, weight_decay=weight_decay, **implementation
    )


def _rmsprop(params, lr, rho, eps, momentum, centered, weight_decay, **implementation):
    import torch

    return torch.optim.RMSprop(
        params,
        lr=lr,
        alpha=rho,
        eps=eps,
        momentum=momentum,
        centered=centered,
        weight_decay=weight_decay,
        **implementation,
    )


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")
OPTIMIZERS.add("sgd", OptimizerSpec({"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}, _sgd))
OPTIMIZERS.add(
    "adam", OptimizerSpec({"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-7, "weight_decay": 0.0}, _adam)
)
OPTIMIZERS.add(
    "adamw", OptimizerSpec({"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-7, "weight_decay": 0.004}, _adamw)
)
OPTIMIZERS.add(
    "rmsprop",
    OptimizerSpec(
        {"lr": 0.001, "rho": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False, "weight_decay": 0.0}, _rmsprop
    ),
)


def optimizer_options(config: OptimizerConfig) -> dict[str, Any]:
    """The optimizer's options with defaults filled in; options it does not take are errors."""
    spec = OPTIMIZERS.get(config.name, key="optimizer.name")
    options = dict(spec.defaults)
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "name" or f.name in config.CLIP_KEYS or value is None:
            continue
        if f.name not in spec.defaults:
            raise ConfigError(
                f"optimizer.{f.name} does not apply to {config.name}, which takes: {', '.join(spec.defaults)}.",
                hint=f"Remove optimizer.{f.name}, or pick an optimizer that uses it.",
                key=f"optimizer.{f.name}",
            )
        options[f.name] = value
    return options


def make_clipper(config: OptimizerConfig) -> Optional[Callable[[list], None]]:
    """Keras's gradient clipping as a function of the parameters, applied between backward and
    the update (after DDP's all-reduce, so every process clips the same averaged gradients):
    `clipnorm` clips each tensor's gradient to that norm, `global_clipnorm` all of them together
    (torch.nn.utils.clip_grad_norm_), `clipvalue` each value. None when nothing is clipped."""
    import torch

    if config.global_clipnorm is not None:
        limit = config.global_clipnorm

        def clip_global(params: list) -> None:
            torch.nn.utils.clip_grad_norm_(params, limit)

        return clip_global
    if config.clipnorm is not None:
        per_tensor = config.clipnorm

        def clip_each(params: list) -> None:
            for p in params:
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_([p], per_tensor)

        return clip_each
    if config.clipvalue is not None:
        value = config.clipvalue

        def clip_values(params: list) -> None:
            torch.nn.utils.clip_grad_value_(params, value)

        return clip_values
    return None


# On a GPU a small model's step is bound by kernel launches from Python; the fused Adam kernels
# update every parameter in one launch (measured on an H200: 2.42 -> 1.83 ms per CNN step).
# On the CPU the fused kernel is what `training.compile` uses for the update: it measured 180
# us per MLP step against 250 for the update torch.compile generates and 420 eager (foreach).
FUSED_OPTIMIZERS = ("adam", "adamw")


# Optimizers that keep their step count as a tensor, which they must do on the device to be
# recorded in a CUDA graph (SGD keeps none).
CAPTURABLE = ("adam", "adamw", "rmsprop")
# How an optimizer computes, as opposed to what it has learned: a checkpoint's values of these
# must not replace the resuming run's own (a CUDA run's fused or capturable Adam resumed on
# the CPU would fail, or be slow).
IMPLEMENTATION_OPTIONS = ("fused", "foreach", "capturable", "differentiable")


def build_optimizer(
    config: OptimizerConfig, params, device_type: str = "cpu", capturable: bool = False, compiled: bool = False
):
    """The configured optimizer; fused (one kernel for every parameter) where PyTorch has such
    a kernel, on CUDA always and on the CPU when the step is compiled (`compiled`)."""
    options = optimizer_options(config)
    if (device_type == "cuda" or compiled) and config.name in FUSED_OPTIMIZERS:
        options["fused"] = True
    if capturable and config.name in CAPTURABLE:
        options["capturable"] = True
    return OPTIMIZERS.get(config.name, key="optimizer.name").make(params, **options)


def load_optimizer_state(optimizer, state: dict) -> None:
    """Load a checkpoint's optimizer state but keep this optimizer's implementation options,
    with each step count where they need it (on the parameter's device when fused or
    capturable, else on the CPU)."""
    import torch

    own = [{k: g[k] for k in IMPLEMENTATION_OPTIONS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, options in zip(optimizer.param_groups, own):
        group.update(options)
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[p]["step"] = step.to(device=p.device if on_device else "cpu", dtype=torch.float32)


def add_param_group(optimizer, schedule: Optional[LrSchedule], params: list, lr_mult: float) -> None:
    """Add `params` to the optimizer as a group of their own whose learning rates are group 0's
    times `lr_mult` (now and in the schedule's future: one_cycle's peak and floor too)."""
    first = optimizer.param_groups[0]
    group: dict[str, Any] = {"params": params, "lr": first["lr"] * lr_mult}
    for key in ("initial_lr", "max_lr", "min_lr"):  # what torch's schedulers keep per group
        if key in first:
            group[key] = first[key] * lr_mult
    if "base_momentum" in first:  # one_cycle cycles the momentum: the new group joins the cycle where it is
        for key in ("base_momentum", "max_momentum", "betas" if "betas" in first else "momentum"):
            group[key] = first[key]
    optimizer.add_param_group(group)
    if schedule is not None:
        schedule.added_group(lr_mult)


SCHEDULES = ("step", "cosine", "reduce_on_plateau", "one_cycle", "constant")
SCHEDULE_STATE = "dlcli_schedule"  # marks the state_dict layout below (checkpoint format 2)


def has_momentum(optimizer) -> bool:
    """Whether one_cycle has a momentum to cycle: Adam's betas, or an SGD/RMSprop momentum > 0."""
    return all("betas" in g or g.get("momentum", 0) > 0 for g in optimizer.param_groups)


class LrSchedule:
    """A learning-rate schedule: `step(logs)` after each epoch's validation, and, for one_cycle
    and warm-up (`per_step`), `step_batch()` after each optimizer update.

    one_cycle is PyTorch's OneCycleLR over the run's updates, momentum (Adam's beta_1) cycled
    inversely to the rate unless `cycle_momentum` is false or the optimizer has none (SGD and
    RMSprop with momentum 0: cycling would switch on a momentum the user left off). Warm-up
    scales the rate that the per-epoch schedule sets by (s + 1) / W for the update s (from 0) of
    the first W updates, so the first update already moves and the W-th uses the full rate; the
    per-epoch schedule steps on the full rate, never a warmed one.
    """

    def __init__(self, config: ScheduleConfig, optimizer, epochs: int, steps_per_epoch: int = 1) -> None:
        import torch

        self.config = config
        self.optimizer = optimizer
        self.per_step = config.per_step
        self.warmup = config.warmup_steps or config.warmup_epochs * steps_per_epoch
        self.steps = 0  # optimizer updates so far
        self.step_lrs: list[float] = []  # the learning rate of each update since `take_step_lrs`
        sched = torch.optim.lr_scheduler
        self.scheduler: Any = None
        if config.name == "step":
            self.scheduler = sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        elif config.name == "cosine":
            self.scheduler = sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=config.min_lr)
        elif config.name == "reduce_on_plateau":
            self.scheduler = sched.ReduceLROnPlateau(
                optimizer,
                # config.mode is auto, min or max, so infer_mode answers min or max
                mode=cast(Literal["min", "max"], infer_mode(config.monitor, config.mode)),
                factor=config.factor,
                patience=config.patience,
                min_lr=config.min_lr,
            )
        elif config.name == "one_cycle":
            self.scheduler = sched.OneCycleLR(
                optimizer,
                max_lr=config.max_lr if config.max_lr is not None else [g["lr"] for g in optimizer.param_groups],
                total_steps=max(epochs * steps_per_epoch, 2),
                pct_start=config.pct_start,
                div_factor=config.div_factor,
                final_div_factor=config.final_div_factor,
                cycle_momentum=config.cycle_momentum and has_momentum(optimizer),
                base_momentum=config.base_momentum,
                max_momentum=config.max_momentum,
            )
        elif config.name != "constant":
            from .registry import suggest

            raise ConfigError(
                f"training.schedule.name: unknown schedule {config.name!r}; valid schedules are: {', '.join(SCHEDULES)}.",
                hint=suggest(config.name, SCHEDULES) or None,
                key="training.schedule.name",
            )
        self.targets = [g["lr"] for g in optimizer.param_groups]  # the rate before warm-up scales it
        self._warm()

    def _warm(self) -> None:
        """Set the rate of the next update: the target, scaled while warming up."""
        if self.warmup and self.steps <= self.warmup:
            factor = min(1.0, (self.steps + 1) / self.warmup)
            for group, target in zip(self.optimizer.param_groups, self.targets):
                group["lr"] = target * factor

    def step_batch(self) -> None:
        """After an optimizer update: record its rate and set the next one."""
        self.step_lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        self.steps += 1
        if self.config.name == "one_cycle":
            # A resumed run given more epochs than it started with stays at the last rate.
            if self.scheduler.last_epoch < self.scheduler.total_steps:
                self.scheduler.step()
        else:
            self._warm()

    def added_group(self, lr_mult: float) -> None:
        """The optimizer has a new last parameter group whose rates are group 0's times
        `lr_mult` (optim.add_param_group): every per-group value of the schedule follows."""
        self.targets.append(self.targets[0] * lr_mult)
        scheduler = self.scheduler
        for name in ("base_lrs", "_last_lr", "min_lrs"):  # ReduceLROnPlateau keeps min_lrs
            values = getattr(scheduler, name, None)
            if isinstance(values, list) and len(values) == len(self.optimizer.param_groups) - 1:
                values.append(values[0] * lr_mult)

    def take_step_lrs(self) -> list[float]:
        """The rates of the updates since the last call (for lr_steps.csv)."""
        taken, self.step_lrs = self.step_lrs, []
        return taken

    def step(self, logs: dict[str, float]) -> None:
        if self.config.name in ("one_cycle", "constant"):
            return
        for group, target in zip(self.optimizer.param_groups, self.targets):
            group["lr"] = target  # the epoch schedule steps from the full rate
        if self.config.name == "reduce_on_plateau":
            monitor = self.config.monitor
            if monitor not in logs:
                raise ConfigError(
                    f"training.schedule.monitor: {monitor!r} is not a logged metric; logged are: {', '.join(logs)}.",
                    hint="Use val_loss only when the data has a validation split.",
                )
            plateau = cast("torch.optim.lr_scheduler.ReduceLROnPlateau", self.scheduler)  # built so in __init__
            plateau.step(logs[monitor])
        else:
            self.scheduler.step()
        self.targets = [g["lr"] for g in self.optimizer.param_groups]
        self._warm()

    def state_dict(self) -> dict:
        return {
            SCHEDULE_STATE: 2,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "steps": self.steps,
            "targets": list(self.targets),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore after the optimizer (whose groups hold the rate of the next update); reads
        format 1's bare scheduler state too."""
        if SCHEDULE_STATE not in state:
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state)
            self.targets = [g["lr"] for g in self.optimizer.param_groups]
            return
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.steps = int(state["steps"])
        self.targets = [float(t) for t in state["targets"]]
