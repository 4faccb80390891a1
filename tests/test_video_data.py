"""data.dataset: video_folder (clips as video files or folders of frames) and rank-5 npz arrays
with data.layout: sampling, short clips, sizes, bad files, PyAV missing, predict and export."""

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import import_or_skip_unless_ci, trained_run, write_config
from dlcli.cli import app
from dlcli.config import data_config
from dlcli.data import load_dataset
from dlcli.data.inputs import PredictOptions, ReadRequest
from dlcli.errors import DataError
from dlcli.registry import DATASETS

av = import_or_skip_unless_ci("av", "PyAV (the video extra) is not installed")
runner = CliRunner()
FLAT = {"layers": [{"flatten": {}}, {"dense": {"units": 1, "activation": "sigmoid"}}]}
CONV3D = {
    "layers": [
        {"conv3d": {"filters": 3, "kernel_size": 2, "activation": "relu"}},
        {"global_avg_pool": {}},
        {"dense": {"units": 1, "activation": "sigmoid"}},
    ]
}


def write_clip(path: Path, frames: np.ndarray, codec: str = "libx264") -> Path:
    """frames T,H,W,3 uint8 written as a video file (H and W even, for yuv420p)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0", "preset": "ultrafast"}  # near lossless: values survive the codec
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def flat_frames(values, size=(8, 8)) -> np.ndarray:
    """One flat gray frame per value, T,H,W,3."""
    return np.stack([np.full((*size, 3), v, dtype=np.uint8) for v in values])


def write_frame_folder(folder: Path, values, size=(8, 8)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, v in enumerate(values):
        Image.new("RGB", (size[1], size[0]), (v, v, v)).save(folder / f"{t + 1:05d}.png")
    return folder


def video_root(root: Path, per_class: int = 3, frames: int = 6) -> Path:
    for k, name in enumerate(("left", "right")):
        for i in range(per_class):
            write_clip(root / name / f"clip{i}.mp4", flat_frames([40 + 100 * k + i] * frames))
    return root


def config(root: Path, **keys):
    return data_config("video_folder", root=str(root), **keys)


def pixels(x: torch.Tensor) -> list[int]:
    """The value of each frame's first pixel, channel 0, of one clip C,T,H,W."""
    return x[0, :, 0, 0].tolist()


# ----------------------------------------------------------------------------- loading


def test_video_files_and_frame_folders_load_as_one_uint8_tensor_NCTHW(tmp_path):
    root = video_root(tmp_path / "clips")
    write_frame_folder(root / "right" / "clip_frames", [200] * 6)
    (root / "left" / "notes.txt").write_text("not a clip")
    data = load_dataset(config(root, frames=4, test_split=0.0), seed=0)
    assert data.info.input_shape == (3, 4, 8, 8) and data.info.class_names == ("left", "right")
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (7, 3, 4, 8, 8)
    assert data.input_scale == pytest.approx(1 / 255)
    values = sorted((int(y), int(x[0, 0, 0, 0])) for x, y in zip(data.x_train, data.y_train))
    assert [y for y, _ in values] == [0, 0, 0, 1, 1, 1, 1]
    assert [v for _, v in values] == pytest.approx([40, 41, 42, 140, 141, 142, 200], abs=2)  # YUV rounding
    state = data.preprocessing
    assert state["kind"] == "video_folder" and state["frames"] == 4 and state["image_size"] == [8, 8]
    assert state["channels"] == 3 and state["sampling"] == "uniform" and state["class_names"] == ["left", "right"]
    assert any("Ignored 1 file" in note for note in data.notes)
    assert DATASETS.get("video_folder").fits_preprocessing


def test_uniform_sampling_takes_the_first_last_and_evenly_between(tmp_path):
    from dlcli.data.video import sample_indices

    assert sample_indices(10, 4, None) == [0, 3, 6, 9]
    assert sample_indices(16, 16, None) == list(range(16))
    assert sample_indices(5, 3, None) == [0, 2, 4] and sample_indices(3, 5, None) == [0, 1, 2]
    assert sample_indices(20, 4, 3) == [0, 3, 6, 9] and sample_indices(7, 4, 3) == [0, 3, 6]
    values = [10 * t for t in range(10)]
    root = tmp_path / "clips"
    write_clip(root / "a" / "v.mp4", flat_frames(values))
    write_frame_folder(root / "b" / "f", values)
    data = load_dataset(config(root, frames=4, test_split=0.0, channels=1), seed=0)
    assert data.x_train.shape == (2, 1, 4, 8, 8)
    for clip in data.x_train:
        assert pixels(clip) == pytest.approx([0, 30, 60, 90], abs=2)  # the codec may move a value by one
    stepped = load_dataset(config(root, frames=3, frame_step=2, test_split=0.0), seed=0)
    for clip in stepped.x_train:
        assert pixels(clip) == pytest.approx([0, 20, 40], abs=2)
    assert stepped.preprocessing["sampling"] == "step" and stepped.preprocessing["frame_step"] == 2


def test_an_animated_gif_is_a_clip(tmp_path):
    root = video_root(tmp_path / "clips", per_class=1)
    frames = [Image.new("RGB", (8, 8), (v, v, v)) for v in (0, 100, 200)]
    frames[0].save(root / "left" / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    data = load_dataset(config(root, frames=3, test_split=0.0), seed=0)
    gif = [x for x in data.x_train if int(x[0, 2, 0, 0]) > 150]
    assert len(gif) == 1 and pixels(gif[0]) == pytest.approx([0, 100, 200], abs=3)


def test_parallel_decoding_gives_the_same_arrays(tmp_path):
    from dlcli.data.video import decode_clips

    root = video_root(tmp_path / "clips", per_class=3)
    write_frame_folder(root / "left" / "frames", [7, 8, 9])
    paths = sorted(p for p in root.rglob("*") if p.suffix == ".mp4" or p.name == "frames")
    serial = decode_clips(paths, 4, None, (8, 8), 3, workers=1)
    parallel = decode_clips(paths, 4, None, (8, 8), 3, workers=2, parallel_from=1)
    assert np.array_equal(serial.array, parallel.array) and serial.counts.tolist() == parallel.counts.tolist()
    assert serial.counts.tolist().count(3) == 1


def test_image_size_resizes_and_channels_1_is_grayscale(tmp_path):
    root = tmp_path / "clips"
    write_clip(root / "a" / "big.mp4", flat_frames([100] * 4, size=(16, 12)))
    write_clip(root / "b" / "small.mp4", flat_frames([50] * 4, size=(8, 8)))
    data = load_dataset(config(root, frames=2, image_size=[4, 6], channels=1, test_split=0.0), seed=0)
    assert data.x_train.shape == (2, 1, 2, 4, 6) and data.info.input_shape == (1, 2, 4, 6)


def test_frames_that_differ_in_size_without_image_size_are_refused(tmp_path):
    root = tmp_path / "clips"
    write_clip(root / "a" / "first.mp4", flat_frames([100] * 4, size=(8, 8)))
    write_clip(root / "b" / "other.mp4", flat_frames([50] * 4, size=(16, 8)))
    with pytest.raises(DataError) as info:
        load_dataset(config(root, frames=2, test_split=0.0), seed=0)
    assert "other.mp4 has frames of 16x8 (height x width), but the first clip's are 8x8" in str(info.value)
    assert "data.image_size" in info.value.hint


def test_short_clips_are_padded_by_default_refused_or_skipped(tmp_path):
    root = video_root(tmp_path / "clips", per_class=2, frames=6)
    write_clip(root / "left" / "short.mp4", flat_frames([1, 2, 3, 4]))
    padded = load_dataset(config(root, frames=6, test_split=0.0), seed=0)
    short = [x for x in padded.x_train if int(x[0, 0, 0, 0]) < 10]
    assert len(short) == 1 and pixels(short[0]) == pytest.approx([1, 2, 3, 4, 4, 4], abs=2)
    assert any(note.startswith("Padded 1 clip shorter than 6 frames") for note in padded.notes)
    skipped = load_dataset(config(root, frames=6, test_split=0.0, short_clips="skip"), seed=0)
    assert len(skipped.x_train) == 4 and any(note.startswith("Left out 1 clip") for note in skipped.notes)
    with pytest.raises(DataError) as info:
        load_dataset(config(root, frames=6, test_split=0.0, short_clips="error"), seed=0)
    assert "short.mp4 is too short: it has 4 frames, fewer than the 6 that data.frames: 6 needs" in str(info.value)


def test_bad_clip_files_are_named_or_skipped_and_counted(tmp_path):
    root = video_root(tmp_path / "clips")
    (root / "left" / "text.mp4").write_text("this is not a video")
    good = (root / "right" / "clip0.mp4").read_bytes()
    (root / "right" / "cut.mp4").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as info:
        load_dataset(config(root, frames=4, test_split=0.0), seed=0)
    assert "Cannot read the clip " in str(info.value) and "text.mp4: it is not a video" in str(info.value)
    assert "damaged or truncated" in str(info.value)
    data = load_dataset(config(root, frames=4, test_split=0.0, on_bad_file="skip"), seed=0)
    assert len(data.x_train) == 6 and data.preprocessing["split"]["skipped_files"] == 2
    assert any("Skipped 2 unreadable clips" in note for note in data.notes)


def test_a_folder_whose_every_training_clip_is_skipped_has_nothing_to_train_on(tmp_path):
    root = tmp_path / "clips"
    for name in ("left", "right"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            (root / name / f"c{i}.mp4").write_text("this is not a video")
    with pytest.raises(DataError) as info:
        load_dataset(config(root, frames=2, test_split=0.0, on_bad_file="skip", image_size=[4, 4], channels=1), seed=0)
    assert info.value.message == (
        f"{root}: all 4 training clips were unreadable or too short and left out, so there is nothing to train on."
    )
    assert "data.short_clips" in str(info.value)


def test_pyav_missing_is_one_error_naming_the_extra(tmp_path, monkeypatch):
    root = video_root(tmp_path / "clips", per_class=1)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(DataError) as info:
        load_dataset(config(root, frames=4, test_split=0.0, image_size=[8, 8], channels=3), seed=0)
    assert "needs PyAV" in str(info.value) and 'pip install "dlcli[video]"' in info.value.hint
    write_frame_folder(tmp_path / "frames" / "a" / "c1", [1, 2])  # folders of frames need no PyAV
    write_frame_folder(tmp_path / "frames" / "b" / "c1", [3, 4])
    assert load_dataset(config(tmp_path / "frames", frames=2, test_split=0.0), seed=0).x_train.shape[0] == 2


def test_memory_is_checked_before_decoding():
    from dlcli.data.video import check_clip_memory

    assert check_clip_memory(10, 3, 16, (64, 64), available=2**40) == 10 * 3 * 16 * 64 * 64
    with pytest.raises(DataError) as info:
        check_clip_memory(100_000, 3, 16, (112, 112), available=2**30)
    assert "The 100000 clips would need" in str(info.value) and "3x16x112x112 each" in str(info.value)


def test_augmentation_moves_every_frame_of_a_clip_alike():
    """A clip's frames get its one flip, crop, rotation and shift: each frame of the augmented
    clip equals that frame augmented alone with the clip's draws."""
    import torch

    from dlcli.config import AugmentConfig, load_config
    from dlcli.data.augment import augment_batch, batch_generator, check_augmentation

    config = AugmentConfig(horizontal_flip=True, crop_padding=2, rotation=10.0, shift=0.1)
    clips = torch.rand(5, 3, 4, 9, 7, generator=torch.Generator().manual_seed(0))  # N, C, T, H, W
    moved = augment_batch(clips, config, batch_generator(0, 1, 2))
    as_channels = augment_batch(clips.reshape(5, 12, 9, 7), config, batch_generator(0, 1, 2)).reshape(5, 3, 4, 9, 7)
    assert torch.equal(moved, as_channels) and not torch.equal(moved, clips)
    flipped_only = augment_batch(clips, AugmentConfig(horizontal_flip=True), batch_generator(0, 1, 2))
    for clip in range(5):  # each clip is mirrored in every frame or in none
        mirrored = [torch.equal(flipped_only[clip, :, t], clips[clip, :, t].flip(-1)) for t in range(4)]
        assert all(mirrored) or not any(mirrored)
    check_augmentation(config, (3, 4, 9, 7))  # clips are accepted
    loaded = load_config(
        None, (), raw={"data": {"dataset": "video_folder", "augment": {"horizontal_flip": True}}, "model": FLAT}
    )
    assert loaded.data.augment.horizontal_flip


# ----------------------------------------------------------------------------- predict and export


def test_predict_reader_uses_the_saved_sampling_and_size(tmp_path):
    root = video_root(tmp_path / "clips")
    data = load_dataset(config(root, frames=4, image_size=[4, 4], test_split=0.0), seed=0)
    state, source = data.preprocessing, DATASETS.get("video_folder")
    other = write_clip(tmp_path / "new" / "right" / "x.mp4", flat_frames([150] * 9, size=(12, 16)))
    write_frame_folder(tmp_path / "new" / "left" / "y", [45, 45])
    request = ReadRequest(config(root), data.info, state, [str(tmp_path / "new")], PredictOptions())
    inputs = source.read_inputs(request)
    assert inputs.names == [str(tmp_path / "new" / "left" / "y"), str(other)]
    assert inputs.x.shape == (2, 3, 4, 4, 4) and inputs.labels.tolist() == [0, 1]
    assert inputs.input_scale == pytest.approx(1 / 255) and "Padded 1 clip" in inputs.notes[0]
    one = source.read_inputs(ReadRequest(config(root), data.info, state, [str(other)], PredictOptions()))
    assert torch.equal(one.x[0], inputs.x[1])
    (tmp_path / "bad.mp4").write_text("no")
    with pytest.raises(DataError, match="bad.mp4 cannot be decoded as a clip"):
        source.read_inputs(ReadRequest(config(root), data.info, state, [str(tmp_path / "bad.mp4")], PredictOptions()))
    marked = source.read_inputs(
        ReadRequest(
            config(root), data.info, state, [str(tmp_path / "bad.mp4"), str(other)], PredictOptions(skip_bad=True)
        )
    )
    assert list(marked.errors) == [0] and marked.x.shape[0] == 1
    spec = source.input_spec(config(root), data.info, state)
    assert spec.dtype == "uint8" and spec.scale == pytest.approx(1 / 255) and spec.layout == "NCTHW"
    assert spec.order_in_words() == " Axes in the order NCTHW: N samples, C channels, T frames, H height, W width."


def test_train_then_predict_clips_end_to_end(tmp_path):
    root = video_root(tmp_path / "clips", per_class=4, frames=4)
    cfg = write_config(
        tmp_path / "v.yaml",
        {
            "seed": 0,
            "device": "cpu",
            "data": {"dataset": "video_folder", "root": str(root), "frames": 2, "test_split": 0.25},
            "model": FLAT,
            "training": {"epochs": 1, "batch_size": 4},
        },
    )
    run = trained_run(cfg, tmp_path / "runs")
    state = json.loads((run / "preprocessing.json").read_text())
    assert state["kind"] == "video_folder" and state["frames"] == 2
    result = runner.invoke(app, ["predict", str(run), str(root / "left"), str(root / "right" / "clip0.mp4")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5 and rows[-1]["input"].endswith("clip0.mp4")


# ----------------------------------------------------------------------------- bad input through the CLI


def _not_a_video(tmp_path):
    root = video_root(tmp_path / "clips", per_class=2)
    (root / "left" / "bad.mp4").write_text("this is not a video")
    return {"frames": 2}, f"Cannot read the clip {root / 'left' / 'bad.mp4'}: it is not a video"


def _truncated(tmp_path):
    root = video_root(tmp_path / "clips", per_class=2)
    good = (root / "right" / "clip0.mp4").read_bytes()
    (root / "right" / "cut.mp4").write_bytes(good[: len(good) // 2])
    return {"frames": 2}, f"Cannot read the clip {root / 'right' / 'cut.mp4'}: it "  # no stream, or not a video


def _too_short(tmp_path):
    video_root(tmp_path / "clips", per_class=2, frames=3)
    return {"frames": 4, "short_clips": "error"}, "Error: The clip"


def _sizes_differ(tmp_path):
    root = video_root(tmp_path / "clips", per_class=2)
    write_clip(root / "right" / "wide.mp4", flat_frames([9] * 6, size=(8, 16)))
    return {"frames": 2}, "wide.mp4 has frames of 8x16 (height x width), but the first clip's are 8x8"


def _no_pyav(tmp_path, monkeypatch=None):
    video_root(tmp_path / "clips", per_class=2)
    return {"frames": 2}, "needs PyAV"


@pytest.mark.parametrize("case", [_not_a_video, _truncated, _too_short, _sizes_differ, _no_pyav])
def test_bad_clips_through_the_cli_are_one_paragraph_and_exit_2(tmp_path, monkeypatch, case):
    keys, words = case(tmp_path)
    if case is _no_pyav:
        monkeypatch.setitem(sys.modules, "av", None)
    data = {"dataset": "video_folder", "root": str(tmp_path / "clips"), "test_split": 0.0, **keys}
    cfg = write_config(tmp_path / "c.yaml", {"data": data, "model": FLAT, "device": "cpu", "training": {"epochs": 1}})
    result = runner.invoke(app, ["train", str(cfg), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    output = result.stderr.strip()
    assert output.startswith("Error: ") and "\n\n" not in output and words in output.replace("\n", " ")


def test_skip_counts_the_bad_clips_through_the_cli(tmp_path):
    keys, _ = _not_a_video(tmp_path)
    data = {"dataset": "video_folder", "root": str(tmp_path / "clips"), "test_split": 0.0, "on_bad_file": "skip"}
    cfg = write_config(
        tmp_path / "c.yaml", {"data": {**data, **keys}, "model": FLAT, "device": "cpu", "training": {"epochs": 1}}
    )
    result = runner.invoke(app, ["train", str(cfg), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "Skipped 1 unreadable clip" in result.output.replace("\n", " ")


# ----------------------------------------------------------------------------- rank-5 npz arrays


def _npz_pair(tmp_path) -> tuple[Path, Path, np.ndarray]:
    """The same clips saved as NTHWC (Keras's) and NCTHW (PyTorch's)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 3, 4, 6, 2), dtype=np.uint8)  # N,T,H,W,C
    y = (x[:, 2].mean(axis=(1, 2, 3)) > x[:, 0].mean(axis=(1, 2, 3))).astype(np.int64)
    ntHwc = tmp_path / "nthwc.npz"
    ncthw = tmp_path / "ncthw.npz"
    np.savez(ntHwc, x_train=x[:16], y_train=y[:16], x_test=x[16:], y_test=y[16:])
    moved = x.transpose(0, 4, 1, 2, 3)
    np.savez(ncthw, x_train=moved[:16], y_train=y[:16], x_test=moved[16:], y_test=y[16:])
    return ntHwc, ncthw, x


def test_rank5_npz_in_two_layouts_gives_identical_tensors(tmp_path):
    keras, torch_order, x = _npz_pair(tmp_path)
    a = load_dataset(data_config("npz", path=str(keras)), seed=0)  # NTHWC: the default for rank 5
    b = load_dataset(data_config("npz", path=str(torch_order), layout="NCTHW"), seed=0)
    assert a.info.input_shape == b.info.input_shape == (2, 3, 4, 6)  # C, T, H, W
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert torch.equal(a.x_train[0, 1, 2], torch.from_numpy(x[0, 2, :, :, 1]))
    ntchw = tmp_path / "ntchw.npz"
    np.savez(ntchw, x_train=x.transpose(0, 1, 4, 2, 3)[:16], y_train=np.zeros(16, dtype=np.int64))
    assert torch.equal(load_dataset(data_config("npz", path=str(ntchw), layout="NTCHW"), seed=0).x_train, a.x_train)


def test_rank4_npz_stays_as_stored_by_default_and_nhwc_is_moved(tmp_path):
    x = np.random.default_rng(1).random((6, 5, 4, 3), dtype=np.float32)  # N,H,W,C
    np.savez(tmp_path / "i.npz", x_train=x, y_train=np.arange(6) % 2)
    as_stored = load_dataset(data_config("npz", path=str(tmp_path / "i.npz")), seed=0)
    assert as_stored.info.input_shape == (5, 4, 3) and np.array_equal(as_stored.x_train.numpy(), x)
    moved = load_dataset(data_config("npz", path=str(tmp_path / "i.npz"), layout="NHWC"), seed=0)
    assert moved.info.input_shape == (3, 5, 4) and np.array_equal(moved.x_train.numpy(), x.transpose(0, 3, 1, 2))
    with pytest.raises(DataError, match="data.layout: NTHWC names 5 axes, but .* has 4"):
        load_dataset(data_config("npz", path=str(tmp_path / "i.npz"), layout="NTHWC"), seed=0)


def test_rank5_npz_layouts_train_to_identical_metrics_and_predict_converts(tmp_path):
    keras, torch_order, x = _npz_pair(tmp_path)
    runs = []
    for name, path, layout in (("keras", keras, None), ("torch", torch_order, "NCTHW")):
        data = {"dataset": "npz", "path": str(path), **({"layout": layout} if layout else {})}
        cfg = write_config(
            tmp_path / f"{name}.yaml",
            {"seed": 0, "device": "cpu", "data": data, "model": CONV3D, "training": {"epochs": 1, "batch_size": 4}},
        )
        runs.append(trained_run(cfg, tmp_path / name))

    def metrics(run):
        rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert metrics(runs[0]) == metrics(runs[1])
    np.savez(tmp_path / "new.npz", x=x[16:])  # NTHWC, as the keras run was trained
    outputs = []
    for run, given in ((runs[0], tmp_path / "new.npz"), (runs[1], tmp_path / "new_t.npz")):
        if run is runs[1]:
            np.savez(given, x=x[16:].transpose(0, 4, 1, 2, 3))
        result = runner.invoke(app, ["predict", str(run), str(given)])
        assert result.exit_code == 0, result.output
        outputs.append([r["predicted"] for r in csv.DictReader(io.StringIO(result.stdout))])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 8
    np.savez(tmp_path / "rank4.npz", x=x[16:, 0])
    result = runner.invoke(app, ["predict", str(runs[0]), str(tmp_path / "rank4.npz")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "has samples of shape (4, 6, 2)" in result.stderr and "takes (3, 4, 6, 2) (THWC)" in result.stderr


@pytest.mark.parametrize(
    "rank, model, words", [(4, CONV3D, "(conv3d) needs frames"), (5, None, "(conv2d) needs an image")]
)
def test_an_array_of_the_wrong_rank_for_the_model_names_the_shapes(tmp_path, rank, model, words):
    shape = (8, 3, 6, 6) if rank == 4 else (8, 3, 6, 6, 2)
    np.savez(tmp_path / "x.npz", x_train=np.zeros(shape, np.float32), y_train=np.arange(8) % 2)
    model = model or {
        "layers": [
            {"conv2d": {"filters": 2, "kernel_size": 2}},
            {"flatten": {}},
            {"dense": {"units": 1, "activation": "sigmoid"}},
        ]
    }
    data = {"dataset": "npz", "path": str(tmp_path / "x.npz")}
    cfg = write_config(tmp_path / "c.yaml", {"data": data, "model": model, "device": "cpu", "training": {"epochs": 1}})
    result = runner.invoke(app, ["train", str(cfg), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    output = result.stderr.replace("\n", " ")
    assert words in output and ("6x6x3" if rank == 4 else "3x6x6x2") in output  # Keras's order, as the summary
