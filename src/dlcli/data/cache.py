"""Decoded samples on disk: one memory-mapped file of uint8 samples per decoded folder.

Image and video folders decode every file once into an N x ... uint8 array. Where that does
not fit in memory (`data.cache: disk`, or `auto` choosing it), the array is a NumPy `.npy` file
in the cache folder, memory-mapped: training gathers batches from it as from a tensor in
memory, the kernel keeps the pages it can and reads the rest back, so the process's own memory
stays bounded by a batch. Beside it a small index (JSON) names the files decoded (path, size,
modification time, in order), the decoding options and a format version; a cache is reused only
when all of them match, and rebuilt otherwise (never used silently).

Building is safe against interruption and against a second process: the array is written to
`<key>.npy.part` with a record of the finished chunks (a killed build resumes where it
stopped), renamed into place when complete, and the index is written last (atomically), so a
half-built cache is never taken for a finished one; a lock file makes a second builder wait
and then use the first one's result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np

from ..config import option
from ..errors import DataError
from ..rundir import atomic_write_text

FORMAT_VERSION = 1
CHUNK = 16384  # samples decoded (one process pool each) and recorded as done at a time
DISK_MARGIN = 1.05  # free space needed beyond the cache's own size (the index, the file system)


@dataclass(frozen=True, kw_only=True)
class CacheKeys:
    """The keys of kinds that decode files into uint8 samples (image and video folders)."""

    cache: Literal["auto", "memory", "disk"] = option(
        "auto",
        help="where decoded samples live: memory, disk (a memory-mapped file in cache_dir), or auto (memory when "
        "they fit in what is available, else disk)",
    )
    cache_dir: Optional[str] = option(
        None, help="the folder of disk caches (default: $DLCLI_CACHE_DIR, else dlcli/ in the user's cache folder)"
    )


def cache_root(configured: Optional[str] = None) -> Path:
    """Where caches live: data.cache_dir, else $DLCLI_CACHE_DIR, else dlcli/ in the user's cache
    folder ($XDG_CACHE_HOME, or ~/.cache)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("DLCLI_CACHE_DIR"):
        return Path(os.environ["DLCLI_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlcli"


@dataclass
class CacheIndex:
    """What a cache holds; two caches of the same files and options have the same key."""

    kind: str
    options: dict  # the decoding options (size, channels, frames...)
    files: list  # [path, size, mtime_ns] per sample, in order
    shape: list  # of one sample

    def key(self) -> str:
        text = json.dumps([FORMAT_VERSION, self.kind, self.options, self.files, self.shape], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def index_of(kind: str, paths: Sequence[Path], options: dict, shape: Sequence[int]) -> CacheIndex:
    files = []
    for path in paths:
        stat = os.stat(path)
        # abspath, not resolve: no system call per path component (a second for 30,000 files)
        files.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
    return CacheIndex(kind, dict(options), files, [int(s) for s in shape])


# Decodes samples [start, stop) into out[0 : stop - start]; returns (index, record) pairs for the
# samples with something to remember (a failure's problem, a short clip's frame count), JSON-able.
DecodeInto = Callable[[int, int, np.ndarray], list]


def open_or_build(
    index: CacheIndex,
    decode_into: DecodeInto,
    root: Path,
    progress: Optional[Callable[[str, int, int], None]] = None,
    what: str = "samples",
    chunk: int = CHUNK,
) -> tuple[np.ndarray, list[tuple[int, str]], bool]:
    """(the samples as a read-only memory map, the decoder's records by sample, whether it was
    built now)."""
    key = index.key()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(root, exc) from None
    data_path, index_path = root / f"{key}.npy", root / f"{key}.json"
    with _BuildLock(root / f"{key}.lock"):
        if index_path.is_file() and data_path.is_file():
            saved = json.loads(index_path.read_text(encoding="utf-8"))
            if saved.get("format") == FORMAT_VERSION and saved.get("files") == index.files:
                records = [(int(i), r) for i, r in saved.get("records", [])]
                return _mapped(data_path), records, False
        records = _build(index, decode_into, data_path, progress, what, chunk)
        record = {"format": FORMAT_VERSION, "kind": index.kind, "options": index.options, "shape": index.shape}
        record |= {"count": len(index.files), "records": records, "files": index.files}
        atomic_write_text(index_path, json.dumps(record) + "\n")  # last: its presence means complete
    return _mapped(data_path), records, True


def _mapped(path: Path) -> np.ndarray:
    # Copy-on-write: reads come from the file; a stray in-place write would stay in this process.
    return np.load(path, mmap_mode="c")


def _build(
    index: CacheIndex,
    decode_into: DecodeInto,
    data_path: Path,
    progress: Optional[Callable[[str, int, int], None]],
    what: str,
    chunk: int,
) -> list[tuple[int, str]]:
    n = len(index.files)
    shape = (n, *index.shape)
    need = int(np.prod(shape, dtype=np.int64))
    part, record = data_path.with_suffix(".npy.part"), data_path.with_suffix(".part.json")
    done: dict[int, list] = {}
    if part.is_file() and record.is_file():  # an interrupted build of these very files: go on
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
            if saved.get("key") == index.key():
                done = {int(k): v for k, v in saved["chunks"].items()}
        except (ValueError, KeyError, OSError):
            done = {}
    if not done:
        check_free_disk(data_path.parent, need)
        try:
            array = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=shape)
        except OSError as exc:
            raise _unwritable(data_path.parent, exc) from None
    else:
        array = np.load(part, mmap_mode="r+")
    starts = list(range(0, n, chunk))
    if progress:
        progress(f"Caching {what} on disk", sum(min(chunk, n - s) for s in starts if s in done), n)
    for start in starts:
        if start in done:
            continue
        stop = min(start + chunk, n)
        done[start] = [[int(i), r] for i, r in decode_into(start, stop, array[start:stop])]
        array.flush()  # the chunk's pixels are on disk before the record says they are
        atomic_write_text(record, json.dumps({"key": index.key(), "chunks": done}) + "\n")
        if progress:
            progress(f"Caching {what} on disk", sum(min(chunk, n - s) for s in done), n)
    del array
    os.replace(part, data_path)
    record.unlink(missing_ok=True)
    return sorted(((int(i), r) for chunk_records in done.values() for i, r in chunk_records), key=lambda p: p[0])


def check_free_disk(folder: Path, need: int) -> None:
    """Refuse, before writing anything, a cache the disk has no room for."""
    from ..devices import human

    free = shutil.disk_usage(folder).free
    if need * DISK_MARGIN > free:
        raise DataError(
            f"The decoded cache needs {human(need)} on disk, and {folder} has {human(free)} free.",
            hint="Free some space, point data.cache_dir (or DLCLI_CACHE_DIR) at a larger disk, or use a smaller "
            "data.image_size.",
        )


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _unwritable(folder: Path, exc: OSError) -> DataError:
    return DataError(
        f"Cannot write the decoded cache in {folder}: {exc.strerror or exc}.",
        hint="Point data.cache_dir (or DLCLI_CACHE_DIR) at a folder you can write to.",
    )


class _BuildLock:
    """An exclusive flock on <key>.lock while a cache is checked and built: a second process
    building the same cache waits, then finds it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def __enter__(self) -> _BuildLock:
        try:
            import fcntl

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: unguarded
            self.fd = None
        except OSError as exc:
            raise _unwritable(self.path.parent, exc) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)


@dataclass
class CacheEntry:
    key: str
    kind: str
    count: int
    bytes: int
    options: dict
    complete: bool


def list_caches(root: Path) -> list[CacheEntry]:
    """The caches in root (finished ones and half-built ones), largest first."""
    entries: list[CacheEntry] = []
    if not root.is_dir():
        return entries
    for data in sorted(root.glob("*.npy")) + sorted(root.glob("*.npy.part")):
        key = data.name.split(".")[0]
        index = root / f"{key}.json"
        info: dict = {}
        if index.is_file():
            try:
                info = json.loads(index.read_text(encoding="utf-8"))
            except ValueError:
                info = {}
        entries.append(
            CacheEntry(
                key,
                info.get("kind", "?"),
                int(info.get("count", 0)),
                data.stat().st_size,
                info.get("options", {}),
                data.suffix == ".npy" and bool(info),
            )
        )
    return sorted(entries, key=lambda e: -e.bytes)


def clear_caches(root: Path) -> tuple[int, int]:
    """Remove every cache in root; (caches removed, bytes freed)."""
    count = freed = 0
    for entry in list_caches(root):
        for path in root.glob(f"{entry.key}.*"):
            freed += path.stat().st_size
            path.unlink()
        count += 1
    return count, freed


MEMORY_FRACTION = 0.8  # of the memory available now that decoded samples may take in memory


def fits_in_memory(need: int, available: Optional[int]) -> bool:
    """Whether `need` bytes of decoded samples fit in MEMORY_FRACTION of what is available
    (unknown: assumed to fit)."""
    return available is None or need <= MEMORY_FRACTION * available


def check_fits_in_memory(
    count: int,
    sample_shape: Sequence[int],
    what: str,
    hint: str,
    available: Optional[int] = None,
    shape_words: str = "",
) -> int:
    """Refuse, before decoding, `count` uint8 samples of `sample_shape` that would not fit in
    memory (images, clips: for training and for `dlcli predict`); returns the bytes needed."""
    from ..devices import available_memory, human

    need = count * int(np.prod(sample_shape, dtype=np.int64))
    available = available_memory("cpu")[0] if available is None else available
    if not fits_in_memory(need, available):
        shape = "x".join(str(s) for s in sample_shape)
        raise DataError(
            f"The {count} {what} would need {human(need)} of memory as uint8 tensors ({shape} each{shape_words}), "
            f"more than {MEMORY_FRACTION:.0%} of the {human(available or 0)} available.",
            hint=hint,
        )
    return need


# Decodes the samples of the paths given, into `out` when it is given (else a new array);
# returns (the array, (index into those paths, record) pairs as DecodeInto's).
Decode = Callable[[Sequence[Path], Optional[np.ndarray]], tuple[np.ndarray, list]]


def decoded_samples(
    kind: str,
    paths: Sequence[Path],
    sample_shape: Sequence[int],
    options: dict,
    keys: CacheKeys,
    decode: Decode,
    progress: Optional[Callable[[str, int, int], None]] = None,
    what: str = "images",
) -> tuple[Any, list[tuple[int, Any]], Optional[str]]:
    """(the samples of `paths` in their order: a uint8 N x sample_shape array in memory, or
    `GatheredRows` over the disk cache; the decoder's records by index into `paths`; a note for
    the user or None), as data.cache says.

    The disk cache holds the files in the order of their paths, not in the order asked for:
    which files are training, validation or test data (the seed, the split, a cross-validation
    fold) then leaves the cache as it is, and every such run reads the same one."""
    from ..devices import available_memory, human

    need = len(paths) * int(np.prod(sample_shape, dtype=np.int64))
    available, _ = available_memory("cpu")
    on_disk = keys.cache == "disk" or (keys.cache == "auto" and not fits_in_memory(need, available))
    if not on_disk:
        hint = (
            f"Use data.cache: disk (needs {human(need)} free on disk), a smaller data.image_size, data.channels: 1, "
            f"or fewer {what} (data.max_train_samples)."
        )
        check_fits_in_memory(len(paths), sample_shape, what, hint, available)
        array, records = decode(paths, None)
        return array, records, None
    by_path = sorted(range(len(paths)), key=lambda i: os.fspath(paths[i]))  # cache position -> index in paths
    stored = [paths[i] for i in by_path]
    root = cache_root(keys.cache_dir)
    index = index_of(kind, stored, options, sample_shape)
    if not (root / f"{index.key()}.json").is_file():  # before anything is written, the cache folder too
        check_free_disk(_existing_ancestor(root), need)

    def decode_into(start: int, stop: int, out: np.ndarray) -> list:
        return [(start + i, problem) for i, problem in decode(stored[start:stop], out)[1]]

    array, records, built = open_or_build(index, decode_into, root, progress, what)
    rows = np.empty(len(paths), dtype=np.int64)
    rows[by_path] = np.arange(len(paths))  # index in paths -> cache position
    records = sorted((by_path[i], record) for i, record in records)
    why = (
        f"{human(need)} decoded, more than {MEMORY_FRACTION:.0%} of the {human(available or 0)} available"
        if keys.cache == "auto"
        else "data.cache: disk"
    )
    note = f"The decoded {what} are read from a disk cache ({why}): {root / index.key()}.npy" + (
        "" if built else ", made earlier for the same files"
    )
    if built:
        note += _size_note(root)
    return GatheredRows(array, rows), records, note


class GatheredRows:
    """Samples stored elsewhere (the disk cache's memory map), gathered when indexed.

    `rows` maps a sample's index here to its row in `stored`. Indexing by an int, a slice or an
    index tensor reads those rows into a new tensor (a batch), so the whole set is never in the
    process's memory; `subset` makes a smaller view for a split without reading anything. It
    answers what dlcli's batches and data checks ask of an input tensor: len, shape, dtype,
    device, `to` (which reads every row), numel/element_size and is_floating_point. Torch is
    imported only when it is asked for, so building a cache does not need it.
    """

    def __init__(self, stored: np.ndarray, rows: np.ndarray) -> None:
        self.stored = stored  # the memory map, N x sample shape
        self.rows = rows  # int64, one per sample here
        self._tensors: Optional[tuple[Any, Any]] = None  # torch views of both, made once

    def _torch(self) -> tuple[Any, Any]:
        if self._tensors is None:  # once, not per batch
            import torch

            self._tensors = torch.from_numpy(self.stored), torch.from_numpy(self.rows)
        return self._tensors

    def subset(self, index: Any) -> GatheredRows:
        if not isinstance(index, slice):
            index = np.asarray(index)
        return GatheredRows(self.stored, self.rows[index])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        stored, rows = self._torch()
        return stored[rows[index]]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.stored.shape[1:])

    @property
    def dtype(self) -> Any:
        return self._torch()[0].dtype

    @property
    def device(self) -> Any:
        return self._torch()[0].device

    def is_floating_point(self) -> bool:
        return bool(np.issubdtype(self.stored.dtype, np.floating))

    def is_complex(self) -> bool:
        return False

    def element_size(self) -> int:
        return int(self.stored.itemsize)

    def numel(self) -> int:
        return len(self.rows) * int(np.prod(self.stored.shape[1:], dtype=np.int64))

    def to(self, device: Any, non_blocking: bool = False) -> Any:
        return self[slice(None)].to(device, non_blocking=non_blocking)


def _size_note(root: Path) -> str:
    """A word when the cache folder has grown past $DLCLI_CACHE_NOTE_GB (default 20 GB): a sweep
    over image_size writes one cache per value."""
    from ..devices import human

    try:
        limit = float(os.environ.get("DLCLI_CACHE_NOTE_GB", "20")) * 2**30
    except ValueError:
        limit = 20 * 2**30
    entries = list_caches(root)
    total = sum(e.bytes for e in entries)
    if total <= limit:
        return ""
    return (
        f". The cache folder now holds {human(total)} in {len(entries)} caches: `dlcli cache list` shows them, "
        "`dlcli cache clear` removes them (DLCLI_CACHE_NOTE_GB sets when this is said)"
    )


def find_cached(kind: str, options: dict, paths: Sequence[Path], configured: Optional[str]) -> Optional[np.ndarray]:
    """The samples of these files from a finished cache made with the same options, if one holds
    all of them unchanged (and decoded them without a failure); None otherwise. For `dlcli
    predict` on files a run trained or was tested on: no decoding again."""
    root = cache_root(configured)
    if not paths or not root.is_dir():
        return None
    wanted = []
    for path in paths:
        stat = os.stat(path)
        wanted.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
    for index_path in sorted(root.glob("*.json")):
        data_path = index_path.with_suffix(".npy")
        try:
            info = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if info.get("format") != FORMAT_VERSION or info.get("kind") != kind or info.get("options") != options:
            continue
        position = {tuple(f): i for i, f in enumerate(info.get("files", []))}
        rows = [position.get(w) for w in wanted]
        failed = {int(i) for i, _ in info.get("records", [])}
        found = [r for r in rows if r is not None and r not in failed]
        if data_path.is_file() and len(found) == len(rows):
            return np.ascontiguousarray(_mapped(data_path)[found])
    return None
