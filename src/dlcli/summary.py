"""The layer table of a model plan, in Keras's spirit: names, output shapes, parameters.

Shapes come from the model plan (computed analytically), so no forward pass, no data and
no device are needed. Image shapes are shown channels-last (None, H, W, C), and video shapes
(None, frames, H, W, C), as Keras and the course show them.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich only where a table is drawn: `dlcli summary --json` needs none of it
    from rich.console import Console
    from rich.table import Table


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.2f} GB"


# summary --verbose's columns, blank unless the layer's plan says otherwise
_NO_DETAILS: dict[str, Any] = {"kernel": None, "stride": None, "padding": None, "activation": None}


def _keras_shape(shape: tuple[int, ...]) -> list:
    """(None, ...) with channels last: plans hold images as (C, H, W) and videos as (C, T, H, W)."""
    return [None, *(shape[1:] + shape[:1] if len(shape) in (3, 4) else shape)]


def _layer_data(rec) -> dict[str, Any]:
    entry = {
        "name": rec.name,
        "type": rec.type_name,
        "output_shape": _keras_shape(rec.output_shape),
        "params": rec.params + rec.frozen,
        "mult_adds": rec.mult_adds,
        **_NO_DETAILS,
        **rec.details,  # what the layer's planner declares (models.layers.LayerPlanner.details)
    }
    if rec.children:  # a residual block: its layers (and projection), counted in its own row too
        entry["layers"] = [_layer_data(child) for child in rec.children]
    return entry


def summary_data(model, plan=None, phases=None) -> dict[str, Any]:
    """Everything the table shows, as plain data (also what --json prints).

    `model` is a models.ModelPlan or a built model carrying one: every number is analytic, so
    no model needs to be built (and no torch imported) to show it. `phases`: training.fine_tune's
    phases (fine_tune.FineTuning.phases), each with its epochs and parameter counts."""
    model_plan = getattr(model, "plan", model)
    trainable = model_plan.trainable_params
    total = model_plan.total_params
    data = {
        "input_shape": _keras_shape(model_plan.input_shape),
        "layers": [_layer_data(rec) for rec in model_plan.layers],
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "params_bytes": total * 4,  # float32 parameters (and batch norm's running statistics)
        "mult_adds": model_plan.mult_adds,
        "output_activation": model_plan.output_activation,
        "output_activation_in_loss": model_plan.absorbed_activation,
    }
    if model_plan.torchvision is not None:
        data["torchvision"] = model_plan.torchvision.name
    if plan is not None:
        data["name"] = plan.config.name
        data["loss"] = plan.loss_name
    if phases:
        data["fine_tune"] = phases
    return data


def summary_table(data: dict[str, Any], verbose: bool = False) -> Table:
    from rich.table import Table

    title = f'Model: "{data.get("name", "model")}"'
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("Layer (type)", no_wrap=True)
    table.add_column("Output Shape", no_wrap=True)
    table.add_column("Param #", justify="right")
    if verbose:
        for col in ("Activation", "Kernel", "Stride", "Padding"):
            table.add_column(col)
        table.add_column("Mult-Adds", justify="right")

    def add_rows(layers: list, depth: int) -> None:
        for layer in layers:
            shape = "(" + ", ".join("None" if d is None else str(d) for d in layer["output_shape"]) + ")"
            indent = "  " * depth + ("└ " if depth else "")
            row = [f"{indent}{layer['name']} ({layer['type']})", shape, f"{layer['params']:,}"]
            if verbose:
                row += [
                    str(layer["activation"] or ""),
                    str(layer["kernel"] or ""),
                    str(layer["stride"] or ""),
                    str(layer["padding"] or ""),
                    f"{layer['mult_adds']:,}",
                ]
            table.add_row(*row)
            add_rows(layer.get("layers", []), depth + 1)

    add_rows(data["layers"], 0)
    return table


def render_summary(data: dict[str, Any], console: Console, verbose: bool = False) -> None:
    console.print(summary_table(data, verbose))
    console.print(f" Total params: {data['total_params']:,} ({_human_bytes(data['params_bytes'])})", highlight=False)
    console.print(f" Trainable params: {data['trainable_params']:,}", highlight=False)
    console.print(f" Non-trainable params: {data['non_trainable_params']:,}", highlight=False)
    if verbose:
        console.print(f" Mult-adds per sample: {data['mult_adds']:,}", highlight=False)
    for i, phase in enumerate(data.get("fine_tune", [])):
        frozen = f"; frozen: {', '.join(phase['frozen_layers'])}" if phase.get("frozen_layers") else ""
        rate = f"; the unfrozen part at {phase['lr_mult']} x the learning rate" if "lr_mult" in phase else ""
        console.print(
            f" Fine-tuning phase {i + 1} (epochs {phase['epochs']}): trainable {phase['trainable']:,}, "
            f"frozen {phase['frozen']:,}{frozen}{rate}",
            highlight=False,
            markup=False,
        )
    notes = []
    ranks = {len(layer["output_shape"]) for layer in data["layers"]}
    if 4 in ranks:
        notes.append("image shapes are (batch, height, width, channels), as Keras shows them")
    if 5 in ranks:
        notes.append("video shapes are (batch, frames, height, width, channels), as Keras shows them")
    if data["non_trainable_params"]:
        notes.append("non-trainable params are batch norm's running means and variances, as Keras counts them")
    blocks = {layer["type"] for layer in data["layers"] if "layers" in layer}
    if "Residual" in blocks:
        notes.append("a residual block's row counts the layers under it (└), whose output is added to its input")
    if "TimeDistributed" in blocks:
        notes.append(
            "a time_distributed row counts the layers under it (└), which run on every frame: their shapes are "
            "one frame's"
        )
    if data.get("output_activation_in_loss"):
        notes.append(f"the final {data['output_activation']} is applied inside the loss, on the logits, for stability")
    for note in notes:
        console.print(f" Note: {note}.", style="dim", highlight=False)


def summary_text(model, plan=None, verbose: bool = False, phases=None) -> str:
    """The table as plain text (no colours), as saved in summary.txt."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=120, color_system=None, force_terminal=False, legacy_windows=False)
    render_summary(summary_data(model, plan, phases), console, verbose)
    return buffer.getvalue()
