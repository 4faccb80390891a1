"""dlcli predict and export: predictions reproduce evaluation exactly, exports reproduce the model."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import make_imdb_npz, synthetic_config, trained_run, write_config
from dlcli.cli import app
from dlcli.data.imdb import encode_review
from dlcli.data.vision import read_idx

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train_run(tmp_path: Path, config: dict) -> Path:
    return trained_run(write_config(tmp_path / f"{config['name']}.yaml", config), tmp_path / "runs")


def evaluated_accuracy(run: Path) -> float:
    result = invoke("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["accuracy"]


def predicted_rows(*args) -> tuple[list[dict], str]:
    result = invoke("predict", *args)
    assert result.exit_code == 0, result.output
    text = result.stdout
    return list(csv.DictReader(io.StringIO(text))), result.stderr


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    from conftest import make_idx_dataset

    tmp = tmp_path_factory.mktemp("mnist")
    make_idx_dataset(tmp / "data" / "mnist", n_train=200, n_test=60)
    config = {
        "name": "digits",
        "seed": 0,
        "device": "cpu",
        "data": {"dataset": "mnist", "root": str(tmp / "data"), "download": False},
        "model": {"preset": "cnn", "filters": [4], "dropout": 0.0},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 1, "batch_size": 32},
    }
    return tmp, train_run(tmp, config)


def test_predict_on_the_idx_test_files_reproduces_evaluate(mnist_run):
    tmp, run = mnist_run
    rows, err = predicted_rows(run, tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert len(rows) == 60
    acc = sum(r["correct"] == "true" for r in rows) / len(rows)
    assert acc == pytest.approx(evaluated_accuracy(run), abs=1e-12)
    assert f"accuracy: {acc:.4f} ({sum(r['correct'] == 'true' for r in rows)}/60" in err
    assert list(rows[0])[:4] == ["input", "predicted", "probability", "p_0"]
    probabilities = [float(rows[0][f"p_{k}"]) for k in range(10)]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert float(rows[0]["probability"]) == max(probabilities)


def test_predict_on_png_files_by_class_equals_the_idx_run_and_keeps_input_order(mnist_run, tmp_path):
    tmp, run = mnist_run
    images = read_idx(tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(tmp / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz")
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "png" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "png" / str(label) / f"{i:03d}.png")
    (tmp_path / "png" / "._hidden.png").write_bytes(b"not an image")  # macOS litter is ignored
    rows, _ = predicted_rows(run, tmp_path / "png")
    idx_rows, _ = predicted_rows(run, tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    by_index = {int(Path(r["input"]).stem): r for r in rows}
    assert len(rows) == 60 and [r["input"] for r in rows] == sorted(r["input"] for r in rows)
    for i, idx_row in enumerate(idx_rows):
        assert by_index[i]["predicted"] == idx_row["predicted"]
        assert by_index[i]["true"] == idx_row["true"]
        assert float(by_index[i]["probability"]) == pytest.approx(float(idx_row["probability"]), abs=1e-6)


def test_predict_converts_any_photo_and_marks_bad_files(mnist_run, tmp_path):
    tmp, run = mnist_run
    images = read_idx(tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    # A dark-on-light RGB photo at another size: grayscale, resize and --invert make it MNIST-like.
    Image.fromarray(255 - images[0]).convert("RGB").resize((84, 84), Image.NEAREST).save(
        tmp_path / "photo.jpg", quality=95
    )
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = invoke("predict", run, tmp_path / "photo.jpg", tmp_path / "broken.png")
    assert result.exit_code == 2
    assert f"Error: {tmp_path / 'broken.png'} cannot be decoded as an image" in result.output
    assert "--skip-bad" in result.output and "Traceback" not in result.output
    rows, err = predicted_rows(
        run, tmp_path / "photo.jpg", tmp_path / "broken.png", "--skip-bad", "--invert", "--top-k", "3"
    )
    assert [r["input"] for r in rows] == [str(tmp_path / "photo.jpg"), str(tmp_path / "broken.png")]
    assert rows[0]["error"] == "" and rows[0]["top1"] == rows[0]["predicted"]
    assert (
        float(rows[0]["top1_probability"]) >= float(rows[0]["top2_probability"]) >= float(rows[0]["top3_probability"])
    )
    assert rows[1]["predicted"] == "" and "cannot be decoded" in rows[1]["error"]
    assert "1 of 2 inputs could not be read" in err


def test_predict_json_lines_and_out_file(mnist_run, tmp_path):
    tmp, run = mnist_run
    idx = tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    result = invoke("predict", run, idx, "--json", "--out", tmp_path / "p.jsonl", "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 60 and lines[0]["input"] == "t10k-images-idx3-ubyte.gz[0]"
    assert isinstance(lines[0]["correct"], bool)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--top-k", "11"], "--top-k 11 is more than this run's 10 classes"),
        (["--out", "."], "is a folder"),
        (["--checkpoint", "middle"], "--checkpoint must be best or last"),
    ],
)
def test_predict_bad_options(mnist_run, args, words):
    tmp, run = mnist_run
    result = invoke("predict", run, tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz", *args)
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


def test_predict_empty_input_and_run_without_checkpoint(mnist_run, tmp_path):
    tmp, run = mnist_run
    (tmp_path / "empty").mkdir()
    result = invoke("predict", run, tmp_path / "empty")
    assert result.exit_code == 2 and "hold nothing to predict on" in result.output
    result = invoke("predict", run)
    assert result.exit_code == 2 and "No input was given" in result.output
    unfinished = tmp_path / "runs" / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    result = invoke("predict", unfinished, tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert result.exit_code == 2
    assert "best.pt does not exist" in result.output and "before its first epoch ended" in result.output


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_is_self_contained_and_matches_predict(mnist_run, tmp_path, fmt):
    tmp, run = mnist_run
    out = tmp_path / f"digits.{fmt}"
    result = invoke("export", run, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "export.json").read_text())
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["input"]["shape"] == ["batch", 1, 28, 28]
    assert sidecar["class_names"] == [str(k) for k in range(10)]
    assert "grayscale" in sidecar["preprocessing_outside_the_graph"]
    assert all(d <= 1e-5 for d in sidecar["verified"]["max_abs_difference"].values())
    images = torch.from_numpy(read_idx(tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")[:7]).unsqueeze(1)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        probabilities = session.run(None, {"input": images.numpy()})[0]
    else:
        probabilities = torch.export.load(str(out)).module()(images).detach().numpy()
    rows, _ = predicted_rows(run, tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")
    expected = np.array([[float(r[f"p_{k}"]) for k in range(10)] for r in rows[:7]])
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)  # the CSV keeps 6 significant digits


def test_export_refuses_a_folder_and_a_mismatch(mnist_run, tmp_path):
    from dlcli.errors import DlcliError
    from dlcli.export import check_close

    tmp, run = mnist_run
    result = invoke("export", run, "--out", tmp_path)
    assert result.exit_code == 2 and f"--out {tmp_path} is a folder" in result.output
    result = invoke("export", run, "--format", "torchscript")
    assert result.exit_code == 2 and "onnx or pt2" in result.output
    with pytest.raises(DlcliError, match="largest difference at batch 3 is 0.001"):
        check_close(np.zeros((3, 2)), np.full((3, 2), 1e-3), 3, "onnx")


def test_predict_imdb_from_keras_npz_reproduces_evaluate_and_reads_text(tmp_path):
    root = tmp_path / "data"
    make_imdb_npz(root / "imdb.npz")
    config = {
        "name": "reviews",
        "seed": 0,
        "device": "cpu",
        "data": {"dataset": "imdb", "root": str(root), "num_words": 50, "download": False},
        "model": {"preset": "binary", "hidden": [8]},
        "optimizer": {"name": "rmsprop", "lr": 0.01},
        "training": {"epochs": 2, "batch_size": 16},
    }
    run = train_run(tmp_path, config)
    rows, _ = predicted_rows(run, root / "imdb.npz")
    assert len(rows) == 30
    assert sum(r["correct"] == "true" for r in rows) / 30 == pytest.approx(evaluated_accuracy(run), abs=1e-12)
    # New text through Keras's word index: ranks + 3, start 1, unknown or too rare 2.
    (root / "imdb_word_index.json").write_text(json.dumps({"great": 2, "film": 4, "the": 1, "rare": 60}))
    assert encode_review(
        "The film<br />was GREAT, rare!", {"great": 2, "film": 4, "the": 1, "rare": 60}, 50
    ).tolist() == [1, 4, 7, 2, 5, 2]
    (tmp_path / "reviews" / "pos").mkdir(parents=True)
    (tmp_path / "reviews" / "pos" / "a.txt").write_text("A great film.")
    (tmp_path / "reviews" / "neg").mkdir(parents=True)
    (tmp_path / "reviews" / "neg" / "b.txt").write_bytes("Caf\xe9".encode("latin-1"))
    result = invoke("predict", run, tmp_path / "reviews")
    assert result.exit_code == 2 and "b.txt is not UTF-8 text" in result.output
    (tmp_path / "reviews" / "neg" / "b.txt").write_text("the film")
    rows, err = predicted_rows(run, tmp_path / "reviews", "--text", "great great film")
    assert [Path(r["input"]).name for r in rows] == ["--text", "b.txt", "a.txt"]
    assert rows[0]["true"] == "" and rows[1]["true"] == "negative" and rows[2]["true"] == "positive"
    assert list(rows[0])[:5] == ["input", "predicted", "probability", "p_negative", "p_positive"]


def test_predict_npz_run_reproduces_evaluate(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    np.savez(tmp_path / "arrays.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    config = synthetic_config()
    config["data"] = {"dataset": "npz", "path": str(tmp_path / "arrays.npz")}
    run = train_run(tmp_path, config)
    rows, _ = predicted_rows(run, tmp_path / "arrays.npz")
    assert len(rows) == 30
    assert sum(r["correct"] == "true" for r in rows) / 30 == pytest.approx(evaluated_accuracy(run), abs=1e-12)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 5), np.float32))
    result = invoke("predict", run, tmp_path / "wrong.npz")
    assert result.exit_code == 2 and "samples of shape (5,), but this run's model takes (6,)" in result.output
