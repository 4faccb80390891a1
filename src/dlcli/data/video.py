"""`data.dataset: video_folder`: `root/<class>/<clip>` (or `root/train|val|test/<class>/...`).

A clip is a video file (`.mp4`, `.avi`, `.mkv`, `.webm`, `.mov`, animated `.gif`), decoded
with PyAV (FFmpeg's libraries in a wheel; the `video` extra), or a folder of frame images
(`clip_001/00001.png ...`, frames in natural order), decoded as image folders' files are.
Classes, splits, hidden files, links and bad files follow image folders (folders.py).

Every clip becomes `frames` frames: sampled uniformly over the clip (the first and last frame
and evenly between, rounded to the nearest), or with `frame_step: k` frames 0, k, 2k, ... from
the start. A clip with fewer frames is padded by repeating its last frame, refused, or left
out (`short_clips`). Each frame is converted to grayscale (`channels: 1`) or RGB (3) and
resized bilinearly to `image_size`, through PIL as image folders' images are, so a clip
written as MP4 and the same frames written as PNG files give the same tensor up to the
codec's loss. Unset, `image_size` and `channels` come from the first training clip, and
then every frame of every clip must have that size (no silent resizing of some clips).

The clips are decoded once, in parallel processes, into one uint8 tensor N,C,T,H,W (PyTorch's
Conv3d order: channels, frames, height, width); `DataInfo.input_shape` is (C, T, H, W). It is
converted to float / 255 one batch at a time, as images are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence, Union

import numpy as np

from ..config import option
from ..errors import DataError
from ..registry import DATASETS
from .cache import check_fits_in_memory, decoded_samples
from .dataset import DataInfo, Dataset, DatasetSource, ProgressFn
from .folders import (
    ClassFolders,
    DecodedFolderData,
    _split_folders,
    _visible,
    check_split_options,
    decoded_folder_dataset,
    decoded_in_processes,
    files_under,
    folder_task,
    ignored_files_note,
    natural_key,
    scan_class_folders,
    split_class_files,
    split_state,
    unreadable_files_note,
)
from .images import IMAGE_SUFFIXES, decode_image, image_properties
from .images import _problem as image_problem
from .inputs import Inputs, InputSpec, PredictOptions, ReadRequest, known_labels, label_from_folder
from .preprocessing import STATE_VERSION, check_state

if TYPE_CHECKING:  # torch is imported inside the functions, so `dlcli --help` stays fast
    import torch

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif"})
STILL_SUFFIXES = IMAGE_SUFFIXES - {".gif"}  # a folder holding one of these is a folder of frames
CLIP_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES
KIND_WORDS = "video clips (MP4, AVI, MKV, WebM, MOV or animated GIF files, or folders of frame images)"
NO_STREAM = "it holds no video stream (it is damaged or truncated, or holds only sound)"
VIDEO_WORDS = "a video in a format dlcli reads (MP4, AVI, MKV, WebM, MOV or animated GIF)"
GRAY_FORMATS = frozenset({"gray", "gray8", "gray10le", "gray12le", "gray16le", "gray16be", "ya8", "ya16le", "monow"})
CHUNK_CLIPS = 8  # clips per task sent to a decoding process
PARALLEL_FROM = 16  # fewer clips are decoded in this process (starting processes costs more)
KIND = "video_folder"


@dataclass(frozen=True, kw_only=True)
class VideoFolderData(DecodedFolderData):
    """video_folder: class folders of clips (video files or folders of frames), decoded once into
    one uint8 tensor N,C,T,H,W."""

    frames: int = option(
        16, help="frames per clip: sampled uniformly over the clip (or every frame_step-th from the start)", ge=1
    )
    frame_step: Optional[int] = option(
        None, help="take frames 0, k, 2k, ... from the start of each clip instead of sampling over it", ge=1
    )
    short_clips: Literal["pad", "error", "skip"] = option(
        "pad", help="a clip with too few frames: repeat its last frame (pad), refuse it (error) or leave it out (skip)"
    )


# ----------------------------------------------------------------------------- PyAV


def _av():
    """The PyAV module, or a DataError naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise DataError(
            "Reading video files (data.dataset: video_folder, or clips given to dlcli predict) needs PyAV, "
            "the `av` package (FFmpeg's libraries in a wheel), which is not installed.",
            hint='Install it with `pip install "dlcli[video]"`, or give the clips as folders of frame images.',
        ) from None
    return av


def needs_av(paths: Sequence[Path]) -> None:
    """Refuse at once, in this process, when some clips are video files and PyAV is missing."""
    if any(not p.is_dir() for p in paths):
        _av()


# ----------------------------------------------------------------------------- finding clips


def clips_among(files: Sequence[Path], base: Path, base_is_clip: bool) -> tuple[list[Path], int]:
    """The clips among files found under base (in their natural order) and how many files are
    not part of one: each video file is a clip, and so is each folder that holds frame images
    (all its image files are its frames). Images right in base make base itself a clip when
    base_is_clip (dlcli predict given a folder of frames), and are not clips otherwise (in a
    class folder)."""
    frame_folders = {p.parent for p in files if p.suffix.lower() in STILL_SUFFIXES}
    clips: list[Path] = []
    seen: set[Path] = set()
    ignored = 0
    for path in files:
        suffix, parent = path.suffix.lower(), path.parent
        if parent in frame_folders and suffix in IMAGE_SUFFIXES and (parent != base or base_is_clip):
            if parent not in seen:
                seen.add(parent)
                clips.append(parent)
        elif suffix in VIDEO_SUFFIXES:
            clips.append(path)
        else:
            ignored += 1
    return clips, ignored


def frame_files(folder: Path) -> list[Path]:
    """A folder clip's frames: its visible image files, in natural order."""
    try:
        with os.scandir(folder) as entries:
            names = [
                e.name
                for e in entries
                if _visible(e.name) and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and not e.is_dir()
            ]
    except OSError as exc:
        raise ClipProblem(f"its folder cannot be listed ({exc.strerror or exc})") from None
    return [folder / name for name in sorted(names, key=natural_key)]


def scan_clips(config: VideoFolderData, state: Optional[dict]) -> ClassFolders:
    """The class folders and each split's (clip, class) list; with a saved state, its classes,
    and as many training clips as when the run was trained (otherwise its splits would differ)."""
    if state is not None:
        check_state(state, KIND)
    names = state["class_names"] if state is not None else config.class_names
    layout = scan_class_folders(Path(config.root), CLIP_SUFFIXES, KIND_WORDS, names)
    splits = _split_folders(layout.root)
    for split, items in layout.files.items():
        regrouped: list[tuple[Path, int]] = []
        for index, name in enumerate(layout.class_names):
            files = [p for p, c in items if c == index]
            base = splits[split] / name
            clips, ignored = clips_among(files, base, base_is_clip=False)
            layout.ignored += ignored
            if not clips and split == "train" and files:
                raise DataError(
                    f"The class folder {base} holds no {KIND_WORDS}: frame images must be in one folder per clip "
                    f"({base}/clip_001/00001.png ...).",
                    hint="Move each clip's frames into a folder of its own, or add video files.",
                )
            regrouped += [(clip, index) for clip in clips]
        layout.files[split] = regrouped
    check_split_options(config, layout)
    clips_count = len(layout.files["train"])
    if state is not None and state.get("split", {}).get("files") not in (None, clips_count):
        raise DataError(
            f"{layout.root} holds {clips_count} training clips, but held {state['split']['files']} when this run "
            "was trained; its splits would differ.",
            hint="Use the folder the run was trained on.",
        )
    return layout


def expand_clips(inputs: Sequence[str]) -> list[Path]:
    """Clips named, and the clips inside folders named (video files and folders of frames, in
    natural order); a folder that holds frame images is itself one clip."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files, _ = files_under(path, CLIP_SUFFIXES)
            found += clips_among(files, path, base_is_clip=True)[0]
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"Input {item} does not exist.", hint="Check the path.")
    return found


# ----------------------------------------------------------------------------- decoding


class ClipProblem(Exception):
    """A clip that cannot be read, in words (named by the caller)."""


class SizeMismatch(Exception):
    """A frame of another size than the clips' own, where no data.image_size resizes them."""

    def __init__(self, found: tuple[int, int]) -> None:
        super().__init__(f"{found[0]}x{found[1]}")
        self.found = found


def frames_needed(frames: int, step: Optional[int]) -> int:
    """How many frames a clip must have to give `frames` frames without padding."""
    return frames if step is None else (frames - 1) * step + 1


def sample_indices(count: int, frames: int, step: Optional[int]) -> list[int]:
    """Which of a clip's `count` frames are taken (fewer than `frames` when the clip is short):
    uniformly over the clip, its first and last frame included, or 0, step, 2*step, ..."""
    if step is not None:
        return list(range(0, min(count, frames_needed(frames, step)), step))
    if count < frames:
        return list(range(count))
    if frames == 1:
        return [0]
    # round(i * (count - 1) / (frames - 1)) in integers, halves up
    return [(2 * i * (count - 1) + frames - 1) // (2 * (frames - 1)) for i in range(frames)]


def _frame_array(image: Any, size: tuple[int, int], resize: bool, channels: int) -> np.ndarray:
    """A PIL image as uint8 C,H,W in `channels`, resized to size (as image folders do), or a
    SizeMismatch when it has another size and resize is off."""
    from PIL import Image

    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # palette transparency resolved before dropping alpha
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if (image.height, image.width) != tuple(size):
        if not resize:
            raise SizeMismatch((image.height, image.width))
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _video_pass(
    path: Path, frames: int, step: Optional[int], convert, count: Optional[int] = None
) -> tuple[dict[int, np.ndarray], int, int]:
    """One decoding pass: the converted frames sampled from a clip of `count` frames (None: the
    count the container states, if any), the number of frames decoded (for frame_step: up to
    the last one needed), and the count the sampling was for (0 when unknown: nothing taken)."""
    av = _av()
    picked: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ClipProblem(NO_STREAM)
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one decoding thread per process: the processes share the cores
        last = frames_needed(frames, step) - 1 if step is not None else None
        if step is None and count is None:
            count = int(stream.frames or 0)
        wanted = set(sample_indices(count or 0, frames, None) if last is None else range(0, last + 1, step or 1))
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                picked[index] = convert(frame.to_image())
            if last is not None and index >= last:
                break
    return picked, decoded, count or 0


def decode_video(path: Path, frames: int, step: Optional[int], convert) -> tuple[list[np.ndarray], int]:
    """A video file's sampled frames (converted) and its frame count (for frame_step: how many
    were decoded, up to the last one needed). The count the container states is trusted for a
    single pass; when it is missing or the frames decoded differ from it, the file is decoded
    again with the count found."""
    picked, decoded, assumed = _video_pass(path, frames, step, convert)
    if step is None and decoded != assumed:
        picked, again, _ = _video_pass(path, frames, None, convert, count=decoded)
        decoded = min(decoded, again)
    return [picked[i] for i in sorted(picked)], decoded


def decode_clip(
    path: Union[str, Path], frames: int, step: Optional[int], size: tuple[int, int], resize: bool, channels: int
) -> tuple[np.ndarray, int]:
    """One clip as uint8 C,T,H,W (a short clip padded with its last frame) and its frame count."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        indices = sample_indices(len(files), frames, step)
        taken = []
        for i in indices:
            try:
                image = decode_image(files[i], None, channels)
            except Exception as exc:
                raise ClipProblem(f"its frame {files[i].name}: {image_problem(exc)}") from None
            if image.shape[1:] != tuple(size):
                if not resize:
                    raise SizeMismatch((image.shape[1], image.shape[2]))
                image = decode_image(files[i], size, channels)
            taken.append(image)
        count = len(files)
    else:
        taken, count = decode_video(path, frames, step, lambda image: _frame_array(image, size, resize, channels))
    if not taken:
        raise ClipProblem("it holds no frames" if path.is_dir() else "it holds no video frames")
    taken += [taken[-1]] * (frames - len(taken))
    return np.stack(taken, axis=1), count


def clip_problem(exc: BaseException) -> str:
    """What went wrong with one clip, in words."""
    if isinstance(exc, ClipProblem):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "the file does not exist"
    try:
        import av

        if isinstance(exc, av.error.FFmpegError):
            if isinstance(exc, (av.error.InvalidDataError, av.error.EOFError)):
                return f"it is not {VIDEO_WORDS}, or it is damaged or truncated"
            text = getattr(exc, "strerror", None) or str(exc)
            return f"it cannot be decoded ({text})"
    except ImportError:
        pass
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Decoded:
    """Clips decoded together: uint8 N,C,T,H,W (zeros where a clip failed), each clip's frame
    count (-1 where it failed), the clips that could not be read and those of another size."""

    array: Any  # np.ndarray, or cache.GatheredRows when the clips are read from the disk cache
    counts: np.ndarray
    errors: list[tuple[int, str]]
    mismatched: list[tuple[int, tuple[int, int]]]


def _decode_chunk(
    start: int, paths: list[str], frames: int, step: Optional[int], size: tuple[int, int], resize: bool, channels: int
) -> tuple[int, Decoded]:
    out = np.zeros((len(paths), channels, frames, size[0], size[1]), dtype=np.uint8)
    counts = np.full(len(paths), -1, dtype=np.int64)
    errors: list[tuple[int, str]] = []
    mismatched: list[tuple[int, tuple[int, int]]] = []
    for i, path in enumerate(paths):
        try:
            out[i], counts[i] = decode_clip(path, frames, step, size, resize, channels)
        except SizeMismatch as exc:
            mismatched.append((start + i, exc.found))
        except Exception as exc:  # a damaged file can make FFmpeg or PIL raise almost anything
            errors.append((start + i, clip_problem(exc)))
    return start, Decoded(out, counts, errors, mismatched)


def decode_clips(
    paths: Sequence[Union[str, Path]],
    frames: int,
    step: Optional[int],
    size: tuple[int, int],
    channels: int,
    *,
    resize: bool = True,
    workers: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
    description: str = "Decoding clips",
    parallel_from: int = PARALLEL_FROM,
    out: Optional[np.ndarray] = None,
) -> Decoded:
    """Every clip, in parallel processes when there are many (as image folders decode images);
    into `out` when given (a slice of a disk cache)."""
    n = len(paths)
    array = np.empty((n, channels, frames, size[0], size[1]), dtype=np.uint8) if out is None else out
    result = Decoded(array, np.full(n, -1, dtype=np.int64), [], [])
    names = [str(p) for p in paths]
    chunks = [(s, names[s : s + CHUNK_CLIPS]) for s in range(0, n, CHUNK_CLIPS)]
    workers = workers or min(os.cpu_count() or 1, 32)
    args = (frames, step, size, resize, channels)

    def take(start: int, part: Decoded, done: int) -> int:
        result.array[start : start + len(part.array)] = part.array
        result.counts[start : start + len(part.counts)] = part.counts
        result.errors.extend(part.errors)
        result.mismatched.extend(part.mismatched)
        done += len(part.array)
        if progress:
            progress(description, done, n)
        return done

    if progress:
        progress(description, 0, n)
    if workers > 1 and n >= parallel_from:
        try:
            done = 0
            tasks = ((s, chunk, *args) for s, chunk in chunks)
            for start, part in decoded_in_processes(_decode_chunk, tasks, min(workers, len(chunks))):
                done = take(start, part, done)
            result.errors.sort()
            result.mismatched.sort()
            return result
        except (OSError, RuntimeError, ImportError):  # no processes here (a sandbox): decode in this one
            result.errors.clear()
            result.mismatched.clear()
    done = 0
    for start, chunk in chunks:
        done = take(*_decode_chunk(start, chunk, *args), done)
    return result


# ----------------------------------------------------------------------------- sizes and memory


def check_clip_memory(
    count: int, channels: int, frames: int, size: tuple[int, int], available: Optional[int] = None
) -> int:
    """Refuse before decoding when the uint8 tensor would not fit; returns the bytes needed."""
    hint = (
        "Use fewer data.frames, a smaller data.image_size, data.channels: 1, or fewer clips (data.max_train_samples)."
    )
    words = ": channels, frames, height, width"
    return check_fits_in_memory(count, (channels, frames, *size), "clips", hint, available, words)


def clip_properties(path: Path) -> tuple[tuple[int, int], int]:
    """((height, width), channels) of a clip's first frame, for the defaults."""
    try:
        if path.is_dir():
            files = frame_files(path)
            if not files:
                raise ClipProblem("it holds no frames")
            return image_properties(files[0])
        av = _av()
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipProblem(NO_STREAM)
            for frame in container.decode(container.streams.video[0]):
                gray = frame.format.name in GRAY_FORMATS
                return (frame.height, frame.width), 1 if gray else 3
            raise ClipProblem("it holds no video frames")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"Cannot read {path}, the first clip, to find the frame size: {clip_problem(exc)}.",
            hint="Replace the file, or set data.image_size and data.channels.",
        ) from None


def _properties(config: VideoFolderData, layout: ClassFolders) -> tuple[tuple[int, int], int]:
    """(height, width) and channels: the keys', else the first training clip's that can be read
    (an unreadable one is named later, by the decoding, as data.on_bad_file says)."""
    if config.image_size is not None and config.channels is not None:
        return (config.image_size[0], config.image_size[1]), config.channels
    first_error: Optional[DataError] = None
    for clip, _ in layout.files["train"]:
        try:
            size, channels = clip_properties(clip)
            break
        except DataError as exc:
            if "needs PyAV" in str(exc):
                raise
            first_error = first_error or exc
    else:
        raise first_error or DataError(f"{layout.root} holds no training clips.")
    if config.image_size is not None:
        size = (config.image_size[0], config.image_size[1])
    return size, config.channels or channels


def info_from_state(state: dict) -> DataInfo:
    h, w = state["image_size"]
    names = tuple(state["class_names"])
    return DataInfo(
        input_shape=(state["channels"], state["frames"], h, w),
        task=folder_task(names),
        num_classes=len(names),
        class_names=names,
    )


def _info(config: VideoFolderData, seed: int, state: Optional[dict]) -> DataInfo:
    if state is not None:
        return info_from_state(check_state(state, KIND))
    layout = scan_clips(config, None)
    size, channels = _properties(config, layout)
    names = layout.class_names
    return DataInfo(
        input_shape=(channels, config.frames, *size), task=folder_task(names), num_classes=len(names), class_names=names
    )


def _short_clip_words(count: int, needed: int, frames: int, step: Optional[int]) -> str:
    how = f"data.frames: {frames}" if step is None else f"data.frames: {frames} every data.frame_step: {step}"
    return f"it has {count} frame{'s' if count != 1 else ''}, fewer than the {needed} that {how} needs"


def _mismatch_error(path: Path, found: tuple[int, int], size: tuple[int, int]) -> DataError:
    return DataError(
        f"The clip {path} has frames of {found[0]}x{found[1]} (height x width), but the first clip's are "
        f"{size[0]}x{size[1]}; without data.image_size every frame of every clip must have the same size.",
        hint=f"Set data.image_size (for example [{size[0]}, {size[1]}]) to resize every frame to it.",
    )


def _decoded_clips(
    config: VideoFolderData,
    paths: list[Path],
    frames: int,
    step: Optional[int],
    size: tuple[int, int],
    channels: int,
    resize: bool,
    progress: Optional[ProgressFn],
) -> tuple[Decoded, Optional[str]]:
    """The clips in memory or memory-mapped from the disk cache (data.cache); what a clip's
    decoding found besides its pixels (a failure, a frame count short of what sampling needs,
    another frame size) travels with the cache as records."""
    needed = frames_needed(frames, step)

    def decode(chosen, out):
        part = decode_clips(
            chosen, frames, step, size, channels, resize=resize, workers=config.workers, out=out, progress=progress
        )
        records = [(i, {"error": problem}) for i, problem in part.errors]
        records += [(i, {"size": list(found)}) for i, found in part.mismatched]
        records += [(int(i), {"frames": int(c)}) for i, c in enumerate(part.counts) if 0 <= c < needed]
        return part.array, records

    options = {"frames": frames, "frame_step": step, "image_size": list(size), "channels": channels, "resize": resize}
    array, records, note = decoded_samples(
        KIND, paths, (channels, frames, *size), options, config, decode, progress, "clips"
    )
    counts = np.full(len(paths), needed, dtype=np.int64)  # enough frames unless a record says otherwise
    errors: list[tuple[int, str]] = []
    mismatched: list[tuple[int, tuple[int, int]]] = []
    for index, record in sorted(records, key=lambda r: r[0]):
        if "error" in record:
            errors.append((index, record["error"]))
            counts[index] = -1
        elif "size" in record:
            mismatched.append((index, (int(record["size"][0]), int(record["size"][1]))))
        else:
            counts[index] = record["frames"]
    return Decoded(array, counts, errors, mismatched), note


def _short_clips(
    items: list, counts: Any, keep: np.ndarray, frames: int, step: Optional[int], policy: str, notes: list[str]
) -> list[int]:
    """The readable clips with fewer frames than sampling needs, as data.short_clips says: an
    error naming the first, or a note (and, for skip, the clips left out of `keep`)."""
    needed = frames_needed(frames, step)
    short = [i for i in range(len(items)) if keep[i] and counts[i] < needed]
    if short and policy == "error":
        first = short[0]
        more = f" ({len(short) - 1} more clips are short too)" if len(short) > 1 else ""
        raise DataError(
            f"The clip {items[first][0]} is too short: "
            f"{_short_clip_words(int(counts[first]), needed, frames, step)} (data.short_clips: error){more}.",
            hint="Set data.short_clips: pad to repeat a short clip's last frame, or skip to leave short clips out; "
            "or ask for fewer data.frames.",
        )
    if short:
        verb = "Padded" if policy == "pad" else "Left out"
        how = "by repeating their last frame" if policy == "pad" else "as data.short_clips: skip says"
        notes.append(
            f"{verb} {len(short)} clip{'s' if len(short) != 1 else ''} shorter than {needed} frames {how} "
            f"(data.short_clips: {policy}); the first: {items[short[0]][0]} ({int(counts[short[0]])} frames)."
        )
        if policy == "skip":
            keep[short] = False
    return short


def _load(config: VideoFolderData, seed: int, state: Optional[dict], progress: Optional[ProgressFn]) -> Dataset:

    layout = scan_clips(config, state)
    if state is not None:
        size, channels = (state["image_size"][0], state["image_size"][1]), state["channels"]
        frames, step, policy = state["frames"], state.get("frame_step"), state["short_clips"]
    else:
        size, channels = _properties(config, layout)
        frames, step, policy = config.frames, config.frame_step, config.short_clips
    split, parts = split_class_files(layout, config, seed, "clips")
    items = parts["train"] + parts["val"] + parts["test"]
    needs_av([p for p, _ in items])
    resize = state is not None or config.image_size is not None
    decoded, cache_note = _decoded_clips(config, [p for p, _ in items], frames, step, size, channels, resize, progress)
    if decoded.mismatched:
        index, found = decoded.mismatched[0]
        raise _mismatch_error(items[index][0], found, size)
    errors = decoded.errors
    skipped = unreadable_files_note(
        errors,
        items,
        config.on_bad_file,
        named="clip",
        counted="clip",
        hint="Replace or delete the file, or set data.on_bad_file: skip to leave unreadable clips out.",
    )
    keep = np.ones(len(items), dtype=bool)
    keep[[i for i, _ in errors]] = False
    notes = [note for note in (skipped, ignored_files_note(layout, "video clips"), cache_note) if note]
    short = _short_clips(items, decoded.counts, keep, frames, step, policy, notes)
    if state is None:
        state = {
            "kind": KIND,
            "version": STATE_VERSION,
            "class_names": list(layout.class_names),
            "frames": int(frames),
            "frame_step": step,
            "sampling": "uniform" if step is None else "step",
            "short_clips": policy,
            "image_size": [int(size[0]), int(size[1])],
            "channels": int(channels),
            "layout": "NCTHW",
            "resize": "bilinear",
            "scale": 1 / 255,
            "split": {**split_state(layout, split, parts, seed, len(errors)), "short_clips": len(short)},
        }

    def nothing_to_train(count: int) -> DataError:
        return DataError(
            f"{layout.root}: all {count} training clips were unreadable or too short and left out, "
            "so there is nothing to train on.",
            hint="Check that the class folders hold clips dlcli can decode, and data.short_clips.",
        )

    info = info_from_state(state)
    return decoded_folder_dataset(info, state, decoded.array, items, parts, keep, notes, nothing_to_train)


# ----------------------------------------------------------------------------- predict and export


def load_clips(
    state: dict, paths: Sequence[Path], options: Optional[PredictOptions] = None
) -> tuple[torch.Tensor, dict[int, str], list[str]]:
    """Clips decoded as a saved state says: uint8 N,C,T,H,W of those that could be read, in
    order; (index into paths -> problem) for the others; notes (clips padded)."""
    import torch

    options = options or PredictOptions()
    check_state(state, KIND)
    size, channels = (state["image_size"][0], state["image_size"][1]), state["channels"]
    frames, step, policy = state["frames"], state.get("frame_step"), state["short_clips"]
    check_clip_memory(len(paths), channels, frames, size)
    needs_av(paths)
    decoded = decode_clips(paths, frames, step, size, channels) if paths else None
    errors: dict[int, str] = {}
    notes: list[str] = []
    if decoded is not None:
        errors = {i: f"{paths[i]} cannot be decoded as a clip ({problem})." for i, problem in decoded.errors}
        needed = frames_needed(frames, step)
        short = [i for i in range(len(paths)) if i not in errors and decoded.counts[i] < needed]
        if policy == "pad" and short:
            notes.append(
                f"Padded {len(short)} clip{'s' if len(short) != 1 else ''} shorter than {needed} frames by repeating "
                "their last frame, as in training (data.short_clips: pad)."
            )
        elif short:
            for i in short:
                errors[i] = (
                    f"{paths[i]} is too short: {_short_clip_words(int(decoded.counts[i]), needed, frames, step)} "
                    f"(this run's data.short_clips: {policy})."
                )
        if errors and policy != "skip" and not options.skip_bad:
            raise DataError(
                errors[min(errors)], hint="Remove or replace the clip, or pass --skip-bad to mark it and go on."
            )
    if decoded is None:
        x = torch.zeros(0, channels, frames, *size, dtype=torch.uint8)
    else:
        x = torch.from_numpy(decoded.array[[i for i in range(len(paths)) if i not in errors]])
    return x, errors, notes


def _read_inputs(request: ReadRequest) -> Inputs:
    """Video files, folders of frames, or folders of clips, decoded, sampled and resized as in
    training; clips in folders named after a class carry that label."""
    state = request.saved_state(KIND)
    paths = expand_clips(request.inputs)
    x, errors, notes = load_clips(state, paths, request.options)
    if request.options.invert:
        x = 255 - x
    names = list(state["class_names"])
    labels = [label_from_folder(p, names) for i, p in enumerate(paths) if i not in errors]
    return Inputs([str(p) for p in paths], x, known_labels(labels), errors, notes=notes, input_scale=1.0 / 255.0)


def _input_spec(config: VideoFolderData, info: DataInfo, state: Optional[dict]) -> InputSpec:
    state = check_state(state, KIND)
    h, w = state["image_size"]
    frames, step = state["frames"], state.get("frame_step")
    mode = "grayscale" if state["channels"] == 1 else "RGB"
    sampling = (
        f"take {frames} frames sampled uniformly over the clip (first and last included, indices rounded)"
        if step is None
        else f"take {frames} frames, every {step}th from the start"
    )
    return InputSpec(
        "uint8",
        1.0 / 255.0,
        outside=(
            f"Decode the clip, {sampling}, repeating the last frame when it is shorter; convert each frame to "
            f"{mode} and resize it to {h}x{w} (bilinear); pass the 0-255 values as uint8."
        ),
        layout="NCTHW",
    )


DATASETS.add(
    KIND,
    DatasetSource(
        config=VideoFolderData,
        info=_info,
        load=_load,
        read_inputs=_read_inputs,
        input_spec=_input_spec,
        fits_preprocessing=True,
    ),
)
