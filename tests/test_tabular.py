"""data.dataset: csv — reading, type inference, fitting on the training split, encoding, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_config
from dlcli.cli import app
from dlcli.config import DataConfig, data_config
from dlcli.data import dataset_info, load_dataset
from dlcli.data.preprocessing import preprocessing_files, state_json
from dlcli.data.splits import stratified_order
from dlcli.data.tabular import encode_table, info_from_state, read_table
from dlcli.errors import ConfigError, DataError

runner = CliRunner()


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def csv_config(path, **options) -> DataConfig:
    return data_config(dataset="csv", path=str(path), **options)


MIXED = """\
height,color,member,score,label
1.0,red,yes,10,cat
2.0,blue,no,20,dog
3.0,red,yes,30,cat
4.0,green,no,40,dog
5.0,blue,yes,50,cat
6.0,red,no,60,dog
7.0,green,yes,70,cat
8.0,blue,no,80,dog
9.0,red,yes,90,cat
10.0,green,no,100,dog
"""


def test_columns_are_typed_scaled_and_one_hot_from_the_training_split(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    data = load_dataset(csv_config(path, target="label", test_split=0.2), seed=0)
    state = data.preprocessing
    assert [(s["name"], s["type"]) for s in state["features"]] == [
        ("height", "numeric"),
        ("color", "categorical"),
        ("member", "boolean"),
        ("score", "numeric"),
    ]
    assert state["task"] == "binary" and state["class_names"] == ["cat", "dog"]
    assert state["input_names"] == [
        "height",
        "color=blue",
        "color=green",
        "color=red",
        "color=<unknown>",
        "member",
        "score",
    ]
    assert state["split"] == {
        "seed": 0,
        "file_rows": 10,
        "dropped_rows": 0,
        "train": 8,
        "val": 0,
        "test": 2,
        "stratified": True,
        "test_file": None,
    }
    # The mean and std are the training rows' only (population std, as scikit-learn's StandardScaler).
    train_rows = data.x_train.shape[0]
    assert train_rows == 8 and data.x_test.shape == (2, 7)
    heights = set(range(1, 11))
    test_heights = {
        round(float(h)) for h in data.x_test[:, 0] * state["features"][0]["std"] + state["features"][0]["mean"]
    }
    train_heights = sorted(heights - test_heights)
    assert state["features"][0]["mean"] == pytest.approx(np.mean(train_heights))
    assert state["features"][0]["std"] == pytest.approx(np.std(train_heights))
    assert data.x_train[:, 0].mean().item() == pytest.approx(0.0, abs=1e-6)
    # one-hot rows have exactly one 1 among the color slots; booleans are 0/1 unscaled
    assert torch.equal(data.x_train[:, 1:5].sum(1), torch.ones(8))
    assert set(data.x_train[:, 5].tolist()) == {0.0, 1.0}
    assert data.info.input_shape == (7,) and data.info.num_classes == 2
    assert data.info.class_names == ("cat", "dog") and data.x_train.dtype == torch.float32


def test_an_unseen_category_in_the_test_file_takes_the_unknown_slot(tmp_path):
    train = write(tmp_path / "train.csv", MIXED)
    test = write(tmp_path / "test.csv", "height,color,member,score,label\n5.5,purple,no,55,dog\n2.5,red,yes,25,cat\n")
    data = load_dataset(data_config(dataset="csv", train_path=str(train), test_path=str(test), target="label"), seed=0)
    assert data.preprocessing["split"]["test"] == 0 and data.preprocessing["split"]["test_file"] == str(test)
    assert data.x_train.shape == (10, 7) and data.x_test.shape == (2, 7)
    assert data.x_test[0, 1:5].tolist() == [0.0, 0.0, 0.0, 1.0]  # purple -> <unknown>
    assert data.x_test[1, 1:5].tolist() == [0.0, 0.0, 1.0, 0.0]  # red
    assert data.y_test.tolist() == [1, 0]


def test_bom_and_quoted_commas(tmp_path):
    path = write(
        tmp_path / "bom.csv",
        '\ufeffname,size,label\n"Smith, J.",1,a\n"Doe, A.",2,b\n"Smith, J.",3,a\n"Roe, B.",4,b\n',
        "utf-8",
    )
    table = read_table(path)
    assert table.header == ["name", "size", "label"]  # no \ufeff glued to the first name
    data = load_dataset(csv_config(path, target="label", test_split=0.0), seed=0)
    assert data.preprocessing["features"][0]["categories"] == ["Doe, A.", "Roe, B.", "Smith, J."]


@pytest.mark.parametrize("text", [MIXED, "a,b,c,y\n1,2,3,0.5\n4,5.5,6,1.5\n7,8,9e1,2.5\n-1,0,1,3.5\n"])
def test_the_three_readers_give_the_same_inputs(tmp_path, text):
    path = write(tmp_path / "t.csv", text)
    target = "label" if "label" in text else "y"
    reference = load_dataset(csv_config(path, target=target, test_split=0.0), seed=0).preprocessing
    outputs = []
    for engine in ("pyarrow", "numpy", "python"):
        table = read_table(path, ",", [], engine=engine)
        x, y = encode_table(reference, table)
        outputs.append((x, y))
    for x, y in outputs[1:]:
        assert torch.equal(x, outputs[0][0]) and torch.equal(y, outputs[0][1])


def test_a_class_sorted_file_gets_stratified_validation_and_test_splits(tmp_path):
    rows = "".join(f"{i},{i % 7},{cls}\n" for cls in ("a", "b", "c") for i in range(20))
    path = write(tmp_path / "sorted.csv", "x,z,cls\n" + rows)
    cfg = csv_config(path, target="cls", validation_split=0.25, test_split=0.25)
    data = load_dataset(cfg, seed=0)
    assert torch.bincount(data.y_test).tolist() == [5, 5, 5]
    assert torch.bincount(data.y_val).tolist() == [4, 4, 4]  # 45 - int(45 * 0.75) = 12
    assert torch.bincount(data.y_train).tolist() == [11, 11, 11]
    again = load_dataset(cfg, seed=0)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.x_val, data.x_val)
    other = load_dataset(cfg, seed=1)
    assert not torch.equal(other.x_test, data.x_test)


def test_every_prefix_of_the_stratified_order_is_balanced():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    order = stratified_order(labels, 100, seed=3)
    assert sorted(order.tolist()) == list(range(100))
    for prefix in (10, 20, 50):
        counts = np.bincount(labels[order[:prefix]], minlength=3)
        expected = np.array([50, 30, 20]) * prefix / 100
        assert np.all(np.abs(counts - expected) <= 1), (prefix, counts)


def test_max_train_samples_caps_the_training_split_after_the_hold_out(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    data = load_dataset(csv_config(path, target="label", test_split=0.2, max_train_samples=4), seed=0)
    assert len(data.x_train) == 4 and len(data.x_test) == 2
    assert torch.bincount(data.y_train).tolist() == [2, 2]


MISSING = "a,b,label\n1,x,p\n2,,q\n,y,p\n4,x,q\n5,y,p\n6,x,q\n"


def test_missing_cells_are_an_error_naming_file_line_and_column(tmp_path):
    path = write(tmp_path / "m.csv", MISSING)
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label"), seed=0)
    assert info.value.full_message() == (
        f"{path}, line 3, column 'b': the cell is empty (or a missing-value marker such as NA); 2 cells are missing "
        "in all. Fill it in, or set data.missing to mean (fill with the training mean), zero, or drop_rows."
    )


def test_missing_cells_filled_with_the_training_mean_or_zero_or_dropped(tmp_path):
    path = write(tmp_path / "m.csv", MISSING)
    mean = load_dataset(csv_config(path, target="label", missing="mean", test_split=0.0, normalize="none"), seed=0)
    spec = mean.preprocessing["features"][0]
    assert spec["fill"] == pytest.approx((1 + 2 + 4 + 5 + 6) / 5)
    a = mean.x_train[:, 0].tolist()
    assert sorted(a) == pytest.approx(sorted([1, 2, 3.6, 4, 5, 6]))
    # a missing category takes the unknown slot
    assert sorted(mean.x_train[:, 1:4].argmax(1).tolist()) == [0, 0, 0, 1, 1, 2]
    zero = load_dataset(csv_config(path, target="label", missing="zero", test_split=0.0, normalize="none"), seed=0)
    assert sorted(zero.x_train[:, 0].tolist()) == [0, 1, 2, 4, 5, 6]
    dropped = load_dataset(csv_config(path, target="label", missing="drop_rows", test_split=0.0), seed=0)
    assert len(dropped.x_train) == 4 and dropped.preprocessing["split"]["dropped_rows"] == 2
    assert dropped.notes == (f"{path}: 2 rows with missing cells left out (data.missing: drop_rows).",)


def test_a_missing_target_cannot_be_filled(tmp_path):
    path = write(tmp_path / "m.csv", "a,label\n1,p\n2,NA\n3,q\n4,p\n")
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label", missing="mean"), seed=0)
    assert info.value.full_message() == (
        f"{path}, line 3, column 'label': the target is missing, and a target cannot be filled in. Fill it in, or "
        "set data.missing: drop_rows to leave such rows out."
    )


def test_a_ragged_row_is_an_error(tmp_path):
    path = write(tmp_path / "r.csv", "a,b,label\n1,2,p\n3,4,5,q\n")
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label"), seed=0)
    assert info.value.full_message() == (
        f"{path}, line 3: 4 fields, but the header has 3 columns. Every row needs 3 fields; a field that contains "
        "',' must be in double quotes."
    )


def test_text_in_a_numeric_column_is_an_error(tmp_path):
    path = write(tmp_path / "n.csv", "a,b,label\n1,2,p\n3,4,q\n5,six,p\n7,8,q\n9,10,p\n")
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label", test_split=0.0), seed=0)
    assert info.value.full_message() == (
        f"{path}, line 4, column 'b': 'six' is not a number, but 'b' is a numeric column. Correct the cell, mark it "
        "missing (leave it empty), or set data.column_types: {b: categorical}."
    )


def test_a_label_never_seen_in_training_is_an_error(tmp_path):
    train = write(tmp_path / "train.csv", "a,label\n1,p\n2,q\n3,p\n4,q\n")
    test = write(tmp_path / "test.csv", "a,label\n1,p\n2,r\n")
    with pytest.raises(DataError) as info:
        load_dataset(data_config(dataset="csv", train_path=str(train), test_path=str(test), target="label"), seed=0)
    assert info.value.full_message() == (
        f"{test}, line 3, column 'label': the label 'r' is not one of the classes seen in training: p, q. "
        "Correct the label, or train with data that has this class."
    )


def test_a_file_that_is_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,label\n1,caf\u00e9\n2,tea\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label"), seed=0)
    assert info.value.full_message() == (
        f"{path}, line 2: the file is not UTF-8 text (byte 0xe9 at offset 13). Save it as UTF-8 (in a spreadsheet: "
        "'CSV UTF-8')."
    )


def test_an_unknown_target_column_names_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="lable"), seed=0)
    assert info.value.full_message() == (
        f"data.target: {path} has no column 'lable'; its columns are: height, color, member, score, label. "
        "Did you mean 'label'?"
    )


@pytest.mark.parametrize(
    "target,text,task,classes,names",
    [
        ("y", "x,y\n1,0\n2,1\n3,2\n4,0\n5,1\n6,2\n", "multiclass", 3, ("0", "1", "2")),
        ("y", "x,y\n1,10\n2,2\n3,10\n4,2\n", "binary", 2, ("2", "10")),
        ("y", "x,y\n1,0.5\n2,1.25\n3,2.5\n4,0.1\n", "regression", 1, None),
        ("y", "x,y\n1,yes\n2,no\n3,yes\n4,no\n", "binary", 2, ("no", "yes")),
        (["p", "q"], "x,p,q\n1,0,1\n2,1,1\n3,0,0\n4,1,0\n", "multilabel", 2, ("p", "q")),
        (["p", "q"], "x,p,q\n1,0.5,1\n2,1,3\n3,0,0\n4,1,0\n", "regression", 2, None),
    ],
)
def test_the_task_is_inferred_from_the_target(tmp_path, target, text, task, classes, names):
    path = write(tmp_path / "t.csv", text)
    info = dataset_info(csv_config(path, target=target if isinstance(target, str) else tuple(target)), seed=0)
    assert (info.task, info.num_classes, info.class_names) == (task, classes, names)


def test_twenty_one_integer_values_are_a_regression_target_and_task_overrides(tmp_path):
    path = write(tmp_path / "t.csv", "x,y\n" + "".join(f"{i},{i}\n" for i in range(21)))
    assert dataset_info(csv_config(path, target="y"), seed=0).task == "regression"
    few = write(tmp_path / "few.csv", "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(21)))
    assert dataset_info(csv_config(few, target="y", task="regression"), seed=0).task == "regression"
    data = load_dataset(csv_config(few, target="y", task="regression", test_split=0.0), seed=0)
    assert data.y_train.dtype == torch.float32 and data.y_train.shape == (21, 1)


def test_column_type_overrides_keep_codes_as_text_and_ignore_columns(tmp_path):
    path = write(tmp_path / "z.csv", "id,zip,v,label\n1,02134,1.5,a\n2,10001,2.5,b\n3,02134,3.5,a\n4,94105,4.5,b\n")
    data = load_dataset(
        csv_config(path, target="label", test_split=0.0, column_types={"zip": "categorical", "id": "ignore"}), seed=0
    )
    specs = data.preprocessing["features"]
    assert [s["name"] for s in specs] == ["zip", "v"]
    assert specs[0]["categories"] == ["02134", "10001", "94105"]


def test_a_saved_state_is_applied_not_fitted_again(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    cfg = csv_config(path, target="label", test_split=0.2)
    fitted = load_dataset(cfg, seed=0)
    state = json.loads(state_json(fitted.preprocessing))  # what preprocessing.json holds
    assert state == fitted.preprocessing
    state["features"][0]["mean"] = 100.0
    state["features"][0]["std"] = 2.0
    again = load_dataset(cfg, seed=0, preprocessing=state)
    heights = (
        fitted.x_train[:, 0] * fitted.preprocessing["features"][0]["std"] + fitted.preprocessing["features"][0]["mean"]
    )
    assert torch.allclose(again.x_train[:, 0], (heights - 100.0) / 2.0, atol=1e-5)
    assert again.preprocessing is state
    # the info needs no file at all with a state
    path.unlink()
    assert dataset_info(cfg, seed=0, preprocessing=state) == info_from_state(state) == fitted.info


def test_encode_table_from_rows_equals_the_file(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    state = load_dataset(csv_config(path, target="label", test_split=0.0), seed=0).preprocessing
    x_file, _ = encode_table(state, path)
    rows = [
        {"height": 3.0, "color": "red", "member": "yes", "score": 30},
        {"height": 4, "color": "teal", "member": False, "score": "40"},
    ]
    x_rows, y_rows = encode_table(state, rows)
    assert y_rows is None and torch.equal(x_rows[0], x_file[2])
    assert x_rows[1, 1:5].tolist() == [0.0, 0.0, 0.0, 1.0] and x_rows[1, 5].item() == 0.0
    with pytest.raises(DataError, match="Row 1 has no value for the column 'score'"):
        encode_table(state, [{"height": 1, "color": "red", "member": "no"}])


def test_preprocessing_files_are_readable(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    state = load_dataset(csv_config(path, target="label", test_split=0.0), seed=0).preprocessing
    files = preprocessing_files(state)
    assert files["classes.txt"] == "cat\ndog\n"
    lines = files["columns.txt"].splitlines()
    assert lines[0] == "# 7 model inputs from 4 columns; normalize: standard, missing: error"
    assert lines[2] == "color: categorical, 3 categories + <unknown>: blue, green, red"
    assert lines[-1] == "# target: label (binary)"


def test_summary_of_a_csv_config(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    config = write_config(
        tmp_path / "c.yaml",
        {"data": {"dataset": "csv", "path": str(path), "target": "label"}, "model": {"preset": "mlp", "hidden": [4]}},
    )
    result = runner.invoke(app, ["summary", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total_params"] == 7 * 4 + 4 + 4 + 1


def test_a_saved_state_of_another_kind_or_a_newer_version_is_refused(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    cfg = csv_config(path, target="label")
    with pytest.raises(DataError) as kind:
        load_dataset(cfg, seed=0, preprocessing={"kind": "text_folder", "version": 1})
    assert kind.value.full_message() == (
        "The saved preprocessing is for text_folder data, but data.dataset is csv. Use the config the run was "
        "trained with."
    )
    with pytest.raises(DataError) as newer:
        dataset_info(cfg, seed=0, preprocessing={"kind": "csv", "version": 99})
    assert newer.value.full_message() == (
        "The saved preprocessing has version 99, newer than this dlcli understands (1). Upgrade dlcli to use this run."
    )


def test_minmax_and_no_scaling(tmp_path):
    path = write(tmp_path / "t.csv", "a,label\n2,p\n4,q\n6,p\n10,q\n")
    minmax = load_dataset(csv_config(path, target="label", test_split=0.0, normalize="minmax"), seed=0)
    assert minmax.preprocessing["features"][0] == {
        "name": "a",
        "type": "numeric",
        "fill": None,
        "min": 2.0,
        "max": 10.0,
    }
    assert sorted(minmax.x_train[:, 0].tolist()) == [0.0, 0.25, 0.5, 1.0]
    raw = load_dataset(csv_config(path, target="label", test_split=0.0, normalize="none"), seed=0)
    assert sorted(raw.x_train[:, 0].tolist()) == [2.0, 4.0, 6.0, 10.0]
    assert x_of(minmax.preprocessing, "a,label\n14,p\n") == [1.5]  # new values may leave [0, 1]


def x_of(state, text):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "new.csv"
        path.write_text(text)
        return encode_table(state, path)[0][:, 0].tolist()


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_the_separator_is_found_in_the_header(tmp_path, separator):
    comma = load_dataset(csv_config(write(tmp_path / "comma.csv", MIXED), target="label", test_split=0.2), seed=0)
    other = write(tmp_path / "other.csv", MIXED.replace(",", separator))
    data = load_dataset(csv_config(other, target="label", test_split=0.2), seed=0)
    assert data.preprocessing["delimiter"] == separator
    assert [s["name"] for s in data.preprocessing["features"]] == ["height", "color", "member", "score"]
    assert torch.equal(data.x_train, comma.x_train) and torch.equal(data.y_train, comma.y_train)
    assert torch.equal(data.x_test, comma.x_test)
    # New files are read with the separator the run was trained on.
    new = write(tmp_path / "new.csv", "label|score|member|color|height\ncat|35|no|red|3.5\n".replace("|", separator))
    x_new, y_new = encode_table(data.preprocessing, new)
    x_ref, _ = encode_table(
        comma.preprocessing, write(tmp_path / "ref.csv", "height,color,member,score\n3.5,red,no,35\n")
    )
    assert torch.equal(x_new, x_ref) and y_new.tolist() == [0]


def test_data_delimiter_overrides_the_header_count(tmp_path):
    # As many commas as tabs in the header: the count alone would split it at the commas.
    text = "size,cm\tweight,kg\tlabel\n1\t10\ta\n2\t20\tb\n3\t30\ta\n4\t40\tb\n"
    path = write(tmp_path / "t.tsv", text)
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label", test_split=0.0), seed=0)
    assert info.value.message == f"{path}, line 2: 1 field, but the header has 3 columns."
    for key in ("tab", "\t", "\\t"):
        data = load_dataset(csv_config(path, target="label", test_split=0.0, delimiter=key), seed=0)
        assert [s["name"] for s in data.preprocessing["features"]] == ["size,cm", "weight,kg"]
        assert data.preprocessing["delimiter"] == "\t" and data.y_train.shape == (4,)
    semicolons = write(tmp_path / "s.csv", "a;b,c\n1;x,y\n2;x,z\n3;x,y\n4;x,z\n")  # b,c is the target's name
    data = load_dataset(csv_config(semicolons, target="b,c", test_split=0.0, delimiter="semicolon"), seed=0)
    assert data.preprocessing["class_names"] == ["x,y", "x,z"]
    with pytest.raises(ConfigError) as bad:
        load_dataset(csv_config(path, target="label", delimiter="::"), seed=0)
    assert bad.value.message == "data.delimiter: expected one character (or tab), found '::'."


def test_a_validation_or_test_split_that_holds_out_zero_rows_is_refused(tmp_path):
    path = write(tmp_path / "t.csv", MIXED)
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label", test_split=0.0, validation_split=1e-20), seed=0)
    assert info.value.message == "data.validation_split: 1e-20 of 10 training samples holds out zero rows."
    with pytest.raises(DataError) as test_info:
        load_dataset(csv_config(path, target="label", test_split=1e-20), seed=0)
    assert test_info.value.message == "data.test_split: 1e-20 of 10 rows holds out zero rows."
    assert "test_split: 0 to keep no test data" in str(test_info.value)


# ----------------------------------------------------------------------------- columns that explode


def id_table(tmp_path: Path, rows: int = 120) -> Path:
    lines = ["user,age,label"] + [f"u{i:05d},{20 + i % 50},{'yes' if i % 3 else 'no'}" for i in range(rows)]
    return write(tmp_path / "users.csv", "\n".join(lines) + "\n")


def test_an_identifier_column_is_refused_before_one_hot_encoding_with_the_fix(tmp_path):
    path = id_table(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label"), seed=0)
    message = str(info.value)
    # 120 rows, test_split 0.2: 96 training rows, each user once
    assert "column 'user' has 96 distinct values in 96 training rows" in message
    assert "one-hot encoding would make 97 inputs" in message and "{user: ignore}" in message
    ignored = load_dataset(csv_config(path, target="label", column_types={"user": "ignore"}), seed=0)
    assert ignored.preprocessing["input_names"] == ["age"]
    kept = load_dataset(csv_config(path, target="label", column_types={"user": "categorical"}), seed=0)
    assert len(kept.preprocessing["input_names"]) == 1 + 96 + 1  # asked for: the user's choice


def test_a_small_table_keeps_a_category_with_a_value_per_row(tmp_path):
    # Under FEW_CATEGORIES distinct values is a category whatever the share of rows.
    path = id_table(tmp_path, rows=20)
    data = load_dataset(csv_config(path, target="label", test_split=0.25), seed=0)
    assert [s["type"] for s in data.preprocessing["features"]] == ["categorical", "numeric"]


def test_an_encoded_table_too_large_for_memory_is_refused_naming_the_widest_column(tmp_path, monkeypatch):
    import dlcli.devices

    path = id_table(tmp_path)
    monkeypatch.setattr(dlcli.devices, "available_memory", lambda device: (2 * 120 * 98 * 4 - 1, 10**9))
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label", column_types={"user": "categorical"}), seed=0)
    assert "120 rows x 98 inputs" in str(info.value) and "the widest column is 'user' with 96 categories" in str(
        info.value
    )
    monkeypatch.setattr(dlcli.devices, "available_memory", lambda device: (2 * 120 * 98 * 4, 10**9))
    load_dataset(csv_config(path, target="label", column_types={"user": "categorical"}), seed=0)


def test_an_identifier_column_is_one_paragraph_and_exit_2_from_the_cli(tmp_path):
    path = id_table(tmp_path)
    config = write_config(
        tmp_path / "c.yaml",
        {"data": {"dataset": "csv", "path": str(path), "target": "label"}, "model": {"preset": "mlp"}},
    )
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "column 'user' has 96 distinct values" in result.output


# ----------------------------------------------------------------------------- decimal commas

EUROPEAN = """\
sepal_length;sepal_width;species
5,1;3,5;setosa
4,9;3;setosa
7;3,2;versicolor
6,4;3,2;versicolor
6,3;3,3;virginica
5,8;2,7;virginica
"""


def test_numbers_with_decimal_commas_are_read_as_numbers_and_said(tmp_path):
    path = write(tmp_path / "eu.csv", EUROPEAN * 1)
    data = load_dataset(csv_config(path, target="species", test_split=0.0), seed=0)
    assert [(s["name"], s["type"]) for s in data.preprocessing["features"]] == [
        ("sepal_length", "numeric"),
        ("sepal_width", "numeric"),
    ]
    means = [s["mean"] for s in data.preprocessing["features"]]
    train_rows = data.x_train.shape[0]
    assert train_rows == 6 and means == pytest.approx(
        [(5.1 + 4.9 + 7 + 6.4 + 6.3 + 5.8) / 6, (3.5 + 3 + 3.2 * 2 + 3.3 + 2.7) / 6]
    )
    assert any("read 'sepal_length', 'sepal_width' as numbers written with a decimal comma" in n for n in data.notes)
    # The same file with points gives the same numbers.
    points = write(tmp_path / "points.csv", EUROPEAN.replace(",", "."))
    same = load_dataset(csv_config(points, target="species", test_split=0.0), seed=0)
    assert torch.equal(same.x_train, data.x_train) and not same.notes


def test_decimal_commas_stay_categories_where_the_user_says_so_or_the_comma_separates(tmp_path):
    path = write(tmp_path / "eu.csv", EUROPEAN)
    kept = load_dataset(
        csv_config(path, target="species", test_split=0.0, column_types={"sepal_length": "categorical"}), seed=0
    )
    assert [s["type"] for s in kept.preprocessing["features"]] == ["categorical", "numeric"]
    # A comma-separated file: "5,1" is two cells, never a number.
    table = read_table(write(tmp_path / "c.csv", "a,b\n5,1\n4,9\n"))
    assert table.decimal_comma_columns == () and list(table.columns["a"].values) == [5.0, 4.0]


def test_inputs_that_never_change_are_refused(tmp_path):
    lines = ["size,colour,label"] + [f"3,red,{'a' if i % 2 else 'b'}" for i in range(12)]
    path = write(tmp_path / "flat.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label", test_split=0.25), seed=0)
    assert "every input column (size, colour) holds one value on all 9 training rows" in str(info.value)
    varied = write(tmp_path / "ok.csv", "\n".join(lines[:-1] + ["4,red,a"]) + "\n")
    load_dataset(csv_config(varied, target="label", test_split=0.0), seed=0)  # one row differs: fine


@pytest.mark.parametrize(
    "head, words",
    [
        (
            b"\x1f\x8b\x08\x00" + bytes(range(128, 200)),
            "is compressed with gzip, not a text table. Decompress it first",
        ),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(128, 200)), "is a PNG image, not a text table"),
        (b"PK\x03\x04" + bytes(range(128, 200)), "is a ZIP archive (an .xlsx or .ods workbook is one)"),
    ],
)
def test_a_compressed_file_or_an_image_given_as_a_table_is_named_as_such(tmp_path, head, words):
    path = tmp_path / "table.csv"
    path.write_bytes(head)
    with pytest.raises(DataError) as info:
        load_dataset(csv_config(path, target="label"), seed=0)
    assert f"{path} {words}" in str(info.value) and "byte 0x" not in str(info.value)
