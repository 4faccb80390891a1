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
from ..registry import DATASETS
from ..rundir import PREPROCESSING_FILE

STATE_VERSION = 1


def check_state(state: Any, kind: str) -> dict:
    """The state, when it is one this dlcli can apply to `kind` data; else a DataError."""
    if not isinstance(state, dict) or "kind" not in state or "version" not in state:
        raise DataError(
            "The saved preprocessing is not a dlcli preprocessing state (it lacks `kind` and `version`).",
            hint=f"Restore the run folder's {PREPROCESSING_FILE}, or train a new run.",
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


def state_json(state: dict) -> str:
    """preprocessing.json's text: stable key order, readable, and checked to be plain data."""
    return json.dumps(state, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def preprocessing_files(state: dict) -> dict[str, str]:
    """The human-readable files for the run folder beside preprocessing.json: name -> text.

    classes.txt (one class per line, in output order) for every kind that has classes, and
    what the state's dataset kind adds (`DatasetSource.state_files`: vocab.txt for text,
    columns.txt for tables).
    """
    files: dict[str, str] = {}
    names = state.get("class_names")
    if names:
        files["classes.txt"] = "".join(f"{name}\n" for name in names)
    kind = DATASETS.get(state["kind"], key="kind") if state.get("kind") in DATASETS else None
    if kind is not None and kind.state_files is not None:
        files.update(kind.state_files(state))
    return files


def output_scaling(state: Optional[dict]) -> Optional[tuple[list[float], list[float]]]:
    """(shift, scale) per model output when the state's data trains on scaled targets (a time
    series' regression): an output in the targets' own units is output * scale + shift. None
    when the outputs are the targets as they are."""
    scaling = state.get("output_scaling") if isinstance(state, dict) else None
    if not scaling:
        return None
    return list(scaling["shift"]), list(scaling["scale"])
