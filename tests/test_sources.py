"""Sources: class-folder layouts, every image format, and the malformed-input corpus."""

from __future__ import annotations

import io
import os
import stat
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from engine import sources, store
from engine.config import SourceConfig
from engine.sources import Limits, SourceError
from tests.conftest import class_files, image_bytes


def load_zip(path: Path, **kwargs: object) -> sources.Decoded:
    limits = kwargs.pop("limits", Limits())
    return sources.load(SourceConfig(kind="zip", path=str(path), **kwargs), limits=limits)  # type: ignore[arg-type]


def reasons(decoded: sources.Decoded) -> dict[str, str]:
    return dict(decoded.report.skipped)


def test_class_folder_layout_with_every_format(make_folder) -> None:  # type: ignore[no-untyped-def]
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "webp": "WEBP", "gif": "GIF", "tif": "TIFF"}
    files = {f"cats/{i}.{ext}": image_bytes(fmt, seed=i) for i, (ext, fmt) in enumerate(formats.items())}
    files |= {f"dogs/{i}.png": image_bytes(seed=50 + i) for i in range(3)}
    decoded = sources.load(SourceConfig(kind="folder", path=str(make_folder(files))))
    assert decoded.class_names == ("cats", "dogs")
    assert np.bincount(decoded.labels).tolist() == [7, 3]
    assert decoded.images.shape == (10, 3, 12, 12)  # auto resolution: longer native side
    assert set(decoded.sizes) == {(12, 10)}
    assert decoded.report.skipped == ()


def test_animated_gif_gives_its_first_frame(make_folder) -> None:  # type: ignore[no-untyped-def]
    frames = [Image.new("L", (8, 8), v) for v in (200, 10, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    files = {"a/anim.gif": buffer.getvalue(), "a/x.png": image_bytes(mode="L"), "b/y.png": image_bytes(mode="L")}
    decoded = sources.load(SourceConfig(kind="folder", path=str(make_folder(files))))
    first = decoded.origin.index("a/anim.gif")
    assert decoded.images.shape[1] == 1  # all grayscale: one channel
    assert int(decoded.images[first].mean()) == 200


def test_train_test_layout_inside_a_wrapper_folder(make_zip) -> None:  # type: ignore[no-untyped-def]
    files = class_files({"a": 4, "b": 5}, prefix="set/train/") | class_files({"a": 2, "b": 3}, prefix="set/test/")
    decoded = load_zip(make_zip(files))
    assert decoded.report.layout == "set/train|test/<class>/<image>"
    assert decoded.source_split.count("test") == 5 and decoded.source_split.count("train") == 9
    assert decoded.class_names == ("a", "b")


def test_resolution_and_fit_modes_keep_original_sizes(make_folder) -> None:  # type: ignore[no-untyped-def]
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    root = make_folder({"a/wide.png": buffer.getvalue(), "b/x.png": image_bytes(size=(30, 60))})
    pad = sources.load(SourceConfig(kind="folder", path=str(root), resolution=20, fit="pad"))
    crop = sources.load(SourceConfig(kind="folder", path=str(root), resolution=20, fit="crop"))
    assert pad.images.shape == (2, 3, 20, 20) and sorted(pad.sizes) == [(30, 60), (40, 10)]
    i = pad.origin.index("a/wide.png")
    assert pad.images[i, :, 0, :].max() == 0 and pad.images[i, :, 10, 2].min() == 255  # letterbox bars
    assert crop.images[i, :, :, 0].min() == 255 and crop.images[i, :, :, -1].max() == 0  # centre crop
    big = sources.load(
        SourceConfig(kind="folder", path=str(make_folder(class_files({"a": 2, "b": 2}, size=(300, 200)), "big")))
    )
    assert big.images.shape[-1] == sources.PHOTO_RESOLUTION == 128  # photos default to what backbones see


# The malformed-input corpus: each gives a clear skip or error, never a crash or a stray write.


def test_zip_with_unsafe_members_skips_them_and_writes_nothing(tmp_path: Path, make_zip) -> None:  # type: ignore[no-untyped-def]
    path = make_zip(class_files({"a": 3, "b": 3}))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("a/../../escape.png", image_bytes())
        archive.writestr("/abs/a/x.png", image_bytes())
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    before = sorted(p for p in tmp_path.rglob("*") if "workspace" not in p.parts)
    decoded = load_zip(path)
    why = reasons(decoded)
    assert why["a/../../escape.png"].startswith("unsafe path: contains '..'")
    assert why["/abs/a/x.png"].startswith("unsafe path: absolute")
    assert why["a/link.png"] == "unsafe path: symbolic link"
    assert len(decoded.labels) == 6
    assert sorted(p for p in tmp_path.rglob("*") if "workspace" not in p.parts) == before


def test_zip_bomb_by_declared_size_or_file_count_is_refused(make_zip) -> None:  # type: ignore[no-untyped-def]
    path = make_zip(class_files({"a": 3, "b": 3}) | {"a/huge.png": b"\0" * 5_000_000})
    with pytest.raises(SourceError, match=r"declares .* MiB of uncompressed images; the limit is .*zip bomb"):
        load_zip(path, limits=Limits(max_total_bytes=2_000_000))
    with pytest.raises(SourceError, match=r"holds 7 image files; the limit is 5"):
        load_zip(path, limits=Limits(max_files=5))
    decoded = load_zip(path, limits=Limits(max_file_bytes=1_000_000))
    assert reasons(decoded)["a/huge.png"].startswith("too large: 5,000,000 bytes declared")


def test_non_images_truncated_and_corrupt_files_are_skipped_with_reasons(make_zip) -> None:  # type: ignore[no-untyped-def]
    jpeg = image_bytes("JPEG", size=(64, 64))
    files = class_files({"a": 3, "b": 3}) | {
        "a/notes.txt": b"hello",
        "b/truncated.jpg": jpeg[: len(jpeg) // 2],
        "b/garbage.png": b"\x89PNG not really",
        "a/.DS_Store": b"junk",
        "__MACOSX/a/._x.png": b"junk",
    }
    decoded = load_zip(make_zip(files))
    why = reasons(decoded)
    assert why["a/notes.txt"].startswith("not an image: extension '.txt'")
    assert why["b/truncated.jpg"].startswith("corrupt or unreadable image")
    assert why["b/garbage.png"].startswith("corrupt or unreadable image")
    assert set(why) == {"a/notes.txt", "b/truncated.jpg", "b/garbage.png"}  # hidden files ignored quietly
    assert len(decoded.labels) == 6 and decoded.report.reasons() == {
        "not an image": 1,
        "corrupt or unreadable image": 2,
    }


def test_decompression_bomb_is_skipped(make_zip) -> None:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")  # 100 Mpx in a few kB
    decoded = load_zip(make_zip(class_files({"a": 2, "b": 2}) | {"a/bomb.png": buffer.getvalue()}))
    assert reasons(decoded)["a/bomb.png"].startswith("too many pixels: 10000x10000")


def test_no_class_folders_single_class_and_empty_class(make_folder, make_zip) -> None:  # type: ignore[no-untyped-def]
    flat = make_folder({"x.png": image_bytes(), "y.png": image_bytes()}, "flat")
    with pytest.raises(SourceError, match="has no class folders with images"):
        sources.load(SourceConfig(kind="folder", path=str(flat)))
    single = make_folder(class_files({"only": 3}), "single")
    with pytest.raises(SourceError, match="has only the class 'only'; at least 2 class folders"):
        sources.load(SourceConfig(kind="folder", path=str(single)))
    emptyish = make_zip(class_files({"a": 3, "b": 3}) | {"c/broken.png": b"nope"})
    decoded = load_zip(emptyish)
    assert decoded.class_names == ("a", "b")
    assert reasons(decoded)["c/"].startswith("empty class: no readable images")
    with pytest.raises(SourceError, match="has no class folders"):
        load_zip(make_zip({"readme.txt": b"hi"}, "text.zip"))


def test_not_a_zip_and_missing_paths_say_so(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"definitely not a zip")
    with pytest.raises(SourceError, match=r"source.path='.*fake.zip' is not a readable .zip archive"):
        load_zip(fake)
    with pytest.raises(SourceError, match=r"source.path='.*nowhere' is not a folder"):
        sources.load(SourceConfig(kind="folder", path=str(tmp_path / "nowhere")))


def test_folder_symlinks_are_not_followed(make_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "secret.png"
    outside.write_bytes(image_bytes())
    root = make_folder(class_files({"a": 2, "b": 2}))
    os.symlink(outside, root / "a" / "link.png")
    decoded = sources.load(SourceConfig(kind="folder", path=str(root)))
    assert reasons(decoded)["a/link.png"] == "unsafe path: symbolic link"
    assert len(decoded.labels) == 4


def test_folder_roots_restrict_server_paths(make_folder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_folder(class_files({"a": 2, "b": 2}))
    monkeypatch.setenv("SYNTHLAB_FOLDER_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(SourceError, match=r"outside the folders this server may read"):
        sources.load(SourceConfig(kind="folder", path=str(root)))
    monkeypatch.setenv("SYNTHLAB_FOLDER_ROOTS", str(tmp_path))
    assert len(sources.load(SourceConfig(kind="folder", path=str(root))).labels) == 4
    monkeypatch.delenv("SYNTHLAB_FOLDER_ROOTS")  # default: the workspace only
    assert store.folder_roots() == []
    with pytest.raises(SourceError, match=r"outside the folders this server may read: .*SYNTHLAB_FOLDER_ROOTS"):
        sources.load(SourceConfig(kind="folder", path=str(root)))


def test_a_class_called_train_does_not_switch_layouts_and_val_joins_training(make_folder) -> None:  # type: ignore[no-untyped-def]
    plain = sources.load(SourceConfig(kind="folder", path=str(make_folder(class_files({"bus": 2, "train": 3}), "voc"))))
    assert plain.class_names == ("bus", "train") and set(plain.source_split) == {""}
    files = class_files({"a": 3, "b": 3}, prefix="train/") | class_files({"a": 2, "b": 2}, prefix="val/")
    files |= class_files({"a": 1, "b": 1}, prefix="test/")
    split = sources.load(SourceConfig(kind="folder", path=str(make_folder(files, "splits"))))
    assert split.source_split.count("train") == 10 and split.source_split.count("test") == 2


def test_sixteen_bit_images_are_scaled_not_clipped(make_folder) -> None:  # type: ignore[no-untyped-def]
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    root = make_folder({"a/deep.png": buffer.getvalue(), "b/x.png": image_bytes(mode="L")})
    decoded = sources.load(SourceConfig(kind="folder", path=str(root), resolution=8))
    deep = decoded.images[decoded.origin.index("a/deep.png"), 0]
    assert deep.min() == 0 and 240 <= deep.max() <= 255 and len(np.unique(deep)) > 50


def test_float_images_read_nan_as_black_and_infinity_as_white(make_folder) -> None:  # type: ignore[no-untyped-def]
    values = np.full((8, 8), 100.0, dtype=np.float32)
    values[0, :3] = (np.nan, np.inf, -np.inf)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    root = make_folder({"a/nan.tif": buffer.getvalue(), "b/x.png": image_bytes(mode="L")})
    decoded = sources.load(SourceConfig(kind="folder", path=str(root), resolution=8))
    assert decoded.report.skipped == ()
    assert decoded.images[decoded.origin.index("a/nan.tif"), 0, 0, :4].tolist() == [0, 255, 0, 100]


def test_exif_orientation_is_applied(make_folder) -> None:  # type: ignore[no-untyped-def]
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    root = make_folder({"a/phone.jpg": buffer.getvalue(), "b/x.png": image_bytes()})
    decoded = sources.load(SourceConfig(kind="folder", path=str(root)))
    assert decoded.sizes[decoded.origin.index("a/phone.jpg")] == (20, 40)


def test_empty_class_folders_are_reported(make_folder, make_zip) -> None:  # type: ignore[no-untyped-def]
    root = make_folder(class_files({"a": 2, "b": 2}))
    (root / "c").mkdir()
    assert reasons(sources.load(SourceConfig(kind="folder", path=str(root))))["c/"].startswith("empty class")
    path = make_zip(class_files({"a": 2, "b": 2}))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo("d/"), b"")
    assert reasons(load_zip(path))["d/"].startswith("empty class")


def test_fifos_are_skipped_not_read(make_folder) -> None:  # type: ignore[no-untyped-def]
    root = make_folder(class_files({"a": 2, "b": 2}))
    os.mkfifo(root / "a" / "pipe.png")
    decoded = sources.load(SourceConfig(kind="folder", path=str(root)))
    assert reasons(decoded)["a/pipe.png"] == "not a regular file" and len(decoded.labels) == 4


def test_a_decoded_set_too_large_for_memory_is_refused(make_zip) -> None:  # type: ignore[no-untyped-def]
    path = make_zip(class_files({"a": 3, "b": 3}))
    with pytest.raises(SourceError, match=r"source.resolution=224: decoding 6 images at 224 px needs .* smaller"):
        load_zip(path, resolution=224, limits=Limits(max_decoded_bytes=100_000))


def test_torchvision_offline_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        if kwargs.get("download"):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(
        SourceError, match=r"CIFAR10 is not on this machine and could not be downloaded \(URLError\)"
    ) as err:
        sources.load(SourceConfig(kind="torchvision", name="CIFAR10"))
    assert "\n" not in str(err.value) and "upload it as a .zip" in str(err.value)


def test_torchvision_style_datasets_are_decoded_with_their_splits() -> None:
    class Tiny:
        classes = ("zero", "one")

        def __init__(self, n: int, offset: int) -> None:
            self.items = [(Image.new("L", (28, 28), 40 * i + offset), i % 2) for i in range(n)]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[Image.Image, int]:
            return self.items[i]

    decoded = sources.decode_indexed(SourceConfig(), "torchvision:Tiny", [("train", Tiny(4, 0)), ("test", Tiny(2, 1))])
    assert decoded.images.shape == (6, 1, 28, 28)
    assert decoded.class_names == ("zero", "one") and decoded.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert decoded.source_split == ["train"] * 4 + ["test"] * 2
    assert decoded.origin[4] == "test[0]" and int(decoded.images[4].max()) == 1


def sixteen_bit_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0]), 40_000, dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pixels_times_bit_depth_are_limited_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = Limits(max_pixels=1_500_000)
    assert sources.decode_one(
        image_bytes(size=(1000, 1000)), "wide.png", side=8, fit="crop", gray=False, limits=limits
    ).shape == (8, 8, 3)
    deep, loads = sixteen_bit_png((1000, 1000)), []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.mode) or original(self))
    with pytest.raises(
        SourceError,
        match=r"^file 'deep.png' is not accepted: too many pixels: 1000x1000 at 16 bits a sample, limit 750,000",
    ):
        sources.decode_one(deep, "/srv/x/deep.png", side=8, fit="crop", gray=True, limits=limits)
    assert loads == []  # refused from the header, before the pixels were decoded
    assert (
        sources.decode_one(sixteen_bit_png((800, 800)), "deep.png", side=8, fit="crop", gray=True, limits=limits).max()
        > 150
    )


def test_decodes_at_once_are_capped_per_process(make_folder, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    root = make_folder(class_files({"a": 4, "b": 4}))
    running, most, lock = [0], [0], threading.Lock()
    original = sources._fit

    def slow_fit(*args: object) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sources, "_fit", slow_fit)
    for slots, expected in (("1", 1), ("", 2)):
        monkeypatch.setenv("SYNTHLAB_MAX_DECODES", slots)
        most[0] = 0
        loads = [
            threading.Thread(target=sources.load, args=(SourceConfig(kind="folder", path=str(root)),)) for _ in range(3)
        ]
        for thread in loads:
            thread.start()
        for thread in loads:
            thread.join()
        assert most[0] == expected
    monkeypatch.setenv("SYNTHLAB_MAX_DECODES", "0")
    with pytest.raises(SourceError, match=r"SYNTHLAB_MAX_DECODES='0' is not accepted: expected a whole number"):
        sources.load(SourceConfig(kind="folder", path=str(root)))


def test_images_below_8_px_are_refused_unless_a_resolution_is_chosen(make_zip) -> None:  # type: ignore[no-untyped-def]
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match=r"source.resolution=4 is not accepted: .*from 8 to 512"):
        SourceConfig(resolution=4)
    path = make_zip(class_files({"a": 3, "b": 3}, size=(1, 1)))
    with pytest.raises(
        SourceError, match=r"source.resolution=None \(native size\) would train on 1x1 px images.*at least 8"
    ):
        load_zip(path)
    assert load_zip(path, resolution=8).images.shape == (6, 3, 8, 8)


def test_messages_name_the_uploaded_file_not_the_server_path(make_zip) -> None:  # type: ignore[no-untyped-def]
    data = make_zip(class_files({"only": 3}) | {"only/broken.png": b"\x89PNG not really"}).read_bytes()
    saved = store.save_upload("my set.zip", data)
    with pytest.raises(SourceError) as err:
        load_zip(saved)
    text = str(err.value)
    assert text.startswith("zip:my_set.zip has only the class 'only'") and str(store.home()) not in text
    assert saved.name not in text
    data = make_zip(class_files({"a": 2, "b": 2}) | {"b/broken.png": b"\x89PNG not really"}, "two.zip").read_bytes()
    decoded = load_zip(store.save_upload("two.zip", data))
    assert decoded.source == "zip:two.zip"
    why = reasons(decoded)["b/broken.png"]
    assert why == "corrupt or unreadable image: not a PNG, JPEG, WebP, BMP, GIF or TIFF image"
    with pytest.raises(SourceError, match=r"^source.path='gone.zip' is not a file"):
        load_zip(saved.with_name(saved.name[:17] + "gone.zip"))


def test_a_test_split_alone_says_what_layout_is_expected(make_zip) -> None:  # type: ignore[no-untyped-def]
    path = make_zip(class_files({"cat": 2, "dog": 2}, prefix="set/test/"))
    with pytest.raises(
        SourceError, match=r"has only the split folder\(s\) test/ and no train/ folder: expected .*train/"
    ):
        load_zip(path)


def test_a_source_whose_every_image_was_skipped_says_why(make_zip) -> None:  # type: ignore[no-untyped-def]
    files = {f"{c}/{i}.png": b"\x89PNG not really" for c in "ab" for i in range(3)}
    with pytest.raises(
        SourceError, match=r"has no usable images: every file was skipped \(corrupt or unreadable image \(6\)\)"
    ):
        load_zip(make_zip(files))
