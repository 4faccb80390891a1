"""Word-id sequences padded and cut to one length, as Keras's `pad_sequences` does; shared by
the IMDB data (`data.dataset: imdb`) and text folders in sequence mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


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
