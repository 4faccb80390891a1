import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_idx_dataset, make_imdb_npz, write_idx
from dlcli.config import data_config
from dlcli.data import dataset_info, load_dataset
from dlcli.data.imdb import keras_sequences, multi_hot
from dlcli.data.synthetic import SyntheticConfig
from dlcli.data.vision import read_idx
from dlcli.errors import DataError


def test_read_idx_gzip_and_raw(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = write_idx(tmp_path / f"x{compress}-idx3-ubyte", array, compress)
        assert np.array_equal(read_idx(path), array)


def test_each_builtin_kind_is_registered_whole_by_the_module_the_lazy_table_names():
    """One registration carries everything about a kind: its keys, info and load, the reader
    of `dlcli predict` and the input contract of `dlcli export`, all from the kind's module."""
    from dlcli.config import DataConfig
    from dlcli.registry import DATASETS

    sources = DATASETS.loaded()  # every known module imported
    assert sorted(sources) == DATASETS.names() == sorted(DATASETS._modules)
    for name, source in sources.items():
        module = DATASETS._modules[name]
        assert issubclass(source.config, DataConfig) and source.config is not DataConfig, name
        assert source.config.__module__ == source.info.__module__ == module, name
        assert callable(source.read_inputs) and callable(source.input_spec), name
        assert type(data_config(name)) is source.config, name


def test_an_unknown_dataset_lists_every_builtin_one_in_a_fresh_process():
    """Only the named dataset's module is imported, so an unknown name must import them all
    before its error lists the valid ones."""
    code = (
        "from dlcli.config import data_config\n"
        "from dlcli.data import dataset_info\n"
        "try: dataset_info(data_config(dataset='fashion-mnist'))\n"
        "except Exception as exc: print(exc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == (
        "data.dataset: unknown dataset 'fashion-mnist'; valid datasets are: csv, fashion_mnist, image_folder, "
        "imdb, mnist, npz, synthetic, text_folder, timeseries, video_folder. Did you mean 'fashion_mnist' or 'mnist'?"
    )


def test_truncated_idx_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 2, 2), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="header announces"):
        read_idx(path)


@pytest.mark.parametrize("layout", ["flat", "mnist", "torchvision"])
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_found_in_every_layout(tmp_path, layout, compress):
    root = tmp_path / "data"
    folder = {"flat": root, "mnist": root / "mnist", "torchvision": root / "MNIST" / "raw"}[layout]
    make_idx_dataset(folder, compress=compress)
    data = load_dataset(data_config(dataset="mnist", root=str(root), download=False), seed=0)
    assert data.x_train.shape == (120, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.y_train.dtype == torch.int64 and data.x_test.shape == (40, 1, 28, 28)
    assert data.info.num_classes == 10 and data.input_scale == pytest.approx(1 / 255)
    suffix = ".gz" if compress else ""
    for x, y, split in ((data.x_train, data.y_train, "train"), (data.x_test, data.y_test, "t10k")):
        images = read_idx(folder / f"{split}-images-idx3-ubyte{suffix}")  # as written: rows, then columns
        labels = read_idx(folder / f"{split}-labels-idx1-ubyte{suffix}")
        assert torch.equal(x[:, 0], torch.from_numpy(images)) and y.tolist() == labels.tolist()


def test_missing_files_offline_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("dlcli.data.vision.DEBIAN_FASHION", tmp_path / "no-debian-package")
    with pytest.raises(DataError) as info:
        load_dataset(data_config(dataset="fashion_mnist", root=str(tmp_path), download=False), seed=0)
    message = info.value.full_message()
    assert str(tmp_path / "fashion_mnist") in message and "FashionMNIST" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.root" in message


def test_validation_split_takes_the_last_fraction(idx_root):
    full = load_dataset(data_config(dataset="mnist", root=str(idx_root), download=False), seed=0)
    split = load_dataset(
        data_config(dataset="mnist", root=str(idx_root), download=False, validation_split=0.25), seed=0
    )
    assert len(split.x_train) == 90 and len(split.x_val) == 30
    assert torch.equal(split.x_val, full.x_train[90:])
    assert torch.equal(split.x_train, full.x_train[:90])


@pytest.mark.parametrize(
    "n,split,held_out",
    [
        (10, 0.25, 3),  # 10 * 0.75 = 7.5 trains 7: int(n * split) or round() would hold out 2
        (120, 0.33, 40),  # 120 * 0.67 = 80.4 trains 80: int(n * split) would hold out 39
        (100, 0.07, 7),  # 100 * 0.07 is 7.000000000000001 in floats: ceil() would hold out 8
        (60000, 0.1, 6000),  # the course's MNIST CNN: 54,000 left, 422 steps of 128
    ],
)
def test_validation_split_rounds_as_keras_does(n, split, held_out):
    """Keras trains on the first int(n * (1 - split)) samples and validates on the rest."""
    from dlcli.data import DataInfo, Dataset, split_validation

    data = Dataset(DataInfo((1,), "multiclass", 2), x_train=torch.arange(n), y_train=torch.arange(n) % 2)
    out = split_validation(data, data_config(dataset="synthetic", validation_split=split))
    assert torch.equal(out.x_val, torch.arange(n - held_out, n)) and torch.equal(
        out.x_train, torch.arange(n - held_out)
    )
    assert torch.equal(out.y_val, torch.arange(n - held_out, n) % 2)


def test_max_train_samples_keeps_the_first_samples_before_the_split():
    synthetic = SyntheticConfig(task="multiclass", shape=(2,), classes=3, samples=50, test_samples=10)
    full = load_dataset(data_config(dataset="synthetic", synthetic=synthetic), seed=0)
    cut = load_dataset(
        data_config(dataset="synthetic", synthetic=synthetic, max_train_samples=20, validation_split=0.25), seed=0
    )
    assert torch.equal(cut.x_train, full.x_train[:15]) and torch.equal(cut.x_val, full.x_train[15:20])
    assert torch.equal(cut.y_train, full.y_train[:15]) and torch.equal(cut.x_test, full.x_test)  # test split whole


def test_validation_size_from_start(idx_root):
    full = load_dataset(data_config(dataset="mnist", root=str(idx_root), download=False), seed=0)
    cfg = data_config(dataset="mnist", root=str(idx_root), download=False, validation_size=20, validation_from="start")
    split = load_dataset(cfg, seed=0)
    assert torch.equal(split.x_val, full.x_train[:20]) and torch.equal(split.y_train, full.y_train[20:])


def test_validation_larger_than_training_set_is_an_error(idx_root):
    cfg = data_config(dataset="mnist", root=str(idx_root), download=False, validation_size=500)
    with pytest.raises(DataError, match="leaves none to train on"):
        load_dataset(cfg, seed=0)


def test_imdb_processing_follows_keras(tmp_path):
    """A hand-made npz run through Keras's documented steps, checked element by element."""
    x_train = np.empty(3, dtype=object)
    x_train[:] = [[1, 2, 3], [4, 9997, 10], [7]]
    x_test = np.empty(2, dtype=object)
    x_test[:] = [[5], [6, 6]]
    y_train, y_test = np.array([1, 0, 1]), np.array([0, 1])
    path = tmp_path / "imdb.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)

    xs_train, ys_train, xs_test, ys_test = keras_sequences(path, num_words=10000)
    rng = np.random.RandomState(113)  # Keras: one generator, train permuted first, then test
    order_train = np.arange(3)
    rng.shuffle(order_train)
    order_test = np.arange(2)
    rng.shuffle(order_test)
    assert list(ys_train) == list(y_train[order_train]) and list(ys_test) == list(y_test[order_test])
    for got, i in zip(xs_train, order_train):
        expected = [1] + [w + 3 if w + 3 < 10000 else 2 for w in x_train[i]]  # start, index_from, oov
        assert list(got) == expected
    assert [1, 7, 2, 13] in [list(s) for s in xs_train]  # 9997 + 3 >= 10000 becomes oov (2)


def test_multi_hot_and_imdb_dataset(tmp_path):
    assert multi_hot([np.array([1, 3, 3]), np.array([0])], 5).tolist() == [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]]
    make_imdb_npz(tmp_path / "imdb" / "imdb.npz")
    cfg = data_config(dataset="imdb", root=str(tmp_path), num_words=50, validation_size=10, validation_from="start")
    data = load_dataset(cfg, seed=0)
    assert data.x_train.shape == (50, 50) and data.x_val.shape == (10, 50) and data.x_test.shape == (30, 50)
    # float32 rows: they fit the memory many times over, and gather twice as fast as uint8 + convert
    assert data.x_train.dtype == torch.float32 and int(data.x_train[:, 1].min()) == 1  # start char in every review
    assert dataset_info(cfg).task == "binary"


def test_imdb_multi_hot_rows_stay_uint8_where_float32_would_crowd_the_memory(tmp_path, monkeypatch):
    import dlcli.devices

    make_imdb_npz(tmp_path / "imdb" / "imdb.npz")
    cfg = data_config(dataset="imdb", root=str(tmp_path), num_words=50)
    roomy = load_dataset(cfg, seed=0)
    # 90 rows x 50 words x 4 bytes = 18,000 bytes: float32 needs 8x that available.
    monkeypatch.setattr(dlcli.devices, "available_memory", lambda device: (8 * 18_000 - 1, 10**9))
    tight = load_dataset(cfg, seed=0)
    assert roomy.x_train.dtype == torch.float32 and tight.x_train.dtype == torch.uint8
    assert torch.equal(tight.x_train.float(), roomy.x_train) and torch.equal(tight.x_test.float(), roomy.x_test)


def test_imdb_missing_offline(tmp_path):
    with pytest.raises(DataError, match="Cannot find imdb.npz"):
        load_dataset(data_config(dataset="imdb", root=str(tmp_path), download=False), seed=0)


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_synthetic_tasks_are_seeded(task):
    cfg = data_config(
        dataset="synthetic", synthetic=SyntheticConfig(task=task, shape=(2, 3), classes=4, samples=50, test_samples=10)
    )
    a, b = load_dataset(cfg, seed=3), load_dataset(cfg, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.shape == (50, 2, 3) and len(a.x_test) == 10
    if task == "multilabel":
        assert a.y_train.shape == (50, 4) and set(a.y_train.unique().tolist()) == {0.0, 1.0}
        assert 0.25 < float(a.y_train.mean()) < 0.75  # labels on and off, not all one kind
    if task == "binary":
        assert set(a.y_train.unique().tolist()) == {0, 1}
    assert not torch.equal(load_dataset(cfg, seed=4).x_train, a.x_train)


def test_npz_dataset_infers_the_task(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=np.random.rand(30, 4).astype(np.float32),
        y_train=np.arange(30) % 3,
        x_test=np.random.rand(6, 4).astype(np.float32),
        y_test=np.arange(6) % 3,
    )
    data = load_dataset(data_config(dataset="npz", path=str(path)), seed=0)
    assert data.info.task == "multiclass" and data.info.num_classes == 3 and data.info.input_shape == (4,)
    np.savez(path, x_train=np.random.rand(30, 4), y_train=np.random.rand(30, 2))
    data = load_dataset(data_config(dataset="npz", path=str(path)), seed=0)
    assert data.info.task == "regression" and data.y_train.shape == (30, 2) and not data.has_test


def test_missing_images_are_downloaded_into_torchvisions_layout(tmp_path, monkeypatch):
    """Offline here, so torchvision's download is replaced by one that writes what it would."""
    calls = []

    def fake_download(root, dataset):
        calls.append(dataset)
        make_idx_dataset(root / "MNIST" / "raw")

    monkeypatch.setattr("dlcli.data.vision._download", fake_download)
    data = load_dataset(data_config(dataset="mnist", root=str(tmp_path)), seed=0)
    assert calls == ["mnist"] and len(data.x_train) == 120
    load_dataset(data_config(dataset="mnist", root=str(tmp_path)), seed=0)
    assert calls == ["mnist"]  # found locally the second time


def test_imdb_download_is_written_whole(tmp_path, monkeypatch):
    import io

    source = make_imdb_npz(tmp_path / "source" / "imdb.npz").read_bytes()

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response(source))
    root = tmp_path / "data"
    data = load_dataset(data_config(dataset="imdb", root=str(root), num_words=50), seed=0)
    assert (root / "imdb.npz").read_bytes() == source and len(data.x_train) == 60
    assert [p.name for p in root.iterdir()] == ["imdb.npz"]  # no partial file left


# ----------------------------------------------------------------------------- IMDB as word sequences


def test_pad_sequences_follows_keras_for_every_padding_and_truncating():
    from dlcli.data.imdb import pad_sequences

    reviews = [np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64), np.array([8, 9, 10])]
    # what keras.utils.pad_sequences(reviews, maxlen=3, padding=..., truncating=...) returns
    expected = {
        ("pre", "pre"): [[3, 4, 5], [0, 0, 7], [0, 0, 0], [8, 9, 10]],
        ("pre", "post"): [[1, 2, 3], [0, 0, 7], [0, 0, 0], [8, 9, 10]],
        ("post", "pre"): [[3, 4, 5], [7, 0, 0], [0, 0, 0], [8, 9, 10]],
        ("post", "post"): [[1, 2, 3], [7, 0, 0], [0, 0, 0], [8, 9, 10]],
    }
    for (padding, truncating), rows in expected.items():
        out = pad_sequences(reviews, 3, padding, truncating)
        assert out.dtype == np.int64 and out.tolist() == rows, (padding, truncating)
    assert pad_sequences([], 4).shape == (0, 4)


def test_imdb_sequence_mode_gives_int64_ids_and_the_vocabulary(tmp_path):
    make_imdb_npz(tmp_path / "imdb" / "imdb.npz")
    cfg = data_config(
        dataset="imdb",
        root=str(tmp_path),
        num_words=20,
        output_mode="sequence",
        sequence_length=40,
        padding="post",
        truncating="post",
    )
    info = dataset_info(cfg)
    assert info.input_shape == (40,) and info.vocab_size == 20 and info.task == "binary"
    data = load_dataset(cfg, seed=0)
    sequences, _, test_sequences, _ = keras_sequences(tmp_path / "imdb" / "imdb.npz", 20)
    assert data.x_train.dtype == torch.int64 and data.x_train.shape == (60, 40) and data.input_scale is None
    first = sequences[0]  # padded at the end: the review, then zeros (reviews are shorter than 40)
    assert data.x_train[0, : len(first)].tolist() == first.tolist() and data.x_train[0, len(first) :].eq(0).all()
    assert int(data.x_train.max()) < 20 and data.x_test.shape == (30, 40)
    assert data_config(dataset="imdb").output_mode == "multi_hot"  # the course's model stays the default


def test_imdb_refuses_output_modes_it_does_not_have(tmp_path):
    from dlcli.errors import ConfigError

    with pytest.raises(ConfigError, match="imdb dataset comes as multi_hot vectors or word-id sequences, not tf_idf"):
        dataset_info(data_config(dataset="imdb", output_mode="tf_idf"))


def test_word_ids_reach_the_model_as_int64():
    from dlcli.engine import Batches

    ids = torch.tensor([[0, 3, 9], [1, 2, 2]])
    ((xb, yb, n),) = list(Batches(ids, torch.tensor([0, 1]), 2, input_scale=None))
    assert xb.dtype == torch.int64 and torch.equal(xb, ids) and n == 2
    images = torch.tensor([[0, 255]], dtype=torch.uint8)
    ((xb, _, _),) = list(Batches(images, torch.tensor([0]), 1, input_scale=1 / 255))
    assert xb.dtype == torch.float32 and xb.tolist() == [[0.0, 1.0]]


# ----------------------------------------------------------------------------- each kind's keys

# data: as the config.yaml of a csv run saved before each kind had its own keys: every kind's keys,
# at their defaults (written by dlcli at 3a5f424).
OLD_CSV_DUMP = """
dataset: csv
root: data
download: true
path: iris.csv
validation_split: 0.0
validation_size: null
validation_from: end
max_train_samples: null
num_words: 10000
output_mode: multi_hot
sequence_length: 200
padding: pre
truncating: pre
train_path: null
test_path: null
target: species
features: null
column_types: null
task: auto
normalize: standard
missing: error
delimiter: null
test_split: null
time_column: null
window: null
frequency: null
time_features: []
image_size: null
channels: null
class_names: null
on_bad_file: error
workers: null
augment: {horizontal_flip: false, crop_padding: 0, rotation: 0.0, shift: 0.0}
synthetic: {task: multiclass, shape: [20], classes: 3, samples: 1000, test_samples: 200, noise: 1.0}
"""


def _config_with_data(data: dict, *overrides: str):
    from dlcli.config import load_config

    return load_config(None, overrides, raw={"data": data, "model": {"preset": "mlp"}})


def test_a_run_saved_with_every_kinds_keys_still_loads_as_its_own_kind():
    import yaml

    from dlcli.config import dump_config
    from dlcli.data.tabular import CsvData

    old = _config_with_data(yaml.safe_load(OLD_CSV_DUMP))
    new = _config_with_data({"dataset": "csv", "path": "iris.csv", "target": "species"})
    assert type(old.data) is CsvData and old == new
    data_lines = dump_config(new).split("model:")[0]
    assert "num_words" not in data_lines and "image_size" not in data_lines and "window" not in data_lines
    assert data_lines.index("dataset:") < data_lines.index("path:") < data_lines.index("validation_split:")


@pytest.mark.parametrize(
    "data, words",
    [
        # A time series' key on a csv table was silently ignored; it names its owner now.
        (
            {"dataset": "csv", "path": "t.csv", "target": "y", "window": {"length": 3}},
            "data.window: is a key of timeseries data, and data.dataset is csv",
        ),
        (
            {"dataset": "csv", "path": "t.csv", "target": "y", "image_size": [8, 8]},
            "data.image_size: is a key of image_folder, video_folder data",
        ),
        # Another kind's key at anything but its default (old runs' dumps hold defaults only).
        (
            {"dataset": "mnist", "num_words": 500},
            "data.num_words: is a key of imdb, text_folder data, and data.dataset is mnist",
        ),
        ({"dataset": "mnist", "roots": "x"}, "unknown key 'roots' in data; keys of mnist data are: root, download"),
        ({"dataset": "timeseries", "path": "t.csv", "target": "y"}, "needs `window:`"),
        (
            {"dataset": "timeseries", "path": "t.csv", "target": "y", "window": {"length": 2}, "missing": "mean"},
            "mean is a policy for csv data; for timeseries data the policies that fit are",
        ),
        ({"dataset": "image_folder", "image_size": [8, 8, 3]}, "data.image_size: expected [height, width]"),
        ({"dataset": "npz"}, "data.path: the npz dataset needs `path:`"),
    ],
)
def test_keys_are_checked_against_the_kind_named(data, words):
    from dlcli.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _config_with_data(data)
    assert words in str(info.value)


def test_a_kind_fills_the_shared_keys_whose_default_is_its_own():
    series = {"dataset": "timeseries", "path": "t.csv", "target": "y", "window": {"length": 2}}
    assert _config_with_data(series).data.validation_split == 0.25
    assert _config_with_data(series).data.test_split == 0.25
    assert _config_with_data({**series, "validation_size": 5}).data.validation_split == 0.0
    assert _config_with_data({"dataset": "csv", "path": "t.csv", "target": "y"}).data.test_split is None


def test_synthetic_input_shape_is_in_the_summarys_order_and_shape_is_a_deprecated_alias(tmp_path):
    """`input_shape: [8, 6, 3]` is an 8x6 image of 3 channels, as the summary shows it; the old
    `shape` keeps its channels-first meaning for now, with a note naming the new key."""
    from dlcli.data.checks import dataset_notes
    from dlcli.data.synthetic import DEPRECATED_SHAPE
    from dlcli.errors import ConfigError

    new = _config_with_data({"dataset": "synthetic", "synthetic": {"input_shape": [8, 6, 3], "samples": 20}})
    old = _config_with_data({"dataset": "synthetic", "synthetic": {"shape": [3, 8, 6], "samples": 20}})
    assert dataset_info(new.data).input_shape == dataset_info(old.data).input_shape == (3, 8, 6)
    new_data, old_data = load_dataset(new.data, seed=0), load_dataset(old.data, seed=0)
    assert torch.equal(new_data.x_train, old_data.x_train)
    assert DEPRECATED_SHAPE in dataset_notes(old_data) and DEPRECATED_SHAPE not in dataset_notes(new_data)
    flat = _config_with_data({"dataset": "synthetic", "synthetic": {"input_shape": [5, 4]}})
    assert dataset_info(flat.data).input_shape == (5, 4)  # sequences: (steps, features) in both orders
    assert dataset_info(_config_with_data({"dataset": "synthetic"}).data).input_shape == (20,)
    with pytest.raises(ConfigError, match="give input_shape .* or the deprecated shape"):
        _config_with_data({"dataset": "synthetic", "synthetic": {"input_shape": [4], "shape": [4]}})


def test_the_summary_shows_a_synthetic_image_as_written(tmp_path):
    from conftest import invoke, write_config

    config = write_config(
        tmp_path / "img.yaml",
        {
            "data": {"dataset": "synthetic", "synthetic": {"input_shape": [32, 32, 3]}},
            "model": {"layers": [{"conv2d": {"filters": 4, "kernel_size": 3}}, "flatten", {"dense": {"units": 3}}]},
        },
    )
    result = invoke("summary", config, "--json")
    summary = json.loads(result.output)
    assert summary["input_shape"] == [None, 32, 32, 3]
    conv = summary["layers"][0]
    assert conv["output_shape"] == [None, 30, 30, 4] and conv["params"] == 3 * 3 * 3 * 4 + 4


def test_every_kind_keeps_the_shared_checks():
    """A kind's own check() extends the shared one (found by the schema's mutation test: an
    image folder took validation_split with validation_size)."""
    from dlcli.errors import ConfigError
    from dlcli.registry import DATASETS

    required = {
        "csv": {"path": "t.csv", "target": "y"},
        "timeseries": {"path": "t.csv", "target": "y", "window": {"length": 2}},
        "npz": {"path": "x.npz"},
    }
    for name in DATASETS.names():
        data = {"dataset": name, **required.get(name, {}), "validation_split": 0.2, "validation_size": 5}
        with pytest.raises(ConfigError, match="give validation_split or validation_size, not both"):
            _config_with_data(data)


def test_a_preset_that_is_not_a_name_is_a_config_error():
    from dlcli.config import load_config
    from dlcli.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(None, raw={"data": {"dataset": "synthetic"}, "model": {"preset": [1]}})
