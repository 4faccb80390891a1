"""IMDB reviews in Keras's imdb.npz layout, processed exactly as keras.datasets.imdb.load_data.

The reviews become multi-hot vectors of `num_words` (stored as uint8, converted per batch),
as in the course's `vectorize_sequences`, or with `output_mode: sequence` int64 word ids of
`sequence_length`, padded and truncated as Keras's `pad_sequences` does (0 is padding).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import DataConfig, option
from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .dataset import DataInfo, Dataset, DatasetSource
from .inputs import Inputs, InputSpec, ReadRequest, known_labels
from .sequences import TextEncodingKeys, pad_sequences


@dataclass(frozen=True, kw_only=True)
class ImdbData(DataConfig, TextEncodingKeys):
    """imdb: Keras's imdb.npz, found under root (or downloaded into it)."""

    root: str = option("data", help="folder searched for imdb.npz (and downloaded into)")
    download: bool = option(True, help="download a missing imdb.npz when a network is there")


KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"
KERAS_SEED = 113
START_CHAR, OOV_CHAR, INDEX_FROM = 1, 2, 3
CLASS_NAMES = ("negative", "positive")


def candidate_files(root: Path) -> list[Path]:
    return [root / "imdb.npz", root / "imdb" / "imdb.npz"]


def keras_sequences(path: Path, num_words: int, seed: int = KERAS_SEED):
    """(x_train, y_train, x_test, y_test) as load_data(num_words=...) returns them.

    One RandomState(seed) permutes train then test; each review gets start_char prepended and
    index_from added to every word; indices >= num_words become oov_char.
    """
    import numpy as np

    try:
        with np.load(path, allow_pickle=True) as f:
            x_train, y_train = f["x_train"], f["y_train"]
            x_test, y_test = f["x_test"], f["y_test"]
    except KeyError as exc:
        raise DataError(f"{path} lacks the array {exc}; it needs x_train, y_train, x_test and y_test.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {path} as an .npz file: {exc}.", hint="Copy the file again.") from None
    rng = np.random.RandomState(seed)
    order = np.arange(len(x_train))
    rng.shuffle(order)
    x_train, y_train = x_train[order], y_train[order]
    order = np.arange(len(x_test))
    rng.shuffle(order)
    x_test, y_test = x_test[order], y_test[order]

    def process(reviews) -> list[np.ndarray]:
        out = []
        for review in reviews:
            words = np.asarray(review, dtype=np.int64) + INDEX_FROM
            words = np.concatenate(([START_CHAR], words))
            words[words >= num_words] = OOV_CHAR
            out.append(words)
        return out

    return process(x_train), np.asarray(y_train, dtype=np.int64), process(x_test), np.asarray(y_test, dtype=np.int64)


def multi_hot(sequences: list, width: int):
    """uint8 matrix with a 1 at every word index that occurs in each sequence."""
    import numpy as np

    out = np.zeros((len(sequences), width), dtype=np.uint8)
    if sequences:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        rows = np.repeat(np.arange(len(sequences)), lengths)
        cols = np.concatenate(sequences) if lengths.sum() else np.zeros(0, dtype=np.int64)
        out[rows, cols] = 1
    return out


def _download(root: Path) -> Path:
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    target = root / "imdb.npz"
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(KERAS_URL, timeout=30) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _find_or_download(config: ImdbData) -> Path:
    root = Path(config.root)
    for path in candidate_files(root):
        if path.is_file():
            return path
    problem = "Downloading is off (data.download: false)."
    if config.download:
        try:
            return _download(root)
        except Exception as exc:  # offline: URLError, timeouts, HTTP errors
            problem = f"The download from {KERAS_URL} failed ({type(exc).__name__}: {exc})."
    looked = ", ".join(str(p) for p in candidate_files(root))
    raise DataError(
        f"Cannot find imdb.npz; looked for {looked}. {problem}",
        hint="To fix it, copy Keras's imdb.npz into one of those places or point data.root at "
        "its folder (--set data.root=PATH).",
    )


def _info(config: ImdbData) -> DataInfo:
    if config.output_mode == "sequence":
        return DataInfo(
            input_shape=(config.sequence_length,),
            task="binary",
            num_classes=2,
            class_names=CLASS_NAMES,
            vocab_size=config.num_words,
            token_ids=True,
        )
    if config.output_mode != "multi_hot":
        raise ConfigError(
            f"data.output_mode: the imdb dataset comes as multi_hot vectors or word-id sequences, not {config.output_mode}.",
            hint="Use output_mode: multi_hot (the course's model) or sequence (for an embedding).",
            key="data.output_mode",
        )
    return DataInfo(input_shape=(config.num_words,), task="binary", num_classes=2, class_names=CLASS_NAMES)


def _load(config: ImdbData, seed: int) -> Dataset:
    import torch

    info = _info(config)
    x_train, y_train, x_test, y_test = keras_sequences(_find_or_download(config), config.num_words)
    total_rows = len(x_train) + len(x_test)

    def encode(reviews):
        return encode_sequences(reviews, config, total_rows)

    scale = None if config.output_mode == "sequence" else 1.0
    return Dataset(
        info=info,
        x_train=encode(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=encode(x_test),
        y_test=torch.from_numpy(y_test),
        input_scale=scale,
    )


def encode_sequences(reviews: list, config: ImdbData, total_rows: Optional[int] = None):
    """Word-id lists as the model's input tensor: padded int64 ids (sequence mode) or multi-hot rows.

    Multi-hot rows are kept as float32 when all of the data's rows (`total_rows`) take at most
    an eighth of the memory available: gathering a batch of float32 rows measured about twice as
    fast as gathering uint8 rows and converting them, and the course's IMDB data (35,000 x 10,000,
    1.4 GB) fits that easily; beyond it they stay uint8 (a quarter of the memory) and are
    converted per batch.
    """
    import torch

    if config.output_mode == "sequence":
        return torch.from_numpy(pad_sequences(reviews, config.sequence_length, config.padding, config.truncating))
    rows = torch.from_numpy(multi_hot(reviews, config.num_words))
    from ..devices import available_memory

    available, _ = available_memory("cpu")
    need = (total_rows or len(reviews)) * config.num_words * 4
    return rows.float() if available is not None and need * 8 <= available else rows


def _read_inputs(request: ReadRequest) -> Inputs:
    """Texts (.txt files, folders of them such as aclImdb's pos/neg, --text, or - for standard
    input) through Keras's word index; or Keras's imdb.npz itself (its test split)."""
    import torch

    from .text import read_texts_given

    data = request.config
    scale = None if data.output_mode == "sequence" else 1.0
    npz = [p for p in request.inputs if p.endswith(".npz")]
    if npz:
        _, _, x_test, y_test = keras_sequences(Path(npz[0]), data.num_words)
        names = [f"{Path(npz[0]).name}:test[{i}]" for i in range(len(x_test))]
        return Inputs(names, encode_sequences(x_test, data), torch.from_numpy(y_test), input_scale=scale)
    texts, names, labels = read_texts_given(request.inputs, request.options, ["neg", "pos"])
    index = word_index(Path(data.root), data.download)
    sequences = [encode_review(text, index, data.num_words) for text in texts]
    return Inputs(names, encode_sequences(sequences, data), known_labels(labels), input_scale=scale)


_KERAS_WORDS = (
    "Tokenise the review as Keras's text_to_word_sequence does (lowercase, punctuation removed, <br /> removed), "
    "map words through Keras's imdb_word_index.json (rank + 3; 1 = start, 2 = unknown or rank >= {num_words})"
)


def _input_spec(config: ImdbData, info: DataInfo, state: object) -> InputSpec:
    words = _KERAS_WORDS.format(num_words=config.num_words)
    if config.output_mode == "sequence":
        return InputSpec(
            "int64",
            None,
            outside=(
                f"{words}, and pad or cut to {config.sequence_length} ids as keras pad_sequences does "
                f"(padding {config.padding}, truncating {config.truncating}, 0 = padding)."
            ),
        )
    return InputSpec(
        "float32",
        None,
        outside=f"{words} and set a 1 at every id that occurs: a multi-hot vector of {config.num_words}.",
        binary_rows=True,
    )


DATASETS.add(
    "imdb",
    DatasetSource(config=ImdbData, info=_info, load=_load, read_inputs=_read_inputs, input_spec=_input_spec),
)


# -- new reviews, for dlcli predict: Keras's word index ----------------------------------------

WORD_INDEX_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb_word_index.json"
WORD_INDEX_FILE = "imdb_word_index.json"
# Keras's text_to_word_sequence filters (the apostrophe stays: the index has "don't").
_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


def word_index(root: Path, download: bool = True) -> dict[str, int]:
    """Keras's imdb_word_index.json (word -> frequency rank from 1), found beside imdb.npz or downloaded."""
    import json
    import urllib.request

    places = [root / WORD_INDEX_FILE, root / "imdb" / WORD_INDEX_FILE]
    path = next((p for p in places if p.is_file()), None)
    problem = "Downloading is off."
    if path is None and download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(WORD_INDEX_URL, timeout=30) as response:
                data = response.read()
            path = places[0]
            from ..rundir import atomic_write_bytes

            atomic_write_bytes(path, data)
        except Exception as exc:  # offline: URLError, timeouts, HTTP errors
            problem = f"The download from {WORD_INDEX_URL} failed ({type(exc).__name__}: {exc})."
    if path is None:
        raise DataError(
            f"Cannot find Keras's {WORD_INDEX_FILE}, which turns words into the ids the IMDB model was trained "
            f"on; looked for {', '.join(str(p) for p in places)}. {problem}",
            hint="Copy imdb_word_index.json next to imdb.npz (the run's data.root).",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not Keras's word index ({exc}).", hint="Copy the file again.") from None


def encode_review(text: str, index: dict[str, int], num_words: int):
    """A review as load_data's ids: start_char, then each word's rank + index_from (oov_char when
    the word is unknown or outside the num_words most frequent), as the training data was made."""
    text = text.replace("<br />", " ").lower()
    text = text.translate(str.maketrans(_FILTERS, " " * len(_FILTERS)))
    ids = [START_CHAR]
    for word in text.split():
        rank = index.get(word)
        i = rank + INDEX_FROM if rank is not None else OOV_CHAR
        ids.append(i if i < num_words else OOV_CHAR)
    import numpy as np

    return np.asarray(ids, dtype=np.int64)
