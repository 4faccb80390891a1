"""data.cache: decoded images in a memory-mapped file on disk: the same run as in memory, reused
without decoding, rebuilt when the files change, safe against interruption and a second builder."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke, write_config
from dlcli.config import data_config
from dlcli.data import images as images_module
from dlcli.data import load_dataset
from dlcli.data.cache import CacheIndex, list_caches, open_or_build
from dlcli.errors import DataError
from dlcli.rundir import read_metrics


def image_folder(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label, base in (("dark", 60), ("light", 190)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(base + rng.normal(0, 25, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every image decoded in this process (few files: no decoding processes are started)."""
    calls: list = []
    real = images_module.decode_image

    def counting(path, size, channels):
        calls.append(path)
        return real(path, size, channels)

    monkeypatch.setattr(images_module, "decode_image", counting)
    return calls


def folder_config(root: Path, cache_dir: Path, **keys):
    return data_config("image_folder", root=str(root), test_split=0.25, cache_dir=str(cache_dir), **keys)


def test_disk_holds_the_same_tensors_and_is_reused_without_decoding(tmp_path, decodes):
    root = image_folder(tmp_path / "images")
    in_memory = load_dataset(folder_config(root, tmp_path / "cache", cache="memory"), seed=0)
    assert len(decodes) == 24 and not (tmp_path / "cache").exists()
    on_disk = load_dataset(folder_config(root, tmp_path / "cache", cache="disk"), seed=0)
    assert len(decodes) == 48
    for part in ("x_train", "x_val", "x_test"):
        a, b = getattr(in_memory, part), getattr(on_disk, part)
        assert (a is None and b is None) or torch.equal(a, b[torch.arange(len(b))])
    assert any("read from a disk cache (data.cache: disk)" in n for n in on_disk.notes)
    assert on_disk.inputs_on_disk and not in_memory.inputs_on_disk  # training reads its batches ahead
    (entry,) = list_caches(tmp_path / "cache")
    assert entry.complete and entry.count == 24 and entry.bytes <= 24 * 3 * 8 * 8 + 200  # samples + .npy header
    again = load_dataset(folder_config(root, tmp_path / "cache", cache="disk"), seed=0)
    assert len(decodes) == 48  # reused: nothing decoded
    assert torch.equal(again.x_train[:], on_disk.x_train[:])
    assert any("made earlier for the same files" in n for n in again.notes)


def test_another_split_of_the_same_files_reads_the_same_cache(tmp_path, decodes):
    """The cache holds the files in path order: another seed or validation split (a sweep over
    seeds, a cross-validation fold) reads it without decoding, each split getting its own files."""
    root = image_folder(tmp_path / "images")
    first = load_dataset(folder_config(root, tmp_path / "cache", cache="disk", validation_split=0.25), seed=0)
    before = len(decodes)
    other = load_dataset(folder_config(root, tmp_path / "cache", cache="disk", validation_split=0.5), seed=7)
    assert len(decodes) == before and len(list_caches(tmp_path / "cache")) == 1
    in_memory = load_dataset(folder_config(root, tmp_path / "cache", cache="memory", validation_split=0.5), seed=7)
    for part in ("x_train", "x_val", "x_test"):
        assert torch.equal(getattr(other, part)[:], getattr(in_memory, part))
    assert not torch.equal(first.x_train[:6], other.x_train[:6])  # the split did change


def test_a_changed_folder_is_rebuilt_and_never_used_stale(tmp_path, decodes):
    root = image_folder(tmp_path / "images")
    first = load_dataset(folder_config(root, tmp_path / "cache", cache="disk"), seed=0)
    changed = root / "dark" / "0.png"
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(changed)  # same name, new pixels
    before = len(decodes)
    second = load_dataset(folder_config(root, tmp_path / "cache", cache="disk"), seed=0)
    assert len(decodes) == before + 24 and not any("made earlier" in n for n in second.notes)
    assert not torch.equal(
        torch.cat([first.x_train[:], first.x_test[:]]).sort(0).values,
        torch.cat([second.x_train[:], second.x_test[:]]).sort(0).values,
    )
    assert len(list_caches(tmp_path / "cache")) == 2  # the old one stays until `dlcli cache clear`


def test_auto_chooses_the_disk_when_the_samples_do_not_fit(tmp_path, monkeypatch):
    import dlcli.devices

    root = image_folder(tmp_path / "images")
    monkeypatch.setattr(dlcli.devices, "available_memory", lambda device: (1000, 10**9))  # 24 x 192 B do not fit
    data = load_dataset(folder_config(root, tmp_path / "cache"), seed=0)
    assert any("more than 80% of the" in n and "read from a disk cache" in n for n in data.notes)
    with pytest.raises(DataError, match=r"Use data.cache: disk \(needs 4.5 KB free on disk\)"):
        load_dataset(folder_config(root, tmp_path / "cache", cache="memory"), seed=0)


def test_a_killed_build_resumes_where_it_stopped(tmp_path):
    index = CacheIndex("test", {"n": 10}, [[f"f{i}", 1, 1] for i in range(10)], [2])
    calls: list = []

    def decode_into(start, stop, out):
        calls.append(start)
        if start == 6 and len(calls) == 4:  # the fourth chunk dies, as a SIGKILL would
            raise KeyboardInterrupt
        out[:] = np.arange(start, stop, dtype=np.uint8)[:, None]
        return []

    with pytest.raises(KeyboardInterrupt):
        open_or_build(index, decode_into, tmp_path, chunk=2)
    assert not (tmp_path / f"{index.key()}.json").exists()  # never taken for a finished cache
    array, errors, built = open_or_build(index, decode_into, tmp_path, chunk=2)
    assert calls == [0, 2, 4, 6, 6, 8] and built and errors == []
    assert np.array_equal(array[:, 0], np.arange(10))


def test_two_builders_at_once_make_one_cache(tmp_path):
    index = CacheIndex("test", {}, [[f"f{i}", 1, 1] for i in range(6)], [3])
    calls: list = []

    def slow_decode(start, stop, out):
        calls.append(start)
        threading.Event().wait(0.05)
        out[:] = 7
        return [(start, "a bad one")] if start == 0 else []

    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(open_or_build(index, slow_decode, tmp_path, chunk=2)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == [0, 2, 4]  # decoded once: the second builder waited, then read it
    assert sorted(built for _, _, built in results) == [False, True]
    assert all(np.array_equal(a, np.full((6, 3), 7)) and r == [(0, "a bad one")] for a, r, _ in results)


def test_a_cache_folder_that_cannot_be_written_is_named(tmp_path):
    root = image_folder(tmp_path / "images")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="Cannot write the decoded cache in .*a_file.*data.cache_dir"):
        load_dataset(folder_config(root, blocker / "cache", cache="disk"), seed=0)


def test_a_run_is_the_same_from_memory_and_from_disk_and_evaluate_reads_the_cache(tmp_path, decodes):
    root = image_folder(tmp_path / "images")
    metrics = {}
    for cache in ("memory", "disk"):
        config = write_config(
            tmp_path / f"{cache}.yaml",
            {
                "name": cache,
                "seed": 0,
                "device": "cpu",
                "data": {
                    "dataset": "image_folder",
                    "root": str(root),
                    "test_split": 0.25,
                    "validation_split": 0.2,
                    "cache": cache,
                    "cache_dir": str(tmp_path / "cache"),
                },
                "model": {"preset": "cnn", "filters": [4], "kernel_size": 3, "dropout": 0.0},
                "training": {"epochs": 2, "batch_size": 4},
            },
        )
        result = invoke("train", config, "--runs-dir", tmp_path / "runs" / cache, "-q")
        assert result.exit_code == 0, result.output
        (run,) = (tmp_path / "runs" / cache).iterdir()
        _, rows = read_metrics(run / "metrics.csv")
        metrics[cache] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert metrics["memory"] == metrics["disk"]
    before = len(decodes)
    assert invoke("evaluate", run).exit_code == 0  # the disk run
    assert len(decodes) == before  # evaluate read the cache
    resumed = invoke("train", "--resume", run, "--set", "training.epochs=3", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert len(decodes) == before  # so did the resumed run
    assert len(read_metrics(run / "metrics.csv")[1]) == 3


def test_cache_list_and_clear(tmp_path):
    root = image_folder(tmp_path / "images")
    load_dataset(folder_config(root, tmp_path / "cache", cache="disk"), seed=0)
    listed = invoke("cache", "list", "--cache-dir", tmp_path / "cache")
    assert listed.exit_code == 0 and "image_folder  24 samples" in listed.output
    cleared = invoke("cache", "clear", "--cache-dir", tmp_path / "cache")
    assert cleared.exit_code == 0 and "Removed 1 caches" in cleared.output
    assert list_caches(tmp_path / "cache") == []


def test_clips_cache_on_disk_with_what_decoding_found(tmp_path):
    """A video folder's disk cache keeps the frames and what decoding found beside them (a clip
    too short for the frames asked, padded): the reused cache gives the same tensors and notes."""
    root = tmp_path / "clips"
    rng = np.random.default_rng(0)
    for label in ("left", "right"):
        for clip in range(3):
            folder = root / label / f"clip_{clip}"
            folder.mkdir(parents=True)
            for frame in range(2 if (label, clip) == ("left", 0) else 4):  # one clip has 2 of the 4 frames
                Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(folder / f"{frame:05d}.png")
    keys = {"root": str(root), "frames": 4, "test_split": 0.0, "cache_dir": str(tmp_path / "cache")}
    memory = load_dataset(data_config("video_folder", cache="memory", **keys), seed=0)
    built = load_dataset(data_config("video_folder", cache="disk", **keys), seed=0)
    reused = load_dataset(data_config("video_folder", cache="disk", **keys), seed=0)
    assert torch.equal(memory.x_train, built.x_train[:]) and torch.equal(memory.x_train, reused.x_train[:])
    padded = [n for n in memory.notes if n.startswith("Padded 1 clip")]
    assert padded and padded[0] in built.notes and padded[0] in reused.notes
    assert any("made earlier for the same files" in n for n in reused.notes)


def test_predict_on_files_the_cache_holds_reads_them_without_decoding(tmp_path, decodes):
    """A run trained from the disk cache predicts on its own test folder from the cache: the
    same rows as decoding them, and no decoding."""
    import csv
    import io

    root = tmp_path / "images"
    image_folder(root / "train")
    image_folder(root / "test", per_class=3, seed=1)
    config = write_config(
        tmp_path / "c.yaml",
        {
            "seed": 0,
            "device": "cpu",
            "data": {"dataset": "image_folder", "root": str(root), "cache": "disk", "cache_dir": str(tmp_path / "c")},
            "model": {"preset": "mlp", "hidden": [8]},
            "training": {"epochs": 1, "batch_size": 8},
        },
    )
    assert invoke("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    before = len(decodes)
    from_cache = invoke("predict", run, root / "test")
    assert from_cache.exit_code == 0 and len(decodes) == before
    (root / "test" / "dark" / "0.png").touch()  # changed since the cache: decoded, not taken from it
    fresh = invoke("predict", run, root / "test")
    assert fresh.exit_code == 0 and len(decodes) == before + 6
    rows = [list(csv.DictReader(io.StringIO(r.stdout))) for r in (from_cache, fresh)]
    assert rows[0] == rows[1]


def test_a_cache_folder_past_the_size_set_is_said(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "images")
    monkeypatch.setenv("DLCLI_CACHE_NOTE_GB", str(1000 / 2**30))  # 1,000 bytes: this cache is 4.6 KB
    data = load_dataset(folder_config(root, tmp_path / "cache", cache="disk"), seed=0)
    assert any("The cache folder now holds" in n and "dlcli cache clear" in n for n in data.notes)
    monkeypatch.setenv("DLCLI_CACHE_NOTE_GB", "20")
    load_dataset(folder_config(root, tmp_path / "cache", cache="disk", image_size=(4, 4)), seed=0)
    quiet = load_dataset(folder_config(root, tmp_path / "cache", cache="disk", image_size=(5, 5)), seed=0)
    assert not any("The cache folder now holds" in n for n in quiet.notes)


CGROUP = Path("/sys/fs/cgroup/memory")


def test_a_folder_twice_a_cgroup_memory_limit_is_cached_within_it(tmp_path):
    """Under a real memory limit (a cgroup v1 group this test makes), auto turns to the disk by
    itself and builds the cache of a folder whose decoded size is twice the limit, with the
    process's anonymous memory staying under it. Without torch: the builder alone is measured."""
    import os
    import subprocess
    import sys

    if os.geteuid() != 0 or not (CGROUP / "cgroup.procs").exists():
        pytest.skip("needs root and the cgroup v1 memory controller at /sys/fs/cgroup/memory")
    limit = 160 * 2**20
    count = 2 * limit // (160 * 160 * 3) + 1  # decoded: twice the limit
    root = tmp_path / "large"
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)
        Image.fromarray(np.broadcast_to(colour, (160, 160, 3)).copy()).save(folder / f"{i}.png", compress_level=1)
    group = CGROUP / f"dlcli-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        code = (
            "import json, numpy as np\n"
            "from pathlib import Path\n"
            "from dlcli.config import data_config\n"
            "from dlcli.data.cache import decoded_samples\n"
            "from dlcli.data.images import decode_files\n"
            f"paths = sorted(Path({str(root)!r}).rglob('*.png'))\n"
            f"keys = data_config('image_folder', root={str(root)!r}, cache_dir={str(tmp_path / 'cache')!r})\n"
            "decode = lambda chosen, out: decode_files(chosen, (160, 160), 3, workers=1, out=out)\n"
            "array, records, note = decoded_samples('image_folder', paths, (3, 160, 160), {}, keys, decode)\n"
            "assert int(array.stored[:, :, 80, 80].astype(np.int64).sum()) > 0\n"
            "rss = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('RssAnon:')][0] * 1024\n"
            "print(json.dumps({'note': note, 'rows': len(array), 'rss_anon': rss}))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
        )
        oom = (group / "memory.oom_control").read_text()
    finally:
        group.rmdir()
    assert proc.returncode == 0, proc.stderr + oom
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rows"] == count and "read from a disk cache" in result["note"]
    assert "more than 80% of the" in result["note"]  # auto chose it: the cgroup's limit was seen
    assert result["rss_anon"] < limit


@pytest.mark.e2e
def test_a_run_on_a_disk_cache_killed_mid_epoch_resumes_bit_identically(tmp_path):
    from test_training_tools import assert_resumed_as_uninterrupted, killed_and_resumed

    root = image_folder(tmp_path / "images", per_class=150)
    raw = {
        "name": "killed",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "image_folder",
            "root": str(root),
            "image_size": [48, 48],
            "validation_split": 0.2,
            "cache": "disk",
            "cache_dir": str(tmp_path / "cache"),
            "augment": {"horizontal_flip": True},
        },
        # epochs of about a second: long enough that the SIGKILL lands inside the third
        "model": {"preset": "cnn", "filters": [32, 64], "kernel_size": 3, "dropout": 0.2},
        "training": {"epochs": 5, "batch_size": 4},
    }
    ref_run, run = killed_and_resumed(tmp_path, raw)
    (entry,) = list_caches(tmp_path / "cache")  # every run and the resume read one cache
    assert entry.complete and entry.count == 300
    assert_resumed_as_uninterrupted(ref_run, run, epochs=5)


@pytest.mark.e2e
def test_sweep_trials_read_the_cache_a_run_built(tmp_path):
    root = image_folder(tmp_path / "images")
    raw = {
        "name": "swept",
        "seed": 0,
        "device": "cpu",
        "data": {"dataset": "image_folder", "root": str(root), "cache": "disk", "cache_dir": str(tmp_path / "cache")},
        "model": {"preset": "cnn", "filters": [4], "kernel_size": 3},
        "training": {"epochs": 1, "batch_size": 4},
    }
    config = write_config(tmp_path / "swept.yaml", raw)
    assert invoke("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0  # builds the cache
    swept = invoke("sweep", "run", config, "-p", "optimizer.lr=[0.001,0.01]", "--runs-dir", tmp_path / "runs")
    assert swept.exit_code == 0, swept.output
    logs = sorted((tmp_path / "runs" / "sweeps").glob("*/trials/*/output.log"))
    assert len(logs) == 2
    for log in logs:  # each trial process found the cache finished: nothing decoded
        assert "read from a disk cache (data.cache: disk)" in log.read_text()
        assert "made earlier for the same files" in log.read_text()
    assert len(list_caches(tmp_path / "cache")) == 1
