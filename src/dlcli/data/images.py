"""`data.dataset: image_folder`: `root/<class>/<image>` (or `root/train|val|test/<class>/...`).

Images are decoded once, in parallel processes, into one uint8 tensor N,C,H,W held in
memory like MNIST (converted to float / 255 one batch at a time). Each is turned upright by
its EXIF orientation, converted to grayscale (`channels: 1`) or RGB (3; alpha dropped, as
PIL's and torchvision's loaders do) and resized bilinearly to `image_size` when its size
differs. Unset, `image_size` and `channels` come from the first training image, and are
saved with the class names in the preprocessing state. `load_images(state, paths)` decodes
any files the same way, for evaluation and prediction.

PIL costs about 120 us per small file, nearly all of it per-file overhead rather than
decoding. When the optional `pyspng` (libspng; the `fast-png` extra) is installed, 8-bit
grayscale and RGB PNGs that PIL would leave unchanged (no EXIF or XMP orientation, no
conversion to another colour mode, no animation) are decoded by it instead, in about a quarter of the time
and to the same pixels; every other file, and any PNG libspng refuses, goes through PIL.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ..errors import DataError
from ..registry import DATASETS
from .cache import check_fits_in_memory, decoded_samples
from .dataset import DataInfo, Dataset, DatasetSource, ProgressFn
from .folders import (
    DecodedFolderData,
    decoded_folder_dataset,
    decoded_in_processes,
    first_file,
    folder_task,
    ignored_files_note,
    scan_class_folders,
    scan_for_loading,
    split_class_files,
    split_state,
    unreadable_files_note,
)
from .inputs import Inputs, InputSpec, PredictOptions, ReadRequest, expand_paths, known_labels, label_from_folder
from .preprocessing import STATE_VERSION, check_state

if TYPE_CHECKING:  # torch is imported inside the functions, so `dlcli --help` stays fast
    import torch

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
KIND_WORDS = "images (PNG, JPEG, BMP, GIF or WebP)"
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
CHUNK_FILES = 256  # files per task sent to a decoding process
PARALLEL_FROM = 512  # fewer files are decoded in this process (starting processes costs more)
EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that send a PNG to PIL's path: an orientation (an eXIf chunk, ImageMagick's text
# chunk, XMP), which PIL applies, and animation (acTL), where PIL picks the first frame.
PNG_PIL_MARKERS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp", b"acTL")
PNG_GRAY, PNG_RGB = 0, 2  # IHDR colour types that libspng decodes to what PIL's "L" / "RGB" hold


@dataclass(frozen=True, kw_only=True)
class ImageFolderData(DecodedFolderData):
    """image_folder: class folders of image files, decoded once into one uint8 tensor."""


_spng: object = None  # the pyspng module once looked for; False when it is not installed


def _libspng():
    global _spng
    if _spng is None:
        try:
            import pyspng

            _spng = pyspng
        except ImportError:
            _spng = False
    return _spng


def _decode_png_fast(data: bytes, channels: int) -> Optional[np.ndarray]:
    """A file's bytes, if an 8-bit grayscale or RGB PNG, as H,W or H,W,3 uint8 through
    libspng, or None where PIL must decode them (another kind of PNG, an orientation to
    apply, a damaged file: PIL then names the problem)."""
    spng = _libspng()
    # IHDR is the first chunk: width and height at bytes 16-23, bit depth 24, colour type 25.
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or data[24] != 8:
        return None
    color_type = data[25]
    if color_type not in (PNG_GRAY, PNG_RGB) or (color_type == PNG_RGB and channels == 1):
        return None  # palettes, alpha and RGB to gray: PIL's own conversions, kept exact
    if any(marker in data for marker in PNG_PIL_MARKERS):
        return None
    try:
        array = spng.load(data)  # type: ignore[attr-defined]
    except Exception:  # libspng's errors are terse: PIL decodes the file again and explains
        return None
    wanted_ndim = 2 if color_type == PNG_GRAY else 3
    if array.dtype != np.uint8 or array.ndim != wanted_ndim or (array.ndim == 3 and array.shape[2] != 3):
        return None
    return array


def decode_image(path: Union[str, Path], size: Optional[tuple[int, int]], channels: int) -> np.ndarray:
    """One image as uint8 C,H,W: upright (EXIF), in `channels`, resized to size (h, w)."""
    from PIL import Image, ImageOps

    source: Union[str, Path, io.BytesIO] = path
    fast = None
    if _libspng() and str(path)[-4:].lower() == ".png":
        with open(path, "rb") as file:
            data = file.read()
        fast = _decode_png_fast(data, channels)
        source = io.BytesIO(data)  # if PIL must decode it after all, the file is not read again
    if fast is not None:
        if size is not None and fast.shape[:2] != tuple(size):
            # The resize PIL's path does, on the same pixels in the same mode.
            fast = np.asarray(Image.fromarray(fast).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        if channels == 1:
            return fast[None]
        if fast.ndim == 2:  # gray to RGB: PIL copies the value into each channel
            return np.repeat(fast[None], 3, axis=0)
        return np.ascontiguousarray(fast.transpose(2, 0, 1))
    with Image.open(source) as opened:
        image = opened
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # most files are upright: no copy for them
            image = ImageOps.exif_transpose(image)
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")  # palette transparency resolved before dropping alpha
        mode = "L" if channels == 1 else "RGB"
        if image.mode != mode:
            image = image.convert(mode)
        if size is not None and (image.height, image.width) != tuple(size):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _problem(exc: BaseException) -> str:
    """What went wrong with one file, in words (PIL's messages vary by format)."""
    from PIL import Image, UnidentifiedImageError

    text = str(exc).strip()
    if isinstance(exc, UnidentifiedImageError):
        return "it is not an image in a format dlcli reads (PNG, JPEG, BMP, GIF or WebP), or it is damaged"
    if isinstance(exc, Image.DecompressionBombError):
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        return f"it has more than {limit:,} pixels, which is refused as a possible decompression bomb; shrink it first"
    if isinstance(exc, FileNotFoundError):
        return "the file does not exist"
    if isinstance(exc, OSError) and "truncated" in text.lower():
        return f"the file is truncated ({text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_chunk(start: int, paths: list[str], size: tuple[int, int], channels: int) -> tuple[int, np.ndarray, list]:
    """Decode paths into one array; a file that fails leaves zeros and an (index, problem) entry."""
    out = np.zeros((len(paths), channels, size[0], size[1]), dtype=np.uint8)
    errors = []
    for i, path in enumerate(paths):
        try:
            out[i] = decode_image(path, size, channels)
        except Exception as exc:  # a damaged file can make PIL raise almost anything
            errors.append((start + i, _problem(exc)))
    return start, out, errors


def decode_files(
    paths: Sequence[Union[str, Path]],
    size: tuple[int, int],
    channels: int,
    *,
    workers: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
    description: str = "Decoding images",
    parallel_from: int = PARALLEL_FROM,
    out: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """All images as uint8 N,C,H,W (zeros where a file failed) and (index, problem) per failure;
    into `out` when given (a slice of a disk cache), chunk by chunk as they are decoded."""
    n = len(paths)
    if out is None:
        out = np.empty((n, channels, size[0], size[1]), dtype=np.uint8)
    errors: list[tuple[int, str]] = []
    names = [str(p) for p in paths]
    chunks = [(s, names[s : s + CHUNK_FILES]) for s in range(0, n, CHUNK_FILES)]
    workers = workers or min(os.cpu_count() or 1, 32)
    done = 0
    if progress:
        progress(description, 0, n)
    if workers > 1 and n >= parallel_from:
        try:
            tasks = ((s, chunk, size, channels) for s, chunk in chunks)
            for start, array, failed in decoded_in_processes(_decode_chunk, tasks, min(workers, len(chunks))):
                out[start : start + len(array)] = array
                errors += failed
                done += len(array)
                if progress:
                    progress(description, done, n)
            return out, sorted(errors)
        except (OSError, RuntimeError, ImportError):  # no processes here (a sandbox): decode in this one
            errors, done = [], 0
    for start, chunk in chunks:
        _, array, failed = _decode_chunk(start, chunk, size, channels)
        out[start : start + len(array)] = array
        errors += failed
        done += len(array)
        if progress:
            progress(description, done, n)
    return out, errors


def check_memory(count: int, channels: int, size: tuple[int, int], available: Optional[int] = None) -> int:
    """Refuse before decoding when the uint8 tensors would not fit; returns the bytes needed."""
    hint = "Use a smaller data.image_size, data.channels: 1, or fewer images (data.max_train_samples)."
    return check_fits_in_memory(count, (channels, *size), "images", hint, available)


def image_properties(path: Path) -> tuple[tuple[int, int], int]:
    """((height, width) upright, channels) of one image, for the defaults."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            mode = image.mode
            upright = ImageOps.exif_transpose(image)
            size = (upright.height, upright.width)
    except Exception as exc:
        raise DataError(
            f"Cannot read {path}, the first image, to find the image size: {_problem(exc)}.",
            hint="Replace the file, or set data.image_size and data.channels.",
        ) from None
    return size, 1 if mode in GRAY_MODES else 3


def load_images(
    state: dict,
    paths: Sequence[Union[str, Path]],
    *,
    workers: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
) -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Decode files as a saved state says: a uint8 tensor N,C,H,W of the files that could be
    read, in order, and (index into paths, problem) for each file that could not."""
    import torch

    check_state(state, "image_folder")
    size, channels = tuple(state["image_size"]), state["channels"]
    check_memory(len(paths), channels, size)  # type: ignore[arg-type]
    array, errors = decode_files(paths, size, channels, workers=workers, progress=progress)  # type: ignore[arg-type]
    if errors:
        keep = np.ones(len(paths), dtype=bool)
        keep[[i for i, _ in errors]] = False
        array = array[keep]
    return torch.from_numpy(array), errors


def info_from_state(state: dict) -> DataInfo:
    h, w = state["image_size"]
    names = tuple(state["class_names"])
    return DataInfo(
        input_shape=(state["channels"], h, w), task=folder_task(names), num_classes=len(names), class_names=names
    )


def _properties(config: ImageFolderData, layout) -> tuple[tuple[int, int], int]:
    if config.image_size is not None and config.channels is not None:
        return (config.image_size[0], config.image_size[1]), config.channels
    size, channels = image_properties(first_file(layout, IMAGE_SUFFIXES, KIND_WORDS))
    if config.image_size is not None:
        size = (config.image_size[0], config.image_size[1])
    return size, config.channels or channels


def _info(config: ImageFolderData, seed: int, state: Optional[dict]) -> DataInfo:
    if state is not None:
        return info_from_state(check_state(state, "image_folder"))
    layout = scan_class_folders(Path(config.root), IMAGE_SUFFIXES, KIND_WORDS, config.class_names, list_files=False)
    size, channels = _properties(config, layout)
    names = layout.class_names
    return DataInfo(input_shape=(channels, *size), task=folder_task(names), num_classes=len(names), class_names=names)


def _load(config: ImageFolderData, seed: int, state: Optional[dict], progress: Optional[ProgressFn]) -> Dataset:

    layout = scan_for_loading(config, state, "image_folder", IMAGE_SUFFIXES, KIND_WORDS, "images")
    if state is not None:
        size, channels = tuple(state["image_size"]), state["channels"]
    else:
        size, channels = _properties(config, layout)
    split, parts = split_class_files(layout, config, seed, "images")
    items = parts["train"] + parts["val"] + parts["test"]

    def decode(paths, out):
        return decode_files(paths, size, channels, workers=config.workers, progress=progress, out=out)

    options = {"image_size": list(size), "channels": channels, "resize": "bilinear"}
    array, errors, cache_note = decoded_samples(
        "image_folder", [p for p, _ in items], (channels, *size), options, config, decode, progress, "images"
    )
    skipped = unreadable_files_note(
        errors,
        items,
        config.on_bad_file,
        named="image",
        counted="image file",
        hint="Replace or delete the file, or set data.on_bad_file: skip to leave unreadable files out.",
    )
    keep = np.ones(len(items), dtype=bool)
    keep[[i for i, _ in errors]] = False
    notes = [note for note in (skipped, ignored_files_note(layout, "images"), cache_note) if note]
    if state is None:
        state = {
            "kind": "image_folder",
            "version": STATE_VERSION,
            "class_names": list(layout.class_names),
            "image_size": [int(size[0]), int(size[1])],
            "channels": int(channels),
            "resize": "bilinear",
            "scale": 1 / 255,
            "split": split_state(layout, split, parts, seed, len(errors)),
        }

    def nothing_to_train(count: int) -> DataError:
        bad = [problem for index, problem in errors if index < count]
        return DataError(
            f"{layout.root}: all {count} training images were unreadable and skipped "
            f"(data.on_bad_file: skip), so there is nothing to train on; the first: {bad[0] if bad else 'none'}.",
            hint="Check that the class folders hold images dlcli can decode (PNG, JPEG, BMP, GIF or WebP).",
        )

    return decoded_folder_dataset(info_from_state(state), state, array, items, parts, keep, notes, nothing_to_train)


def read_image_inputs(
    paths: list[Path],
    class_names: list[str],
    size: tuple[int, int],
    channels: int,
    options: PredictOptions,
    cached: Optional[np.ndarray] = None,
) -> Inputs:
    """Image files decoded by this module's decoder (EXIF orientation, conversion to the
    channels, bilinear resize: what training saw), or taken from a disk cache of them
    (`cached`), with labels from class-named folders."""
    import torch

    names = [str(p) for p in paths]
    array: Optional[np.ndarray]
    if cached is not None:
        array, problems = cached, []
    else:
        check_memory(len(paths), channels, size)
        array, problems = decode_files(paths, size, channels) if paths else (None, [])
    errors = {index: f"{paths[index]} cannot be decoded as an image ({problem})." for index, problem in problems}
    if errors and not options.skip_bad:
        raise DataError(
            errors[min(errors)], hint="Remove or replace the file, or pass --skip-bad to mark it and go on."
        )
    if array is None:
        x = torch.zeros(0, channels, *size, dtype=torch.uint8)
    else:
        x = torch.from_numpy(array[[i for i in range(len(paths)) if i not in errors]])
    if options.invert:
        x = 255 - x
    labels = [label_from_folder(p, class_names) for i, p in enumerate(paths) if i not in errors]
    return Inputs(names, x, known_labels(labels), errors, input_scale=1.0 / 255.0)


def _read_inputs(request: ReadRequest) -> Inputs:
    """Image files or folders, decoded, converted and resized as in training; files in folders
    named after a class carry that label."""
    from .cache import find_cached

    state = request.saved_state("image_folder")
    size = (state["image_size"][0], state["image_size"][1])
    paths = expand_paths(request.inputs, IMAGE_SUFFIXES)
    options = {"image_size": list(size), "channels": state["channels"], "resize": "bilinear"}
    cached = find_cached("image_folder", options, paths, getattr(request.config, "cache_dir", None))
    return read_image_inputs(paths, list(state["class_names"]), size, state["channels"], request.options, cached)


def _input_spec(config: ImageFolderData, info: DataInfo, state: Optional[dict]) -> InputSpec:
    state = check_state(state, "image_folder")
    h, w = state["image_size"]
    mode = "grayscale" if state["channels"] == 1 else "RGB"
    return InputSpec(
        "uint8",
        1.0 / 255.0,
        outside=(
            f"Decode the image, apply its EXIF orientation, convert it to {mode} and resize it to {h}x{w} "
            "(bilinear); pass the 0-255 values as uint8."
        ),
        layout="NCHW",
    )


DATASETS.add(
    "image_folder",
    DatasetSource(
        config=ImageFolderData,
        info=_info,
        load=_load,
        read_inputs=_read_inputs,
        input_spec=_input_spec,
        fits_preprocessing=True,
    ),
)
