"""Read real images from a source and decode them to one uint8 array at the working resolution.

Sources: the built-in scikit-learn ``digits``; a folder or .zip of class folders
(``<root>/<class>/<image>`` or ``<root>/train|test/<class>/<image>``); torchvision datasets by name.
Archives are read member by member in memory and never extracted, so nothing is written outside the
workspace; listing and reading them within their bounds is :mod:`engine.archives`' job. Each file is
read once and decoded under a server-wide cap on decodes running at once. Every file that cannot be
used is skipped with a reason in :class:`LoadReport`; a source that cannot be used at all raises
:class:`SourceError`. Where this stops: splits and imbalance live in :mod:`engine.datasets`, caching
in :mod:`engine.store`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import threading
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from engine import store
from engine.archives import (
    IMAGE_EXTENSIONS,
    BadFile,
    Entry,
    Limits,
    Listing,
    MemberReader,
    SourceError,
    assign,
    list_folder,
    list_zip,
    shown_name,
    spanned,
)
from engine.archives import clean as _clean
from engine.config import MAX_RESOLUTION, MIN_RESOLUTION, SourceConfig
from engine.jobs import Cancelled

__all__ = ["IMAGE_EXTENSIONS", "Cancelled", "Decoded", "Limits", "LoadReport", "SourceError", "decode_one", "load"]

DECODER_VERSION = 1  # bump when decoding changes, so cached decodes are not reused
PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")
SMALL_SIDE = 64  # images up to this side keep their native size when resolution is auto
# Auto working side for larger images: 128 px, the side pretrained backbones see here (models.PRETRAINED_SIZE),
# so a probe reads the photo's own detail rather than a 64 px copy blown up; unless the decoded set would not
# fit the memory limit, then 64. Generators learn from a 64 px copy (synth/generators.training_copy).
PHOTO_RESOLUTION = 128
PHOTO_FALLBACK = 64
HEADER_SAMPLE = 200  # files whose headers decide the auto resolution
SAMPLE_BYTES = 64 * 2**20  # ... or fewer: the sample's bytes are kept until decoded, so each file is read once
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # more than 8 bits: scaled, not clipped
SAMPLE_BITS = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}  # others: 8 bits a sample
DECODES_ENV = "SYNTHLAB_MAX_DECODES"  # images decoded at once in this server process; unset: DEFAULT_DECODES
DEFAULT_DECODES = 2
PROGRESS_EVERY = 0.1  # seconds between progress reports; the stop flag is checked per file and per MiB read

# Skip reasons that say a file is not an image in a class folder (rather than an image that could not be read).
LAYOUT_REASONS = {"outside the layout", "not an image", "unsafe path", "not a regular file"}

ProgressFn = Callable[[int, int], None]
DEFAULT_LIMITS = Limits()  # unset fields follow the server settings when read, not when this is made
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class LoadReport:
    """What was read: files seen, files skipped with a reason, the layout found, decompressed bytes read."""

    scanned: int = 0
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason)
    layout: str = ""
    bytes_read: int = 0  # decompressed bytes read from the folder or archive (0 for built-in sources)

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


def load(
    cfg: SourceConfig,
    *,
    limits: Limits = DEFAULT_LIMITS,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Decoded:
    """Decode every image of the source described by ``cfg``.

    ``on_progress(done, total)`` is called every ``PROGRESS_EVERY`` seconds and after the last file;
    raising from it stops the load, as does ``should_stop()`` turning true (checked per file and per MiB
    read; raises :class:`~engine.jobs.Cancelled`). Raises :class:`SourceError` naming the file or field.
    """
    ticker = _Ticker(on_progress, should_stop)
    if cfg.kind == "digits":
        return _load_digits(cfg, ticker)
    if cfg.kind == "torchvision":
        return _load_torchvision(cfg, ticker)
    path = _checked_path(cfg)
    shown = shown_name(path, cfg.path)
    if cfg.kind == "folder":
        return _load_files(cfg, f"folder:{path.name}", list_folder(path, shown, limits), limits, ticker)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, struct.error) as err:
        if "span multiple disks" in str(err):
            raise spanned(shown) from None
        raise SourceError(f"source.path={shown!r} is not a readable .zip archive ({_clean(err)})") from None
    with archive:
        name = shown.replace("\\", "/").rsplit("/", 1)[-1]
        listing = list_zip(archive, name, path.stat().st_size, limits)
        return _load_files(cfg, f"zip:{name}", listing, limits, ticker)


class _Ticker:
    """Progress and the stop flag of one load: ``tick()`` per file and per chunk, ``done`` files so far."""

    def __init__(self, on_progress: ProgressFn | None, should_stop: StopFn | None) -> None:
        self.on_progress, self.should_stop = on_progress, should_stop
        self.done, self.total, self.last = 0, 0, 0.0

    def tick(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("loading the dataset was cancelled")
        now = time.monotonic()
        if self.on_progress is not None and (now - self.last >= PROGRESS_EVERY or self.done == self.total):
            self.last = now
            self.on_progress(self.done, self.total)

    def advance(self) -> None:
        self.done += 1
        self.tick()


_slots_lock = threading.Lock()
_slots: tuple[int, threading.Semaphore] | None = None


def max_decodes() -> int:
    """Images this server process decodes at once: ``$SYNTHLAB_MAX_DECODES``, else 2."""
    raw = os.environ.get(DECODES_ENV, "").strip()
    if not raw:
        return DEFAULT_DECODES
    if not raw.isdigit() or int(raw) < 1:
        raise SourceError(
            f"the server setting {DECODES_ENV}={raw!r} is not accepted: expected a whole number, 1 or more"
        )
    return int(raw)


@contextlib.contextmanager
def decode_slot(wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold one of the process's decode slots; ``wait()`` is called while waiting for one (raise to give up)."""
    global _slots
    count = max_decodes()
    with _slots_lock:
        if _slots is None or _slots[0] != count:
            _slots = (count, threading.Semaphore(count))
        semaphore = _slots[1]
    while not semaphore.acquire(timeout=PROGRESS_EVERY):
        if wait is not None:
            wait()
    try:
        yield
    finally:
        semaphore.release()


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
    shown = shown_name(path, cfg.path)
    if not store.is_readable_location(path):
        raise SourceError(
            f"source.path={shown!r} is outside the folders this server may read: "
            f"{', '.join(str(p) for p in [store.home(), *store.folder_roots()])}; "
            f"the server's ${store.FOLDER_ROOTS_ENV} sets them"
        )
    if cfg.kind == "zip" and not path.is_file():
        raise SourceError(f"source.path={shown!r} is not a file; expected a .zip of class folders")
    if cfg.kind == "folder" and not path.is_dir():
        raise SourceError(f"source.path={shown!r} is not a folder; expected a folder of class folders")
    return path


# 1. Decoding ----------------------------------------------------------------------------------


def _open(data: bytes, limits: Limits) -> Image.Image:
    """Open and fully decode one image (first frame), refusing decompression bombs from the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            image: Image.Image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
            _check_pixels(image, limits)
            image.seek(0)
            image.load()  # decode fully: verify() lets truncated files through
            image = ImageOps.exif_transpose(image)  # phone photos: the size and pixels as displayed
    except BadFile:
        raise
    except Image.DecompressionBombError as err:
        raise BadFile(f"too many pixels: {_clean(err)}") from None
    except Image.UnidentifiedImageError:
        raise BadFile("corrupt or unreadable image: not a PNG, JPEG, WebP, BMP, GIF or TIFF image") from None
    except Exception as err:  # PIL's parsers raise many kinds (struct.error, IndexError, ...) on crafted files
        raise BadFile(f"corrupt or unreadable image: {_clean(err)}") from None
    return image


def _check_pixels(image: Image.Image, limits: Limits) -> None:
    """Pixels times bits a sample within ``max_pixels`` at 8 bits: a 16-bit image may have half as many."""
    width, height = image.size
    bits = SAMPLE_BITS.get(image.mode, 8)
    if width * height * bits > limits.max_pixels * 8:
        at = f" at {bits} bits a sample" if bits != 8 else ""
        limit = limits.max_pixels * 8 // bits
        raise BadFile(f"too many pixels: {width}x{height}{at}, limit {limit:,}{at} (a possible decompression bomb)")


def decode_one(
    data: bytes, name: str, *, side: int, fit: str, gray: bool, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """One image file (an upload, say) decoded exactly as a dataset's images are: (side, side, 1 | 3) uint8.

    The same guards (pixel limit, full decode, EXIF orientation, 16-bit and float scaling, the decode
    slots); raises :class:`SourceError` naming the file and the reason.
    """
    shown = name.replace("\\", "/").rsplit("/", 1)[-1]
    with decode_slot():
        try:
            image = _open(data, limits)
        except BadFile as err:
            raise SourceError(
                f"file {shown!r} is not accepted: {err}; upload a PNG, JPEG, WebP, BMP, GIF or TIFF"
            ) from None
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
        wide = np.array(image, dtype=np.float64)
        above = np.isposinf(wide) if image.mode == "F" else None  # a float image may hold NaN (read as 0) and inf
        if above is not None:
            np.nan_to_num(wide, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        top = 65535.0 if wide.max() > 255 else 255.0
        wide *= 255.0 / top  # in place: one float copy of a large image, not three
        np.clip(wide, 0, 255, out=wide)
        if above is not None:
            wide[above] = 255.0
        image = Image.fromarray(np.rint(wide, out=wide).astype(np.uint8))
        del wide
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
    """Native for small images; else PHOTO_RESOLUTION when ``count`` images fit the memory limit, else the fallback.

    Images under MIN_RESOLUTION are refused rather than blown up unasked: the message says how to choose a side.
    """
    largest = max((max(w, h) for w, h in sizes), default=PHOTO_RESOLUTION)
    if largest < MIN_RESOLUTION:
        w, h = max(sizes, key=max)
        raise SourceError(
            f"source.resolution=None (native size) would train on {w}x{h} px images, and at least {MIN_RESOLUTION} "
            f"px a side are needed: use larger images, or set source.resolution to a side from {MIN_RESOLUTION} to "
            f"{MAX_RESOLUTION} to enlarge them"
        )
    if largest <= SMALL_SIDE:
        return largest
    fits = count * PHOTO_RESOLUTION * PHOTO_RESOLUTION * 3 <= limits.max_decoded_bytes
    return PHOTO_RESOLUTION if fits else PHOTO_FALLBACK


def _header_size(data: bytes) -> tuple[int, int] | None:
    """An image's (width, height) from its header alone; None when it cannot be read (the decode reports it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as image:
                return image.size
    except Exception:  # the decode reports it, with its reason
        return None


def _read_sample(entries: list[Entry], reader: MemberReader) -> dict[int, bytes | BadFile]:
    """The first files' bytes (or why they cannot be read), kept for the decode so each is read once."""
    sample: dict[int, bytes | BadFile] = {}
    kept = 0
    for i, entry in enumerate(entries[:HEADER_SAMPLE]):
        if i and kept + entry.size > SAMPLE_BYTES:
            break
        try:
            data = reader.read(entry)
        except BadFile as err:
            sample[i] = err
            continue
        sample[i], kept = data, kept + len(data)
    return sample


def _decode_all(
    cfg: SourceConfig,
    items: Iterator[tuple[str, Callable[[], Image.Image]]],
    count: int,
    side: int,
    ticker: _Ticker,
) -> tuple[np.ndarray, list[int], list[tuple[int, int]], list[tuple[str, str]]]:
    """Decode ``count`` images into (kept, S, S, C); returns array, kept positions, sizes, skips.

    Each image is opened and fitted holding a decode slot; progress and the stop flag after every file.
    """
    out = np.zeros((count, side, side, 3), dtype=np.uint8)
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[tuple[str, str]] = []
    all_gray = True
    ticker.done, ticker.total = 0, count
    for i, (name, opener) in enumerate(items):
        with decode_slot(ticker.tick):
            try:
                image = opener()
            except BadFile as err:
                skipped.append((name, str(err)))
                image = None
            if image is not None:
                gray = cfg.color == "grayscale" or (cfg.color == "auto" and _is_gray(image))
                try:
                    out[len(kept)] = _fit(image, side, cfg.fit, gray)
                except Exception as err:  # an odd mode or palette that opened but does not convert
                    skipped.append((name, f"corrupt or unreadable image: {_clean(err)}"))
                else:
                    all_gray &= gray
                    kept.append(i)
                    sizes.append(image.size)
                del image
        ticker.advance()
    channels = 1 if all_gray and cfg.color != "rgb" and kept else 3
    images = np.ascontiguousarray(out[: len(kept), :, :, :channels].transpose(0, 3, 1, 2))
    return images, kept, sizes, skipped


def _nothing_usable(source: str, skipped: list[tuple[str, str]]) -> SourceError:
    expected = (
        f"expected <root>/<class>/<image> or <root>/train|test/<class>/<image> with {', '.join(IMAGE_EXTENSIONS)} files"
    )
    why = Counter(reason.split(":")[0] for _, reason in skipped if not reason.startswith("empty class"))
    if set(why) <= LAYOUT_REASONS:  # nothing that looked like an image in a class folder
        return SourceError(f"{source} has no class folders with images: {expected}")
    counts = ", ".join(f"{reason} ({n:,})" for reason, n in why.most_common(3))
    return SourceError(f"{source} has no usable images: every file was skipped ({counts}); {expected}")


def _load_files(cfg: SourceConfig, source: str, listing: Listing, limits: Limits, ticker: _Ticker) -> Decoded:
    # 1. Assign files to splits and classes.
    assigned, layout_skips, layout, class_dirs = assign(listing.entries, listing.dirs, source)
    skipped = listing.skipped + layout_skips
    scanned = len(listing.entries) + len(listing.skipped)
    if not assigned:
        raise _nothing_usable(source, skipped)
    # 2. Read the first files (each once) and choose the working side from their headers.
    shown = source.split(":", 1)[1]
    reader = MemberReader(shown, limits, limits.budget_for(listing.source_bytes), ticker.tick, zipped=listing.zipped)
    files = [a[0] for a in assigned]
    ticker.total = len(files)
    early = {} if cfg.resolution else _read_sample(files, reader)
    if cfg.resolution:
        side = cfg.resolution
    else:
        sizes = [s for data in early.values() if isinstance(data, bytes) and (s := _header_size(data))]
        side = _auto_side(sizes, len(files), limits) if sizes else PHOTO_RESOLUTION
    _check_decoded_size(len(files), side, limits)

    # 3. Decode every file at the working resolution.
    def opener(i: int) -> Image.Image:
        data = early.pop(i) if i in early else reader.read(files[i])
        if isinstance(data, BadFile):
            raise data
        return _open(data, limits)

    items = ((f.path, lambda i=i: opener(i)) for i, f in enumerate(files))
    images, kept, sizes, decode_skips = _decode_all(cfg, items, len(files), side, ticker)
    skipped += decode_skips
    # 4. Classes: folders with no readable image are left out and reported.
    all_classes = sorted({a[2] for a in assigned} | class_dirs)
    present = sorted({assigned[i][2] for i in kept})
    for name in all_classes:
        if name not in present:
            skipped.append((name + "/", "empty class: no readable images in this class folder; class left out"))
    if not present:
        raise _nothing_usable(source, skipped)
    if len(present) < 2:
        raise SourceError(
            f"{source} has only the class {present[0]!r}; at least 2 class folders with images are needed"
        )
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
        report=LoadReport(scanned=scanned, skipped=tuple(skipped), layout=layout, bytes_read=reader.bytes_read),
    )


# 2. Built-in and torchvision sources ----------------------------------------------------------


def _load_digits(cfg: SourceConfig, ticker: _Ticker) -> Decoded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), values 0..16
    side = cfg.resolution or 8
    items = ((f"digits[{i}]", lambda a=a: Image.fromarray(a)) for i, a in enumerate(pixels))
    images, kept, sizes, _ = _decode_all(cfg, items, len(pixels), side, ticker)
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


def _load_torchvision(cfg: SourceConfig, ticker: _Ticker) -> Decoded:
    parts = [(split, _open_torchvision(cfg.name, kwargs)) for split, kwargs in _TORCHVISION_SPLITS[cfg.name]]
    return decode_indexed(cfg, f"torchvision:{cfg.name}", parts, ticker.on_progress, ticker.should_stop)


def _const(image: Image.Image) -> Callable[[], Image.Image]:
    return lambda: image


def decode_indexed(
    cfg: SourceConfig,
    source: str,
    parts: list[tuple[str, object]],
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
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

    images, kept, sizes, skipped = _decode_all(cfg, items(), len(refs), side, _Ticker(on_progress, should_stop))
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
