"""dlcli export for each kind of data: the ONNX model, run by onnxruntime on the inputs as the
run's data stores them (what export.json describes), gives what `dlcli predict` gives on the same
inputs: its probabilities, or its values for a regression run."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import import_or_skip_unless_ci, invoke, make_imdb_npz, trained_run, write_config

TOLERANCE = 1e-5  # what export promises against the eager model


def train(tmp_path: Path, data: dict, model: dict, loss=None) -> Path:
    config = {
        "name": "kind",
        "seed": 0,
        "device": "cpu",
        "data": data,
        "model": model,
        "optimizer": {"name": "adam", "lr": 0.02},
        "training": {"epochs": 1, "batch_size": 8},
    }
    if loss is not None:
        config["loss"] = loss
    return trained_run(write_config(tmp_path / "kind.yaml", config), tmp_path / "runs")


def exported(run: Path, tmp_path: Path, *options) -> tuple[Path, dict]:
    """The run exported as ONNX with `dlcli export` (and `options`), and its export.json."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        import_or_skip_unless_ci(module, f"{module} is not installed (the export extra)")
    out = tmp_path / "export" / "model.onnx"
    result = invoke("export", run, "--format", "onnx", "--out", out, *options)
    assert result.exit_code == 0, result.output
    return out, json.loads((out.parent / "export.json").read_text())


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def predicted(run: Path, *inputs) -> list[dict]:
    """`dlcli predict --json` rows (full float precision), in input order."""
    result = invoke("predict", run, *inputs, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def predict_outputs(rows: list[dict], sidecar: dict) -> np.ndarray:
    """Predict's numbers in the exported model's output layout: P(last class) for a binary run,
    one probability per class or label, or the values of a regression run."""
    names = sidecar["class_names"]
    task = sidecar["task"]
    if task == "binary":
        return np.array([[r[f"p_{names[-1]}"]] for r in rows])
    if task in ("multiclass", "multilabel"):
        return np.array([[r[f"p_{n}"] for n in names] for r in rows])
    columns = names if len(names) > 1 else ["predicted"]
    return np.array([[r[c] for c in columns] for r in rows])


def assert_export_matches_predict(
    run: Path, tmp_path: Path, x: np.ndarray, rows: list[dict], dtype: str, *options
) -> dict:
    """x: the rows' inputs as the sidecar says the model takes them (its dtype is checked)."""
    path, sidecar = exported(run, tmp_path, *options)
    assert sidecar["input"]["dtype"] == dtype and x.dtype == np.dtype(dtype)
    assert sidecar["input"]["shape"][1:] == list(x.shape[1:])
    expected = predict_outputs(rows, sidecar)
    assert len(rows) == len(x) and expected.shape[1] == sidecar["output"]["shape"][1]
    assert np.ptp(expected, axis=0).max() > 1e-3  # different inputs, different outputs: the check has teeth
    np.testing.assert_allclose(onnx_outputs(path, x), expected, rtol=0, atol=TOLERANCE)
    return sidecar


# ----------------------------------------------------------------------------- text folders and IMDB

TOPICS = {
    "bad": "awful dull boring weak",
    "good": "great fine superb lovely",
    "meh": "plain average okay middling",
}


def text_folders(root: Path) -> Path:
    """train/ and test/ folders of three classes; each text mixes its class's words with others."""
    rng = np.random.default_rng(0)
    common = "film plot cast story the a".split()
    for split, n in (("train", 10), ("test", 4)):
        for label, words in TOPICS.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                chosen = list(rng.choice(words.split(), 2)) + list(rng.choice(common, int(rng.integers(1, 6))))
                (folder / f"{i}.txt").write_text(" ".join(rng.permutation(chosen)), encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "mode, model, dtype",
    [
        ("multi_hot", {"preset": "mlp", "hidden": [8]}, "float32"),
        ("tf_idf", {"preset": "mlp", "hidden": [8]}, "float32"),
        (
            "sequence",
            {"layers": [{"embedding": {"output_dim": 4}}, "flatten", {"dense": {"units": 3, "activation": "softmax"}}]},
            "int64",
        ),
    ],
)
def test_text_folder_export_matches_predict(tmp_path, mode, model, dtype):
    from dlcli.data.text import encode_texts

    root = text_folders(tmp_path / "texts")
    data = {"dataset": "text_folder", "root": str(root), "num_words": 20, "output_mode": mode, "sequence_length": 6}
    run = train(tmp_path, data, model)
    rows = predicted(run, root / "test")
    state = json.loads((run / "preprocessing.json").read_text())  # vocab.txt and the idf weights
    x = encode_texts(state, [Path(r["input"]).read_text(encoding="utf-8") for r in rows]).numpy().astype(dtype)
    assert_export_matches_predict(run, tmp_path, x, rows, dtype)


def test_imdb_multi_hot_export_matches_predict(tmp_path):
    from dlcli.data.imdb import keras_sequences, multi_hot

    make_imdb_npz(tmp_path / "data" / "imdb.npz")
    data = {"dataset": "imdb", "root": str(tmp_path / "data"), "num_words": 50, "download": False}
    run = train(tmp_path, data, {"preset": "binary", "hidden": [8]})
    rows = predicted(run, tmp_path / "data" / "imdb.npz")  # its test split, in Keras's shuffled order
    _, _, reviews, _ = keras_sequences(tmp_path / "data" / "imdb.npz", 50)
    x = multi_hot(reviews, 50).astype(np.float32)
    assert [r["input"] for r in rows] == [f"imdb.npz:test[{i}]" for i in range(len(x))]
    assert_export_matches_predict(run, tmp_path, x, rows, "float32")


# ----------------------------------------------------------------------------- arrays and images


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_export_matches_predict(tmp_path, dtype):
    """uint8 arrays are images scaled by 1/255 inside the graph; float32 ones go in as they are."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.integers(0, 100, (90, 1, 4, 5)) + 70 * y[:, None, None, None]
    x = x.astype(np.uint8) if dtype == "uint8" else (x / 50.0).astype(np.float32)
    np.savez(tmp_path / "train.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    np.savez(tmp_path / "new.npz", x=x[60:])
    run = train(tmp_path, {"dataset": "npz", "path": str(tmp_path / "train.npz")}, {"preset": "mlp", "hidden": [8]})
    rows = predicted(run, tmp_path / "new.npz")
    assert_export_matches_predict(run, tmp_path, x[60:], rows, dtype)


@pytest.mark.parametrize("layout", ["NTHWC", "NTCHW", "NHWC"])
def test_npz_export_takes_arrays_in_the_training_files_layout(tmp_path, layout):
    """data.layout other than the layers' order: the exported model takes arrays laid out as the
    training file stores them (the graph moves the axes), as dlcli predict does."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    shape = {"NTHWC": (48, 3, 4, 5, 2), "NTCHW": (48, 3, 2, 4, 5), "NHWC": (48, 4, 5, 2)}[layout]
    x = (rng.normal(size=shape) + y.reshape(-1, *[1] * (len(shape) - 1))).astype(np.float32)
    np.savez(tmp_path / "train.npz", x_train=x[:36], y_train=y[:36])
    np.savez(tmp_path / "new.npz", x=x[36:])
    data = {"dataset": "npz", "path": str(tmp_path / "train.npz"), "layout": layout, "test_split": 0.0}
    run = train(tmp_path, data, {"layers": [{"flatten": {}}, {"dense": {"units": 3, "activation": "softmax"}}]})
    rows = predicted(run, tmp_path / "new.npz")
    sidecar = assert_export_matches_predict(run, tmp_path, x[36:], rows, "float32")
    assert sidecar["layout"] == layout and sidecar["inside_the_graph"].startswith("axes moved")
    assert (
        f"laid out like the training file's x_train. Axes in the order {layout}: N samples"
        in (sidecar["preprocessing_outside_the_graph"])
    )


def test_a_pt2_export_takes_arrays_in_the_training_files_layout_too(tmp_path):
    """torch.export's program, loaded back, moves the axes as the ONNX model does."""
    import torch

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 24)
    x = (rng.normal(size=(24, 3, 4, 5, 2)) + y[:, None, None, None, None]).astype(np.float32)  # NTHWC
    np.savez(tmp_path / "train.npz", x_train=x[:16], y_train=y[:16])
    np.savez(tmp_path / "new.npz", x=x[16:])
    data = {"dataset": "npz", "path": str(tmp_path / "train.npz"), "test_split": 0.0}  # NTHWC: the default
    run = train(tmp_path, data, {"layers": [{"flatten": {}}, {"dense": {"units": 3, "activation": "softmax"}}]})
    out = tmp_path / "pt2" / "model.pt2"
    result = invoke("export", run, "--format", "pt2", "--out", out)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out.parent / "export.json").read_text())
    assert sidecar["layout"] == "NTHWC" and sidecar["input"]["shape"] == ["batch", 3, 4, 5, 2]
    expected = predict_outputs(predicted(run, tmp_path / "new.npz"), sidecar)
    program = torch.export.load(str(out)).module()
    actual = program(torch.from_numpy(x[16:])).detach().numpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("layout", [None, "NHWC"])
def test_image_folder_export_takes_raw_pixels_and_matches_predict(tmp_path, layout):
    """Pictures already at the run's image_size and in its mode: the exported model takes their
    0-255 pixels as PIL decodes them, channels first by default or, with --input-layout NHWC,
    exactly as np.asarray gives them; it scales them itself."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        for label, level in (("dark", 50), ("mid", 120), ("light", 200)):
            (tmp_path / "pics" / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(level, 40, (6, 5, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "pics" / split / label / f"{i}.png")
    data = {"dataset": "image_folder", "root": str(tmp_path / "pics"), "image_size": [6, 5], "channels": 3}
    run = train(tmp_path, data, {"preset": "mlp", "hidden": [8]})
    rows = predicted(run, tmp_path / "pics" / "test")
    x = np.stack([np.asarray(Image.open(r["input"]).convert("RGB")) for r in rows])  # N,H,W,C
    options = ("--input-layout", layout) if layout else ()
    sidecar = assert_export_matches_predict(
        run, tmp_path, x if layout else x.transpose(0, 3, 1, 2), rows, "uint8", *options
    )
    assert sidecar["layout"] == (layout or "NCHW")
    assert sidecar["preprocessing_outside_the_graph"].endswith(
        "Axes in the order NHWC: N samples, H height, W width, C channels."
        if layout
        else "Axes in the order NCHW: N samples, C channels, H height, W width."
    )
    assert sidecar["inside_the_graph"].startswith("axes moved") == bool(layout)


def test_input_layout_that_does_not_fit_the_run_is_refused(tmp_path):
    (tmp_path / "table").mkdir()
    (tmp_path / "image").mkdir()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    rows = [f"{a:.3f},{b:.3f},{'yes' if k else 'no'}" for (a, b), k in zip(rng.normal(size=(40, 2)) + y[:, None], y)]
    (tmp_path / "t.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    table_run = train(
        tmp_path / "table",
        {"dataset": "csv", "path": str(tmp_path / "t.csv"), "target": "label"},
        {"preset": "mlp", "hidden": [4]},
    )
    for layout, words in (
        ("NHWC", "--input-layout NHWC: this run takes samples of 1 axis, not images or clips"),
        ("HWC", "--input-layout must be one of NCHW, NHWC, NCTHW, NTHWC, NTCHW, not 'HWC'."),
    ):
        result = invoke("export", table_run, "--input-layout", layout, "--out", tmp_path / "x" / "m.onnx")
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert words in result.stderr.replace("\n", " "), result.stderr
        assert not (tmp_path / "x").exists()
    x = np.zeros((12, 1, 4, 4), np.uint8)
    np.savez(tmp_path / "i.npz", x_train=x, y_train=np.arange(12) % 2)
    image_run = train(
        tmp_path / "image",
        {"dataset": "npz", "path": str(tmp_path / "i.npz"), "test_split": 0.0},
        {"preset": "mlp", "hidden": [4]},
    )
    result = invoke("export", image_run, "--input-layout", "NTHWC", "--out", tmp_path / "y" / "m.onnx")
    assert result.exit_code == 2
    message = result.stderr.replace("\n", " ")
    assert "--input-layout NTHWC names 5 axes, but this run's inputs have 4 (NCHW in the layers' order)." in message
    assert "Use one of NCHW, NHWC." in message


# ----------------------------------------------------------------------------- tables: multilabel, regression


def write_table(path: Path, x: np.ndarray, targets: dict[str, np.ndarray]) -> None:
    header = ["a", "b", "c", *targets]
    lines = [",".join(header)]
    for i, row in enumerate(x):
        lines.append(",".join([f"{v:.4f}" for v in row] + [f"{t[i]:.4f}" for t in targets.values()]))
    path.write_text("\n".join(lines) + "\n")


def table_features(n: int, seed: int) -> np.ndarray:
    """Three numeric columns on different scales, so the standardisation inside the graph matters."""
    rng = np.random.default_rng(seed)
    return rng.normal([100.0, -5.0, 0.5], [20.0, 3.0, 0.1], (n, 3)).round(4)


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_table_export_matches_predict(tmp_path, task):
    for name, n, seed in (("train", 60, 0), ("test", 20, 1)):
        x = table_features(n, seed)
        z = (x - [100.0, -5.0, 0.5]) / [20.0, 3.0, 0.1]
        if task == "multilabel":
            targets = {"first": (z[:, 0] > 0).astype(float), "second": (z[:, 1] + z[:, 2] > 0).astype(float)}
        else:
            targets = {"sum": x[:, 0] + x[:, 1], "ratio": x[:, 2] * 4 - x[:, 1]}
        write_table(tmp_path / f"{name}.csv", x, targets)
    data = {
        "dataset": "csv",
        "train_path": str(tmp_path / "train.csv"),
        "test_path": str(tmp_path / "test.csv"),
        "target": list(targets),
    }
    run = train(tmp_path, data, {"preset": "mlp", "hidden": [8]})
    rows = predicted(run, tmp_path / "test.csv")
    x = table_features(20, 1).astype(np.float32)
    sidecar = assert_export_matches_predict(run, tmp_path, x, rows, "float32")
    assert sidecar["task"] == task and sidecar["input_names"] == ["a", "b", "c"]
    if task == "multilabel":
        assert sidecar["class_names"] == list(targets)
