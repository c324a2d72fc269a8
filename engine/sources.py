"""Read real images from a source and decode them to one uint8 array at the working resolution.

Sources: the built-in scikit-learn ``digits``; a folder or .zip of class folders
(``<root>/<class>/<image>`` or ``<root>/train|test/<class>/<image>``); torchvision datasets by name.
Archives are read member by member in memory and never extracted, so nothing is written outside the
workspace. Every file that cannot be used is skipped with a reason in :class:`LoadReport`; a source
that cannot be used at all raises :class:`SourceError`. Where this stops: splits and imbalance live
in :mod:`engine.datasets`, caching in :mod:`engine.store`.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from engine import store
from engine.config import SourceConfig

DECODER_VERSION = 1  # bump when decoding changes, so cached decodes are not reused
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")
SMALL_SIDE = 64  # images up to this side keep their native size when resolution is auto
# Auto working side for larger images: 128 px, the side pretrained backbones see here (models.PRETRAINED_SIZE),
# so a probe reads the photo's own detail rather than a 64 px copy blown up; unless the decoded set would not
# fit the memory limit, then 64. Generators learn from a 64 px copy (synth/generators.training_copy).
PHOTO_RESOLUTION = 128
PHOTO_FALLBACK = 64
HEADER_SAMPLE = 200  # files whose headers decide the auto resolution
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # more than 8 bits: scaled, not clipped
TRAIN_DIRS = ("train", "val", "valid", "validation")  # a source's own validation folder joins the training pool
SPLIT_DIRS = (*TRAIN_DIRS, "test")

ProgressFn = Callable[[int, int], None]


class SourceError(ValueError):
    """The source cannot be used; the message names the path or field and what is wrong."""


@dataclass(frozen=True)
class Limits:
    """Guards against archive and decompression bombs."""

    max_files: int = 500_000  # image files in one folder or archive
    max_total_bytes: int = 16 * 2**30  # declared uncompressed bytes of all image files
    max_file_bytes: int = 100 * 2**20  # bytes of one image file
    max_pixels: int = 50_000_000  # width * height of one image
    max_entries: int = 2_000_000  # files of any kind looked at in one folder or archive
    max_decoded_bytes: int = 4 * 2**30  # the decoded uint8 array at the working resolution


@dataclass(frozen=True)
class LoadReport:
    """What was read: files seen, files skipped with a reason, and the layout found."""

    scanned: int = 0
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason)
    layout: str = ""

    def reasons(self) -> dict[str, int]:
        """Skipped files counted by the kind of reason (text before the first colon)."""
        return dict(Counter(reason.split(":")[0] for _, reason in self.skipped))


@dataclass(frozen=True)
class Decoded:
    """All images of a source, decoded: ``images`` (N, C, S, S) uint8, ``labels`` (N,) int64."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str
    origin: list[str]
    sizes: list[tuple[int, int]]  # original (width, height)
    source_split: list[str]
    report: LoadReport


@dataclass(frozen=True)
class _Entry:
    path: str  # posix path inside the source
    size: int  # declared size in bytes
    read: Callable[[], bytes]


class _BadFile(Exception):
    pass


def load(cfg: SourceConfig, *, limits: Limits = Limits(), on_progress: ProgressFn | None = None) -> Decoded:
    """Decode every image of the source described by ``cfg``."""
    if cfg.kind == "digits":
        return _load_digits(cfg)
    if cfg.kind == "torchvision":
        return _load_torchvision(cfg, on_progress)
    path = _checked_path(cfg)
    if cfg.kind == "zip":
        try:
            with zipfile.ZipFile(path) as archive:
                entries, skipped, dirs = _zip_entries(archive, limits)
                return _load_files(cfg, f"zip:{path.name}", entries, skipped, dirs, limits, on_progress)
        except zipfile.BadZipFile as err:
            raise SourceError(f"source.path={str(path)!r} is not a readable .zip archive ({err})") from err
    entries, skipped, dirs = _folder_entries(path, limits)
    return _load_files(cfg, f"folder:{path.name}", entries, skipped, dirs, limits, on_progress)


def content_identity(cfg: SourceConfig) -> str:
    """A hash of the source's content: file bytes for a zip, names/sizes/times for a folder."""
    digest = hashlib.sha256()
    if cfg.kind == "digits":
        import sklearn

        digest.update(f"digits-{sklearn.__version__}".encode())
    elif cfg.kind == "torchvision":
        import torchvision

        digest.update(f"{cfg.name}-{torchvision.__version__}".encode())
    elif cfg.kind == "zip":
        with open(_checked_path(cfg), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        root = _checked_path(cfg)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                info = os.lstat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _checked_path(cfg: SourceConfig) -> Path:
    path = Path(cfg.path).expanduser()
    if not store.is_readable_location(path):
        raise SourceError(
            f"source.path={cfg.path!r} is outside the folders this server may read: "
            f"{', '.join(str(p) for p in [store.home(), *store.folder_roots()])}; "
            f"the server's ${store.FOLDER_ROOTS_ENV} sets them"
        )
    if cfg.kind == "zip" and not path.is_file():
        raise SourceError(f"source.path={cfg.path!r} is not a file; expected a .zip of class folders")
    if cfg.kind == "folder" and not path.is_dir():
        raise SourceError(f"source.path={cfg.path!r} is not a folder; expected a folder of class folders")
    return path


# 1. Listing files -----------------------------------------------------------------------------


def _unsafe_name(name: str) -> str | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe path: absolute path"
    if ".." in parts:
        return "unsafe path: contains '..'"
    return None


def _ignored(name: str) -> bool:
    """Hidden files and macOS archive metadata, left out quietly."""
    parts = name.split("/")
    return any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)


def _kind_of(name: str) -> str | None:
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        suffix = PurePosixPath(name).suffix or "(none)"
        return f"not an image: extension {suffix!r} is not one of {', '.join(IMAGE_EXTENSIONS)}"
    return None


def _check_totals(where: str, entries: list[_Entry], limits: Limits) -> None:
    total = sum(e.size for e in entries)
    if len(entries) > limits.max_files:
        raise SourceError(f"{where} holds {len(entries):,} image files; the limit is {limits.max_files:,}")
    if total > limits.max_total_bytes:
        raise SourceError(
            f"{where} declares {total / 2**20:,.0f} MiB of uncompressed images; the limit is "
            f"{limits.max_total_bytes / 2**20:,.0f} MiB (a possible zip bomb)"
        )


def _zip_entries(archive: zipfile.ZipFile, limits: Limits) -> tuple[list[_Entry], list[tuple[str, str]], set[str]]:
    entries, skipped, dirs = [], [], set()
    members = archive.infolist()
    if len(members) > limits.max_entries:
        raise SourceError(f"the archive holds {len(members):,} entries; the limit is {limits.max_entries:,}")
    for info in members:
        name = info.filename
        reason = _unsafe_name(name)
        if reason is None and _ignored(name):
            continue
        if info.is_dir():
            if reason is None:
                dirs.add(name.rstrip("/"))
            continue
        if reason is None and stat.S_ISLNK(info.external_attr >> 16):
            reason = "unsafe path: symbolic link"
        if reason is None:
            reason = _kind_of(name)
        if reason is None and info.file_size > limits.max_file_bytes:
            reason = f"too large: {info.file_size:,} bytes declared, limit {limits.max_file_bytes:,}"
        if reason:
            skipped.append((name, reason))
            continue
        entries.append(_Entry(name, info.file_size, _zip_reader(archive, info, limits.max_file_bytes)))
        dirs.update("/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1))
    _check_totals("the archive", entries, limits)
    return entries, skipped, dirs


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with archive.open(info) as member:
                data = member.read(cap + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
            raise _BadFile(f"corrupt archive member: {err}") from err
        if len(data) > cap:  # the header lied about the size
            raise _BadFile(f"too large: more than {cap:,} bytes when decompressed")
        return data

    return read


def _folder_entries(root: Path, limits: Limits) -> tuple[list[_Entry], list[tuple[str, str]], set[str]]:
    entries, skipped, dirs, seen = [], [], set(), 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir != "." and not _ignored(rel_dir):
            dirs.add(rel_dir)
        seen += len(filenames)
        if seen > limits.max_entries:
            raise SourceError(f"the folder {str(root)!r} holds more than {limits.max_entries:,} files")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if _ignored(rel):
                continue
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                reason: str | None = "unsafe path: symbolic link"
            elif not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
                reason = "not a regular file"
            else:
                reason = _kind_of(rel)
            if reason is None and info.st_size > limits.max_file_bytes:
                reason = f"too large: {info.st_size:,} bytes, limit {limits.max_file_bytes:,}"
            if reason:
                skipped.append((rel, reason))
                continue
            entries.append(_Entry(rel, info.st_size, full.read_bytes))
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                skipped.append(((Path(dirpath) / name).relative_to(root).as_posix(), "unsafe path: symbolic link"))
    _check_totals(f"the folder {str(root)!r}", entries, limits)
    return entries, skipped, dirs


# 2. Finding the class folders -----------------------------------------------------------------


def _assign(
    entries: list[_Entry], dirs: set[str]
) -> tuple[list[tuple[_Entry, str, str]], list[tuple[str, str]], str, set[str]]:
    """Map each file to (split, class) from the folder layout.

    Returns the assigned files, skipped files, the layout found and the class folders seen (with or
    without images). The split layout needs a ``train`` folder and only split-named folders beside it,
    so a class that happens to be called "train" does not switch layouts.
    """
    parts = [e.path.split("/") for e in entries]
    depth = 0  # strip wrapper folders such as "cifar10/" that hold everything
    while (
        parts
        and all(len(p) >= depth + 3 for p in parts)
        and len({p[depth] for p in parts}) == 1
        and parts[0][depth].lower() not in SPLIT_DIRS
    ):
        depth += 1
    tops = {p[depth].lower() for p in parts if len(p) > depth + 1}
    split_layout = "train" in tops and tops <= set(SPLIT_DIRS)
    prefix = parts[0][:depth] if parts else []
    class_dirs = set()
    for d in dirs:
        dp = d.split("/")
        at_class_level = dp[:depth] == prefix and len(dp) == depth + (2 if split_layout else 1)
        if at_class_level and (not split_layout or dp[depth].lower() in SPLIT_DIRS):
            class_dirs.add(dp[-1])
    assigned, skipped = [], []
    for entry, p in zip(entries, parts, strict=True):
        rest = p[depth:]
        if split_layout:
            if rest[0].lower() not in SPLIT_DIRS or len(rest) < 3:
                skipped.append(
                    (entry.path, "outside the layout: expected train/<class>/<image> or test/<class>/<image>")
                )
                continue
            assigned.append((entry, "test" if rest[0].lower() == "test" else "train", rest[1]))
        elif len(rest) < 2:
            skipped.append((entry.path, "outside the layout: not inside a class folder"))
        else:
            assigned.append((entry, "", rest[0]))
    layout = "<root>/train|test/<class>/<image>" if split_layout else "<root>/<class>/<image>"
    if depth:
        layout = layout.replace("<root>", "/".join(parts[0][:depth]))
    return assigned, skipped, layout, class_dirs


# 3. Decoding ----------------------------------------------------------------------------------


def _open(data: bytes, limits: Limits) -> Image.Image:
    """Open and fully decode one image (first frame), refusing decompression bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            image: Image.Image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
            width, height = image.size
            if width * height > limits.max_pixels:
                raise _BadFile(
                    f"too many pixels: {width}x{height}, limit {limits.max_pixels:,} (a possible decompression bomb)"
                )
            image.seek(0)
            image.load()  # decode fully: verify() lets truncated files through
            image = ImageOps.exif_transpose(image)  # phone photos: the size and pixels as displayed
    except _BadFile:
        raise
    except Image.DecompressionBombError as err:
        raise _BadFile(f"too many pixels: {err}") from err
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise _BadFile(f"corrupt or unreadable image: {err}") from err
    return image


def decode_one(data: bytes, name: str, *, side: int, fit: str, gray: bool, limits: Limits = Limits()) -> np.ndarray:
    """One image file (an upload, say) decoded exactly as a dataset's images are: (side, side, 1 | 3) uint8.

    The same guards (pixel limit, full decode, EXIF orientation, 16-bit and float scaling); raises
    :class:`SourceError` naming the file and the reason.
    """
    try:
        image = _open(data, limits)
    except _BadFile as err:
        raise SourceError(f"file {name!r} is not accepted: {err}; upload a PNG, JPEG, WebP, BMP, GIF or TIFF") from None
    return _fit(image, side, fit, gray)


def _check_decoded_size(count: int, side: int, limits: Limits) -> None:
    needed = count * side * side * 3
    if needed > limits.max_decoded_bytes:
        raise SourceError(
            f"source.resolution={side}: decoding {count:,} images at {side} px needs {needed / 2**30:.1f} GiB, "
            f"above the limit of {limits.max_decoded_bytes / 2**30:.1f} GiB; choose a smaller working resolution"
        )


def _is_gray(image: Image.Image) -> bool:
    if image.mode == "P":  # palette images (GIF) are gray when every palette entry is
        palette = np.asarray(image.getpalette() or [0, 0, 0], dtype=np.int32).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return image.mode in GRAY_MODES


def _fit(image: Image.Image, side: int, fit: str, gray: bool) -> np.ndarray:
    """(side, side, 3) uint8 array of the image, made square by crop, stretch or pad."""
    if image.mode in WIDE_MODES:  # 16-bit or float: scale to 8 bits instead of clipping at 255
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if wide.max() > 255 else 255.0
        image = Image.fromarray(np.clip(wide * (255.0 / top), 0, 255).round().astype(np.uint8))
    image = image.convert("L" if gray else "RGB")
    if image.size != (side, side):
        if fit == "crop":
            image = ImageOps.fit(image, (side, side), Image.Resampling.BILINEAR)
        elif fit == "pad":
            image = ImageOps.pad(image, (side, side), Image.Resampling.BILINEAR, color=0)
        else:
            image = image.resize((side, side), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _auto_side(sizes: list[tuple[int, int]], count: int, limits: Limits) -> int:
    """Native for small images; else PHOTO_RESOLUTION when ``count`` images fit the memory limit, else the fallback."""
    largest = max((max(w, h) for w, h in sizes), default=PHOTO_RESOLUTION)
    if largest <= SMALL_SIDE:
        return largest
    fits = count * PHOTO_RESOLUTION * PHOTO_RESOLUTION * 3 <= limits.max_decoded_bytes
    return PHOTO_RESOLUTION if fits else PHOTO_FALLBACK


def _peek_sizes(entries: list[_Entry], limits: Limits) -> list[tuple[int, int]]:
    sizes = []
    for entry in entries[:HEADER_SAMPLE]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(entry.read()), formats=PIL_FORMATS) as image:
                    sizes.append(image.size)
        except (_BadFile, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # the decode pass reports it
    return sizes


def _decode_all(
    cfg: SourceConfig,
    items: Iterator[tuple[str, Callable[[], Image.Image]]],
    count: int,
    side: int,
    on_progress: ProgressFn | None,
) -> tuple[np.ndarray, list[int], list[tuple[int, int]], list[tuple[str, str]]]:
    """Decode ``count`` images into (kept, S, S, C); returns array, kept positions, sizes, skips."""
    out = np.zeros((count, side, side, 3), dtype=np.uint8)
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[tuple[str, str]] = []
    all_gray = True
    for i, (name, opener) in enumerate(items):
        try:
            image = opener()
        except _BadFile as err:
            skipped.append((name, str(err)))
            continue
        gray = cfg.color == "grayscale" or (cfg.color == "auto" and _is_gray(image))
        all_gray &= gray
        out[len(kept)] = _fit(image, side, cfg.fit, gray)
        kept.append(i)
        sizes.append(image.size)
        if on_progress and (i % 500 == 0 or i == count - 1):
            on_progress(i + 1, count)
    channels = 1 if all_gray and cfg.color != "rgb" and kept else 3
    images = np.ascontiguousarray(out[: len(kept), :, :, :channels].transpose(0, 3, 1, 2))
    return images, kept, sizes, skipped


def _load_files(
    cfg: SourceConfig,
    source: str,
    entries: list[_Entry],
    skipped: list[tuple[str, str]],
    dirs: set[str],
    limits: Limits,
    on_progress: ProgressFn | None,
) -> Decoded:
    # 1. Assign files to splits and classes.
    assigned, layout_skips, layout, class_dirs = _assign(entries, dirs)
    skipped = skipped + layout_skips
    scanned = len(entries) + len(skipped) - len(layout_skips)
    if not assigned:
        raise SourceError(
            f"{source} has no class folders with images: expected <root>/<class>/<image> or "
            f"<root>/train|test/<class>/<image> with {', '.join(IMAGE_EXTENSIONS)} files"
        )
    # 2. Decode every file at the working resolution.
    side = cfg.resolution or _auto_side(_peek_sizes([a[0] for a in assigned], limits), len(assigned), limits)
    _check_decoded_size(len(assigned), side, limits)
    items = ((a[0].path, lambda e=a[0]: _open(e.read(), limits)) for a in assigned)
    images, kept, sizes, decode_skips = _decode_all(cfg, items, len(assigned), side, on_progress)
    skipped += decode_skips
    # 3. Classes: folders with no readable image are left out and reported.
    all_classes = sorted({a[2] for a in assigned} | class_dirs)
    present = sorted({assigned[i][2] for i in kept})
    for name in all_classes:
        if name not in present:
            skipped.append((name + "/", "empty class: no readable images in this class folder; class left out"))
    if len(present) < 2:
        found = f"only the class {present[0]!r}" if present else "no readable images"
        raise SourceError(f"{source} has {found}; at least 2 class folders with images are needed")
    index = {name: i for i, name in enumerate(present)}
    train_classes = {assigned[i][2] for i in kept if assigned[i][1] != "test"}
    if len(train_classes) < len(present):
        missing = sorted(set(present) - train_classes)
        raise SourceError(f"{source}: class {missing[0]!r} has test images but no train images")
    return Decoded(
        images=images,
        labels=np.array([index[assigned[i][2]] for i in kept], dtype=np.int64),
        class_names=tuple(present),
        source=source,
        origin=[assigned[i][0].path for i in kept],
        sizes=sizes,
        source_split=[assigned[i][1] for i in kept],
        report=LoadReport(scanned=scanned, skipped=tuple(skipped), layout=layout),
    )


# 4. Built-in and torchvision sources ----------------------------------------------------------


def _load_digits(cfg: SourceConfig) -> Decoded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), values 0..16
    side = cfg.resolution or 8
    items = ((f"digits[{i}]", lambda a=a: Image.fromarray(a)) for i, a in enumerate(pixels))
    images, kept, sizes, _ = _decode_all(cfg, items, len(pixels), side, None)
    n = len(kept)
    return Decoded(
        images=images,
        labels=bunch.target.astype(np.int64),
        class_names=tuple(str(c) for c in bunch.target_names),
        source="digits",
        origin=[f"digits[{i}]" for i in range(n)],
        sizes=sizes,
        source_split=[""] * n,
        report=LoadReport(scanned=n, layout="scikit-learn load_digits (8x8, 10 classes)"),
    )


_TORCHVISION_SPLITS: dict[str, list[tuple[str, dict[str, object]]]] = {
    "CIFAR10": [("train", {"train": True}), ("test", {"train": False})],
    "CIFAR100": [("train", {"train": True}), ("test", {"train": False})],
    "FashionMNIST": [("train", {"train": True}), ("test", {"train": False})],
    "MNIST": [("train", {"train": True}), ("test", {"train": False})],
    "SVHN": [("train", {"split": "train"}), ("test", {"split": "test"})],
    "STL10": [("train", {"split": "train"}), ("test", {"split": "test"})],
    "OxfordIIITPet": [("train", {"split": "trainval"}), ("test", {"split": "test"})],
    "Flowers102": [("train", {"split": "train"}), ("train", {"split": "val"}), ("test", {"split": "test"})],
}


def _open_torchvision(name: str, kwargs: dict[str, object]) -> object:
    import torchvision.datasets

    klass = getattr(torchvision.datasets, name)
    root = str(store.subdir("torchvision"))
    try:
        return klass(root=root, download=False, **kwargs)
    except RuntimeError:
        pass  # not on disk yet: download it
    try:
        return klass(root=root, download=True, **kwargs)
    except Exception as err:  # urllib, http and checksum errors all mean the same to the user
        raise SourceError(
            f"torchvision dataset {name} is not on this machine and could not be downloaded "
            f"({type(err).__name__}); this machine may be offline. Download it on a connected "
            f"machine into {root}, or upload it as a .zip of class folders."
        ) from err


def _load_torchvision(cfg: SourceConfig, on_progress: ProgressFn | None) -> Decoded:
    parts = [(split, _open_torchvision(cfg.name, kwargs)) for split, kwargs in _TORCHVISION_SPLITS[cfg.name]]
    return decode_indexed(cfg, f"torchvision:{cfg.name}", parts, on_progress)


def _const(image: Image.Image) -> Callable[[], Image.Image]:
    return lambda: image


def decode_indexed(
    cfg: SourceConfig, source: str, parts: list[tuple[str, object]], on_progress: ProgressFn | None = None
) -> Decoded:
    """Decode map-style datasets whose items are (PIL image, int label), one per split."""
    refs = [(split, ds, i) for split, ds in parts for i in range(len(ds))]  # type: ignore[arg-type]
    first = parts[0][1]
    sample = [first[i][0].size for i in range(min(HEADER_SAMPLE, len(first)))]  # type: ignore[index,arg-type]
    side = cfg.resolution or _auto_side(sample, len(refs), Limits())
    labels: list[int] = []

    def items() -> Iterator[tuple[str, Callable[[], Image.Image]]]:
        for split, ds, i in refs:
            image, label = ds[i]  # type: ignore[index]
            labels.append(int(label))
            yield f"{split}[{i}]", _const(image)

    images, kept, sizes, skipped = _decode_all(cfg, items(), len(refs), side, on_progress)
    names = getattr(first, "classes", None) or [str(c) for c in range(max(labels) + 1)]
    return Decoded(
        images=images,
        labels=np.array([labels[i] for i in kept], dtype=np.int64),
        class_names=tuple(str(n) for n in names),
        source=source,
        origin=[f"{refs[i][0]}[{refs[i][2]}]" for i in kept],
        sizes=sizes,
        source_split=[refs[i][0] for i in kept],
        report=LoadReport(
            scanned=len(refs), skipped=tuple(skipped), layout=f"torchvision.datasets.{source.split(':')[1]}"
        ),
    )
