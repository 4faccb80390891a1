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
    # The probabilities are the softmax of the model's outputs on the images scaled to [0, 1].
    from dlcli.loading import load_run

    loaded = load_run(run, "best", "cpu")
    images = torch.from_numpy(read_idx(tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz")).unsqueeze(1)
    with torch.no_grad():
        expected = torch.softmax(loaded.model(images.float() / 255.0), 1).numpy()
    assert loaded.plan.model_plan.absorbed_activation  # the model ends in logits; predict adds the softmax
    probabilities = np.array([[float(r[f"p_{k}"]) for k in range(10)] for r in rows])
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)  # the CSV keeps 6 significant digits
    assert [r["predicted"] for r in rows] == [str(k) for k in expected.argmax(1)]
    assert [float(r["probability"]) for r in rows] == pytest.approx(expected.max(1).tolist(), abs=2e-6)


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


def test_invert_turns_dark_on_light_images_into_the_light_on_dark_the_model_learned(mnist_run, tmp_path):
    tmp, run = mnist_run
    idx = tmp / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
    for i, image in enumerate(read_idx(idx)[:6]):
        Image.fromarray(255 - image).save(tmp_path / f"{i}.png")  # lossless: the exact negative
    idx_rows, _ = predicted_rows(run, idx)
    inverted, _ = predicted_rows(run, tmp_path, "--invert")
    as_given, _ = predicted_rows(run, tmp_path)

    def probabilities(rows):
        return np.array([[float(r[f"p_{k}"]) for k in range(10)] for r in rows])

    np.testing.assert_allclose(probabilities(inverted), probabilities(idx_rows[:6]), atol=2e-6)
    assert np.abs(probabilities(as_given) - probabilities(idx_rows[:6])).max() > 0.05


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
    assert set(sidecar["verified"]["max_abs_difference"]) == {"1", "3"}  # the batch sizes the output names
    assert "Verified at batch sizes 1 and 3" in result.output
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


def test_checkpoint_last_predicts_and_evaluates_with_the_last_epochs_weights(tmp_path):
    from dlcli.checkpoint import load_checkpoint, unwrap_model
    from dlcli.loading import load_run
    from dlcli.predict import Inputs, predict_inputs

    # Validation accuracy is already 1.0 after the first epoch and cannot improve on it, so
    # best.pt keeps epoch 1 while training goes on for two more epochs into last.pt.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.5, 0.5])  # three classes, pulled apart by a wide margin
    x[:, 0] += 3.0 * (y - 1)
    np.savez(tmp_path / "wide.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    config = synthetic_config(epochs=3, batch_size=8, monitor="val_accuracy")
    config["data"] = {"dataset": "npz", "path": str(tmp_path / "wide.npz"), "validation_split": 0.25}
    config["optimizer"]["lr"] = 0.05
    run = train_run(tmp_path, config)
    best, last = (load_checkpoint(run / "checkpoints" / f"{c}.pt") for c in ("best", "last"))
    assert (best["epoch"], last["epoch"]) == (1, 3)

    # What the last epoch's weights give, loaded here by hand.
    loaded = load_run(run, "best", "cpu")
    unwrap_model(loaded.model).load_state_dict(last["model"])
    x_test = torch.from_numpy(x[60:])
    expected = predict_inputs(loaded, Inputs([str(i) for i in range(20)], x_test)).probabilities.numpy()

    def probabilities(rows):
        return np.array([[float(r[f"p_{k}"]) for k in range(expected.shape[1])] for r in rows])

    rows_last, _ = predicted_rows(run, tmp_path / "wide.npz", "--checkpoint", "last")
    rows_best, _ = predicted_rows(run, tmp_path / "wide.npz")
    np.testing.assert_allclose(probabilities(rows_last), expected, atol=2e-6)
    assert np.abs(probabilities(rows_best) - expected).max() > 1e-3

    evaluated = {}
    for which in ("best", "last"):
        result = invoke("evaluate", run, "--checkpoint", which, "--json")
        assert result.exit_code == 0, result.output
        evaluated[which] = json.loads(result.output)
    assert (evaluated["best"]["epoch"], evaluated["last"]["epoch"]) == (1, 3)
    cross_entropy = -np.log(expected[np.arange(20), y[60:]]).mean()
    assert evaluated["last"]["loss"] == pytest.approx(cross_entropy, rel=1e-5)
    assert evaluated["best"]["loss"] > 2 * evaluated["last"]["loss"]


def test_a_binary_run_with_two_softmax_units_predicts_as_it_evaluates(tmp_path):
    # predict took the first of the two softmax units as the positive class's logit.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    np.savez(tmp_path / "two.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    config = synthetic_config(epochs=2, batch_size=8)  # loss: sparse_categorical_crossentropy
    config["data"] = {"dataset": "npz", "path": str(tmp_path / "two.npz")}
    run = train_run(tmp_path, config)
    rows, _ = predicted_rows(run, tmp_path / "two.npz")
    assert sum(r["correct"] == "true" for r in rows) / 20 == pytest.approx(evaluated_accuracy(run), abs=1e-12)
    exported = invoke("export", run, "--format", "pt2")  # its sidecar describes the two softmax outputs
    assert exported.exit_code == 0, exported.output
    sidecar = json.loads((run / "export" / "pt2" / "export.json").read_text())
    assert sidecar["output"]["shape"] == ["batch", 2] and "softmax" in sidecar["output"]["meaning"]
