"""A network's plan: every layer's shapes, parameter count and multiply-adds, computed before
anything is built (what `dlcli summary` shows and the memory check reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class LayerRecord:
    name: str  # e.g. conv2d_1
    type_name: str  # e.g. Conv2D
    spec: Any  # the layer's config (None for a torchvision model's parts)
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    mult_adds: int
    params: int = 0  # trainable parameters
    frozen: int = 0  # non-trainable: batch norm's running statistics (Keras counts them)
    children: list[LayerRecord] = field(default_factory=list)  # a residual block's layers
    make: Optional[Callable[[], list]] = field(default=None, repr=False)
    takes_mask: bool = False  # its last module is called with the padding mask (mask_zero)
    details: dict[str, Any] = field(default_factory=dict)  # summary --verbose: kernel, stride, padding...


@dataclass
class ModelPlan:
    """Everything about the network except its weights."""

    input_shape: tuple[int, ...]
    layers: list[LayerRecord]
    output_activation: str  # what the last layer applies, as the user wrote it
    absorbed_activation: bool  # True: left out of the network, applied inside the loss
    torchvision: Any = None  # torchvision_models.TorchvisionPlan for `model: {torchvision: ...}`
    weights: Optional[str] = None  # a layer list's or preset's model.weights (a torchvision model's is in its plan)

    @property
    def trainable_params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def total_params(self) -> int:
        return sum(r.params + r.frozen for r in self.layers)

    @property
    def mult_adds(self) -> int:
        return sum(r.mult_adds for r in self.layers)


def running_statistics(module) -> int:
    """Values of batch norm's running mean and variance in `module` itself (0 for other modules)."""
    import torch.nn as nn

    if (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.running_mean is not None
        and module.running_var is not None
    ):
        return int(module.running_mean.numel() + module.running_var.numel())
    return 0
