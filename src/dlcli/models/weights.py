"""Where a model's starting weights come from (`model.weights`), and loading them.

Three sources, told apart by what the value names:

- a folder: a dlcli run; its best.pt gives every tensor whose name and shape match the new
  model, and the rest (a new head, a changed layer) keeps its fresh initialisation;
- a file: a state dict (torch.save(model.state_dict(), PATH)), loaded the same way, except
  that a torchvision model first tries it as torchvision's own model (the adapted stem and a
  new classifier, as before);
- for a torchvision model, one of torchvision's weight names for it (DEFAULT, IMAGENET1K_V1,
  ...), resolved through its enums. The file is looked for in torchvision's cache
  (`torch.hub.get_dir()/checkpoints/<the URL's file name>`, so a file any PyTorch tool fetched
  is reused) and downloaded there when missing: a connect timeout of a few seconds, a
  temporary file renamed into place only after its SHA-256 matches the prefix in its name (as
  torch.hub's check_hash does). Offline, the error names the URL, the destination and how to
  copy the file there. `DLCLI_WEIGHTS_URL_BASE` replaces the URL's folder (a mirror, or a
  test's local server).

What was loaded, from where (file and SHA-256) and which layers start fresh is returned as a
plain report, which training prints and records in run.json.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError

URL_BASE_ENV = "DLCLI_WEIGHTS_URL_BASE"
CONNECT_TIMEOUT_S = 5.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's HASH_REGEX: resnet18-f37072fd.pth
_CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DeclaredWeights:
    """One of torchvision's weights for a model: where its file is, and the preprocessing it expects."""

    model: str
    name: str  # the enum member's name, DEFAULT resolved (e.g. IMAGENET1K_V1)
    url: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: Optional[int]  # the crop size its transforms() declares (advisory)


@dataclass
class WeightsReport:
    """What `model.weights` put into the model, for the console and run.json."""

    source: str  # run | file | torchvision
    file: str
    sha256: str
    transferred: list[str] = field(default_factory=list)  # layers whose every tensor was loaded
    fresh: list[str] = field(default_factory=list)  # layers that keep their fresh initialisation
    weights_name: Optional[str] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    input_size: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "file": self.file,
            "sha256": self.sha256,
            "transferred": self.transferred,
            "fresh": self.fresh,
        }
        if self.weights_name is not None:
            data.update(weights=self.weights_name, mean=self.mean, std=self.std, input_size=self.input_size)
        return data


def is_path_like(value: str) -> bool:
    """Whether `weights` names a file or folder rather than a torchvision weight name."""
    return "/" in value or "\\" in value or value.startswith((".", "~")) or Path(value).suffix != ""


def declared_weights(model: str, value: str) -> Optional[DeclaredWeights]:
    """torchvision's weights `value` for `model`, or None when `value` is a path (existing or
    path-like); an unknown name lists the model's valid ones."""
    path = Path(value).expanduser()
    if path.exists() or is_path_like(value):
        return None
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(model)
    except (ValueError, KeyError):
        enum = None
    valid = list(enum.__members__) if enum is not None else []
    if value not in valid:
        from ..registry import suggest

        listed = ", ".join(valid) if valid else "none"
        raise ConfigError(
            f"model.weights: {value!r} is neither a file, a run folder nor one of torchvision's weights for {model} "
            f"(they are: {listed}).",
            hint=suggest(value, valid) or "Give a weight name listed, a state-dict file or a run folder (runs/<id>).",
            key="model.weights",
        )
    assert enum is not None
    weights = enum[value]
    transforms = weights.transforms()
    crop = getattr(transforms, "crop_size", None)
    size: Any = crop[0] if isinstance(crop, (list, tuple)) and crop else crop
    return DeclaredWeights(
        model,
        weights.name,
        weights.url,
        tuple(float(m) for m in transforms.mean),
        tuple(float(s) for s in transforms.std),
        int(size) if size is not None else None,
    )


def channel_statistics(declared: DeclaredWeights, in_channels: int) -> tuple[list[float], list[float]]:
    """The mean and std per data channel: the weights' own for RGB data; for other channel
    counts (grayscale on an RGB stem, whose kernel is summed over RGB) the mean of the three
    channels' means and of their stds, for every channel."""
    if in_channels == len(declared.mean):
        return list(declared.mean), list(declared.std)
    mean = sum(declared.mean) / len(declared.mean)
    std = sum(declared.std) / len(declared.std)
    return [mean] * in_channels, [std] * in_channels


# ----------------------------------------------------------------------------- files


def cache_path(url: str) -> Path:
    """Where torchvision keeps the file of `url`: $TORCH_HOME/hub/checkpoints/<file name>."""
    from urllib.parse import urlparse

    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def download_url(url: str) -> str:
    """The URL to download from: `url`, or its file under $DLCLI_WEIGHTS_URL_BASE when set."""
    base = os.environ.get(URL_BASE_ENV)
    if not base:
        return url
    return base.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path: Path, name: str, digest: str, url: str, downloaded: bool) -> None:
    found = _HASH_IN_NAME.search(name)
    if found is None or digest.startswith(found.group(1)):
        return
    what = f"the download from {url}" if downloaded else str(path)
    raise ConfigError(
        f"model.weights: {what} is damaged or incomplete: its SHA-256 starts {digest[: len(found.group(1))]}, "
        f"and {name} must start {found.group(1)}.",
        hint="Run again to download it anew."
        if downloaded
        else f"Delete {path} and run again to download it, or copy a complete file there.",
        key="model.weights",
    )


def fetch_weights(declared: DeclaredWeights, progress: Optional[Progress] = None) -> tuple[Path, str]:
    """The cached file of `declared` (downloaded when missing) and its SHA-256, checked."""
    dest = cache_path(declared.url)
    url = download_url(declared.url)
    if not dest.is_file():
        _download(url, dest, declared, progress)
    digest = sha256_of(dest)
    _check_hash(dest, dest.name, digest, url, downloaded=False)
    return dest, digest


def _download(url: str, dest: Path, declared: DeclaredWeights, progress: Optional[Progress]) -> None:
    """`url` into `dest` through a temporary file beside it, renamed only once its hash matches."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        response = urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"model.weights: {declared.name} of {declared.model} is not on this machine, and downloading it from "
            f"{url} failed ({reason}). dlcli looks for it at {dest}.",
            hint=f"On a machine with a network, download {url} and copy the file to {dest} on this one "
            "(the folder is torchvision's cache, $TORCH_HOME/hub/checkpoints, shared by every PyTorch tool); "
            "or give model.weights a state-dict file.",
            key="model.weights",
        ) from None
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        total = int(response.headers.get("Content-Length") or 0)
        digest, done = hashlib.sha256(), 0
        with response, open(temp, "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:  # in MiB: the bar's counts are whole numbers
                    progress(f"Downloading {dest.name} (MiB)", done >> 20, max(total, done) >> 20)
        if total and done < total:
            raise ConfigError(
                f"model.weights: downloading {url} to {dest} failed midway: the connection closed after {done:,} "
                f"of {total:,} bytes; nothing was kept.",
                hint=f"Run again, or download it elsewhere and copy it to {dest}.",
                key="model.weights",
            )
        _check_hash(temp, dest.name, digest.hexdigest(), url, downloaded=True)
        os.replace(temp, dest)
    except (OSError, http.client.HTTPException) as exc:  # a cut connection: IncompleteRead
        raise ConfigError(
            f"model.weights: downloading {url} to {dest} failed midway ({type(exc).__name__}: {exc}); "
            "nothing was kept.",
            hint=f"Run again, or download it elsewhere and copy it to {dest}.",
            key="model.weights",
        ) from None
    finally:
        temp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading


def read_state_dict(path: Path) -> dict:
    """A state-dict file (or a dlcli checkpoint's weights), tensors only."""
    import torch

    if not path.is_file():
        raise ConfigError(
            f"model.weights: {str(path)!r} is not a file (nor a run folder).",
            hint="Point weights at a state-dict file saved with torch.save(model.state_dict(), PATH), "
            "or at a dlcli run folder (runs/<id>).",
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


def run_checkpoint(folder: Path) -> Path:
    """A run folder's best.pt (last.pt when it kept no best); a run without either is an error."""
    from ..rundir import CHECKPOINTS

    for which in ("best.pt", "last.pt"):
        path = folder / CHECKPOINTS / which
        if path.is_file():
            return path
    raise ConfigError(
        f"model.weights: the run {folder} has no checkpoint ({folder / CHECKPOINTS / 'best.pt'} does not exist), "
        "so there are no trained weights to start from.",
        hint="Use a run that completed at least one epoch (dlcli runs lists them), or resume this one first.",
        key="model.weights",
    )


# ----------------------------------------------------------------------------- loading


def layer_of(model, tensor_name: str) -> str:
    """The layer a state-dict entry belongs to, as the summary names it: a layer list's layer
    (conv2d_1), a torchvision model's top-level part (layer4)."""
    ranges = getattr(model, "layer_ranges", None)
    head, _, _ = tensor_name.partition(".")
    if ranges is None or not head.isdigit():
        return head
    index = int(head)
    for record, (start, end) in zip(model.plan.layers, ranges):
        if start <= index < end:
            return record.name
    return head


def transfer_matching(model, state: dict, source: str, path: Path, digest: str) -> WeightsReport:
    """Load every tensor of `state` whose name and shape match the model's; the layers with
    any tensor left out keep their initialisation. Nothing matching at all is an error."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matching:
        shape = lambda k, t: f"{k} {list(t.shape)}"  # noqa: E731
        raise ConfigError(
            f"model.weights: {path} holds the weights of a different network: no tensor of the model's has the "
            f"same name and shape in it. The model's are e.g. {', '.join(shape(k, t) for k, t in list(own.items())[:3])}; "
            f"the file's are e.g. {', '.join(shape(k, t) for k, t in list(state.items())[:3])}.",
            hint="Start from a run or file of the same architecture (the same layers), or from scratch.",
            key="model.weights",
        )
    model.load_state_dict(matching, strict=False)
    layers: dict[str, bool] = {}
    for name in own:
        layer = layer_of(model, name)
        layers[layer] = layers.get(layer, True) and name in matching
    return WeightsReport(
        source,
        str(path),
        digest,
        transferred=[n for n, whole in layers.items() if whole],
        fresh=[n for n, whole in layers.items() if not whole],
    )


def load_weights(model, value: str) -> WeightsReport:
    """Load `model.weights` (a run folder or a state-dict file) into a layer list's or preset's model."""
    path = Path(value).expanduser()
    if path.is_dir():
        file = run_checkpoint(path)
        return transfer_matching(model, read_state_dict(file), "run", file, sha256_of(file))
    return transfer_matching(model, read_state_dict(path), "file", path, sha256_of(path) if path.is_file() else "")
