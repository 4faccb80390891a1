"""Predictions of a trained run on new inputs.

Inputs are read into exactly the tensors the run's dataset makes (same dtype, size, channels
and scaling; a table's saved column statistics; a text run's vocabulary), and then go through
the same `Batches` and model as `dlcli evaluate`, so predicting on the files of a run's own
test split reproduces its evaluation exactly. One reader per dataset kind, by the data's name.
No printing here: the CLI writes the rows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import DataError
from .loading import LoadedRun
from .registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class PredictOptions:
    text: Optional[str] = None  # --text: one text given on the command line
    invert: bool = False  # images: white-on-black like MNIST from black-on-white photos
    skip_bad: bool = False  # an input that cannot be read gets an error row instead of stopping
    all_windows: bool = False  # time series: every window of the file, not only the last


@dataclass
class Inputs:
    """What the model is run on: one name per input; rows that could not be read have an error."""

    names: list[str]
    x: Any  # tensor of the readable inputs, in the dataset's storage (e.g. uint8 images)
    labels: Any = None  # true targets when the inputs carry them (a folder by class, a target column)
    errors: dict[int, str] = field(default_factory=dict)  # index in names -> why it was not read
    notes: list[str] = field(default_factory=list)
    input_scale: Optional[float] = None
    columns: dict[str, list] = field(default_factory=dict)  # more output columns, a value per name (time stamps)

    @property
    def readable(self) -> list[int]:
        return [i for i in range(len(self.names)) if i not in self.errors]


Reader = Callable[[LoadedRun, list[str], PredictOptions], Inputs]
READERS: Registry[Reader] = Registry("input reader")


def read_inputs(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """Read INPUT... (and --text / `-`) as the run's data takes them."""
    if not inputs and options.text is None:
        raise DataError(
            "No input was given to predict on.",
            hint='Name files or folders (or --text "..." / - for standard input for text runs).',
        )
    dataset = run.config.data.dataset
    reader = READERS.get(dataset, key="data.dataset") if dataset in READERS.names() else None
    if reader is None:
        raise DataError(
            f"dlcli predict does not know how to read inputs for data.dataset: {dataset}.",
            hint=f"It reads inputs for: {', '.join(READERS.names())}.",
        )
    read = reader(run, inputs, options)
    if not read.names:
        raise DataError(
            f"The inputs ({', '.join(inputs) or '--text'}) hold nothing to predict on.",
            hint="Check the paths: folders are searched for the files the run's data takes.",
        )
    return read


# -- from inputs to predictions -------------------------------------------------------------


@dataclass
class Predictions:
    task: str
    class_names: list[str]  # classes (multiclass, binary), labels (multilabel) or outputs (regression)
    probabilities: Any  # N x classes (binary: 2 columns); regression: the predicted values
    predicted: Any  # class index (multiclass, binary), 0/1 per label (multilabel), None (regression)
    labels: Any = None  # true targets, when known


def predict_inputs(run: LoadedRun, inputs: Inputs, batch_size: int = 1024) -> Predictions:
    """Run the model on the readable inputs with evaluate's batching, and turn outputs into predictions."""
    import torch

    from .data.preprocessing import output_scaling
    from .engine import Batches, predict

    info = run.plan.info
    x = inputs.x
    dummy = torch.zeros(len(x), dtype=torch.long)
    batches = Batches(x, dummy, batch_size, input_scale=inputs.input_scale, device=run.device)
    outputs = predict(run.model, batches)[0] if len(x) else torch.zeros(0, max(info.num_classes, 1))
    logits = run.plan.model_plan.absorbed_activation  # else the model already ends in its activation
    scaling = output_scaling(run.preprocessing) if info.task == "regression" else None
    if scaling is not None:  # trained on scaled targets: back to the targets' units
        outputs = outputs * torch.tensor(scaling[1]) + torch.tensor(scaling[0])
    names = list(info.class_names) if info.class_names else [str(i) for i in range(info.num_classes)]
    if info.task == "binary":
        p1 = torch.sigmoid(outputs[:, 0]) if logits else outputs[:, 0]
        predicted = (outputs[:, 0] > 0).long() if logits else (p1 > 0.5).long()
        return Predictions(
            "binary",
            names[:2] if len(names) >= 2 else ["0", "1"],
            torch.stack([1 - p1, p1], 1),
            predicted,
            inputs.labels,
        )
    if info.task == "multiclass":
        probs = torch.softmax(outputs, 1) if logits else outputs
        return Predictions("multiclass", names, probs, outputs.argmax(1), inputs.labels)
    if info.task == "multilabel":
        probs = torch.sigmoid(outputs) if logits else outputs
        predicted = (outputs > 0).long() if logits else (probs > 0.5).long()
        return Predictions("multilabel", names, probs, predicted, inputs.labels)
    return Predictions("regression", names, outputs, None, inputs.labels)


def prediction_rows(inputs: Inputs, preds: Predictions, top_k: Optional[int] = None) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per input in input order; probabilities per class or the top k."""
    names = preds.class_names
    k = len(names)
    if top_k is not None and preds.task in ("multiclass", "binary") and not 1 <= top_k <= k:
        raise DataError(
            f"--top-k {top_k} is more than this run's {k} classes."
            if top_k > k
            else f"--top-k must be at least 1, not {top_k}.",
            hint=f"Use --top-k between 1 and {k}.",
        )
    columns = ["input", *inputs.columns]
    if preds.task in ("multiclass", "binary"):
        columns += ["predicted", "probability"]
        columns += (
            [f"top{i}{part}" for i in range(1, top_k + 1) for part in ("", "_probability")]
            if top_k
            else [f"p_{n}" for n in names]
        )
    elif preds.task == "multilabel":
        columns += ["predicted"] + [f"p_{n}" for n in names]
    else:
        columns += names if k > 1 else ["predicted"]
    has_labels = preds.labels is not None
    labeled = (lambda r: True) if not isinstance(preds.labels, list) else (lambda r: preds.labels[r] is not None)
    if has_labels:
        columns += (
            ["true", "correct"] if preds.task != "regression" else [f"true_{n}" for n in names] if k > 1 else ["true"]
        )
    if inputs.errors:
        columns.append("error")

    rows: list[dict] = []
    readable = inputs.readable
    position = {index: row for row, index in enumerate(readable)}
    for index, name in enumerate(inputs.names):
        row: dict[str, Any] = {"input": name, **{c: values[index] for c, values in inputs.columns.items()}}
        if index in inputs.errors:
            row["error"] = inputs.errors[index]
            rows.append(row)
            continue
        r = position[index]
        p = preds.probabilities[r]
        if preds.task in ("multiclass", "binary"):
            c = int(preds.predicted[r])
            row["predicted"], row["probability"] = names[c], float(p[c])
            if top_k:
                values, order = p.topk(top_k)
                for i, (v, o) in enumerate(zip(values.tolist(), order.tolist()), 1):
                    row[f"top{i}"], row[f"top{i}_probability"] = names[o], v
            else:
                row.update({f"p_{n}": float(v) for n, v in zip(names, p.tolist())})
            if has_labels and labeled(r):
                truth = int(preds.labels[r])
                row["true"], row["correct"] = names[truth], truth == c
        elif preds.task == "multilabel":
            chosen = preds.predicted[r].tolist()
            row["predicted"] = ";".join(n for n, on in zip(names, chosen) if on)
            row.update({f"p_{n}": float(v) for n, v in zip(names, p.tolist())})
            if has_labels and labeled(r):
                true_bits = [int(v > 0.5) for v in preds.labels[r].tolist()]
                row["true"] = ";".join(n for n, on in zip(names, true_bits) if on)
                row["correct"] = true_bits == chosen
        else:
            values = p.reshape(-1).tolist()
            row.update(dict(zip(names if k > 1 else ["predicted"], values)))
            if has_labels and labeled(r):
                truth = preds.labels[r].reshape(-1).tolist()
                row.update(dict(zip([f"true_{n}" for n in names] if k > 1 else ["true"], truth)))
        rows.append(row)
    return columns, rows


def accuracy(rows: list[dict]) -> Optional[float]:
    """Share of correct rows among those with a known label (None when none has one)."""
    judged = [r["correct"] for r in rows if "correct" in r]
    return sum(judged) / len(judged) if judged else None


def mean_absolute_error(rows: list[dict], columns: list[str]) -> Optional[float]:
    pairs = [
        (c[5:] if c.startswith("true_") else "predicted", c) for c in columns if c == "true" or c.startswith("true_")
    ]
    errors = [abs(r[p] - r[t]) for r in rows if "error" not in r for p, t in pairs if t in r]
    return sum(errors) / len(errors) if errors else None


# -- readers for the built-in datasets -------------------------------------------------------


def expand_paths(inputs: list[str], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named, and the matching files inside folders named (recursively, in sorted order;
    hidden files such as ._x.jpg and .DS_Store are skipped)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"Input {item} does not exist.", hint="Check the path.")
    return found


def label_from_folder(path: Path, class_names: list[str]) -> Optional[int]:
    """The class of a file in a folder named after a class (by name, or by index for digits)."""
    parent = path.parent.name
    for index, name in enumerate(class_names):
        if parent == name or parent == str(index) or parent.lower() == name.lower().replace("/", "_"):
            return index
    return None


def read_image_inputs(
    paths: list[Path], class_names: list[str], size: tuple[int, int], channels: int, options: PredictOptions
) -> Inputs:
    """Image files decoded by the image-folder data's own decoder (EXIF orientation, conversion to
    the channels, bilinear resize: what training saw), with labels from class-named folders."""
    import torch

    from .data.images import check_memory, decode_files

    names = [str(p) for p in paths]
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


def known_labels(labels: list):
    """A tensor when every input has a label, the list (None where unknown) when some have, else None."""
    import torch

    if not any(label is not None for label in labels):
        return None
    return torch.tensor(labels) if all(label is not None for label in labels) else labels


def _vision_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """MNIST / Fashion-MNIST runs: IDX image files (labels from the labels file beside them), or
    any image files, converted to 28x28 grayscale."""
    import torch

    from .data.vision import read_idx

    info = run.plan.info
    names = list(info.class_names or [])
    idx = [p for p in inputs if "idx3-ubyte" in Path(p).name]
    if idx:
        xs, ys, all_names = [], [], []
        for item in idx:
            images = read_idx(Path(item))
            xs.append(torch.from_numpy(images).unsqueeze(1))
            all_names += [f"{Path(item).name}[{i}]" for i in range(len(images))]
            label_file = Path(item.replace("images-idx3", "labels-idx1"))
            ys.append(torch.from_numpy(read_idx(label_file).astype("int64")) if label_file.is_file() else None)
        known = [y for y in ys if y is not None]
        labels = torch.cat(known) if len(known) == len(ys) else None
        rest = [p for p in inputs if p not in idx]
        if rest:
            raise DataError("Give either IDX files or image files to one dlcli predict, not both.")
        return Inputs(all_names, torch.cat(xs), labels, input_scale=1.0 / 255.0)
    paths = expand_paths(inputs, IMAGE_SUFFIXES)
    return read_image_inputs(paths, names, tuple(info.input_shape[1:]), info.input_shape[0], options)


def _arrays_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """npz and synthetic runs: .npz files holding x (or x_test), and y (or y_test) when known."""
    import numpy as np
    import torch

    info = run.plan.info
    xs, ys, names = [], [], []
    for path in expand_paths(inputs, (".npz",)):
        try:
            with np.load(path, allow_pickle=False) as f:
                key = "x" if "x" in f else "x_test" if "x_test" in f else None
                if key is None:
                    raise DataError(
                        f"{path} has no array named x (or x_test); it has {', '.join(f.files) or 'none'}.",
                        hint="Save the inputs with numpy.savez(path, x=inputs).",
                    )
                x = f[key]
                y = f["y" if key == "x" else "y_test"] if ("y" if key == "x" else "y_test") in f else None
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read {path} as an .npz file: {exc}.") from None
        if tuple(x.shape[1:]) != tuple(info.input_shape):
            raise DataError(
                f"{path}: {key} has samples of shape {tuple(x.shape[1:])}, but this run's model takes "
                f"{tuple(info.input_shape)}.",
                hint="Give arrays shaped like the training data.",
            )
        xs.append(x)
        ys.append(y)
        names += [f"{path.name}[{i}]" for i in range(len(x))]
    if not xs:
        return Inputs([], None)
    x = np.concatenate(xs)
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else None
    tensor = torch.from_numpy(x) if x.dtype == np.uint8 else torch.from_numpy(x.astype(np.float32))
    labels = None
    known = [y for y in ys if y is not None]
    if len(known) == len(ys):
        y = np.concatenate(known)
        labels = torch.from_numpy(y.astype(np.int64) if info.task in ("multiclass", "binary") else y.astype(np.float32))
    return Inputs(names, tensor, labels, input_scale=scale)


def _imdb_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """IMDB runs: texts (.txt files, folders of them such as aclImdb's pos/neg, --text, or - for
    standard input) through Keras's word index; or Keras's imdb.npz itself (its test split)."""
    import torch

    from .data import imdb

    data = run.config.data
    scale = None if data.output_mode == "sequence" else 1.0
    npz = [p for p in inputs if p.endswith(".npz")]
    if npz:
        _, _, x_test, y_test = imdb.keras_sequences(Path(npz[0]), data.num_words)
        names = [f"{Path(npz[0]).name}:test[{i}]" for i in range(len(x_test))]
        return Inputs(names, imdb.encode_sequences(x_test, data), torch.from_numpy(y_test), input_scale=scale)
    texts, names, labels = read_texts_given(inputs, options, ["neg", "pos"])
    word_index = imdb.word_index(Path(data.root), data.download)
    sequences = [imdb.encode_review(text, word_index, data.num_words) for text in texts]
    return Inputs(names, imdb.encode_sequences(sequences, data), known_labels(labels), input_scale=scale)


READERS.add("mnist", _vision_reader)
READERS.add("fashion_mnist", _vision_reader)
READERS.add("npz", _arrays_reader)
READERS.add("synthetic", _arrays_reader)
READERS.add("imdb", _imdb_reader)


# -- readers for users' files: the data modules' own transforms with the saved state ----------


def _saved_state(run: LoadedRun, kind: str) -> dict:
    from .data.preprocessing import check_state

    if run.preprocessing is None:
        raise DataError(
            f"{run.run_dir} has no saved preprocessing (preprocessing.json), which {kind} runs need to "
            "read new inputs as they were trained on.",
            hint="Restore the run folder's preprocessing.json; dlcli never fits it again.",
        )
    return check_state(run.preprocessing, kind)


def _table_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """CSV runs: tables with the feature columns by name, in any order (extra columns ignored);
    with the target column(s) the rows carry labels."""
    import torch

    from .data.tabular import encode_table, read_table, table_text_columns, unseen_categories

    state = _saved_state(run, "csv")
    xs, ys, names, notes = [], [], [], []
    for path in expand_paths(inputs, (".csv", ".tsv", ".txt")):
        table = read_table(path, state["delimiter"], table_text_columns(state))
        x, y, rows = encode_table(state, table, with_rows=True)
        xs.append(x)
        ys.append(y)
        names += [f"{path.name}:{table.line(int(r))}" for r in rows]
        for column, values in unseen_categories(state, table).items():
            shown = ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
            notes.append(
                f"{path.name}: column {column!r} has values never seen in training ({shown}); "
                "they take the column's unknown slot, as in training."
            )
    if not xs:
        return Inputs([], None)
    labels = torch.cat(ys) if all(y is not None for y in ys) else None
    return Inputs(names, torch.cat(xs), labels, notes=notes, input_scale=None)


def _image_folder_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """Image-folder runs: image files or folders, decoded, converted and resized as in training;
    files in folders named after a class carry that label."""
    state = _saved_state(run, "image_folder")
    size = (state["image_size"][0], state["image_size"][1])
    paths = expand_paths(inputs, IMAGE_SUFFIXES)
    return read_image_inputs(paths, list(state["class_names"]), size, state["channels"], options)


def _text_folder_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """Text-folder runs: .txt files or folders of them, --text, or - for standard input, with the
    saved vocabulary; files in folders named after a class carry that label."""
    from .data.text import encode_texts

    state = _saved_state(run, "text_folder")
    texts, names, labels = read_texts_given(inputs, options, list(state["class_names"]))
    scale = None if state["output_mode"] in ("sequence", "tf_idf") else 1.0
    return Inputs(names, encode_texts(state, texts), known_labels(labels), input_scale=scale)


def read_texts_given(inputs: list[str], options: PredictOptions, class_names: list[str]):
    """(texts, names, labels) from --text, `-` (standard input) and .txt files or folders."""
    from .data.text import read_texts

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
        paths = expand_paths([item], (".txt",))
        read, problems = read_texts(paths)  # the text-folder data's reader: UTF-8, with or without a BOM
        if problems:
            index, problem = problems[0]
            raise DataError(f"{paths[index]} is {problem}.", hint="Convert it to UTF-8.")
        texts += [text for text in read if text is not None]  # all read: problems raised above
        names += [str(p) for p in paths]
        labels += [label_from_folder(p, class_names) for p in paths]
    return texts, names, labels


def _timeseries_reader(run: LoadedRun, inputs: list[str], options: PredictOptions) -> Inputs:
    """Time-series runs: .csv files of the series' recent rows; the last window of each (every
    window with --all-windows), with its time stamps and, where the file holds them, the true values."""
    from .data.timeseries import read_recent

    state = _saved_state(run, "timeseries")
    names: list[str] = []
    xs: list = []
    labels: list = []
    columns: dict[str, list] = {}
    for path in expand_paths(inputs, (".csv", ".tsv", ".txt")):
        recent = read_recent(state, path, options.all_windows)
        names += recent.names
        xs.append(recent.x)
        labels.append(recent.labels)
        for column, values in recent.columns.items():
            columns.setdefault(column, []).extend(values)
    if not xs:
        return Inputs([], None)
    import torch

    if all(isinstance(y, torch.Tensor) for y in labels):
        known: Any = torch.cat(labels)
    elif all(y is None for y in labels):
        known = None
    else:
        known = [item for y, x in zip(labels, xs) for item in (list(y) if y is not None else [None] * len(x))]
    return Inputs(names, torch.cat(xs), known, columns={c: v for c, v in columns.items() if len(v) == len(names)})


READERS.add("csv", _table_reader)
READERS.add("timeseries", _timeseries_reader)
READERS.add("image_folder", _image_folder_reader)
READERS.add("text_folder", _text_folder_reader)
