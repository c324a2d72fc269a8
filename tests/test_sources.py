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
from PIL import Image

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
    monkeypatch.delenv("SYNTHLAB_FOLDER_ROOTS")  # default: the workspace and the server user's home only
    assert store.folder_roots() == [Path.home().resolve()]
    if not str(root.resolve()).startswith(str(Path.home().resolve())):
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
