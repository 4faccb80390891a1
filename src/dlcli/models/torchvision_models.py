"""`model: {torchvision: NAME}`: a classification model of torchvision.models (images) or of
torchvision.models.video (clips), adapted to the data.

Adaptation, as the README describes: the model is built as torchvision defines it with
`num_classes` set to the data's classes (so its classifier has the right outputs), and when
the data does not have 3 channels its first convolution (Conv2d, or Conv3d for a video model)
is replaced by one of the same kernel, stride and padding that takes the data's channels. Weights start random (torchvision's
own initialisation), or from `weights:` (models/weights.py: a run, a state-dict file, or one
of torchvision's weight names, whose normalisation is then applied inside the model).

The plan is made on the meta device: the model is constructed without allocating memory and
one forward pass of a meta tensor gives every top-level part's output shape, so `dlcli
summary` shows exact counts and shapes for any size of model, and a model that does not fit
the data's image size is a clear error before anything is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..registry import suggest

# Models with auxiliary classifiers: those return several outputs in training; dlcli trains the main one.
_NO_AUX = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
_DEFAULT_CLASSES = 1000  # what torchvision's image models are defined with (ImageNet)
_DEFAULT_VIDEO_CLASSES = 400  # and its video models (Kinetics-400)


def _default_classes(name: str) -> int:
    return _DEFAULT_VIDEO_CLASSES if name in video_models() else _DEFAULT_CLASSES


@dataclass(frozen=True)
class TorchvisionPlan:
    name: str
    weights: Optional[str]
    in_channels: int
    num_classes: int
    declared: Any = None  # weights.DeclaredWeights when `weights` is one of torchvision's names
    mean: Optional[tuple[float, ...]] = None  # the input normalisation per data channel
    std: Optional[tuple[float, ...]] = None


def classification_models() -> list[str]:
    """Every classification model name in torchvision.models (detection, segmentation and video excluded)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def video_models() -> list[str]:
    """Every video classification model name in torchvision.models.video (r3d_18, s3d, mvit_v2_s, ...)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm.video))


def _construct(name: str, num_classes: int):
    import torchvision.models as tvm

    return tvm.get_model(name, weights=None, num_classes=num_classes, **_NO_AUX.get(name, {}))


def _first_conv(model):
    """(parent module, attribute name, conv) of the first Conv2d or Conv3d, the stem that reads the image or clip."""
    import torch.nn as nn

    for full_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            parent_name, _, attr = full_name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, module
    raise ConfigError("model.torchvision: this model has no convolution to adapt to the data's channels.")


def _replace_first_conv(model, in_channels: int, keep_weights: bool = False) -> None:
    """A first convolution of the same geometry that reads `in_channels` channels. With
    `keep_weights` its kernel comes from the old one: summed over RGB for one channel, as
    timm adapts pretrained stems, or repeated and rescaled for other counts."""
    import torch

    parent, attr, old = _first_conv(model)
    if old.in_channels == in_channels:
        return
    new = type(old)(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups if old.groups == 1 else 1,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
    )
    if keep_weights:
        with torch.no_grad():
            weight = old.weight
            if in_channels == 1:
                new.weight.copy_(weight.sum(1, keepdim=True))
            else:
                repeats = math.ceil(in_channels / weight.shape[1])
                tiled = weight.repeat(1, repeats, *[1] * (weight.dim() - 2))[:, :in_channels]
                new.weight.copy_(tiled * (weight.shape[1] / in_channels))
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
    setattr(parent, attr, new)


def _replace_classifier(model, num_classes: int, defined: int = _DEFAULT_CLASSES) -> None:
    """A new last layer with the data's classes, in place of the one with the `defined` classes
    (ImageNet's 1,000, Kinetics' 400 for a video model)."""
    import torch.nn as nn

    last: Optional[tuple[str, Any]] = None
    for full_name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == defined:
            last = (full_name, module)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.out_channels == defined:  # squeezenet, s3d
            last = (full_name, module)
    if last is None or num_classes == defined:
        return
    full_name, old = last
    parent_name, _, attr = full_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    new: nn.Module
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = type(old)(
            old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, bias=old.bias is not None
        )
    setattr(parent, attr, new)


def adapted_model(name: str, in_channels: int, num_classes: int):
    model = _construct(name, num_classes)
    _replace_first_conv(model, in_channels)
    return model


# ----------------------------------------------------------------------------- planning


def plan_torchvision(
    spec: Any, input_shape: tuple[int, ...], num_classes: int, output_activation: str, absorb: tuple[str, ...]
):
    """The ModelPlan of a torchvision model: its top-level parts as rows, counted on the meta device."""
    from .plan import ModelPlan

    name = spec.torchvision
    _check_model(name, input_shape)
    in_channels = input_shape[0]
    model = _on_meta(name, in_channels, num_classes)
    model.eval()
    shapes, macs, final = _trace(model, name, input_shape)
    records = _part_records(model, shapes, macs, final)
    unused = sum(p.numel() for n, c in model.named_children() if n not in shapes for p in c.parameters())
    if unused:
        raise ConfigError(
            f"model.torchvision: {name} has parts unused in its forward pass; dlcli cannot count it.",
            key="model.torchvision",
        )
    absorbed = output_activation in absorb and output_activation != "linear"
    return ModelPlan(
        tuple(input_shape),
        records,
        output_activation,
        absorbed,
        _torchvision_plan(name, spec.weights, in_channels, num_classes),
    )


def _torchvision_plan(name: str, weights: Optional[str], in_channels: int, num_classes: int) -> TorchvisionPlan:
    """The plan's weights part: a torchvision weight name resolved (unknown names are errors
    here, before anything is built), with the normalisation it declares."""
    from .weights import channel_statistics, declared_weights

    declared = declared_weights(name, weights) if weights else None
    if declared is None:
        return TorchvisionPlan(name, weights, in_channels, num_classes)
    mean, std = channel_statistics(declared, in_channels)
    return TorchvisionPlan(name, weights, in_channels, num_classes, declared, tuple(mean), tuple(std))


def _check_model(name: str, input_shape: tuple[int, ...]) -> None:
    """Refuses names that are not torchvision classifiers, and data that the model cannot read:
    an image model takes images, a video model clips."""
    from .layers import shape_text

    images, clips = classification_models(), video_models()
    shape = shape_text(tuple(input_shape))
    if name not in images and name not in clips:
        close = suggest(name, images + clips)
        raise ConfigError(
            f"model.torchvision: {name!r} is not a classification model of torchvision "
            f"{_torchvision_version()}; there are {len(images)} for images, e.g. resnet18, resnet50, vgg16_bn, "
            f"mobilenet_v3_small, efficientnet_b0, convnext_tiny, and {len(clips)} for video: {', '.join(clips)}.",
            hint=close or 'Run python -c "import torchvision; print(torchvision.models.list_models())" for the list.',
            key="model.torchvision",
        )
    if name in clips and len(input_shape) != 4:
        raise ConfigError(
            f"model.torchvision: {name} is a video model: it takes clips (frames x height x width x channels), "
            f"but this data's samples have shape {shape}{' (images)' if len(input_shape) == 3 else ''}.",
            hint="Give it video data (data.dataset: video_folder, or an npz array of rank 5), or use an image "
            "model such as resnet18 for images.",
            key="model.torchvision",
        )
    if name in images and len(input_shape) != 3:
        video = len(input_shape) == 4
        raise ConfigError(
            f"model.torchvision: {name} takes images (height x width x channels), but this data's samples have "
            f"shape {shape}{' (clips: frames x height x width x channels)' if video else ''}.",
            hint=f"For clips use a video model ({', '.join(clips)}) or a layer list with conv3d."
            if video
            else "Use a torchvision model with image data, or a layer list for other data.",
            key="model.torchvision",
        )


def _first_tensor(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _trace(
    model, name: str, input_shape: tuple[int, ...]
) -> tuple[dict[str, tuple[tuple, tuple]], dict[str, int], tuple]:
    """One forward pass on the meta device: each top-level part's (input, output) shape and
    multiply-adds per sample (parts that forward does not call are left out), and the output's shape."""
    import torch

    from .layers import shape_text

    shapes: dict[str, tuple[tuple, tuple]] = {}
    macs: dict[str, int] = {}
    hooks: list = []

    def shape_hook(child_name, in_list=False):
        def hook(module, inputs, output):
            x, y = _first_tensor(inputs), _first_tensor(output)
            if x is None or y is None:
                return
            if child_name not in shapes:
                shapes[child_name] = (tuple(x.shape[1:]), tuple(y.shape[1:]))
            elif in_list:  # a ModuleList's blocks (MViT's): the first one's input, the last one's output
                shapes[child_name] = (shapes[child_name][0], tuple(y.shape[1:]))

        return hook

    def macs_hook(child_name):
        def hook(module, inputs, output):
            y = _first_tensor(output)
            if y is None:
                return
            per_sample = y.numel() // y.shape[0]
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
                k = math.prod(module.kernel_size)
                macs[child_name] = macs.get(child_name, 0) + per_sample * k * module.in_channels // module.groups
            elif isinstance(module, torch.nn.Linear):
                macs[child_name] = macs.get(child_name, 0) + per_sample * module.in_features

        return hook

    for child_name, child in model.named_children():
        if isinstance(child, torch.nn.ModuleList):  # never called itself: forward loops over its blocks
            hooks.extend(block.register_forward_hook(shape_hook(child_name, in_list=True)) for block in child)
        else:
            hooks.append(child.register_forward_hook(shape_hook(child_name)))
        for sub in child.modules():
            if isinstance(sub, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                hooks.append(sub.register_forward_hook(macs_hook(child_name)))
    try:
        with torch.no_grad():
            output = _first_tensor(model(torch.empty(1, *input_shape, device="meta")))
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        message = str(exc).strip().splitlines()[0].rstrip(".! ") if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model.torchvision: {name} does not fit inputs of {shape_text(tuple(input_shape))}: {message}.",
            hint="It needs larger clips: use a video model that takes small clips (r3d_18, mc3_18, r2plus1d_18, "
            "swin3d_t) or larger clips (mvit_v1_b and mvit_v2_s take 16 frames of 224x224)."
            if len(input_shape) == 4
            else "It needs larger images: use a model that takes small inputs (resnet18, mobilenet_v3_small, "
            "efficientnet_b0) or larger images.",
            key="model.torchvision",
        ) from None
    finally:
        for h in hooks:
            h.remove()
    return shapes, macs, tuple(output.shape[1:])


def _part_records(model, shapes: dict[str, tuple[tuple, tuple]], macs: dict[str, int], final: tuple) -> list:
    """A LayerRecord per top-level parameter and per part that forward calls, in order."""
    from .plan import LayerRecord, running_statistics

    records = []
    for param_name, param in model.named_parameters(recurse=False):  # e.g. a ViT's class token
        records.append(LayerRecord(param_name, "Parameter", None, (), tuple(param.shape[1:]), 0, param.numel()))
    for child_name, child in model.named_children():
        if child_name not in shapes:
            continue  # defined but not used in forward (e.g. disabled auxiliary classifiers)
        trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
        frozen = sum(running_statistics(m) for m in child.modules())
        inp, out = shapes[child_name]
        records.append(
            LayerRecord(child_name, type(child).__name__, None, inp, out, macs.get(child_name, 0), trainable, frozen)
        )
    if records and records[-1].output_shape != final:  # a torch.flatten in forward, after the last part
        records.append(LayerRecord("flatten", "Flatten", None, records[-1].output_shape, final, 0))
    return records


def _on_meta(name: str, in_channels: int, num_classes: int):
    """The adapted model with its tensors on the meta device: shapes without memory."""
    import torch

    try:
        with torch.device("meta"):
            return adapted_model(name, in_channels, num_classes)
    except (NotImplementedError, RuntimeError):
        pass  # a constructor that reads tensor values (regnet computes its widths with torch ops)
    # Build on the CPU, moving each parameter and buffer to meta as soon as it is registered:
    # only one tensor at a time is ever allocated (the way accelerate's init_empty_weights works).
    module_cls = torch.nn.Module
    register_parameter, register_buffer = module_cls.register_parameter, module_cls.register_buffer

    def parameter_to_meta(self, param_name, param):
        register_parameter(self, param_name, param)
        if param is not None:
            self._parameters[param_name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    def buffer_to_meta(self, buffer_name, tensor, persistent=True):
        register_buffer(self, buffer_name, tensor.to("meta") if tensor is not None else None, persistent)

    module_cls.register_parameter = parameter_to_meta  # type: ignore[method-assign]
    module_cls.register_buffer = buffer_to_meta  # type: ignore[method-assign]
    try:
        return adapted_model(name, in_channels, num_classes)
    finally:
        module_cls.register_parameter = register_parameter  # type: ignore[method-assign]
        module_cls.register_buffer = register_buffer  # type: ignore[method-assign]


def _torchvision_version() -> str:
    import torchvision

    return torchvision.__version__.split("+")[0]


# ----------------------------------------------------------------------------- building


def _mismatch(model, state: dict) -> list[str]:
    """What keeps `state` from loading into `model`: missing, unexpected and mis-shaped entries."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [
        f"{k} {list(state[k].shape)} (needs {list(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shaped:
        problems.append(f"{len(shaped)} of another shape (e.g. {'; '.join(shaped[:2])})")
    return problems


def _normalize_input(module, args):
    """A forward pre-hook: the weights' normalisation, applied to dlcli's [0, 1] inputs inside
    the model, so that evaluate, predict and export apply it exactly as training does."""
    return ((args[0] - module.input_mean) / module.input_std, *args[1:])


def add_input_normalization(model, mean: tuple[float, ...], std: tuple[float, ...], rank: int) -> None:
    """Buffers input_mean and input_std (one value per channel) and the hook that applies them."""
    import torch

    shape = (len(mean),) + (1,) * (rank - 1)  # (C, 1, 1) for images, (C, 1, 1, 1) for clips
    model.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
    model.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).reshape(shape))
    model.register_forward_pre_hook(_normalize_input)


def _load_torchvision_state(tv: TorchvisionPlan, state: dict, path: Path, digest: str, source: str):
    """The adapted model with a state dict saved from it, or from torchvision's model as defined
    (3 channels, 1,000 or 400 classes: its stem is adapted and its classifier replaced)."""
    from .weights import WeightsReport

    model = adapted_model(tv.name, tv.in_channels, tv.num_classes)
    if not _mismatch(model, state):  # saved from a model adapted the same way (e.g. by dlcli)
        model.load_state_dict(state)
        return model, WeightsReport(source, str(path), digest, transferred=[n for n, _ in model.named_children()])
    defined = _default_classes(tv.name)
    original = _construct(tv.name, defined)  # as torchvision defines it: 3 channels, 1,000 (or 400) classes
    problems = _mismatch(original, state)
    if problems:
        raise ConfigError(
            f"model.weights: {path} does not hold the weights of torchvision's {tv.name}: "
            f"{'; '.join(problems)} of its tensors.",
            hint=f"Use a state dict saved from torchvision.models.{tv.name}() (or from this run's adapted model), "
            "or the model it was saved from.",
            key="model.weights",
        )
    original.load_state_dict(state)
    stem = next(n for n, m in original.named_modules() if m is _first_conv(original)[2])
    before = dict(original.named_modules())
    _replace_first_conv(original, tv.in_channels, keep_weights=True)
    _replace_classifier(original, tv.num_classes, defined)
    # The stem keeps its (adapted) kernel; a replaced classifier starts fresh.
    fresh = [n for n, m in original.named_modules() if n and n != stem and before.get(n) is not m]
    parts = [n for n, _ in original.named_children()]
    return original, WeightsReport(
        source,
        str(path),
        digest,
        transferred=[p for p in parts if not any(f == p or f.startswith(p + ".") for f in fresh)],
        fresh=fresh,
    )


def build_torchvision(plan, initial_weights: bool = True, progress=None):
    """The adapted model, with its starting weights when they are wanted (`initial_weights`)
    and the weights' input normalisation when they declare one. Returns (model, report or None)."""
    from .weights import fetch_weights, load_weights, read_state_dict

    tv: TorchvisionPlan = plan.torchvision
    report = None
    if not tv.weights or not initial_weights:
        model = adapted_model(tv.name, tv.in_channels, tv.num_classes)
    elif tv.declared is not None:
        path, digest = fetch_weights(tv.declared, progress)
        model, report = _load_torchvision_state(tv, read_state_dict(path), path, digest, "torchvision")
        report.weights_name, report.input_size = tv.declared.name, tv.declared.input_size
    elif Path(tv.weights).expanduser().is_dir():  # a dlcli run: every tensor whose name and shape match
        model = adapted_model(tv.name, tv.in_channels, tv.num_classes)
        report = load_weights(model, tv.weights)
    else:
        from .weights import sha256_of

        path = Path(tv.weights).expanduser()
        state = read_state_dict(path)
        model, report = _load_torchvision_state(tv, state, path, sha256_of(path), "file")
    if tv.mean is not None and tv.std is not None:
        add_input_normalization(model, tv.mean, tv.std, len(plan.input_shape))
        if report is not None:
            report.mean, report.std = list(tv.mean), list(tv.std)
    return model, report
