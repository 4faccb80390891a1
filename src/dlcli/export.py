"""Exporting a trained run as a self-contained model: ONNX (checked with onnxruntime) or pt2
(`torch.export`, checked with `torch.export.load`).

The exported graph takes the inputs as the run's data stores them (uint8 images, float
vectors), applies the input scaling and standardisation itself, runs the network in eval mode
and ends in the final softmax/sigmoid, so its outputs are probabilities. The batch axis is
dynamic: exported with a batch of 2, verified at batch sizes 1 and 3 against the eager model.
What stays outside the graph (decoding and resizing images, tokenising text) is written to a
sidecar export.json.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from .data.inputs import LAYER_ORDER, InputSpec
from .errors import DlcliError, RunDirError
from .loading import LoadedRun

FORMATS = ("onnx", "pt2")
TOLERANCE = 1e-5
VERIFY_BATCHES = (1, 3)
SIDECAR = "export.json"  # beside the model file


class ExportError(DlcliError):
    """An export that cannot be made or does not reproduce the eager model."""


def input_spec(run: LoadedRun) -> InputSpec:
    """The run's input storage and the scaling the graph applies, as its dataset kind declares."""
    from .data import source

    return source(run.config.data.dataset).input_spec(run.config.data, run.plan.info, run.preprocessing)


INPUT_LAYOUTS = ("NCHW", "NHWC", "NCTHW", "NTHWC", "NTCHW")


def with_input_layout(spec: InputSpec, layout: str, rank: int) -> InputSpec:
    """`spec` taking images or clips with their axes in `layout` (dlcli export --input-layout):
    the graph's first step moves them into the layers' order."""
    if layout not in INPUT_LAYOUTS:
        raise ExportError(
            f"--input-layout must be one of {', '.join(INPUT_LAYOUTS)}, not {layout!r}.",
            hint="NHWC takes images as PIL and NumPy decode them; NTHWC takes clips frame by frame that way.",
        )
    if rank not in LAYER_ORDER or spec.dtype == "int64":
        taken = "word ids" if spec.dtype == "int64" else f"samples of {rank - 1} axis" + ("es" if rank > 2 else "")
        raise ExportError(
            f"--input-layout {layout}: this run takes {taken}, not images or clips, so there is no layout to choose.",
            hint="Leave --input-layout out for tables, sequences and text.",
        )
    if len(layout) != rank:
        fits = [name for name in INPUT_LAYOUTS if len(name) == rank]
        raise ExportError(
            f"--input-layout {layout} names {len(layout)} axes, but this run's inputs have {rank} "
            f"({LAYER_ORDER[rank]} in the layers' order).",
            hint=f"Use one of {', '.join(fits)}.",
        )
    return replace(spec, layout=layout)


def exportable_module(run: LoadedRun, spec: InputSpec):
    """The run's model wrapped with its input scaling in front and its output activation behind."""
    import torch
    from torch import nn

    absorbed = run.plan.model_plan.absorbed_activation
    activation = run.plan.model_plan.output_activation if absorbed else "linear"

    def as_tensor(value):
        if value is None or isinstance(value, float):
            return value
        return torch.as_tensor(value, dtype=torch.float32)

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = run.model
            for module in run.model.modules():  # mask_zero: skip padding in fixed shapes, not by packing
                if hasattr(module, "packed"):
                    module.packed = False
            shift, scale = as_tensor(spec.shift), as_tensor(spec.scale)
            self.register_buffer("shift", shift if isinstance(shift, torch.Tensor) else None)
            self.register_buffer("scale_vector", scale if isinstance(scale, torch.Tensor) else None)
            self.scale_number = scale if isinstance(scale, float) else None
            self.register_buffer("output_shift", as_tensor(spec.output_shift))
            self.register_buffer("output_scale", as_tensor(spec.output_scale))

        def forward(self, x):
            if spec.axes is not None:  # from the training file's layout to the layers' order
                x = x.permute(*spec.axes)
            if spec.dtype == "int64":  # word ids feed an embedding as they are
                return self._finish(self.network(x))
            x = x.float()
            if self.shift is not None:
                x = x - self.shift
            if self.scale_vector is not None:
                x = x * self.scale_vector
            elif self.scale_number is not None:
                x = x * self.scale_number
            return self._finish(self.network(x))

        def _finish(self, out):
            if activation == "softmax":
                return torch.softmax(out, dim=-1)
            if activation == "sigmoid":
                return torch.sigmoid(out)
            if self.output_scale is not None:
                return out * self.output_scale + self.output_shift
            return out

    return Exported().eval().to("cpu")


def example_batch(run: LoadedRun, spec: InputSpec, batch: int, seed: int = 0):
    """Inputs of the run's shape and dtype for tracing and verification."""
    import torch

    gen = torch.Generator().manual_seed(seed + batch)
    shape = spec.taken_shape((batch, *run.plan.info.input_shape))
    if spec.dtype == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    if spec.dtype == "int64":
        vocab = run.plan.info.vocab_size or 2
        return torch.randint(0, vocab, shape, dtype=torch.int64, generator=gen)
    if spec.binary_rows:  # multi-hot rows, as the model saw them
        return (torch.rand(shape, generator=gen) < 0.02).float()
    return torch.randn(shape, generator=gen)


def default_path(run: LoadedRun, fmt: str) -> Path:
    return run.run_dir / "export" / fmt / f"model.{fmt}"


def check_close(expected, actual, batch: int, fmt: str, tolerance: float = TOLERANCE) -> float:
    """The largest absolute difference; an ExportError when it exceeds the tolerance."""
    import numpy as np

    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ExportError(
            f"The exported {fmt} model returned shape {actual.shape} at batch {batch}, "
            f"but the eager model {expected.shape}."
        )
    diff = float(np.max(np.abs(expected - actual))) if expected.size else 0.0
    if not diff <= tolerance:
        raise ExportError(
            f"The exported {fmt} model does not match the eager model: the largest difference at "
            f"batch {batch} is {diff:.3g} (allowed {tolerance:g}).",
            hint="The export was removed. Report it with the run's summary.txt; try the other format.",
        )
    return diff


def checked_out_path(run: LoadedRun, fmt: str, out: Optional[Path], force: bool) -> Path:
    """Where the model goes: --out, else RUN/export/FORMAT/; refused when it would replace a file
    dlcli did not export (unless `force`) or a file of the run outside export/."""
    from .rundir import check_output_file

    path = Path(out) if out is not None else default_path(run, fmt)
    if path.is_dir():
        raise ExportError(f"--out {path} is a folder.", hint=f"Give a file path such as {path / f'model.{fmt}'}.")
    check_output_file(
        path, option="--out", run_dir=run.run_dir, allowed_in_run=("export",), force=force, written_by_dlcli=is_export
    )
    check_output_file(  # written beside the model
        path.parent / SIDECAR, option="--out's sidecar", force=force, written_by_dlcli=_is_sidecar
    )
    return path


def export_run(
    run: LoadedRun,
    fmt: str,
    out: Optional[Path] = None,
    tolerance: float = TOLERANCE,
    force: bool = False,
    input_layout: Optional[str] = None,
) -> dict[str, Any]:
    """Export, verify at batch sizes 1 and 3, write export.json beside it; returns the sidecar's content.

    `out` may not be a file of the run folder outside its export/ folder, nor an existing file
    that is not an earlier export (its export.json names it) unless `force`. `input_layout`:
    the order of the axes the model takes, for images and clips (default: as the data stores them)."""
    import torch

    if fmt not in FORMATS:
        raise ExportError(
            f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}.",
            hint="TorchScript is deprecated upstream; use onnx or pt2.",
        )
    spec = input_spec(run)
    if input_layout is not None:  # refused before any folder is made for the file
        spec = with_input_layout(spec, input_layout, len(run.plan.info.input_shape) + 1)
    path = checked_out_path(run, fmt, out, force)
    module = exportable_module(run, spec)
    run.model.to("cpu")
    dim = torch.export.Dim("batch")
    example = example_batch(run, spec, 2)
    tmp = path.with_name(f".{path.stem}.tmp.{fmt}")  # written whole, verified, then renamed into place
    try:
        with warnings.catch_warnings():  # the exporters' progress chatter is not the user's business
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                _require("onnxruntime", "onnxscript", "onnx")
                torch.onnx.export(
                    module,
                    (example,),
                    str(tmp),
                    dynamo=True,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_shapes={"x": {0: dim}},
                    verbose=False,
                    external_data=False,
                )  # one self-contained file
                run_exported = _onnx_runner(tmp)
            else:
                program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: dim}})
                torch.export.save(program, str(tmp))
                loaded = torch.export.load(str(tmp)).module()
                run_exported = lambda x: loaded(x).detach().numpy()  # noqa: E731
        differences = {}
        with torch.inference_mode():
            for batch in VERIFY_BATCHES:
                x = example_batch(run, spec, batch)
                differences[batch] = check_close(module(x).numpy(), run_exported(x), batch, fmt, tolerance)
        tmp.replace(path)
    except ExportError:
        raise
    except OSError as exc:  # the folder, not the model: another format would fail the same way
        raise RunDirError(
            f"Cannot write the export into {path.parent}: {exc.strerror or exc}.",
            hint="Give --out a file in a folder you can write to.",
        ) from None
    except Exception as exc:  # the exporters raise many kinds; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(
            f"Exporting the model as {fmt} failed: {type(exc).__name__}: {first}",
            hint="Try the other format (--format onnx|pt2).",
        ) from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".data")):
            if leftover.exists():
                leftover.unlink()
    return _sidecar(run, fmt, path, spec, differences)


def is_export(path: Path) -> bool:
    """Whether `path` is a model dlcli exported: the export.json beside it names it."""
    from .rundir import read_json

    sidecar = Path(path).parent / SIDECAR
    try:
        return sidecar.is_file() and read_json(sidecar).get("file") == Path(path).name
    except RunDirError:  # an unreadable sidecar does not vouch for the file
        return False


def _is_sidecar(path: Path) -> bool:
    from .rundir import read_json

    try:
        return "verified" in read_json(path) and "preprocessing_outside_the_graph" in read_json(path)
    except RunDirError:
        return False


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}, which is not installed.",
            hint='Install it with: pip install "dlcli[export]" (or: pip install onnx onnxscript onnxruntime).',
        )


def _onnx_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def _sidecar(run: LoadedRun, fmt: str, path: Path, spec: InputSpec, differences: dict) -> dict[str, Any]:
    import torch

    from . import __version__
    from .rundir import write_json

    info = run.plan.info
    names = list(info.class_names) if info.class_names else [str(i) for i in range(info.num_classes)]
    units = run.plan.model_plan.layers[-1].output_shape[0]  # a binary run ends in 1 sigmoid or 2 softmax units
    if info.task == "binary" and units == 1:
        outputs = f"one probability per sample: P({names[-1] if names else 1}) (sigmoid)"
    elif info.task in ("binary", "multiclass"):
        outputs = "one probability per class, in the order of class_names (softmax)"
    elif info.task == "multilabel":
        outputs = "one independent probability per label, in the order of class_names (sigmoid)"
    else:
        outputs = "the predicted values, one per target"
    sidecar = {
        "format": fmt,
        "file": path.name,
        "run": run.run_dir.name,
        "checkpoint": run.checkpoint,
        "epoch": run.epoch,
        "dlcli": __version__,
        "torch": torch.__version__,
        "task": info.task,
        "input": {
            "name": "input" if fmt == "onnx" else "x",
            "shape": ["batch", *spec.taken_shape((0, *info.input_shape))[1:]],
            "dtype": spec.dtype,
        },
        "output": {
            "name": "output",
            "shape": ["batch", units],
            "meaning": outputs,
        },
        "class_names": names,
        "inside_the_graph": ("axes moved from the input's layout, " if spec.axes is not None else "")
        + "cast to float32"
        + (", input scaling" if spec.scale is not None else "")
        + (", standardisation" if spec.shift is not None else "")
        + (", final activation" if run.plan.model_plan.absorbed_activation else "")
        + (", outputs back to the targets' units" if spec.output_scale is not None else ""),
        "preprocessing_outside_the_graph": spec.outside + spec.order_in_words(),
        **({"layout": spec.layout} if spec.layout is not None else {}),
        **spec.extra,
        "verified": {
            "against": "the eager PyTorch model",
            "tolerance": TOLERANCE,
            "max_abs_difference": {str(b): d for b, d in differences.items()},
        },
    }
    write_json(path.parent / SIDECAR, sidecar)
    return sidecar
