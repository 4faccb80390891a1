"""data.dataset: image_folder — layout, formats and modes, EXIF, bad files, memory, parallel decoding."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import import_or_skip_unless_ci, write_config
from dlcli.cli import app
from dlcli.config import DataConfig, data_config
from dlcli.data import dataset_info, load_dataset
from dlcli.data.folders import decoded_in_processes, natural_key
from dlcli.data.images import check_memory, decode_files, decode_image, load_images
from dlcli.errors import DataError

runner = CliRunner()


def gray(path: Path, value: int, size=(6, 4)) -> Path:
    """A w x h grayscale PNG of one value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def two_class_folder(root: Path, per_class: int = 4) -> Path:
    for k, name in enumerate(("a", "b")):
        for i in range(per_class):
            gray(root / name / f"{i}.png", 40 + 100 * k + i)
    return root


def folder_config(root: Path, **options) -> DataConfig:
    return data_config(dataset="image_folder", root=str(root), **options)


def test_natural_order():
    assert sorted(["cat", "10", "2", "img10", "img2", "Dog"], key=natural_key) == [
        "2",
        "10",
        "cat",
        "Dog",
        "img2",
        "img10",
    ]


def test_classes_in_natural_order_every_format_and_mode(tmp_path):
    root = tmp_path / "images"
    gray(root / "2" / "a.png", 100)
    Image.new("RGB", (6, 4), (1, 2, 3)).save(root / "2" / "b.bmp")
    (root / "10").mkdir()
    Image.new("RGBA", (6, 4), (10, 20, 30, 0)).save(root / "10" / "c.png")  # alpha dropped, colour kept
    palette = Image.new("P", (6, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(root / "10" / "d.gif")
    Image.new("RGB", (6, 4), (7, 8, 9)).save(root / "10" / "e.webp", lossless=True)
    (root / "cat").mkdir()
    Image.new("RGB", (6, 4), (255, 255, 255)).save(root / "cat" / "f.jpg", quality=100)
    (root / "cat" / "._f.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata: ignored
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset(folder_config(root, channels=3, test_split=0.0), seed=0)
    assert data.info.class_names == ("2", "10", "cat") and data.info.input_shape == (3, 4, 6)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (6, 3, 4, 6)
    assert data.input_scale == pytest.approx(1 / 255)
    pixel = {tuple(x[:, 0, 0].tolist()): int(y) for x, y in zip(data.x_train, data.y_train)}
    assert pixel[(100, 100, 100)] == 0 and pixel[(1, 2, 3)] == 0
    assert pixel[(10, 20, 30)] == 1 and pixel[(200, 100, 50)] == 1 and pixel[(7, 8, 9)] == 1
    assert pixel[(255, 255, 255)] == 2
    assert data.notes == (f"Ignored 1 file under {root} that are not images.",)
    assert data.preprocessing["class_names"] == ["2", "10", "cat"]


def test_exif_orientation_turns_a_photo_upright(tmp_path):
    pixels = np.zeros((4, 8), dtype=np.uint8)
    pixels[:, :4] = 255  # left half white, as stored
    image = Image.fromarray(pixels).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the stored image rotated 90 degrees clockwise
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif, quality=100)
    upright = decode_image(path, None, 1)
    assert upright.shape == (1, 8, 4)  # taller than wide once upright
    assert upright[0, :4].mean() > 200 and upright[0, 4:].mean() < 50  # the white half is now on top


def test_size_and_channels_default_to_the_first_image_and_convert_the_rest(tmp_path):
    root = tmp_path / "images"
    gray(root / "a" / "1.png", 50, size=(6, 4))
    (root / "b").mkdir()
    Image.new("RGB", (12, 8), (90, 90, 90)).save(root / "b" / "1.png")
    info = dataset_info(folder_config(root), seed=0)
    assert info.input_shape == (1, 4, 6) and info.task == "binary"
    data = load_dataset(folder_config(root, test_split=0.0), seed=0)
    assert data.x_train.shape == (2, 1, 4, 6)
    assert sorted(data.x_train[:, 0, 0, 0].tolist()) == [50, 90]
    assert data.preprocessing["image_size"] == [4, 6] and data.preprocessing["channels"] == 1
    resized = load_dataset(folder_config(root, test_split=0.0, image_size=(2, 3), channels=3), seed=0)
    assert resized.x_train.shape == (2, 3, 2, 3) and resized.info.input_shape == (3, 2, 3)


def test_train_and_test_folders_with_a_stratified_validation_split(tmp_path):
    root = tmp_path / "images"
    two_class_folder(root / "train", per_class=10)
    two_class_folder(root / "test", per_class=3)
    data = load_dataset(folder_config(root, validation_split=0.2), seed=0)
    assert len(data.x_test) == 6 and torch.bincount(data.y_test).tolist() == [3, 3]
    assert torch.bincount(data.y_val).tolist() == [2, 2] and torch.bincount(data.y_train).tolist() == [8, 8]
    split = data.preprocessing["split"]
    assert (split["train"], split["val"], split["test"], split["test_folder"]) == (16, 4, 6, True)
    with pytest.raises(DataError, match="has a test folder, and data.test_split asks"):
        load_dataset(folder_config(root, test_split=0.1), seed=0)


def test_a_truncated_jpeg_is_an_error_naming_the_file_or_is_skipped(tmp_path):
    root = two_class_folder(tmp_path / "images")
    bad = truncated_jpeg(root / "b" / "zz.jpg")
    with pytest.raises(DataError) as info:
        load_dataset(folder_config(root, test_split=0.0), seed=0)
    assert info.value.full_message() == (
        f"Cannot read the image {bad}: the file is truncated (Truncated File Read). Replace or delete the file, or "
        "set data.on_bad_file: skip to leave unreadable files out."
    )
    data = load_dataset(folder_config(root, test_split=0.0, on_bad_file="skip"), seed=0)
    assert len(data.x_train) == 8 and data.preprocessing["split"]["skipped_files"] == 1
    assert data.notes == (
        (
            f"Skipped 1 unreadable image file (data.on_bad_file: skip): {bad} (the file is truncated "
            "(Truncated File Read))."
        ),
    )


def test_an_empty_class_folder_is_an_error(tmp_path):
    root = two_class_folder(tmp_path / "images")
    (root / "c").mkdir()
    (root / "c" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataError) as info:
        load_dataset(folder_config(root), seed=0)
    assert info.value.full_message() == (
        f"The class folder {root / 'c'} holds no images (PNG, JPEG, BMP, GIF or WebP). Add files to it, remove it, "
        "or list the classes to use in data.class_names."
    )
    data = load_dataset(folder_config(root, class_names=("b", "a"), test_split=0.0), seed=0)
    assert data.info.class_names == ("b", "a") and data.x_train[data.y_train == 0, 0, 0, 0].min() >= 140


def test_too_many_pixels_are_refused_before_decoding(tmp_path):
    root = two_class_folder(tmp_path / "images")
    huge = {"image_size": (100_000, 100_000), "channels": 3}
    with pytest.raises(DataError) as info:
        load_dataset(folder_config(root, cache="memory", **huge), seed=0)
    message = info.value.full_message()
    assert message.startswith(
        "The 8 images would need 223.5 GB of memory as uint8 tensors (3x100000x100000 each), more than 80% of the "
    )
    assert message.endswith(
        " available. Use data.cache: disk (needs 223.5 GB free on disk), a smaller data.image_size, data.channels: 1, "
        "or fewer images (data.max_train_samples)."
    )
    cache = tmp_path / "cache"  # auto turns to the disk, which has no room either: said before writing anything
    with pytest.raises(DataError, match="The decoded cache needs 223.5 GB on disk, and .* free"):
        load_dataset(folder_config(root, cache_dir=str(cache), **huge), seed=0)
    assert not cache.exists()
    assert check_memory(10, 1, (28, 28), available=10**9) == 7840


def test_parallel_decoding_equals_decoding_in_this_process(tmp_path):
    paths = [gray(tmp_path / f"{i}.png", i * 3, size=(5, 3)) for i in range(40)]
    paths.insert(7, truncated_jpeg(tmp_path / "bad.jpg"))
    calls = []
    serial, serial_errors = decode_files(paths, (3, 5), 1, workers=1)
    parallel, parallel_errors = decode_files(
        paths, (3, 5), 1, workers=2, parallel_from=1, progress=lambda *a: calls.append(a)
    )
    assert np.array_equal(serial, parallel) and serial_errors == parallel_errors
    assert [i for i, _ in parallel_errors] == [7]
    assert calls[0] == ("Decoding images", 0, 41) and calls[-1] == ("Decoding images", 41, 41)


def test_load_images_applies_a_saved_state_and_reports_bad_files(tmp_path):
    root = two_class_folder(tmp_path / "images")
    data = load_dataset(folder_config(root, test_split=0.0), seed=0)
    state = json.loads(json.dumps(data.preprocessing))
    paths = [root / "a" / "0.png", tmp_path / "missing.png", root / "b" / "3.png"]
    x, errors = load_images(state, paths)
    assert x.shape == (2, 1, 4, 6) and x[:, 0, 0, 0].tolist() == [40, 143]
    assert errors == [(1, "the file does not exist")]
    state["image_size"] = [2, 2]
    again = load_dataset(folder_config(root, test_split=0.0), seed=0, preprocessing=state)
    assert again.x_train.shape == (8, 1, 2, 2)


def test_summary_reads_only_the_first_image(tmp_path):
    root = two_class_folder(tmp_path / "images")
    truncated_jpeg(root / "b" / "zz.jpg")  # would fail if every image were decoded
    config = write_config(
        tmp_path / "c.yaml",
        {"data": {"dataset": "image_folder", "root": str(root)}, "model": {"preset": "mlp", "hidden": [4]}},
    )
    result = runner.invoke(app, ["summary", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total_params"] == 24 * 4 + 4 + 4 + 1


def test_a_missing_root_says_what_layout_is_expected(tmp_path):
    with pytest.raises(DataError) as info:
        dataset_info(folder_config(tmp_path / "nowhere"), seed=0)
    assert info.value.full_message() == (
        f"data.root: {str(tmp_path / 'nowhere')!r} does not exist. Point data.root at a folder of class folders "
        "(root/<class>/<files>) of images (PNG, JPEG, BMP, GIF or WebP)."
    )


def test_load_progress_draws_a_bar_on_a_terminal_and_one_line_elsewhere():
    import io

    from rich.console import Console

    from dlcli.progress import LoadProgress

    plain = io.StringIO()
    progress = LoadProgress(Console(file=plain, width=80))
    for done in (0, 5, 10):
        progress("Decoding images", done, 10)
    assert plain.getvalue() == "Decoding images: 10 in 0.0s\n"
    live = io.StringIO()
    progress = LoadProgress(Console(file=live, width=80, force_terminal=True))
    progress("Decoding images", 0, 10)
    progress("Decoding images", 10, 10)
    assert "Decoding images 10/10" in live.getvalue() and live.getvalue().endswith("Decoding images: 10 in 0.0s\n")


def png_cases(folder: Path) -> dict[str, Path]:
    """PNGs of every kind the libspng fast path takes or must hand to PIL, with varied pixels."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "gray": Image.fromarray(rgb[:, :, 0]),
        "rgb": Image.fromarray(rgb),
        "rgba": Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])),
        "palette": Image.fromarray(rgb).quantize(16),
        "gray_alpha": Image.fromarray(rgb).convert("LA"),
        "bilevel": Image.fromarray(rgb[:, :, 0]).convert("1"),
        "gray16": Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: PIL's path must turn it upright
    paths["gray_exif"] = folder / "gray_exif.png"
    images["gray"].save(paths["gray_exif"], exif=exif.tobytes())
    paths["animated"] = folder / "animated.png"  # APNG: PIL's first frame, not libspng's default image
    images["gray"].save(paths["animated"], save_all=True, append_images=[images["gray"].rotate(90)])
    paths["truncated"] = folder / "truncated.png"
    data = paths["rgb"].read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    return paths


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [None, (5, 4), (12, 10)])
def test_the_libspng_fast_path_gives_pils_pixels_and_errors(tmp_path, monkeypatch, channels, size):
    import dlcli.data.images as images

    pyspng = import_or_skip_unless_ci("pyspng", "pyspng is not installed: pip install -e '.[fast-png]'")
    paths = png_cases(tmp_path)
    decoded_by_libspng = []

    def counting_load(data, *args):
        decoded_by_libspng.append(data)
        return pyspng.load(data, *args)

    def decode(path, use_libspng):
        monkeypatch.setattr(
            images, "_spng", type("spng", (), {"load": staticmethod(counting_load)}) if use_libspng else False
        )
        try:
            return decode_image(path, size, channels)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    for name, path in paths.items():
        with_libspng, with_pil = decode(path, True), decode(path, False)
        if isinstance(with_pil, str):
            assert with_libspng == with_pil, name
        else:
            assert with_libspng.dtype == np.uint8 and with_libspng.shape == with_pil.shape, name
            assert np.array_equal(with_libspng, with_pil), name
    # Only the kinds it is meant for reached libspng: gray always, RGB (and the truncated RGB
    # file, which libspng refused and PIL then explained) only when RGB is wanted.
    taken = {name for name, path in paths.items() if path.read_bytes() in decoded_by_libspng}
    assert taken == ({"gray"} if channels == 1 else {"gray", "rgb", "truncated"})


def test_a_folder_whose_every_image_is_skipped_says_so_with_the_first_problem(tmp_path):
    root = tmp_path / "imgs"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            (root / label / f"{i}.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as info:
        load_dataset(folder_config(root, on_bad_file="skip", image_size=(4, 4), channels=1, test_split=0.0), seed=0)
    message = str(info.value)
    assert "all 4 training images were unreadable and skipped (data.on_bad_file: skip)" in message
    assert "the first: " in message


def test_an_image_over_the_pixel_limit_is_named_as_too_large_not_as_an_attack(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "imgs"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):  # BMP: PIL decodes it (a PNG may take the libspng path, which has no such limit)
            Image.new("L", (6, 4), 40 * i).save(root / label / f"{i}.bmp")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4)  # 6x4 exceeds twice this
    with pytest.raises(DataError) as info:
        load_dataset(folder_config(root, image_size=(4, 4), channels=1, test_split=0.0), seed=0)
    message = str(info.value)
    assert "it has more than 8 pixels, which is refused as a possible decompression bomb; shrink it first" in message
    assert "DOS" not in message and "DecompressionBombError" not in message


def test_a_file_that_is_no_image_is_named_in_the_users_terms(tmp_path):
    root = two_class_folder(tmp_path / "imgs")
    bad = root / "a" / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(DataError) as info:
        load_dataset(folder_config(root, image_size=(4, 4), channels=1, test_split=0.0), seed=0)
    assert "not an image in a format dlcli reads (PNG, JPEG, BMP, GIF or WebP)" in str(info.value)
    assert "PIL" not in str(info.value)


def test_natural_order_compares_a_name_with_a_longer_one_that_starts_like_it():
    # Found by the csv fuzzer: class labels 1 and 1.5 compared a tuple with a text.
    assert sorted(["1.5", "red", "1", "0"], key=natural_key) == ["0", "1", "1.5", "red"]


def filled_chunk(index: int, size: int):
    """A stand-in for a decoded chunk (module level: the decoding processes unpickle it)."""
    return index, np.full(size, index % 251, dtype=np.uint8)


def test_parallel_decoding_lets_each_chunk_go_once_it_is_taken():
    """Decoding into a disk cache must not hold the decoded folder in memory: every chunk taken
    is released (submitting all chunks up front kept each one alive in its future)."""
    import weakref

    taken = []
    for index, array in decoded_in_processes(filled_chunk, ((i, 2**20) for i in range(16)), workers=2):
        assert array[0] == index % 251
        taken.append((index, weakref.ref(array)))
        del array
        alive = [i for i, ref in taken if ref() is not None]
        assert len(alive) <= 2 * 2, alive  # at most what one wait() returned at once
    assert sorted(i for i, _ in taken) == list(range(16))
