"""Class folders with links in them: a link back into the tree (to the folder itself or its
parent) is not followed again, each file is counted once, and the note says what was skipped."""

import os
from pathlib import Path

import pytest
from PIL import Image

from dlcli.config import data_config
from dlcli.data import load_dataset

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")


def image_folder(root: Path, per_class: int = 4) -> Path:
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (6, 4), 40 + 100 * k + i).save(root / name / f"{i}.png")
    return root


def text_folder(root: Path, per_class: int = 4) -> Path:
    for k, name in enumerate(("neg", "pos")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.txt").write_text(f"{name} review number {i} {'good' if k else 'bad'}")
    return root


@pytest.mark.parametrize("kind", ["image_folder", "text_folder"])
def test_links_to_the_folder_itself_and_its_parent_are_read_once(tmp_path, kind):
    root = image_folder(tmp_path / "data") if kind == "image_folder" else text_folder(tmp_path / "data")
    first = sorted(p for p in root.iterdir())[0]
    os.symlink(first, first / "self_loop")  # a class folder holding a link to itself
    os.symlink(root, first / "parent_loop")  # and one to the whole tree
    data = load_dataset(data_config(dataset=kind, root=str(root), test_split=0.25), seed=0)
    total = len(data.y_train) + len(data.y_test)
    assert total == 8  # each of the 8 files once, however many paths lead to it
    assert [n for n in data.notes if "Skipped 2 links to a folder or file already read" in n]
    note = next(n for n in data.notes if "Skipped" in n)
    assert "self_loop" in note and "parent_loop" in note and "counted once" in note


def test_a_file_linked_into_a_second_class_counts_once_in_the_first(tmp_path):
    root = image_folder(tmp_path / "data")
    os.symlink(root / "a" / "0.png", root / "b" / "9.png")
    data = load_dataset(data_config(dataset="image_folder", root=str(root), test_split=0.0), seed=0)
    assert sorted(data.y_train.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert any("Skipped 1 link to a folder or file already read" in n and "9.png" in n for n in data.notes)


def test_a_class_folder_that_is_a_link_to_files_elsewhere_is_read(tmp_path):
    root = image_folder(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    (root / "b").rename(elsewhere)
    os.symlink(elsewhere, root / "b")
    data = load_dataset(data_config(dataset="image_folder", root=str(root), test_split=0.0), seed=0)
    assert sorted(data.y_train.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert not [n for n in data.notes if "Skipped" in n]


def test_a_video_folder_with_links_back_into_it_reads_each_clip_once(tmp_path):
    root = tmp_path / "clips"
    for k, name in enumerate(("left", "right")):
        for clip in range(4):
            folder = root / name / f"clip_{clip}"
            folder.mkdir(parents=True)
            for frame in range(2):
                Image.new("L", (4, 4), 30 * k + 10 * clip + frame).save(folder / f"{frame:05d}.png")
    os.symlink(root / "left", root / "left" / "self_loop")
    os.symlink(root, root / "left" / "parent_loop")
    data = load_dataset(data_config(dataset="video_folder", root=str(root), frames=2, test_split=0.25), seed=0)
    assert len(data.y_train) + len(data.y_test) == 8  # each clip once
    assert any("Skipped 2 links to a folder or file already read" in n for n in data.notes)
