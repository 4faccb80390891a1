"""Will the model fit? An estimate from the plan, before anything is allocated.

The plan knows every parameter analytically, so a dense layer of 10^10 units is refused with
the sizes in the message instead of failing deep inside PyTorch's allocator. Training needs
the weights, their gradients and the optimizer's state (Adam keeps two values per weight);
activations and data come on top, so a model that passes can still be too large, and then
`allocation_guard` turns the allocator's failure into the same kind of error.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ..devices import available_memory, human
from ..errors import ResourceError, is_allocation_failure

FLOAT_BYTES = 4  # parameters, gradients and optimizer state are float32


def optimizer_slots(optimizer: Any) -> tuple[int, str]:
    """(values kept per trainable weight, description) for an OptimizerConfig."""
    name = getattr(optimizer, "name", "adam")
    momentum = getattr(optimizer, "momentum", None)
    if name in ("adam", "adamw"):
        return 2, f"{name}'s two moment estimates"
    if name == "rmsprop":
        slots = 1 + bool(momentum) + bool(getattr(optimizer, "centered", None))
        return slots, "rmsprop's running averages"
    if name == "sgd" and momentum:
        return 1, "sgd's momentum buffer"
    return 0, f"{name}'s state"


def estimate(plan: Any, optimizer: Any = None) -> tuple[int, list[str]]:
    """(bytes, parts described) for the weights, and with an optimizer also the gradients and its state."""
    total = plan.total_params
    trainable = plan.trainable_params
    weights = total * FLOAT_BYTES
    parts = [f"{total:,} parameters take {human(weights)} as float32"]
    need = weights
    if optimizer is not None:
        grads = trainable * FLOAT_BYTES
        slots, what = optimizer_slots(optimizer)
        state = slots * trainable * FLOAT_BYTES
        need += grads + state
        parts.append(f"their gradients {human(grads)}")
        if state:
            parts.append(f"{what} {human(state)}")
    return need, parts


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def check_fits(plan: Any, device: Any = "cpu", optimizer: Any = None) -> None:
    """Refuse (ResourceError) when the model cannot fit in the device's available memory."""
    need, parts = estimate(plan, optimizer)
    if need < 64 * 2**20:  # small models: not worth a system call
        return
    available, total = available_memory(device)
    if available is None or need <= available:
        return
    where = "this machine" if getattr(device, "type", str(device)) == "cpu" else f"{device}"
    of_total = f" (of {human(total)})" if total else ""
    purpose = "to train" if optimizer is not None else "for its weights"
    raise ResourceError(
        f"The model needs about {human(need)} of memory {purpose}: {_listed(parts)}; "
        f"{where} has {human(available)} available{of_total}.",
        hint="Use fewer units, filters or a smaller vocabulary (`dlcli summary` shows each layer's parameters), "
        "or a machine with more memory.",
    )


@contextlib.contextmanager
def allocation_guard(plan: Any, device: Any = "cpu") -> Iterator[None]:
    """Turn an allocation failure inside the block into a ResourceError that says what was being built."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only allocation failures are translated, the rest re-raised
        if not is_allocation_failure(exc):
            raise
        need, parts = estimate(plan)
        available, _ = available_memory(device)
        have = f"; {human(available)} is available" if available is not None else ""
        raise ResourceError(
            f"Out of memory while building the model on {device} ({_listed(parts)}{have}): "
            f"{str(exc).splitlines()[0][:200]}",
            hint="Use a smaller model, or close other programs using the memory.",
        ) from None
