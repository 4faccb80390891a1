"""Freezing part of a network and unfreezing it later (`training.fine_tune`).

Names are the summary's: a layer list's layers (conv2d, conv2d_1, dense) or a torchvision
model's modules (layer4, layer4.1, fc), each matched as a prefix (`conv2d` freezes conv2d
and conv2d_1). `backbone` is every layer but the head: a layer list's last layer (which must
be a dense one), a torchvision model's classifier.

Frozen means bit-identical: frozen parameters have requires_grad false and are not given to
the optimizer (no update, no weight decay), and batch-norm modules in the frozen part run in
inference mode even while the model trains, so their running statistics do not move (as
Keras does for `trainable = False`). The engine knows none of this: each frozen batch-norm
module's `train` is replaced by one that keeps it in eval mode, so the engine's
`model.train()` leaves it there.

At the end of `freeze_epochs` the parts named by `unfreeze` start training, as a new
parameter group of the optimizer at the optimizer's rate times `backbone_lr_mult`; the
schedule continues for both groups (optim.add_param_group).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Optional

from .config import FineTuneConfig
from .errors import ConfigError
from .registry import suggest


def named_layers(model) -> list[tuple[str, Any]]:
    """Every (name, module) that `freeze` and `unfreeze` can name, as the summary names them:
    a layer list's layers (their modules together in a ModuleList) with their sub-modules,
    a torchvision model's modules by their paths."""
    import torch.nn as nn

    ranges = getattr(model, "layer_ranges", None)
    if ranges is None:
        return [(n, m) for n, m in model.named_modules() if n and not n.startswith("_")]
    modules = list(model)
    named = []
    for record, (start, end) in zip(model.plan.layers, ranges):
        if end > start:
            named.append((record.name, nn.ModuleList(modules[start:end])))
    return named


def head_name(model) -> str:
    """The layer a new task replaces: a layer list's last layer when it is dense, a torchvision
    model's classifier (its last Linear, or squeezenet's final convolution, sized to the classes)."""
    import torch.nn as nn

    plan = model.plan
    if getattr(model, "layer_ranges", None) is not None:
        last = plan.layers[-1]
        if last.type_name == "Dense" and last.params:
            return str(last.name)
        raise ConfigError(
            f"training.fine_tune: the model has no recognisable head to train: its last layer is {last.name} "
            f"({last.type_name}), where `freeze: backbone` needs a dense layer.",
            hint="End the layer list with a dense layer, or list what to freeze: freeze: [conv2d, conv2d_1].",
            key="training.fine_tune.freeze",
        )
    classes = plan.torchvision.num_classes
    head = None
    for name, module in model.named_modules():
        if (isinstance(module, nn.Linear) and module.out_features == classes) or (
            isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.out_channels == classes
        ):
            head = name
    if head is None:
        raise ConfigError(
            f"training.fine_tune: {plan.torchvision.name} has no recognisable head (no last layer with "
            f"{classes} outputs).",
            hint="List what to freeze instead of backbone: freeze: [NAME, ...] (dlcli summary shows the names).",
            key="training.fine_tune.freeze",
        )
    return head


def _matching(layers: list[tuple[str, Any]], names: tuple[str, ...], key: str) -> list[Any]:
    chosen = []
    for wanted in names:
        found = [m for n, m in layers if n.startswith(wanted)]
        if not found:
            valid = [n for n, _ in layers]
            shown = [n for n in valid if "." not in n][:30]
            raise ConfigError(
                f"{key}: no layer is named {wanted!r} or starts with it; the model's layers are: {', '.join(shown)}.",
                hint=suggest(wanted, valid) or "dlcli summary shows the layers' names.",
                key=key,
            )
        chosen.extend(found)
    return chosen


def _parameters_of(modules: list[Any]) -> list[Any]:
    """The distinct parameters of `modules`, in the model's order."""
    seen: dict[int, Any] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def _batch_norms_of(modules: list[Any]) -> list[Any]:
    import torch.nn as nn

    seen: dict[int, Any] = {}
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                seen.setdefault(id(m), m)
    return list(seen.values())


def _stay_in_eval(self, mode: bool = True):
    """A frozen batch norm's `train`: inference mode whatever is asked (running statistics fixed)."""
    import torch.nn as nn

    return nn.Module.train(self, False)


@dataclass
class FineTuning:
    """The frozen and unfreezing parts of one model, and which phase it is in."""

    config: FineTuneConfig
    frozen: list[Any]  # parameters frozen at the start
    frozen_norms: list[Any]  # batch-norm modules in the frozen part
    unfreezing: list[Any]  # parameters that start training after freeze_epochs
    unfreezing_norms: list[Any]
    frozen_names: list[str] = field(default_factory=list)
    unfrozen: bool = False

    def freeze(self) -> None:
        for p in self.frozen:
            p.requires_grad_(False)
        for m in self.frozen_norms:
            m.train = types.MethodType(_stay_in_eval, m)
            m.train(False)

    def unfreeze(self, optimizer, schedule) -> None:
        """The unfreezing part joins training as a new parameter group (at the optimizer's
        current rate times backbone_lr_mult), its batch norms back under the model's mode."""
        from .optim import add_param_group

        if self.unfrozen:
            return
        for p in self.unfreezing:
            p.requires_grad_(True)
        for m in self.unfreezing_norms:
            if "train" in vars(m):
                del m.train  # the class's own train() again
        add_param_group(optimizer, schedule, self.unfreezing, self.config.backbone_lr_mult)
        self.unfrozen = True

    def due(self, completed_epochs: int) -> bool:
        """Whether the unfreezing part trains in the epoch after `completed_epochs`."""
        epochs = self.config.freeze_epochs
        return epochs is not None and completed_epochs >= epochs and not self.unfrozen

    def phases(self, model, epochs: int) -> list[dict[str, Any]]:
        """Each phase's epochs and trainable and frozen parameter counts (for the summary and run.json)."""
        total = sum(p.numel() for p in model.parameters())
        frozen = sum(p.numel() for p in self.frozen)
        first = {"epochs": _span(1, min(self.config.freeze_epochs or epochs, epochs))}
        phases = [{**first, "trainable": total - frozen, "frozen": frozen, "frozen_layers": self.frozen_names}]
        if self.config.freeze_epochs is not None and self.config.freeze_epochs < epochs:
            still = frozen - sum(p.numel() for p in self.unfreezing)
            phases.append(
                {
                    "epochs": _span(self.config.freeze_epochs + 1, epochs),
                    "trainable": total - still,
                    "frozen": still,
                    "lr_mult": self.config.backbone_lr_mult,
                }
            )
        return phases


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def prepare_fine_tuning(model, config: Optional[FineTuneConfig]) -> Optional[FineTuning]:
    """The model's frozen part frozen (None without training.fine_tune). Freezing everything, or a
    name that matches no layer, is an error before anything trains."""
    if config is None:
        return None
    layers = named_layers(model)
    if config.freeze == "backbone":
        head = head_name(model)
        top = [(n, m) for n, m in layers if "." not in n]
        frozen_modules = [m for n, m in top if n != head and not head.startswith(n + ".")]
        if getattr(model, "layer_ranges", None) is None and "." in head:  # a classifier inside a part
            frozen_modules += [m for n, m in layers if _beside(n, head)]
        frozen_names = [n for n, m in layers if any(m is f for f in frozen_modules)]
    else:
        frozen_modules = _matching(layers, config.freeze, "training.fine_tune.freeze")
        frozen_names = [n for n, m in layers if any(m is f for f in frozen_modules)]
    frozen = _parameters_of(frozen_modules)
    trainable = [p for p in model.parameters() if all(p is not f for f in frozen)]
    if not trainable:
        raise ConfigError(
            "training.fine_tune.freeze: it freezes every parameter of the model, so nothing would train.",
            hint="Leave the head out of freeze (freeze: backbone does), or list fewer layers.",
            key="training.fine_tune.freeze",
        )
    if config.unfreeze == "all":
        unfreezing_modules = frozen_modules
    else:
        unfreezing_modules = _matching(layers, config.unfreeze, "training.fine_tune.unfreeze")
    frozen_ids = {id(p) for p in frozen}
    for wanted in () if config.unfreeze == "all" else config.unfreeze:
        named = [m for n, m in layers if n.startswith(wanted)]
        if not any(id(p) in frozen_ids for p in _parameters_of(named)):
            raise ConfigError(
                f"training.fine_tune.unfreeze: {wanted!r} names no frozen layer; frozen are: {', '.join(frozen_names)}.",
                hint="Name layers listed in freeze (or under it), or use unfreeze: all.",
                key="training.fine_tune.unfreeze",
            )
    unfreezing = [p for p in _parameters_of(unfreezing_modules) if id(p) in frozen_ids]
    norms = _batch_norms_of(frozen_modules)
    unfreezing_norm_ids = {id(m) for m in _batch_norms_of(unfreezing_modules)}
    tuning = FineTuning(
        config,
        frozen,
        norms,
        unfreezing,
        [m for m in norms if id(m) in unfreezing_norm_ids],
        [n for n in frozen_names if not any(n.startswith(o + ".") for o in frozen_names) and _has_state(layers, n)],
    )
    tuning.freeze()
    return tuning


def _has_state(layers: list[tuple[str, Any]], name: str) -> bool:
    """Whether the layer holds parameters or buffers (a pooling or flatten layer holds none)."""
    module = dict(layers)[name]
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _beside(name: str, head: str) -> bool:
    """Whether module `name` lies on no path to `head` but shares the head's top-level part
    (vgg's classifier.0 beside classifier.6): frozen with the backbone."""
    parent = head.rsplit(".", 1)[0]
    return name.rsplit(".", 1)[0] == parent and name != head and name.startswith(head.split(".")[0] + ".")


def planned_phases(model_plan, training) -> list[dict[str, Any]]:
    """training.fine_tune's phases for `dlcli summary`: the model built without its starting
    weights (nothing is read or downloaded), its frozen part resolved as training would."""
    from .models import build_model

    model = build_model(model_plan, initial_weights=False)
    tuning = prepare_fine_tuning(model, training.fine_tune)
    return tuning.phases(model, training.epochs) if tuning is not None else []
