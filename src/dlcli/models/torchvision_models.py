"""`model: {torchvision: NAME}`: a classification model of torchvision.models (images) or of
torchvision.models.video (clips), adapted to the data.

Adaptation, as the README describes: the model is built as torchvision defines it with
`num_classes` set to the data's classes (so its classifier has the right outputs), and when
the data does not have 3 channels its first convolution (Conv2d, or Conv3d for a video model)
is replaced by one of the same kernel, stride and padding that takes the data's channels. Weights start random (torchvision's
own initialisation); `weights: PATH` loads a local state-dict file, never a download.

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
        TorchvisionPlan(name, spec.weights, in_channels, num_classes),
    )


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


def _read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ConfigError(
            f"model.weights: {str(path)!r} is not a file.",
            hint="Point weights at a state-dict file saved with torch.save(model.state_dict(), PATH).",
            key="model.weights",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and unpickling-policy errors all mean the same here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model.weights: cannot read {path} as a PyTorch state dict ({first[:200]}).",
            hint="Save it with torch.save(model.state_dict(), PATH); only tensors are loaded.",
            key="model.weights",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a dlcli checkpoint
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"model.weights: {path} is not a state dict (a mapping of parameter names to tensors).",
            hint="Save it with torch.save(model.state_dict(), PATH).",
            key="model.weights",
        )
    return state


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


def build_torchvision(plan, initial_weights: bool = True):
    """The adapted model, with the weights file's tensors when one is given (and wanted)."""
    tv: TorchvisionPlan = plan.torchvision
    if not tv.weights or not initial_weights:
        return adapted_model(tv.name, tv.in_channels, tv.num_classes)
    path = Path(tv.weights).expanduser()
    state = _read_state_dict(path)
    model = adapted_model(tv.name, tv.in_channels, tv.num_classes)
    if not _mismatch(model, state):  # saved from a model adapted the same way (e.g. by dlcli)
        model.load_state_dict(state)
        return model
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
    _replace_first_conv(original, tv.in_channels, keep_weights=True)
    _replace_classifier(original, tv.num_classes, defined)
    return original
