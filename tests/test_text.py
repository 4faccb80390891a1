"""data.dataset: text_folder — Keras's standardisation, vocabulary, output modes, bad files."""

import math
from pathlib import Path

import pytest
import torch

from dlcli.config import DataConfig, data_config
from dlcli.data import dataset_info, load_dataset
from dlcli.data.preprocessing import preprocessing_files
from dlcli.data.text import encode_texts, fit_vocabulary, standardize, tokenize
from dlcli.errors import DataError

REVIEWS = {
    "pos": ["A great movie, great cast!", "Great fun.<br /><br />Loved it", "loved the GREAT acting"],
    "neg": ["Bad movie; bad plot.", "Boring and bad", "I hated it... bad"],
}


def text_folder(root: Path, reviews=REVIEWS) -> Path:
    for label, texts in reviews.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}.txt").write_text(text, encoding="utf-8")
    return root


def text_config(root: Path, **options) -> DataConfig:
    return data_config(dataset="text_folder", root=str(root), test_split=0.0, **options)


def test_standardisation_is_keras_lower_and_strip_punctuation_without_br_tags():
    assert standardize("It's GREAT!<br />Really...") == "its great really"
    assert tokenize("Hello,   World!\n<BR />x-ray (2) [b]") == ["hello", "world", "xray", "2", "b"]


def test_vocabulary_by_frequency_then_alphabet_with_keras_reserved_slots():
    docs = [["b", "a", "a"], ["c", "b", "a"]]
    assert fit_vocabulary(docs, 10, "multi_hot") == (["[UNK]", "a", "b", "c"], None)
    assert fit_vocabulary(docs, 3, "sequence") == (["", "[UNK]", "a"], None)
    _, idf = fit_vocabulary(docs, 10, "tf_idf")
    weights = [math.log(1 + 2 / 3), math.log(1 + 2 / 3), math.log(1 + 2 / 2)]
    assert idf == pytest.approx([sum(weights) / 3] + weights)


def test_multi_hot_with_an_out_of_vocabulary_slot(tmp_path):
    root = text_folder(tmp_path / "reviews")
    data = load_dataset(text_config(root, num_words=6), seed=0)
    state = data.preprocessing
    assert state["class_names"] == ["neg", "pos"] and data.info.task == "binary"
    assert state["vocabulary"] == ["[UNK]", "bad", "great", "it", "loved", "movie"]
    assert data.info.input_shape == (6,) and data.info.vocab_size == 6
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (6, 6)
    x = encode_texts(state, ["great great movie", "an unseen word", ""])
    assert x.tolist() == [[0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    assert preprocessing_files(state) == {
        "classes.txt": "neg\npos\n",
        "vocab.txt": "[UNK]\nbad\ngreat\nit\nloved\nmovie\n",
    }


def test_count_tf_idf_and_sequence_outputs(tmp_path):
    root = text_folder(tmp_path / "reviews")
    count = load_dataset(text_config(root, num_words=6, output_mode="count"), seed=0).preprocessing
    assert encode_texts(count, ["bad bad bad zzz movie"]).tolist() == [[1, 3, 0, 0, 0, 1]]
    tfidf = load_dataset(text_config(root, num_words=6, output_mode="tf_idf"), seed=0).preprocessing
    x = encode_texts(tfidf, ["bad bad movie"])
    assert x.dtype == torch.float32
    assert x[0, 1].item() == pytest.approx(2 * math.log(1 + 6 / (1 + 3)))  # 'bad' is in 3 of 6 texts
    sequence = load_dataset(text_config(root, num_words=6, output_mode="sequence", sequence_length=4), seed=0)
    state = sequence.preprocessing
    assert state["vocabulary"] == ["", "[UNK]", "bad", "great", "it", "loved"]
    assert sequence.x_train.dtype == torch.int64 and sequence.info.input_shape == (4,)
    ids = encode_texts(state, ["great movie", "bad it loved great bad"])
    assert ids.tolist() == [[0, 0, 3, 1], [4, 5, 3, 2]]  # pre-padded; cut from the start
    state.update(padding="post", truncating="post")
    assert encode_texts(state, ["great movie", "bad it loved great bad"]).tolist() == [[3, 1, 0, 0], [2, 4, 5, 3]]


def test_the_vocabulary_comes_from_the_training_split_only(tmp_path):
    root = tmp_path / "reviews"
    text_folder(root / "train")
    text_folder(root / "test", {"pos": ["zebra zebra zebra"], "neg": ["yak yak"]})
    data = load_dataset(data_config(dataset="text_folder", root=str(root), num_words=100), seed=0)
    assert "zebra" not in data.preprocessing["vocabulary"] and len(data.x_test) == 2
    assert data.x_test[:, 0].tolist() == [1, 1]  # only out-of-vocabulary words


def test_a_file_that_is_not_utf8_is_an_error_or_skipped(tmp_path):
    root = text_folder(tmp_path / "reviews")
    bad = root / "neg" / "latin1.txt"
    bad.write_bytes("caf\u00e9 terrible".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_dataset(text_config(root), seed=0)
    assert info.value.full_message() == (
        f"Cannot read the text file {bad}: not UTF-8 text (byte 0xe9 at offset 3). Save it as UTF-8, delete it, "
        "or set data.on_bad_file: skip to leave unreadable files out."
    )
    data = load_dataset(text_config(root, on_bad_file="skip"), seed=0)
    assert len(data.x_train) == 6
    assert data.notes == (
        (f"Skipped 1 unreadable text file (data.on_bad_file: skip): {bad} (not UTF-8 text (byte 0xe9 at offset 3))."),
    )


def test_aclimdb_layout_with_an_unlabelled_folder_left_out(tmp_path):
    root = tmp_path / "aclImdb"
    text_folder(root / "train", {**REVIEWS, "unsup": ["no label here"]})
    text_folder(root / "test")
    info = dataset_info(data_config(dataset="text_folder", root=str(root), class_names=("neg", "pos")), seed=0)
    assert info.class_names == ("neg", "pos") and info.num_classes == 2
    data = load_dataset(data_config(dataset="text_folder", root=str(root), class_names=("neg", "pos")), seed=0)
    assert len(data.x_train) == 6 and len(data.x_test) == 6 and "unsup" not in data.preprocessing["class_names"]
    with pytest.raises(DataError) as missing:
        dataset_info(data_config(dataset="text_folder", root=str(root), class_names=("neg", "postive")), seed=0)
    assert missing.value.full_message() == (
        f"data.class_names: {root / 'train'} has no class folder 'postive'; it has: neg, pos, unsup. "
        "Did you mean 'pos'?"
    )


def test_a_folder_of_empty_texts_is_refused_with_the_count(tmp_path):
    root = text_folder(tmp_path / "t", {"pos": ["", "  "], "neg": ["...", "<br />"]})
    with pytest.raises(DataError) as info:
        load_dataset(text_config(root), seed=0)
    assert "all 4 training texts are empty (no word once standardised)" in str(info.value)
    one_word = text_folder(tmp_path / "u", {"pos": ["", "good"], "neg": ["", ""]})
    assert load_dataset(text_config(one_word), seed=0).x_train.shape[0] == 4  # one word is something


def test_a_folder_whose_every_text_is_skipped_says_so(tmp_path):
    root = text_folder(tmp_path / "t", {"pos": ["a"], "neg": ["b"]})
    for path in root.rglob("*.txt"):
        path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError) as info:
        load_dataset(text_config(root, on_bad_file="skip"), seed=0)
    assert "all 2 training texts were unreadable and skipped (data.on_bad_file: skip)" in str(info.value)


def test_a_gzip_file_in_a_text_folder_is_named_compressed(tmp_path):
    import gzip

    root = text_folder(tmp_path / "t")
    bad = root / "pos" / "packed.txt"
    bad.write_bytes(gzip.compress(b"a great movie"))
    with pytest.raises(DataError) as info:
        load_dataset(text_config(root), seed=0)
    assert f"{bad}: compressed with gzip, not text" in str(info.value) and "0x8b" not in str(info.value)
