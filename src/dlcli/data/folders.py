"""Class folders on disk: `root/<class>/<files>` or `root/train|val|test/<class>/<files>`.

Shared by image and text folders. Classes are the visible subfolders in natural order
(`2` before `10`, as a person sorts them), or the ones `data.class_names` lists, in its order.
Hidden files and folders (`.DS_Store`, macOS's `._x.jpg`) and files of other kinds are ignored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Optional, Sequence

import numpy as np

from ..config import DataConfig, option
from ..errors import ConfigError, DataError
from .cache import CacheKeys
from .dataset import DataInfo, Dataset
from .preprocessing import check_state
from .splits import Split, split_samples

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True, kw_only=True)
class FolderData(DataConfig):
    """image_folder and text_folder: root/<class>/<file>, with train/, val/ and test/ when present."""

    root: str = option("data", help="the folder of class folders (or of train/, val/ and test/ folders)")
    class_names: Optional[tuple[str, ...]] = option(
        None, help="the class folders to use, in this order (default: all, natural order)"
    )
    on_bad_file: Literal["error", "skip"] = option(
        "error", help="an unreadable file is an error, or skipped and counted"
    )

    def has_validation(self) -> bool:
        """Rows held out, or a validation folder (val/, valid/ or validation/ beside train/)."""
        root = Path(self.root)
        return super().has_validation() or (root.is_dir() and "val" in _split_folders(root))


@dataclass(frozen=True, kw_only=True)
class DecodedFolderData(FolderData, CacheKeys):
    """Class folders whose files decode into pixels (images, clips): the size and channels they
    are converted to, the decoding processes, and where the decoded samples live (data.cache)."""

    image_size: Optional[tuple[int, ...]] = option(
        None, help="[height, width] every image (every frame of a clip) is resized to (default: the first file's)", ge=1
    )
    channels: Optional[Literal[1, 3]] = option(None, help="1 (grayscale) or 3 (RGB); default: from the first file")
    workers: Optional[int] = option(None, help="decoding processes (default: one per CPU core)", ge=1)

    def check(self) -> None:
        super().check()
        if self.image_size is not None and len(self.image_size) != 2:
            raise ConfigError(
                f"expected [height, width], found {len(self.image_size)} number(s).",
                hint="For example `image_size: [64, 64]`.",
                key="data.image_size",
            )


def folder_task(class_names: Sequence[str]) -> str:
    """Two class folders make a binary task (one sigmoid unit, as the course's IMDB model)."""
    return "binary" if len(class_names) == 2 else "multiclass"


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: `2` < `10` < `cat`, `img2` < `img10`."""
    parts = _DIGITS.split(text)
    # The parts in a tuple of their own, then the text: a prefix (`1`) and a longer name (`1.5`)
    # compare part by part, never a part against the text.
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.casefold()) for p in parts if p != ""), text


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in ("__MACOSX", "Thumbs.db", "desktop.ini")


def _subfolders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted((e.name for e in entries if e.is_dir() and _visible(e.name)), key=natural_key)
    except OSError as exc:
        raise DataError(f"Cannot list the folder {folder}: {exc.strerror or exc}.") from None


class LinkGuard:
    """Folder links are followed (a class folder may be a link to files kept elsewhere), but
    never into a folder already read and never to a file already counted: a link back to the
    folder itself or its parent would otherwise count each file again (or without end), and a
    file linked into two class folders would land in two classes. Identity is (device, inode)."""

    def __init__(self) -> None:
        self.folders: set[tuple[int, int]] = set()
        self.files: set[tuple[int, int]] = set()
        self.skipped: list[Path] = []  # links to a folder or file already read

    def reserve(self, folders: Sequence[Path]) -> None:
        """Folders the scan reads by themselves (the root, split and class folders): a link to
        one of them from inside the tree is never followed."""
        for folder in folders:
            try:
                st = folder.stat()
            except OSError:
                continue
            self.folders.add((st.st_dev, st.st_ino))

    def enter(self, path: Path) -> bool:
        """True the first time a folder is reached; False (and remembered) after that."""
        return self._first(path, self.folders)

    def count(self, path: Path) -> bool:
        return self._first(path, self.files)

    def _first(self, path: Path, seen: set[tuple[int, int]]) -> bool:
        try:
            st = path.stat()
        except OSError:  # a dangling link: left to the reader, which names the file
            return True
        key = (st.st_dev, st.st_ino)
        if key in seen:
            self.skipped.append(path)
            return False
        seen.add(key)
        return True


def files_under(folder: Path, suffixes: frozenset[str], guard: Optional[LinkGuard] = None) -> tuple[list[Path], int]:
    """Visible files with one of the suffixes anywhere below folder, in natural order of their
    relative paths, and how many other visible files were ignored. Folder links are followed
    once (see LinkGuard; pass one guard for a whole tree, with its own folders reserved)."""
    if guard is None:
        guard = LinkGuard()
        guard.reserve([folder])
    found: list[tuple[tuple, Path]] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d) and guard.enter(Path(dirpath) / d)]
        for name in filenames:
            if not _visible(name):
                continue
            if os.path.splitext(name)[1].lower() in suffixes:
                path = Path(dirpath) / name
                if guard.count(path):
                    found.append((natural_key(str(path.relative_to(folder))), path))
            else:
                ignored += 1
    found.sort(key=lambda item: item[0])
    return [p for _, p in found], ignored


@dataclass
class ClassFolders:
    """What a folder of class folders holds: class names and each split's (file, class) lists."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)  # train, and val/test when present
    repeated_links: list[Path] = field(default_factory=list)  # links to folders or files already read
    ignored: int = 0  # visible files of other kinds

    @property
    def has_test(self) -> bool:
        return "test" in self.files

    @property
    def has_val(self) -> bool:
        return "val" in self.files


def _split_folders(root: Path) -> dict[str, Path]:
    """{split: folder} when root is laid out as train/ (val/, test/), else {train: root}."""
    names = _subfolders(root)
    if "train" in names and all(n in SPLIT_FOLDERS for n in names):
        splits: dict[str, Path] = {}
        for name in names:
            split = SPLIT_FOLDERS[name]
            if split in splits:
                raise DataError(
                    f"{root} has two validation folders, {splits[split].name}/ and {name}/.",
                    hint="Keep one of them.",
                )
            splits[split] = root / name
        return splits
    return {"train": root}


def scan_class_folders(
    root: Path,
    suffixes: frozenset[str],
    kind_words: str,
    class_names: Optional[Sequence[str]] = None,
    list_files: bool = True,
) -> ClassFolders:
    """Find the classes (and, with list_files, every file) under root.

    kind_words names the files in messages, e.g. "images (PNG, JPEG, BMP, GIF or WebP)".
    """
    from ..registry import suggest

    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DataError(
            f"data.root: {str(root)!r} {what}.",
            hint=f"Point data.root at a folder of class folders (root/<class>/<files>) of {kind_words}.",
        )
    splits = _split_folders(root)
    train_dir = splits["train"]
    found = _subfolders(train_dir)
    if class_names is None:
        names = tuple(found)
        if len(names) < 2:
            has = f"only the class folder {names[0]!r}" if names else "no class folders"
            raise DataError(
                f"{train_dir} has {has}; a classifier needs at least two, one folder of {kind_words} per class.",
                hint="Lay the files out as root/<class>/<file> (or root/train/<class>/<file> with test/ beside it).",
            )
    else:
        names = tuple(class_names)
        for name in names:
            if name not in found:
                close = suggest(name, found)
                raise DataError(
                    f"data.class_names: {train_dir} has no class folder {name!r}; it has: {', '.join(found) or 'none'}.",
                    hint=close or None,
                )
        if len(set(names)) != len(names):
            raise DataError("data.class_names lists a class twice.")
    layout = ClassFolders(root=root, class_names=names)
    if not list_files:
        return layout
    index = {name: i for i, name in enumerate(names)}
    guard = LinkGuard()
    guard.reserve([root, *splits.values(), *(folder / name for folder in splits.values() for name in names)])
    for split, folder in splits.items():
        present = _subfolders(folder)
        if split != "train" and class_names is None:
            unknown = [n for n in present if n not in index]
            if unknown:
                raise DataError(
                    f"{folder} has a class folder {unknown[0]!r} that {train_dir} lacks; the classes are: "
                    f"{', '.join(names)}.",
                    hint="Add the class to the training folder, remove it here, or list the classes in data.class_names.",
                )
        items: list[tuple[Path, int]] = []
        for name in names:
            if name not in present:
                continue
            paths, ignored = files_under(folder / name, suffixes, guard)
            layout.ignored += ignored
            if not paths and split == "train":
                raise DataError(
                    f"The class folder {folder / name} holds no {kind_words}.",
                    hint="Add files to it, remove it, or list the classes to use in data.class_names.",
                )
            items += [(p, index[name]) for p in paths]
        layout.files[split] = items
    layout.repeated_links = guard.skipped
    return layout


def first_file(layout: ClassFolders, suffixes: frozenset[str], kind_words: str) -> Path:
    """The first file of the first training class, found without listing every file."""
    splits = _split_folders(layout.root)
    folder = splits["train"] / layout.class_names[0]
    guard = LinkGuard()
    guard.reserve([layout.root, folder])
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted((d for d in dirnames if _visible(d) and guard.enter(Path(dirpath) / d)), key=natural_key)
        for name in sorted(filenames, key=natural_key):
            if _visible(name) and os.path.splitext(name)[1].lower() in suffixes:
                return Path(dirpath) / name
    raise DataError(
        f"The class folder {folder} holds no {kind_words}.",
        hint="Add files to it, remove it, or list the classes to use in data.class_names.",
    )


def check_split_options(config: FolderData, layout: ClassFolders) -> None:
    """A val/ or test/ folder and the matching fraction cannot both be given."""
    if layout.has_val and (config.validation_split or config.validation_size):
        raise DataError(
            f"{layout.root} has a validation folder, and data.validation_split/validation_size asks to hold out "
            "more; give one or the other.",
            hint="Remove validation_split/validation_size to use the folder.",
        )
    if layout.has_test and config.test_split:
        raise DataError(
            f"{layout.root} has a test folder, and data.test_split asks to hold out another test set.",
            hint="Remove data.test_split to use the folder.",
        )


def scan_for_loading(
    config: FolderData,
    state: Optional[dict],
    kind: str,
    suffixes: frozenset[str],
    kind_words: str,
    what: str,
) -> ClassFolders:
    """The class folders a load reads: with a saved state, its classes, and as many training
    files as when the run was trained (otherwise its splits would differ)."""
    if state is not None:
        check_state(state, kind)
    names = state["class_names"] if state is not None else config.class_names
    layout = scan_class_folders(Path(config.root), suffixes, kind_words, names)
    check_split_options(config, layout)
    files = len(layout.files["train"])
    if state is not None and state.get("split", {}).get("files") not in (None, files):
        raise DataError(
            f"{layout.root} holds {files} training {what}, but held {state['split']['files']} when this run "
            "was trained; its splits would differ.",
            hint="Use the folder the run was trained on.",
        )
    return layout


FileList = list[tuple[Path, int]]  # (file, class index)


def split_class_files(
    layout: ClassFolders, config: FolderData, seed: int, what: str
) -> tuple[Split, dict[str, FileList]]:
    """The train, val and test files: a split folder's own files, or held out of the training
    files (stratified by class) as data.validation_split and test_split say."""
    train_items = layout.files["train"]
    labels = np.array([c for _, c in train_items], dtype=np.int64)
    split = split_samples(
        len(train_items), labels, config, seed, has_test=layout.has_test, has_val=layout.has_val, what=what
    )
    parts = {
        "train": [train_items[i] for i in split.train],
        "val": layout.files["val"] if layout.has_val else [train_items[i] for i in split.val],
        "test": layout.files["test"] if layout.has_test else [train_items[i] for i in split.test],
    }
    return split, parts


def split_state(layout: ClassFolders, split: Split, parts: dict[str, FileList], seed: int, skipped: int) -> dict:
    """The `split` entry of a folder dataset's preprocessing state: what a later load checks
    (the number of training files) and what the run's record shows."""
    state: dict[str, Any] = {
        "seed": seed,
        "files": len(layout.files["train"]),
        **split.counts(),
        "val_folder": layout.has_val,
        "test_folder": layout.has_test,
        "skipped_files": skipped,
    }
    if layout.has_val:
        state["val"] = len(parts["val"])
    if layout.has_test:
        state["test"] = len(parts["test"])
    return state


def unreadable_files_note(
    errors: Sequence[tuple[int, str]], items: FileList, on_bad_file: str, *, named: str, counted: str, hint: str
) -> Optional[str]:
    """For files that could not be read ((index into items, problem) each): with data.on_bad_file
    error, a DataError naming the first (`Cannot read the {named} ...`); with skip, the note that
    lists them (`Skipped N unreadable {counted}s ...`). None when every file was read."""
    if not errors:
        return None
    first, problem = errors[0]
    others = f" ({len(errors) - 1} more files could not be read either)" if len(errors) > 1 else ""
    if on_bad_file == "error":
        raise DataError(f"Cannot read the {named} {items[first][0]}: {problem}{others}.", hint=hint)
    shown = "; ".join(f"{items[i][0]} ({p})" for i, p in errors[:3])
    return (
        f"Skipped {len(errors)} unreadable {counted}{'s' if len(errors) != 1 else ''} "
        f"(data.on_bad_file: skip): {shown}{'; ...' if len(errors) > 3 else ''}."
    )


def ignored_files_note(layout: ClassFolders, kind_words: str) -> Optional[str]:
    """The note that files of other kinds, or links to what was already read, were left out;
    None when there were none."""
    notes = []
    if layout.ignored:
        notes.append(
            f"Ignored {layout.ignored} file{'s' if layout.ignored != 1 else ''} under {layout.root} that are not {kind_words}."
        )
    links = layout.repeated_links
    if links:
        shown = ", ".join(str(p) for p in links[:3]) + (", ..." if len(links) > 3 else "")
        notes.append(
            f"Skipped {len(links)} link{'s' if len(links) != 1 else ''} to a folder or file already read "
            f"({shown}): each file is counted once, in the first place it was found."
        )
    return " ".join(notes) or None


def kept_parts(x: Any, y: Any, sizes: Sequence[int], keep: np.ndarray) -> list[tuple[Any, Any]]:
    """(x, y) of each part (train, val, test) laid one after another in the tensors x and y,
    less the rows `keep` marks False: views when a part keeps every row (no copy of the
    decoded images or clips), (None, None) for an empty part. Samples on disk (GatheredRows)
    stay there, whatever the part keeps."""
    import torch

    from .cache import GatheredRows

    def part_of(a: Any, index: Any) -> Any:  # samples on disk stay there: a view, nothing read
        return a.subset(index) if isinstance(a, GatheredRows) else a[index]

    bounds = np.cumsum([0, *sizes])
    parts: list[tuple[Any, Any]] = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        rows = slice(int(start), int(stop))
        if stop == start:
            parts.append((None, None))
        elif keep[rows].all():
            parts.append((part_of(x, rows), y[rows]))
        else:
            kept = torch.arange(int(start), int(stop))[torch.from_numpy(keep[rows])]
            parts.append((part_of(x, kept), y[kept]))
    return parts


def decoded_in_processes(decode_chunk: Callable, chunks: Iterable[tuple], workers: int) -> Iterator[Any]:
    """decode_chunk(*chunk) for every chunk, in `workers` processes, yielded as each finishes.

    At most two chunks per process are submitted or waiting at once, and each result is let go
    once yielded: a slow consumer (one writing into a disk cache while the machine is busy)
    then holds a few chunks, where submitting everything up front kept every decoded chunk
    alive in its future until the last one, as much memory as the whole folder decoded."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    waiting = iter(chunks)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = set()

        def submit_next() -> None:
            chunk = next(waiting, None)
            if chunk is not None:
                pending.add(pool.submit(decode_chunk, *chunk))

        for _ in range(2 * workers):
            submit_next()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                pending.discard(future)
                submit_next()
                yield future.result()


def decoded_folder_dataset(
    info: DataInfo,
    state: dict,
    decoded: Any,
    items: FileList,
    parts: dict,
    keep: np.ndarray,
    notes: Sequence[str],
    nothing_to_train: Callable[[int], DataError],
) -> Dataset:
    """A folder kind's decoded uint8 samples (an array, or the rows of a disk cache) laid out as
    `items` are, one split after another, as a Dataset: each part less the samples `keep` marks
    False, scaled by 1/255 in the model. `nothing_to_train(n)`: the error when none of the n
    training files is left."""
    import torch

    from .cache import GatheredRows

    x = decoded if isinstance(decoded, GatheredRows) else torch.from_numpy(decoded)
    y = torch.tensor([c for _, c in items], dtype=torch.int64)
    sizes = [len(parts[k]) for k in ("train", "val", "test")]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = kept_parts(x, y, sizes, keep)
    if x_train is None or len(x_train) == 0:
        raise nothing_to_train(len(parts["train"]))
    return Dataset(
        info=info,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        input_scale=1.0 / 255.0,
        preprocessing=state,
        notes=tuple(notes),
        inputs_on_disk=isinstance(x, GatheredRows),
        sample_names=kept_file_names(items, sizes, keep),
    )


def kept_file_names(items: FileList, sizes: Sequence[int], keep: Any) -> Callable[[str], list[str]]:
    """Dataset.sample_names for files laid one split after another in `items` (train, val,
    test), less those `keep` marks False: each kept sample's path."""
    bounds = np.cumsum([0, *sizes])
    names = {
        split: [str(items[k][0]) for k in range(int(lo), int(hi)) if keep[k]]
        for split, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:])
    }
    return names.__getitem__
