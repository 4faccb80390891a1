"""Word-id sequences padded and cut to one length, as Keras's `pad_sequences` does; shared by
the IMDB data (`data.dataset: imdb`) and text folders in sequence mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..config import option

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, kw_only=True)
class TextEncodingKeys:
    """How texts become inputs (imdb and text_folder data share these keys and their meaning)."""

    num_words: int = option(10000, help="vocabulary size (the multi-hot width)", ge=4)
    output_mode: Literal["multi_hot", "count", "tf_idf", "sequence"] = option(
        "multi_hot", help="multi_hot, count, tf_idf or sequence (integer ids)"
    )
    sequence_length: int = option(200, help="sequence mode: ids per sample after padding/truncating", ge=1)
    padding: Literal["pre", "post"] = option("pre", help="sequence mode: pad at the start (pre, as Keras) or end")
    truncating: Literal["pre", "post"] = option("pre", help="sequence mode: cut from the start (pre, as Keras) or end")


def pad_sequences(sequences: list, length: int, padding: str = "pre", truncating: str = "pre") -> np.ndarray:
    """int64 matrix (samples, length) as keras.utils.pad_sequences(maxlen=length) makes it: longer
    sequences lose their start (truncating pre) or end (post), shorter ones get zeros at the
    start (padding pre) or end (post)."""
    import numpy as np

    n = len(sequences)
    out = np.zeros((n, length), dtype=np.int64)
    if not n:
        return out
    kept = [s[-length:] if truncating == "pre" else s[:length] for s in sequences]
    counts = np.fromiter((len(s) for s in kept), dtype=np.int64, count=n)
    if not counts.sum():
        return out
    rows = np.repeat(np.arange(n), counts)
    starts = np.cumsum(counts) - counts  # where each row's ids begin in the concatenation
    position = np.arange(int(counts.sum())) - starts[rows]
    cols = position + (length - counts)[rows] if padding == "pre" else position
    out[rows, cols] = np.concatenate([np.asarray(s, dtype=np.int64) for s in kept if len(s)])
    return out
