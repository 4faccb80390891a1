"""Every bad case of users' files through `dlcli train`: one paragraph on stderr, exit code 2,
no run folder started."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import write_config
from dlcli.cli import app

runner = CliRunner()
MODEL = {"preset": "mlp", "hidden": [4]}


def csv_case(tmp_path: Path, text: bytes, **data) -> tuple[dict, Path]:
    path = tmp_path / "t.csv"
    path.write_bytes(text)
    return {"dataset": "csv", "path": str(path), "target": "label", **data}, path


def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (4, 4), 50 * i).save(root / name / f"{i}.png")
    return root


def truncated(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])
    return path


def texts(tmp_path: Path) -> Path:
    root = tmp_path / "texts"
    for name, words in (("neg", "bad awful"), ("pos", "good great")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.txt").write_text(f"{words} {i}")
    return root


def missing_cell(tmp_path):
    data, path = csv_case(tmp_path, b"a,b,label\n1,,p\n2,3,q\n")
    return data, (
        f"{path}, line 2, column 'b': the cell is empty (or a missing-value marker such as NA); 1 cell is "
        "missing in all. Fill it in, or set data.missing to mean (fill with the training mean), zero, or "
        "drop_rows."
    )


def ragged_row(tmp_path):
    data, path = csv_case(tmp_path, b'a,b,label\n1,"2,5",p\n2,3,4,q\n')
    return data, (
        f"{path}, line 3: 4 fields, but the header has 3 columns. Every row needs 3 fields; a field that "
        "contains ',' must be in double quotes."
    )


def text_in_numbers(tmp_path):
    data, path = csv_case(tmp_path, b"a,b,label\n1,2,p\n3,4,q\n5,n/a?,p\n7,8,q\n", test_split=0.0)
    return data, (
        f"{path}, line 4, column 'b': 'n/a?' is not a number, but 'b' is a numeric column. Correct the "
        "cell, mark it missing (leave it empty), or set data.column_types: {b: categorical}."
    )


def latin1_csv(tmp_path):
    data, path = csv_case(tmp_path, "a,label\n1,\u00e9t\u00e9\n".encode("latin-1"))
    return data, (
        f"{path}, line 2: the file is not UTF-8 text (byte 0xe9 at offset 10). Save it as UTF-8 (in a "
        "spreadsheet: 'CSV UTF-8')."
    )


def unknown_label(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("a,label\n1,p\n2,q\n3,p\n4,q\n")
    test.write_text("a,label\n1,P\n")
    data = {"dataset": "csv", "train_path": str(train), "test_path": str(test), "target": "label"}
    return data, (
        f"{test}, line 2, column 'label': the label 'P' is not one of the classes seen in training: p, q. "
        "Correct the label, or train with data that has this class."
    )


def unknown_target(tmp_path):
    data, path = csv_case(tmp_path, b"a,kind\n1,p\n2,q\n")
    return data, f"data.target: {path} has no column 'label'; its columns are: a, kind."


def truncated_image(tmp_path):
    root = images(tmp_path)
    bad = truncated(root / "b" / "x.jpg")
    return {"dataset": "image_folder", "root": str(root)}, (
        f"Cannot read the image {bad}: the file is truncated (Truncated File Read). "
        "Replace or delete the file, or set data.on_bad_file: skip to leave unreadable files out."
    )


def empty_class(tmp_path):
    root = images(tmp_path)
    (root / "c").mkdir()
    (root / "c" / "._0.png").write_bytes(b"AppleDouble")
    return {"dataset": "image_folder", "root": str(root)}, (
        f"The class folder {root / 'c'} holds no images (PNG, JPEG, BMP, GIF or WebP). Add files to it, remove it, "
        "or list the classes to use in data.class_names."
    )


def one_class(tmp_path):
    root = images(tmp_path)
    for path in (root / "b").iterdir():
        path.unlink()
    (root / "b").rmdir()
    return {"dataset": "image_folder", "root": str(root)}, (
        f"{root} has only the class folder 'a'; a classifier needs at least two, one folder of images (PNG, JPEG, "
        "BMP, GIF or WebP) per class. Lay the files out as root/<class>/<file> (or root/train/<class>/<file> with "
        "test/ beside it)."
    )


def too_big(tmp_path):
    root = images(tmp_path)
    data = {"dataset": "image_folder", "root": str(root), "image_size": [200_000, 200_000], "channels": 3}
    return {**data, "cache": "memory"}, (
        "The 6 images would need 670.6 GB of memory as uint8 tensors (3x200000x200000 each), more than 80% of the "
    )


def latin1_text(tmp_path):
    root = texts(tmp_path)
    bad = root / "pos" / "x.txt"
    bad.write_bytes(b"na\xefve")
    return {"dataset": "text_folder", "root": str(root), "num_words": 10}, (
        f"Cannot read the text file {bad}: not UTF-8 text (byte 0xef at offset 2). Save it as UTF-8, delete it, or "
        "set data.on_bad_file: skip to leave unreadable files out."
    )


def misspelt_class(tmp_path):
    root = texts(tmp_path)
    return {"dataset": "text_folder", "root": str(root), "class_names": ["neg", "post"]}, (
        f"data.class_names: {root} has no class folder 'post'; it has: neg, pos. Did you mean 'pos'?"
    )


CASES = [
    missing_cell,
    ragged_row,
    text_in_numbers,
    latin1_csv,
    unknown_label,
    unknown_target,
    truncated_image,
    empty_class,
    one_class,
    too_big,
    latin1_text,
    misspelt_class,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_users_data_is_one_paragraph_and_exit_code_2(tmp_path, case):
    data, message = case(tmp_path)
    model = MODEL
    if case is too_big:  # a model whose weights fit, for images this size
        model = {
            "layers": [
                {"conv2d": {"filters": 1, "kernel_size": 1}},
                {"maxpool2d": {"pool_size": 100_000}},
                {"flatten": {}},
                {"dense": {"units": 1, "activation": "sigmoid"}},
            ]
        }
    config = write_config(
        tmp_path / "c.yaml", {"data": data, "model": model, "device": "cpu", "training": {"epochs": 1}}
    )
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    output = result.stderr.replace("\n", " ").strip()  # standard output may show the loading progress
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    if case is too_big:  # the memory available differs by machine
        assert output.startswith("Error: " + message) and output.endswith(
            " available. Use data.cache: disk (needs 670.6 GB free on disk), a smaller data.image_size, "
            "data.channels: 1, or fewer images (data.max_train_samples)."
        )
    else:
        assert output == "Error: " + message
    assert not runs.exists() or not any(runs.iterdir())
