"""Users' files end to end: the fitted preprocessing saved in the run, used by evaluate, resume,
predict and export without fitting again; predict reproduces evaluate on each kind's test files."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import trained_run, write_config
from dlcli.checkpoint import load_checkpoint
from dlcli.cli import app
from dlcli.data import load_dataset
from dlcli.plan import load_run_config

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


def copy_reading(run: Path, tmp_path: Path, trained_on: Path, now: Path) -> Path:
    """A copy of RUN whose config names the data file or folder NOW where it named TRAINED_ON."""
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    text = (copy / "config.yaml").read_text()
    assert str(trained_on) in text
    (copy / "config.yaml").write_text(text.replace(str(trained_on), str(now)))
    return copy


def test_evaluate_uses_the_saved_statistics_not_a_refit(table_run, tmp_path):
    tmp, run = table_run
    lines = (tmp / "train.csv").read_text().splitlines()
    ten_times = [f"{float(line.split(',')[0]) * 10:.2f},{line.split(',', 1)[1]}" for line in lines[1:]]
    (tmp_path / "train.csv").write_text("\n".join([lines[0], *ten_times]) + "\n")
    changed = copy_reading(run, tmp_path, tmp / "train.csv", tmp_path / "train.csv")
    saved = json.loads((run / "preprocessing.json").read_text())["features"][0]
    refitted = load_dataset(load_run_config(changed).data, seed=0).preprocessing["features"][0]
    assert saved["name"] == refitted["name"] == "size"
    assert refitted["mean"] == pytest.approx(10 * saved["mean"], rel=1e-3)  # what a refit would standardise with
    # The test file is unchanged: with the saved statistics its loss is too, to the last digit.
    assert evaluate(changed) == evaluate(run)


def test_a_training_file_with_other_rows_is_refused_as_its_splits_would_differ(table_run, tmp_path):
    tmp, run = table_run
    lines = (tmp / "train.csv").read_text().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:50] + lines[51:]) + "\n")
    changed = copy_reading(run, tmp_path, tmp / "train.csv", tmp_path / "train.csv")
    result = invoke("evaluate", changed)
    assert (result.exit_code, result.output) == (
        2,
        f"Error: {tmp_path / 'train.csv'} has 119 rows, but had 120 when this run was trained; its splits would "
        "differ. Use the file the run was trained on.\n",
    )


def test_columns_in_any_order_unseen_categories_and_missing_columns(table_run, tmp_path):
    tmp, run = table_run
    (tmp_path / "new.csv").write_text("label,colour,extra,weight,size\nbig,blue,x,180,14\nsmall,red,y,60,5\n")
    result = invoke("predict", run, tmp_path / "new.csv", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert "column 'colour' has values never seen in training ('blue')" in result.stderr
    assert "unknown slot" in result.stderr
    # Read by name: the same rows in the training order, with another unseen colour, predict the same.
    (tmp_path / "same.csv").write_text("size,weight,colour\n14,180,purple\n5,60,red\n")
    result = invoke("predict", run, tmp_path / "same.csv", "--json")
    assert result.exit_code == 0, result.output
    same = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in rows] == ["new.csv:2", "new.csv:3"]
    assert [(r["p_big"], r["p_small"]) for r in rows] == [(r["p_big"], r["p_small"]) for r in same]
    assert [r["true"] for r in rows] == ["big", "small"] and "true" not in same[0]
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
    (tmp_path / "pics" / "train" / "cat" / "3.png").unlink()
    result = invoke("evaluate", run)
    assert (result.exit_code, result.output) == (
        2,
        f"Error: {tmp_path / 'pics'} holds 23 training images, but held 24 when this run was trained; its splits "
        "would differ. Use the folder the run was trained on.\n",
    )
    result = invoke("export", run, "--format", "pt2", "--out", tmp_path / "m.pt2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "export.json").read_text())["input"] == {
        "name": "x",
        "shape": ["batch", 1, 8, 8],
        "dtype": "uint8",
    }


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    for split, n in (("train", 10), ("test", 5)):
        for label, words in (("neg", "bad awful dull"), ("pos", "good great fine")):
            folder = tmp / "texts" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.txt").write_text(f"{words.split()[i % 3]} film {i}")
    run = train(
        tmp,
        {"dataset": "text_folder", "root": str(tmp / "texts"), "num_words": 20},
        model={"preset": "binary", "hidden": [4]},
        epochs=5,
    )
    return tmp, run


def test_text_folder_predict_on_its_test_folder_reproduces_evaluate(text_run):
    tmp, run = text_run
    assert "good" in (run / "vocab.txt").read_text().split()
    rows, _ = predict(run, tmp / "texts" / "test")
    assert len(rows) == 10
    assert accuracy(rows) == pytest.approx(evaluate(run)["accuracy"], abs=1e-12)


def test_a_text_from_the_command_line_standard_input_or_a_file_predicts_alike(text_run, tmp_path):
    tmp, run = text_run
    review = "A good, GOOD film"
    (tmp_path / "review.txt").write_text(review)
    from_option, _ = predict(run, "--text", review)
    result = runner.invoke(app, ["predict", str(run), "-"], input=review)
    assert result.exit_code == 0, result.output
    from_stdin = list(csv.DictReader(io.StringIO(result.stdout)))
    from_file, _ = predict(run, tmp_path / "review.txt")
    empty, _ = predict(run, "--text", "")
    negative, _ = predict(run, "--text", "bad awful dull film")
    assert [r["input"] for r in from_option + from_stdin] == ["--text", "-"]
    assert from_stdin[0]["p_pos"] == from_option[0]["p_pos"] == from_file[0]["p_pos"] != empty[0]["p_pos"]
    assert (from_stdin[0]["predicted"], negative[0]["predicted"]) == ("pos", "neg")


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


def test_multilabel_predictions_give_each_labels_probability_and_those_over_one_half(tmp_path):
    from dlcli.data.tabular import encode_table
    from dlcli.loading import load_run

    rng = np.random.default_rng(0)
    lines = ["a,b,p,q"] + [f"{a:.3f},{b:.3f},{int(a > 0)},{int(b > 0)}" for a, b in rng.normal(size=(100, 2))]
    (tmp_path / "train.csv").write_text("\n".join(lines[:81]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *lines[81:]]) + "\n")
    data = {"dataset": "csv", "train_path": str(tmp_path / "train.csv"), "test_path": str(tmp_path / "test.csv")}
    run = train(tmp_path, {**data, "target": ["p", "q"]}, epochs=3)
    rows, err = predict(run, tmp_path / "test.csv")
    assert list(rows[0]) == ["input", "predicted", "p_p", "p_q", "true", "correct"] and len(rows) == 20
    # Each label's own sigmoid (they need not sum to 1), from the model run here on the encoded file.
    loaded = load_run(run, "best", "cpu")
    x, truth = encode_table(loaded.preprocessing, tmp_path / "test.csv")
    assert loaded.plan.model_plan.absorbed_activation
    with torch.no_grad():
        expected = torch.sigmoid(loaded.model(x)).numpy()
    np.testing.assert_allclose([[float(r["p_p"]), float(r["p_q"])] for r in rows], expected, atol=2e-6)
    for row, probabilities, labels in zip(rows, expected, truth.tolist()):
        chosen = [name for name, p in zip("pq", probabilities) if p > 0.5]
        true = [name for name, on in zip("pq", labels) if on]
        assert (row["predicted"], row["true"]) == (";".join(chosen), ";".join(true))
        assert row["correct"] == str(chosen == true).lower()
    assert {r["predicted"] for r in rows} == {"", "p", "q", "p;q"}
    correct = sum(r["correct"] == "true" for r in rows)
    assert f"accuracy: {correct / 20:.4f} ({correct}/20 inputs with labels)" in err


def test_file_names_that_are_not_utf8_are_written_escaped_and_said(text_run, tmp_path):
    """A name with a Latin-1 byte crashed predict with UnicodeEncodeError, printing and in --out."""
    import os
    import subprocess
    import sys

    tmp, run = text_run
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / "good.txt").write_text("good film")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "w") as fh:  # a name no UTF-8 can hold
        fh.write("bad film")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # a UTF-8 terminal, strict as terminals are
    out = tmp_path / "predictions.csv"
    printed = b""
    for args in ([], ["--out", str(out)]):
        proc = subprocess.run(
            [sys.executable, "-m", "dlcli", "predict", str(run), str(folder), *args],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert b"Traceback" not in proc.stderr
        assert b"written with \\xNN escapes" in proc.stderr
        printed = printed or proc.stdout
    escaped_name = str(folder) + "/caf\\xe9.txt"
    assert escaped_name.encode() in printed
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert sorted(r["input"] for r in rows) == sorted([str(folder / "good.txt"), escaped_name])


def test_an_error_naming_a_file_that_is_not_utf8_prints(text_run, tmp_path):
    import os
    import subprocess
    import sys

    tmp, run = text_run
    missing = os.path.join(os.fsencode(tmp_path), b"r\xe9sum\xe9.txt").decode("utf-8", "surrogateescape")
    proc = subprocess.run(
        [sys.executable, "-m", "dlcli", "predict", str(run), missing],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=120,
    )
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert b"r\\xe9sum\\xe9.txt does not exist" in proc.stderr
