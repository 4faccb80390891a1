"""Users' files end to end: the fitted preprocessing saved in the run, used by evaluate, resume,
predict and export without fitting again; predict reproduces evaluate on each kind's test files."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import trained_run, write_config
from dlcli.checkpoint import load_checkpoint
from dlcli.cli import app

runner = CliRunner()
MLP = {"preset": "mlp", "hidden": [8]}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(tmp_path: Path, data: dict, *, epochs: int = 3, model=MLP, name="own") -> Path:
    config = write_config(
        tmp_path / f"{name}.yaml",
        {
            "name": name,
            "seed": 0,
            "device": "cpu",
            "data": data,
            "model": model,
            "optimizer": {"name": "adam", "lr": 0.02},
            "training": {"epochs": epochs, "batch_size": 8},
        },
    )
    return trained_run(config, tmp_path / "runs")


def evaluate(run: Path) -> dict:
    result = invoke("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def predict(*args) -> tuple[list[dict], str]:
    result = invoke("predict", *args)
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout))), result.stderr


def accuracy(rows: list[dict]) -> float:
    return sum(r["correct"] == "true" for r in rows) / len(rows)


def write_table(path: Path, n: int, seed: int, colours=("red", "green")) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["size,weight,colour,label"]
    for _ in range(n):
        size, weight = rng.normal(10, 3), rng.normal(100, 30)
        colour = colours[int(rng.integers(0, len(colours)))]
        label = "big" if size * 10 + weight > 200 else "small"
        lines.append(f"{size:.3f},{weight:.2f},{colour},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("table")
    write_table(tmp / "train.csv", 120, 0)
    write_table(tmp / "test.csv", 40, 1)
    run = train(
        tmp,
        {
            "dataset": "csv",
            "train_path": str(tmp / "train.csv"),
            "test_path": str(tmp / "test.csv"),
            "target": "label",
            "validation_split": 0.2,
        },
    )
    return tmp, run


def test_the_run_folder_and_checkpoints_keep_the_fitted_preprocessing(table_run):
    tmp, run = table_run
    state = json.loads((run / "preprocessing.json").read_text())
    assert state["kind"] == "csv" and state["class_names"] == ["big", "small"]
    assert (run / "classes.txt").read_text() == "big\nsmall\n"
    assert "size: numeric, mean" in (run / "columns.txt").read_text()
    for which in ("last", "best"):
        assert load_checkpoint(run / "checkpoints" / f"{which}.pt")["preprocessing"] == state


def test_predict_on_the_test_file_reproduces_evaluate_exactly(table_run):
    tmp, run = table_run
    rows, err = predict(run, tmp / "test.csv")
    assert len(rows) == 40 and rows[0]["input"] == "test.csv:2"
    assert accuracy(rows) == pytest.approx(evaluate(run)["accuracy"], abs=1e-12)
    assert f"accuracy: {accuracy(rows):.4f}" in err


def test_evaluate_uses_the_saved_statistics_not_a_refit(table_run, tmp_path):
    tmp, run = table_run
    before = evaluate(run)["accuracy"]
    original = (tmp / "train.csv").read_text()
    try:  # the training file changes after training: its statistics must not be fitted again
        lines = original.splitlines()
        (tmp / "train.csv").write_text(
            "\n".join([lines[0]] + [line.replace(",", "0,", 1) for line in lines[1:]]) + "\n"
        )
        assert evaluate(run)["accuracy"] == before
    finally:
        (tmp / "train.csv").write_text(original)


def test_columns_in_any_order_unseen_categories_and_missing_columns(table_run, tmp_path):
    tmp, run = table_run
    (tmp_path / "new.csv").write_text("label,colour,extra,weight,size\nbig,blue,x,180,14\nsmall,red,y,60,5\n")
    rows, err = predict(run, tmp_path / "new.csv", "--json")
    assert "column 'colour' has values never seen in training ('blue')" in err and "unknown slot" in err
    (tmp_path / "bad.csv").write_text("sise,weight,colour\n1,2,red\n")
    result = invoke("predict", run, tmp_path / "bad.csv")
    assert result.exit_code == 2
    assert "lacks the input column 'size' that the model was trained on" in result.output
    assert "Did you mean 'sise'?" in result.output


def test_export_puts_the_standardisation_inside_the_graph(table_run, tmp_path):
    import onnxruntime as ort

    tmp, run = table_run
    out = tmp_path / "table.onnx"
    result = invoke("export", run, "--out", out)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "export.json").read_text())
    from dlcli.data.tabular import UNKNOWN

    assert sidecar["input_names"] == ["size", "weight", "colour=green", "colour=red", f"colour={UNKNOWN}"]
    # Raw values in, probabilities out: the same as predict on the same row.
    (tmp_path / "one.csv").write_text("size,weight,colour\n14,180,red\n")
    rows, _ = predict(run, tmp_path / "one.csv")
    names = sidecar["input_names"]
    raw = np.zeros((1, len(names)), np.float32)
    raw[0, 0], raw[0, 1] = 14, 180
    red = [f["categories"] for f in sidecar["features"] if f["name"] == "colour"][0].index("red")
    raw[0, 2 + red] = 1
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"input": raw})[0]
    p_small = float(rows[0]["p_small"])
    assert probabilities[0, 0] == pytest.approx(p_small, abs=2e-6)  # binary: P(second class)


def test_a_damaged_preprocessing_file_is_a_clear_error(table_run, tmp_path):
    import shutil

    tmp, run = table_run
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    (copy / "preprocessing.json").write_text("{not json")
    result = invoke("train", "--resume", copy, "--set", "training.epochs=5")
    assert result.exit_code == 2 and "preprocessing.json is damaged" in result.output
    assert "never fits the preprocessing again" in result.output and "Traceback" not in result.output


def image_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name, level in (("2", 40), ("10", 200), ("cat", 120)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 20, (10, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder_predict_on_its_test_folder_reproduces_evaluate(tmp_path):
    image_folder(tmp_path / "pics" / "train", 8, 0)
    image_folder(tmp_path / "pics" / "test", 4, 1)
    run = train(
        tmp_path, {"dataset": "image_folder", "root": str(tmp_path / "pics"), "image_size": [8, 8], "channels": 1}
    )
    assert (run / "classes.txt").read_text() == "2\n10\ncat\n"  # natural order
    rows, _ = predict(run, tmp_path / "pics" / "test")
    assert len(rows) == 12 and {r["true"] for r in rows} == {"2", "10", "cat"}
    assert accuracy(rows) == pytest.approx(evaluate(run)["accuracy"], abs=1e-12)
    result = invoke("export", run, "--format", "pt2", "--out", tmp_path / "m.pt2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "export.json").read_text())["input"] == {
        "name": "x",
        "shape": ["batch", 1, 8, 8],
        "dtype": "uint8",
    }


def test_text_folder_predict_on_its_test_folder_reproduces_evaluate(tmp_path):
    for split, n in (("train", 10), ("test", 5)):
        for label, words in (("neg", "bad awful dull"), ("pos", "good great fine")):
            folder = tmp_path / "texts" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.txt").write_text(f"{words.split()[i % 3]} film {i}")
    run = train(
        tmp_path,
        {"dataset": "text_folder", "root": str(tmp_path / "texts"), "num_words": 20},
        model={"preset": "binary", "hidden": [4]},
        epochs=5,
    )
    assert "good" in (run / "vocab.txt").read_text().split()
    rows, _ = predict(run, tmp_path / "texts" / "test")
    assert len(rows) == 10
    assert accuracy(rows) == pytest.approx(evaluate(run)["accuracy"], abs=1e-12)
    rows, _ = predict(run, "--text", "A good, GOOD film")
    assert rows[0]["input"] == "--text" and rows[0]["predicted"] in ("neg", "pos")


def test_predict_refuses_a_run_whose_preprocessing_is_missing_or_damaged(table_run, tmp_path):
    import shutil

    tmp, run = table_run
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    (copy / "preprocessing.json").unlink()
    for which in ("best", "last"):  # the checkpoints' own copies go too: nothing is left to read
        path = copy / "checkpoints" / f"{which}.pt"
        state = torch.load(path, weights_only=True)
        state["preprocessing"] = None
        torch.save(state, path)
    result = invoke("predict", copy, tmp / "test.csv")
    assert result.exit_code == 2 and "has no saved preprocessing (preprocessing.json)" in result.output
    (copy / "preprocessing.json").write_text("[1, 2]")
    result = invoke("predict", copy, tmp / "test.csv")
    assert result.exit_code == 2 and "preprocessing.json is damaged" in result.output
    assert "Traceback" not in result.output


def test_regression_predictions_give_the_values_and_the_error(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["a,b,y"] + [f"{a:.3f},{b:.3f},{2 * a - b:.3f}" for a, b in rng.normal(size=(80, 2))]
    (tmp_path / "train.csv").write_text("\n".join(lines[:61]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0]] + lines[61:]) + "\n")
    run = train(
        tmp_path,
        {
            "dataset": "csv",
            "train_path": str(tmp_path / "train.csv"),
            "test_path": str(tmp_path / "test.csv"),
            "target": "y",
        },
        epochs=20,
    )
    rows, err = predict(run, tmp_path / "test.csv")
    assert list(rows[0]) == ["input", "predicted", "true"] and len(rows) == 20
    mae = sum(abs(float(r["predicted"]) - float(r["true"])) for r in rows) / len(rows)
    assert f"mean absolute error: {mae:.4f}" in err
    assert mae == pytest.approx(evaluate(run)["mae"], abs=1e-4)  # the CSV rounds to 6 significant digits
