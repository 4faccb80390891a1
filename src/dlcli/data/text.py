"""`data.dataset: text_folder`: `root/<class>/*.txt` (aclImdb's layout: train/pos, train/neg, test/...).

Each file is one sample, read as UTF-8 (a byte-order mark allowed). Texts are standardised as
Keras's TextVectorization does by default (`lower_and_strip_punctuation`), after replacing
the `<br />` tags of IMDB-style reviews by spaces, then split on whitespace. The vocabulary
is the `num_words` most frequent tokens of the training split, less the reserved slots
(Keras's layout: `[UNK]` first, after the padding id 0 in sequence mode), ties in alphabetical
order. Outputs, `num_words` wide however small the vocabulary (Keras's pad_to_max_tokens):
multi_hot (1 where a token occurs), count, tf_idf (count x log(1 + docs / (1 + docs with the
token)), as Keras), or sequence (the ids, padded/truncated to `sequence_length`).
`encode_texts(state, texts)` applies a saved vocabulary to any texts.
"""

from __future__ import annotations

import math
import string
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from ..errors import DataError
from ..registry import DATASETS
from .checks import binary_kind
from .dataset import DataInfo, Dataset, DatasetSource, ProgressFn
from .folders import (
    FolderData,
    folder_task,
    ignored_files_note,
    kept_file_names,
    scan_class_folders,
    scan_for_loading,
    split_class_files,
    split_state,
    unreadable_files_note,
)
from .inputs import Inputs, InputSpec, PredictOptions, ReadRequest, expand_paths, known_labels, label_from_folder
from .preprocessing import STATE_VERSION, check_state
from .sequences import TextEncodingKeys, pad_sequences

if TYPE_CHECKING:  # torch is imported inside the functions, so `dlcli --help` stays fast
    import torch


@dataclass(frozen=True, kw_only=True)
class TextFolderData(FolderData, TextEncodingKeys):
    """text_folder: class folders of .txt files, with a vocabulary fitted on the training split."""


TEXT_SUFFIXES = frozenset({".txt"})
KIND_WORDS = "text files (.txt)"
PAD, OOV = "", "[UNK]"
REMOVED_TAGS = ("<br />",)
_STRIP_PUNCTUATION = str.maketrans("", "", string.punctuation)  # Keras's regex: the same 32 characters
_PROGRESS_EVERY = 1000


def standardize(text: str) -> str:
    """Lower case, `<br />` tags to spaces, ASCII punctuation removed (Keras's default)."""
    text = text.lower()
    for tag in REMOVED_TAGS:
        text = text.replace(tag, " ")
    return text.translate(_STRIP_PUNCTUATION)


def tokenize(text: str) -> list[str]:
    return standardize(text).split()


def read_texts(
    paths: Sequence[Union[str, Path]], progress: Optional[ProgressFn] = None
) -> tuple[list[Optional[str]], list[tuple[int, str]]]:
    """Each file's text (None where it cannot be read) and (index, problem) per failure."""
    texts: list[Optional[str]] = []
    errors: list[tuple[int, str]] = []
    n = len(paths)
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            texts.append(data.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            texts.append(None)
            kind = binary_kind(data[:16])
            errors.append(
                (
                    i,
                    f"{kind[0]}, not text"
                    if kind
                    else f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                )
            )
        except OSError as exc:
            texts.append(None)
            errors.append((i, exc.strerror or str(exc)))
        if progress and (i + 1) % _PROGRESS_EVERY == 0:
            progress("Reading texts", i + 1, n)
    if progress:
        progress("Reading texts", n, n)
    return texts, errors


def reserved_tokens(output_mode: str) -> list[str]:
    return [PAD, OOV] if output_mode == "sequence" else [OOV]


def fit_vocabulary(
    token_lists: Sequence[list[str]], num_words: int, output_mode: str
) -> tuple[list[str], Optional[list[float]]]:
    """(vocabulary in index order, idf per index for tf_idf else None) from training texts."""
    counts: Counter = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    reserved = reserved_tokens(output_mode)
    counts.pop(OOV, None)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: max(num_words - len(reserved), 0)]
    vocabulary = reserved + [token for token, _ in top]
    idf = None
    if output_mode == "tf_idf":
        documents: Counter = Counter()
        for tokens in token_lists:
            documents.update(set(tokens))
        n = len(token_lists)
        weights = [math.log(1 + n / (1 + documents[token])) for token in vocabulary[len(reserved) :]]
        oov = sum(weights) / len(weights) if weights else 0.0  # Keras: the OOV slot gets the mean idf
        idf = [oov] + weights
    return vocabulary, idf


def _ids(state: dict, texts: Sequence[str]) -> list[list[int]]:
    index = {token: i for i, token in enumerate(state["vocabulary"])}
    oov = index[OOV]
    return [[index.get(token, oov) for token in tokenize(text)] for text in texts]


def encode_texts(state: dict, texts: Sequence[str]) -> torch.Tensor:
    """Model inputs for texts with a saved vocabulary: uint8 multi-hot, integer counts,
    float32 tf-idf (N, num_words), or int64 ids (N, sequence_length)."""
    import torch

    check_state(state, "text_folder")
    ids = _ids(state, texts)
    mode, width, n = state["output_mode"], state["num_words"], len(ids)
    lengths = np.fromiter((len(s) for s in ids), dtype=np.int64, count=n)
    flat = np.fromiter((i for s in ids for i in s), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(n), lengths)
    if mode == "sequence":
        return torch.from_numpy(pad_sequences(ids, state["sequence_length"], state["padding"], state["truncating"]))
    if mode == "multi_hot":
        out = np.zeros((n, width), dtype=np.uint8)
        out[rows, flat] = 1
        return torch.from_numpy(out)
    counts = np.zeros((n, width), dtype=np.int32)
    np.add.at(counts, (rows, flat), 1)
    if mode == "count":
        top = int(counts.max()) if counts.size else 0
        dtype = np.uint8 if top <= 255 else np.int16 if top <= 32767 else np.int32
        return torch.from_numpy(counts.astype(dtype))
    idf = np.zeros(width, dtype=np.float32)
    idf[: len(state["idf"])] = state["idf"]
    return torch.from_numpy(counts.astype(np.float32) * idf)


def info_from_state(state: dict) -> DataInfo:
    names = tuple(state["class_names"])
    width = state["sequence_length"] if state["output_mode"] == "sequence" else state["num_words"]
    return DataInfo(
        input_shape=(width,),
        task=folder_task(names),
        num_classes=len(names),
        class_names=names,
        vocab_size=state["num_words"],
        token_ids=state["output_mode"] == "sequence",
    )


def _info(config: TextFolderData, seed: int, state: Optional[dict]) -> DataInfo:
    if state is not None:
        return info_from_state(check_state(state, "text_folder"))
    layout = scan_class_folders(Path(config.root), TEXT_SUFFIXES, KIND_WORDS, config.class_names, list_files=False)
    names = layout.class_names
    width = config.sequence_length if config.output_mode == "sequence" else config.num_words
    return DataInfo(
        input_shape=(width,),
        task=folder_task(names),
        num_classes=len(names),
        class_names=names,
        vocab_size=config.num_words,
        token_ids=config.output_mode == "sequence",
    )


def _load(config: TextFolderData, seed: int, state: Optional[dict], progress: Optional[ProgressFn]) -> Dataset:
    import torch

    layout = scan_for_loading(config, state, "text_folder", TEXT_SUFFIXES, KIND_WORDS, "texts")
    split, parts = split_class_files(layout, config, seed, "texts")
    items = parts["train"] + parts["val"] + parts["test"]
    texts, errors = read_texts([p for p, _ in items], progress)
    skipped = unreadable_files_note(
        errors,
        items,
        config.on_bad_file,
        named="text file",
        counted="text file",
        hint="Save it as UTF-8, delete it, or set data.on_bad_file: skip to leave unreadable files out.",
    )
    notes = [note for note in (skipped, ignored_files_note(layout, ".txt files")) if note]
    bounds = np.cumsum([0] + [len(parts[k]) for k in ("train", "val", "test")])
    if state is None:
        training = [tokenize(t) for t in texts[: bounds[1]] if t is not None]
        if training and not any(training):
            raise DataError(
                f"{layout.root}: all {len(training)} training texts are empty (no word once standardised), so there "
                "is nothing to learn from.",
                hint="Check that the .txt files hold the texts (and were not emptied or truncated on copying).",
            )
        vocabulary, idf = fit_vocabulary(training, config.num_words, config.output_mode)
        state = {
            "kind": "text_folder",
            "version": STATE_VERSION,
            "class_names": list(layout.class_names),
            "standardize": "lower_and_strip_punctuation",
            "removed_tags": list(REMOVED_TAGS),
            "output_mode": config.output_mode,
            "num_words": config.num_words,
            "sequence_length": config.sequence_length,
            "padding": config.padding,
            "truncating": config.truncating,
            "vocabulary": vocabulary,
            "idf": idf,
            "split": split_state(layout, split, parts, seed, len(errors)),
        }

    def part(i: int):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        kept = [k for k in range(lo, hi) if texts[k] is not None]
        if hi == lo:
            return None, None
        x = encode_texts(state, [texts[k] for k in kept])  # type: ignore[misc]
        return x, torch.tensor([items[k][1] for k in kept], dtype=torch.int64)

    x_train, y_train = part(0)
    x_val, y_val = part(1)
    x_test, y_test = part(2)
    if x_train is None or len(x_train) == 0:
        raise DataError(
            f"{layout.root}: all {len(parts['train'])} training texts were unreadable and skipped "
            "(data.on_bad_file: skip), so there is nothing to train on.",
            hint="Save the files as UTF-8 text.",
        )
    scale = None if state["output_mode"] in ("sequence", "tf_idf") else 1.0
    return Dataset(
        info=info_from_state(state),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        input_scale=scale,
        preprocessing=state,
        notes=tuple(notes),
        sample_names=kept_file_names(items, np.diff(bounds).tolist(), [t is not None for t in texts]),
    )


def read_texts_given(inputs: list[str], options: PredictOptions, class_names: list[str]):
    """(texts, names, labels) from --text, `-` (standard input) and .txt files or folders."""
    texts: list[str] = []
    names: list[str] = []
    labels: list[Optional[int]] = []
    if options.text is not None:
        texts.append(options.text)
        names.append("--text")
        labels.append(None)
    for item in inputs:
        if item == "-":
            texts.append(sys.stdin.read())
            names.append("-")
            labels.append(None)
            continue
        paths = expand_paths([item], TEXT_SUFFIXES)
        read, problems = read_texts(paths)  # as training reads them: UTF-8, with or without a BOM
        if problems:
            index, problem = problems[0]
            raise DataError(f"{paths[index]} is {problem}.", hint="Give .txt files of UTF-8 text.")
        texts += [text for text in read if text is not None]  # all read: problems raised above
        names += [str(p) for p in paths]
        labels += [label_from_folder(p, class_names) for p in paths]
    return texts, names, labels


def _read_inputs(request: ReadRequest) -> Inputs:
    """.txt files or folders of them, --text, or - for standard input, with the saved
    vocabulary; files in folders named after a class carry that label."""
    state = request.saved_state("text_folder")
    texts, names, labels = read_texts_given(request.inputs, request.options, list(state["class_names"]))
    scale = None if state["output_mode"] in ("sequence", "tf_idf") else 1.0
    return Inputs(names, encode_texts(state, texts), known_labels(labels), input_scale=scale)


def _input_spec(config: TextFolderData, info: DataInfo, state: Optional[dict]) -> InputSpec:
    state = check_state(state, "text_folder")
    mode = state["output_mode"]
    ids = mode == "sequence"
    return InputSpec(
        "int64" if ids else "float32",
        None,
        outside=(
            "Standardise the text (lowercase, <br /> removed, punctuation stripped), split on whitespace, map "
            "tokens through vocab.txt (line number = id; unknown tokens take the [UNK] id) and "
            + (
                f"pad or cut to {state['sequence_length']} ids (padding {state['padding']}, truncating "
                f"{state['truncating']})."
                if ids
                else f"build the {mode} vector of {state['num_words']} entries."
            )
        ),
    )


def _state_files(state: dict) -> dict[str, str]:
    """vocab.txt: one token per line, in index order."""
    return {"vocab.txt": "".join(f"{token}\n" for token in state["vocabulary"])}


DATASETS.add(
    "text_folder",
    DatasetSource(
        config=TextFolderData,
        info=_info,
        load=_load,
        read_inputs=_read_inputs,
        input_spec=_input_spec,
        state_files=_state_files,
        fits_preprocessing=True,
    ),
)
