"""The layer table of a built model, in Keras's spirit: names, output shapes, parameters.

Shapes come from the model plan (computed analytically), so no forward pass, no data and
no device are needed. Image shapes are shown channels-last (None, H, W, C), as Keras and
the course show them.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table


def _shape(shape: tuple[int, ...]) -> str:
    dims = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
    return "(None, " + ", ".join(str(d) for d in dims) + ")"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.2f} GB"


def _details(spec: Any) -> dict[str, Any]:
    kind = spec.kind
    if kind == "conv2d":
        return {"kernel": f"{spec.kernel_size}x{spec.kernel_size}", "stride": spec.strides, "padding": spec.padding,
                "activation": spec.activation}
    if kind in ("maxpool2d", "avgpool2d"):
        return {"kernel": f"{spec.pool_size}x{spec.pool_size}", "stride": spec.strides or spec.pool_size,
                "padding": "valid", "activation": None}
    if kind == "dropout":
        return {"kernel": None, "stride": None, "padding": None, "activation": None, "rate": spec.rate}
    return {"kernel": None, "stride": None, "padding": None, "activation": getattr(spec, "activation", None)}


def summary_data(model, plan=None) -> dict[str, Any]:
    """Everything the table shows, as plain data (also what --json prints)."""
    from .models import parameter_counts

    model_plan = model.plan
    counts = parameter_counts(model)
    layers = []
    for rec, (trainable, frozen) in zip(model_plan.layers, counts):
        layers.append({
            "name": rec.name,
            "type": rec.type_name,
            "output_shape": [None, *(rec.output_shape[1:] + rec.output_shape[:1] if len(rec.output_shape) == 3 else rec.output_shape)],
            "params": trainable + frozen,
            "mult_adds": rec.mult_adds,
            **_details(rec.spec),
        })
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    data = {
        "input_shape": [None, *(model_plan.input_shape[1:] + model_plan.input_shape[:1]
                                if len(model_plan.input_shape) == 3 else model_plan.input_shape)],
        "layers": layers,
        "total_params": total,
        "trainable_params": trainable,
        "non_trainable_params": total - trainable,
        "params_bytes": size,
        "mult_adds": sum(r.mult_adds for r in model_plan.layers),
        "output_activation": model_plan.output_activation,
        "output_activation_in_loss": model_plan.absorbed_activation,
    }
    if plan is not None:
        data["name"] = plan.config.name
        data["loss"] = plan.loss_name
    return data


def summary_table(data: dict[str, Any], verbose: bool = False) -> Table:
    title = f"Model: \"{data.get('name', 'model')}\""
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("Layer (type)", no_wrap=True)
    table.add_column("Output Shape", no_wrap=True)
    table.add_column("Param #", justify="right")
    if verbose:
        for col in ("Activation", "Kernel", "Stride", "Padding"):
            table.add_column(col)
        table.add_column("Mult-Adds", justify="right")
    for layer in data["layers"]:
        shape = "(" + ", ".join("None" if d is None else str(d) for d in layer["output_shape"]) + ")"
        row = [f"{layer['name']} ({layer['type']})", shape, f"{layer['params']:,}"]
        if verbose:
            row += [str(layer["activation"] or ""), str(layer["kernel"] or ""), str(layer["stride"] or ""),
                    str(layer["padding"] or ""), f"{layer['mult_adds']:,}"]
        table.add_row(*row)
    return table


def render_summary(data: dict[str, Any], console: Console, verbose: bool = False) -> None:
    console.print(summary_table(data, verbose))
    console.print(f" Total params: {data['total_params']:,} ({_human_bytes(data['params_bytes'])})", highlight=False)
    console.print(f" Trainable params: {data['trainable_params']:,}", highlight=False)
    console.print(f" Non-trainable params: {data['non_trainable_params']:,}", highlight=False)
    if verbose:
        console.print(f" Mult-adds per sample: {data['mult_adds']:,}", highlight=False)
    notes = []
    if any(len(layer["output_shape"]) == 4 for layer in data["layers"]):
        notes.append("image shapes are (batch, height, width, channels), as Keras shows them")
    if data.get("output_activation_in_loss"):
        notes.append(f"the final {data['output_activation']} is applied inside the loss, on the logits, for stability")
    for note in notes:
        console.print(f" Note: {note}.", style="dim", highlight=False)


def summary_text(model, plan=None, verbose: bool = False) -> str:
    """The table as plain text (no colours), as saved in summary.txt."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, color_system=None, force_terminal=False, legacy_windows=False)
    render_summary(summary_data(model, plan), console, verbose)
    return buffer.getvalue()
