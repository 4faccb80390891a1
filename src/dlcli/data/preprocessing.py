"""The fitted preprocessing of users' files, as plain versioned data.

Everything fitted on a training split (csv column types, means and stds, category lists,
class names and their order, a text vocabulary, an image size and channels) lives in one
dict of plain JSON types with `kind` and `version`. The run folder keeps it as
`preprocessing.json` plus human-readable files (`preprocessing_files`), the checkpoints keep
it as plain data (so they load with `weights_only=True`), and evaluate, resume, predict and
export hand it back to `load_dataset` / `dataset_info` or to the per-kind transforms
(`tabular.encode_table`, `images.load_images`, `text.encode_texts`), which never fit again.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..errors import DataError
from . import DataInfo

STATE_VERSION = 1
KINDS = ("csv", "timeseries", "image_folder", "text_folder")
STATE_FILE = "preprocessing.json"


def check_state(state: Any, kind: str) -> dict:
    """The state, when it is one this dlcli can apply to `kind` data; else a DataError."""
    if not isinstance(state, dict) or "kind" not in state or "version" not in state:
        raise DataError(
            "The saved preprocessing is not a dlcli preprocessing state (it lacks `kind` and `version`).",
            hint=f"Restore the run folder's {STATE_FILE}, or train a new run.",
        )
    if state["kind"] != kind:
        raise DataError(
            f"The saved preprocessing is for {state['kind']} data, but data.dataset is {kind}.",
            hint="Use the config the run was trained with.",
        )
    if not isinstance(state["version"], int) or state["version"] > STATE_VERSION:
        raise DataError(
            f"The saved preprocessing has version {state['version']}, newer than this dlcli understands "
            f"({STATE_VERSION}).",
            hint="Upgrade dlcli to use this run.",
        )
    return state


def info_from_state(state: dict) -> DataInfo:
    """Input shape, task and classes from a saved state alone (no file is read)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "csv":
        from .tabular import info_from_state as info
    elif kind == "timeseries":
        from .timeseries import info_from_state as info
    elif kind == "image_folder":
        from .images import info_from_state as info
    elif kind == "text_folder":
        from .text import info_from_state as info
    else:
        raise DataError(f"The saved preprocessing has an unknown kind {kind!r}; known kinds are: {', '.join(KINDS)}.")
    return info(check_state(state, kind))


def state_json(state: dict) -> str:
    """preprocessing.json's text: stable key order, readable, and checked to be plain data."""
    return json.dumps(state, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def preprocessing_files(state: dict) -> dict[str, str]:
    """The human-readable files for the run folder beside preprocessing.json: name -> text.

    classes.txt (one class per line, in output order), vocab.txt (one token per line, in
    index order) for text, columns.txt (each input column and what was fitted) for csv.
    """
    files: dict[str, str] = {}
    names = state.get("class_names")
    if names:
        files["classes.txt"] = "".join(f"{name}\n" for name in names)
    if state.get("kind") == "text_folder":
        files["vocab.txt"] = "".join(f"{token}\n" for token in state["vocabulary"])
    if state.get("kind") == "csv":
        from .tabular import describe_columns

        files["columns.txt"] = describe_columns(state)
    if state.get("kind") == "timeseries":
        from .timeseries import describe_columns as describe_series

        files["columns.txt"] = describe_series(state)
    return files


def output_scaling(state: Optional[dict]) -> Optional[tuple[list[float], list[float]]]:
    """(shift, scale) per model output when the state's data trains on scaled targets (a time
    series' regression): an output in the targets' own units is output * scale + shift. None
    when the outputs are the targets as they are."""
    scaling = state.get("output_scaling") if isinstance(state, dict) else None
    if not scaling:
        return None
    return list(scaling["shift"]), list(scaling["scale"])
