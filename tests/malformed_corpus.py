"""The malformed-input corpus for :func:`engine.sources.load`: every case builds its input at run time.

A case is a small dataclass: an id, a builder that writes the input (a .zip, a folder, a FIFO...) into
a given folder and returns the source path, and the outcome the engine should give: refused with a
:class:`~engine.sources.SourceError` whose message matches a regex, or loaded with the named files
skipped for the expected reasons and the expected images and classes kept. Expected reasons are
regexes over the meaningful words ("overlap", "encrypt", "ratio|bomb"), not whole sentences.

Nothing here is committed as binary: archives, bombs and broken images are written by code, each a few
MB at most on disk. :class:`ReadMeter` counts the bytes that :mod:`zipfile` decompresses, independently
of the engine's own bookkeeping. Used by ``tests/test_malformed_corpus.py`` (the assertions) and
``bench/malformed_corpus.py`` (the time per case); this module imports neither pytest nor Streamlit.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import os
import socket
import stat
import struct
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from engine import sources
from engine.config import SourceConfig
from engine.sources import Limits, SourceError

MiB = 2**20
GiB = 2**30
BOMB_READ_CAP = 32 * MiB  # a bomb must be stopped long before this many bytes are decompressed
GOOD = {"a": 2, "b": 2}  # the good images most cases carry beside the bad ones
UNSAFE = r"unsafe|\.\.|absolute|outside"
SYMLINK = r"symbolic link|symlink"
CORRUPT = r"corrupt|unreadable|truncat|cannot identify|not a valid|broken"
PIXELS = r"pixels|bomb"
NOT_IMAGE = r"not an image"
SPECIAL = r"not a regular file|fifo|device|socket|special"
DUPLICATE = r"more than once|duplicate"
NOT_A_ZIP = r"not a readable \.zip|not a zip|zip archive"
Build = Callable[[Path], Path]
Data = bytes | Callable[[], bytes]  # bytes, or a function that makes them when the case is built


@dataclass(frozen=True)
class Case:
    """One malformed input and the outcome the engine owes it."""

    id: str
    build: Build  # writes the input into the given folder, returns the source path
    kind: Literal["zip", "folder"] = "zip"
    error: str | None = None  # regex a SourceError message must match; None: the source loads
    skipped: dict[str, str] = field(default_factory=dict)  # file -> regex of its skip reason
    kept: int | None = None  # images decoded
    classes: tuple[str, ...] | None = None  # class names of the decoded set
    side: int | None = None  # working side of the decoded images (auto resolution)
    exact: bool = True  # no skipped files other than those listed (and empty-class notes)
    max_read: int | None = None  # bytes zipfile may decompress; None: the archive budget
    limits: Limits = field(default_factory=Limits)
    sentinels: tuple[str, ...] = ()  # file names a zip slip would write, looked for outside the workspace
    timeout: float = 30.0  # seconds, a guard against a read that never ends (a FIFO, /dev/zero)
    uploaded: bool = False  # built in the user's uploads folder: messages name the file, never the server path

    def config(self, source: Path) -> SourceConfig:
        return SourceConfig(kind=self.kind, path=str(source))


def budget(archive_bytes: int, limits: Limits) -> int:
    """Bytes an archive may decompress in total: the budget ``limits`` sets, else max(4 GiB, 3x the archive's size)."""
    return limits.decode_budget if limits.decode_budget is not None else max(4 * GiB, 3 * archive_bytes)


# 1. Measuring what zipfile decompresses -------------------------------------------------------


class ReadMeter:
    """Sums the bytes returned by ``zipfile.ZipExtFile.read``, ``read1`` and ``readinto`` while active.

    Nested calls (``readinto`` that calls ``read``, a buffered wrapper) count once, at the outermost call.
    """

    METHODS = ("read", "read1", "readinto")

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()
        self._depth = threading.local()

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(this: Any, *args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "value", 0)
            self._depth.value = depth + 1
            try:
                result = method(this, *args, **kwargs)
            finally:
                self._depth.value = depth
            if depth == 0:
                with self._lock:
                    self.total += len(result) if isinstance(result, bytes | bytearray) else int(result or 0)
            return result

        return counted

    @contextmanager
    def active(self) -> Iterator[ReadMeter]:
        own = {name: zipfile.ZipExtFile.__dict__.get(name) for name in self.METHODS}
        for name in self.METHODS:
            setattr(zipfile.ZipExtFile, name, self._wrap(getattr(zipfile.ZipExtFile, name)))
        try:
            yield self
        finally:
            for name, method in own.items():
                if method is None:
                    delattr(zipfile.ZipExtFile, name)
                else:
                    setattr(zipfile.ZipExtFile, name, method)


@dataclass(frozen=True)
class Outcome:
    """What one load gave: the decoded set or the refusal, the bytes decompressed and the seconds taken."""

    decoded: sources.Decoded | None
    error: SourceError | None
    read_bytes: int
    seconds: float


def run(case: Case, source: Path) -> Outcome:
    """Load ``source`` as ``case`` says, counting decompressed bytes; SourceError is an outcome, not a raise."""
    meter = ReadMeter()
    start = time.perf_counter()
    with meter.active():
        try:
            decoded, error = sources.load(case.config(source), limits=case.limits), None
        except SourceError as err:
            decoded, error = None, err
    return Outcome(decoded, error, meter.total, time.perf_counter() - start)


# 2. Bytes: images, deflate streams, raw zip records ---------------------------------------------


def image(fmt: str = "PNG", size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0, **save: Any) -> bytes:
    """A small seeded random image in ``mode``, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16", "I;16B"):
        pil = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        if mode == "I;16B":
            pil = Image.frombytes("I;16B", size, np.asarray(pil, dtype=">u2").tobytes())
    elif mode == "I":
        pil = Image.fromarray(rng.integers(-(2**20), 2**20, (h, w), dtype=np.int32))
    elif mode == "F":
        pil = Image.fromarray(rng.normal(0.0, 1.0, (h, w)).astype(np.float32))
    else:
        pil = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def noise(size: int, seed: int = 0) -> bytes:
    """``size`` seeded random bytes."""
    return np.random.default_rng(seed).bytes(size)


def good(classes: dict[str, int] = GOOD, prefix: str = "") -> dict[str, bytes]:
    """{path: png bytes}: ``count`` small images in each class folder under ``prefix``."""
    return {
        f"{prefix}{name}/{i}.png": image(seed=100 * c + i)
        for c, (name, n) in enumerate(classes.items())
        for i in range(n)
    }


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, idat: bytes, *, bit_depth: int = 8, color: int = 2, extra: bytes = b"") -> bytes:
    """A PNG from its parts: IHDR as given, optional chunks, one IDAT (already zlib-compressed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@functools.cache
def zeros_stream(size: int, *, raw: bool = True) -> tuple[bytes, int]:
    """``size`` zero bytes compressed (raw deflate for zip members, zlib for PNG), and their CRC-32."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15 if raw else 15)
    block, crc, out = bytes(MiB), 0, []
    for start in range(0, size, MiB):
        piece = block[: min(MiB, size - start)]
        crc = zlib.crc32(piece, crc)
        out.append(packer.compress(piece))
    out.append(packer.flush())
    return b"".join(out), crc


@functools.cache
def png_bomb(side: int = 30_000) -> bytes:
    """A real 1-bit ``side`` x ``side`` PNG of zeros: some 100 kB that decode to ``side``**2 pixels."""
    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    rows = row * 1000
    idat = b"".join(packer.compress(rows) for _ in range(side // 1000)) + packer.flush()
    return png_raw(side, side, idat, bit_depth=1, color=0)


@dataclass(frozen=True)
class Raw:
    """One zip member written field by field, so that its headers may lie."""

    name: str | bytes
    data: bytes = b""
    method: int = zipfile.ZIP_DEFLATED
    flags: int = 0
    mode: int = stat.S_IFREG | 0o644  # unix st_mode, kept in external_attr >> 16
    system: int = 3  # 3: unix, 0: MS-DOS
    payload: bytes | None = None  # the stored bytes; None: ``data`` compressed with ``method``
    crc: int | None = None
    file_size: int | None = None  # declared uncompressed size; None: the truth
    compress_size: int | None = None  # declared compressed size; None: the truth
    volume: int = 0  # the disk the member starts on (0 in a whole archive)
    local_name: bytes | None = None  # the name in the local header; None: the central one
    at: int | None = None  # point into member ``at`` instead of writing a header (overlapping entries)
    at_delta: int = 0  # bytes past member ``at``'s local header offset


def _encode(name: str | bytes) -> tuple[bytes, int]:
    if isinstance(name, bytes):
        return name, 0
    return name.encode(), (0x800 if not name.isascii() else 0)


def _payload(member: Raw) -> bytes:
    if member.payload is not None:
        return member.payload
    if member.method == zipfile.ZIP_DEFLATED:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        return packer.compress(member.data) + packer.flush()
    return member.data


def raw_zip(
    members: list[Raw],
    *,
    comment: bytes = b"",
    disks: tuple[int, int] = (0, 0),
    locator_disks: int | None = None,
    local_headers: bool = True,
) -> bytes:
    """Bytes of a zip written record by record (APPNOTE 4.3): local headers, central directory, EOCD.

    ``disks`` is (this disk, disk where the central directory starts); ``locator_disks`` adds a zip64
    end-of-central-directory locator that claims that many disks; ``local_headers=False`` leaves the
    file data out, as the last part of a split archive does (the offsets point into the parts before).
    """
    out, central, offsets = bytearray(), bytearray(), list[int]()
    position = 0  # where the next local header starts, whether or not it is written here
    for member in members:
        name, utf8 = _encode(member.name)
        payload = _payload(member)
        crc = zlib.crc32(member.data) if member.crc is None else member.crc
        size = len(member.data) if member.file_size is None else member.file_size
        flags = member.flags | utf8
        stored = len(payload) if member.compress_size is None else member.compress_size
        if member.at is not None:
            offset = offsets[member.at] + member.at_delta
        else:
            offset = position
            local = member.local_name if member.local_name is not None else name
            header = struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, flags, member.method, 0, 0x21, crc, stored, size, len(local), 0
            )
            position += len(header + local + payload)
            if local_headers:
                out += header + local + payload
        offsets.append(offset)
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            (member.system << 8) | 20,
            20,
            flags,
            member.method,
            0,
            0x21,
            crc,
            stored,
            size,
            len(name),
            0,
            0,
            member.volume,
            0,
            (member.mode << 16) | (0x10 if member.mode & stat.S_IFDIR == stat.S_IFDIR else 0),
            offset,
        )
        central += name
    cd_offset = len(out)
    out += central
    if locator_disks is not None:
        out += struct.pack("<IIQI", 0x07064B50, 0, cd_offset, locator_disks)
    n = len(members)
    out += struct.pack("<IHHHHIIH", 0x06054B50, disks[0], disks[1], n, n, len(central), cd_offset, len(comment))
    return bytes(out + comment)


def good_raw(classes: dict[str, int] = GOOD) -> list[Raw]:
    return [Raw(name, data) for name, data in good(classes).items()]


def local_header(name: bytes, data: bytes) -> bytes:
    """A stored member's local header and data."""
    return struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(data), len(data), len(data), len(name), 0
    )


# 3. Builders ----------------------------------------------------------------------------------


def made(data: Data) -> bytes:
    return data() if callable(data) else data


def zip_of(
    files: Mapping[str, Data], *, name: str = "data.zip", method: int = zipfile.ZIP_DEFLATED, comment: bytes = b""
) -> Build:
    """A well-formed zip of ``files`` (the standard writer)."""

    def build(where: Path) -> Path:
        path = where / name
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            for rel, data in files.items():
                archive.writestr(rel, made(data))
            archive.comment = comment
        return path

    return build


def raw_of(
    members: list[Raw] | Callable[[], list[Raw]],
    *,
    name: str = "data.zip",
    prefix: bytes = b"",
    suffix: bytes = b"",
    **kw: Any,
) -> Build:
    """A zip written by :func:`raw_zip` (members given, or made when built), with optional bytes around it."""

    def build(where: Path) -> Path:
        path = where / name
        path.write_bytes(prefix + raw_zip(members() if callable(members) else members, **kw) + suffix)
        return path

    return build


def bytes_of(data: Data, name: str = "data.zip") -> Build:
    def build(where: Path) -> Path:
        path = where / name
        path.write_bytes(made(data))
        return path

    return build


def folder_of(files: Mapping[str, Data], then: Callable[[Path, Path], None] | None = None) -> Build:
    """A folder of ``files`` (any name Linux allows, via os.fsdecode); ``then(root, where)`` adds more."""

    def build(where: Path) -> Path:
        root = where / "folder"
        root.mkdir()
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(made(data))
        if then is not None:
            then(root, where)
        return root

    return build


def tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for rel, data in good().items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in files.items():
            archive.writestr(rel, data)
    return buffer.getvalue()


class _Unseekable(io.RawIOBase):
    """A write-only stream without seek: zipfile then streams each member with a data descriptor."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def streamed_zip(files: dict[str, bytes]) -> bytes:
    """A zip as written to a pipe: flag bit 3, sizes in data descriptors after each member."""
    out = _Unseekable()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in files.items():
            with archive.open(rel, "w") as member:
                member.write(data)
    return bytes(out.data)


def zip64_zip(files: dict[str, bytes]) -> bytes:
    """A zip whose members all carry zip64 extra fields, as large-file writers make them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in files.items():
            with archive.open(rel, "w", force_zip64=True) as member:
                member.write(data)
    return buffer.getvalue()


def nested_zip(levels: int, fan_out: int) -> bytes:
    """42.zip in miniature: ``fan_out`` copies of the level below, ``levels`` deep, 1 MiB of zeros at the bottom."""
    data = zip_bytes({"zeros.bin": bytes(MiB)})
    for _ in range(levels):
        data = zip_bytes({f"{i}.zip": data for i in range(fan_out)})
    return data


# 4. Broken and lying images ----------------------------------------------------------------------


def truncated(fmt: str) -> bytes:
    data = image(fmt, size=(48, 40), seed=7)
    return data[: len(data) // 2]


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(image("JPEG", size=(16, 16)))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(image("BMP", size=(16, 16)))
    data[18:26] = struct.pack("<ii", width, height)  # BITMAPINFOHEADER biWidth, biHeight
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(image("GIF", size=(16, 16), mode="P"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen descriptor: Pillow's image size
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    body = image("WEBP", size=(16, 16))[12:]  # the VP8/VP8L chunk of a real image
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    riff = b"WEBP" + vp8x + body
    return b"RIFF" + struct.pack("<I", len(riff)) + riff


def tiff_claiming(width: int, height: int, *, bits: int = 8, sample_format: int = 1) -> bytes:
    """A minimal little-endian grayscale TIFF whose IFD says ``width`` x ``height`` over one 16-byte strip.

    ``sample_format`` 1 is unsigned integers, 3 floats (32 bits: Pillow's mode F).
    """
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, bits),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),
        (278, 4, 1, height),
        (279, 4, 1, 16),
        (339, 3, 1, sample_format),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16)


@functools.cache
def png_16bit(side: int) -> bytes:
    """A real 16-bit grayscale ``side`` x ``side`` PNG of zeros (Pillow's mode I;16)."""
    packer = zlib.compressobj(9)
    row = bytes(1 + 2 * side)
    idat = b"".join(packer.compress(row * 100) for _ in range(side // 100)) + packer.flush()
    return png_raw(side, side, idat, bit_depth=16, color=0)


@functools.cache  # one copy, however many members share it
def bmp_flat(side: int) -> bytes:
    """An uncompressed ``side`` x ``side`` BMP of one colour: legitimately over 100:1 when deflated."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (30, 60, 90)).save(buffer, format="BMP")
    return buffer.getvalue()


def png_text_bomb() -> bytes:
    """A valid 8x8 PNG carrying a zTXt chunk that inflates to 8 MiB (Pillow's text limit is 1 MiB)."""
    text, _ = zeros_stream(8 * MiB, raw=False)
    pixels = zlib.compress(bytes(8 * (1 + 8 * 3)))
    return png_raw(8, 8, pixels, extra=png_chunk(b"zTXt", b"comment\x00\x00" + text))


def png_bad_crc() -> bytes:
    data = bytearray(image())
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(data)


def frames(fmt: str, count: int, **save: Any) -> bytes:
    shots = [Image.new("RGB", (10, 10), (20 * i % 256, 0, 0)) for i in range(count)]
    buffer = io.BytesIO()
    shots[0].save(buffer, format=fmt, save_all=True, append_images=shots[1:], **save)
    return buffer.getvalue()


def float_with_nan() -> bytes:
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    values[0, :3] = (np.nan, np.inf, -np.inf)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="TIFF")
    return buffer.getvalue()


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 10, 10)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


# 5. Special files in folders --------------------------------------------------------------------


def add_fifo(root: Path, where: Path) -> None:
    os.mkfifo(root / "a" / "pipe.png")


def add_socket(root: Path, where: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "a" / "sock.png"))
    finally:
        server.close()


def add_char_device(root: Path, where: Path) -> None:
    """A character device like /dev/zero; where this user may not make devices, a FIFO stands in."""
    try:
        os.mknod(root / "a" / "zero.png", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        os.mkfifo(root / "a" / "zero.png")


def outside_secret(where: Path) -> Path:
    """A real image outside the source folder (and outside the readable roots)."""
    secret = where.parent / "outside"
    secret.mkdir(exist_ok=True)
    (secret / "secret.png").write_bytes(image(seed=99))
    return secret


def link_file_outside(root: Path, where: Path) -> None:
    os.symlink(outside_secret(where) / "secret.png", root / "a" / "link.png")


def link_dir_outside(root: Path, where: Path) -> None:
    os.symlink(outside_secret(where), root / "c")


def link_loop(root: Path, where: Path) -> None:
    os.symlink(root / "a" / "loop.png", root / "a" / "loop.png")


def link_dir_loop(root: Path, where: Path) -> None:
    os.symlink("..", root / "a" / "up")


def link_dangling(root: Path, where: Path) -> None:
    os.symlink(root / "nowhere.png", root / "a" / "dangling.png")


def link_dev_zero(root: Path, where: Path) -> None:
    os.symlink("/dev/zero", root / "a" / "zero.png")


def sparse_file(root: Path, where: Path) -> None:
    with open(root / "a" / "sparse.png", "wb") as handle:
        handle.truncate(200 * MiB)  # no blocks on disk; 200 MiB when read


def root_link_outside(where: Path) -> Path:
    link = where / "link"
    os.symlink(outside_secret(where), link)
    return link


def path_escaping(where: Path) -> Path:
    outside = outside_secret(where)
    (outside / "data.zip").write_bytes(zip_bytes(good()))
    return where / ".." / "outside" / "data.zip"


def fifo_zip(where: Path) -> Path:
    os.mkfifo(where / "data.zip")
    return where / "data.zip"


def folder_named_zip(where: Path) -> Path:
    return folder_of(good())(where).rename(where / "data.zip")


# 6. The cases --------------------------------------------------------------------------------------


def kernel(name: str = "a/k.png", *, declared: int = 90 * MiB, at: int | None = None) -> Raw:
    """A member of 90 MiB of zeros in some 90 kB (1000:1), declaring ``declared`` bytes."""
    zeros, crc = zeros_stream(90 * MiB)
    return Raw(name, payload=zeros, crc=crc, file_size=declared, at=at)


def slip(case_id: str, name: str, *, reason: str = UNSAFE) -> Case:
    """Good images plus one member whose name would write outside the extraction folder."""
    sentinel = Path(name.replace("\\", "/").split("\0")[0]).name
    return Case(
        case_id,
        raw_of([*good_raw(), Raw(name, image(seed=5))]),
        skipped={name.split("\0")[0]: reason},
        kept=4,
        classes=("a", "b"),
        sentinels=(sentinel,),
    )


def with_bad(case_id: str, name: str, data: Data, reason: str, **kw: Any) -> Case:
    """Good images plus one bad file ``name`` that is skipped with ``reason``."""
    return Case(case_id, zip_of(good() | {name: data}), skipped={name: reason}, kept=4, classes=("a", "b"), **kw)


def with_extra(case_id: str, name: str, data: Data, **kw: Any) -> Case:
    """Good images plus one unusual but valid file that loads like the rest."""
    return Case(case_id, zip_of(good() | {name: data}), kept=5, classes=("a", "b"), **kw)


def raw_bad(case_id: str, member: Raw, reason: str) -> Case:
    """Good images plus one member written field by field (:class:`Raw`) that is skipped with ``reason``."""
    name = member.name if isinstance(member.name, str) else member.name.decode()
    return Case(case_id, raw_of([*good_raw(), member]), skipped={name: reason}, kept=4, classes=("a", "b"))


def refused(case_id: str, build: Build, error: str, **kw: Any) -> Case:
    """A source that must be refused with a SourceError matching ``error``."""
    return Case(case_id, build, error=error, **kw)


def slip_cases() -> list[Case]:
    tag = "synthlab-slip"
    return [
        slip("slip-dotdot", f"../{tag}-dotdot.png"),
        slip("slip-dotdot-deep", f"../../../../../../../../{tag}-deep.png"),
        slip("slip-nested-dotdot", f"a/../../{tag}-nested.png"),
        slip("slip-dot-segments", f"a/./b/.././../../{tag}-dots.png"),
        slip("slip-absolute-etc", f"/etc/{tag}-etc.png"),
        slip("slip-absolute-tmp", f"/tmp/{tag}-tmp.png"),
        slip("slip-backslash", f"..\\{tag}-backslash.png"),
        slip("slip-backslash-nested", f"a\\..\\..\\{tag}-backslash-nested.png"),
        slip("slip-mixed-separators", f"a/..\\..\\{tag}-mixed.png"),
        slip("slip-drive-slash", f"C:/{tag}-drive.png"),
        slip("slip-drive-backslash", f"C:\\Windows\\{tag}-drive-backslash.png"),
        slip("slip-drive-relative", f"c:{tag}-drive-relative.png"),
        slip("slip-unc", f"\\\\server\\share\\{tag}-unc.png"),
        slip("slip-nul-then-name", f"../{tag}-nul.png\0a/ok.png"),  # zipfile cuts names at NUL
        Case(  # the name after NUL is dropped by zipfile: what is left is an ordinary image
            "slip-nul-hides-dotdot",
            raw_of([*good_raw(), Raw(f"a/ok.png\0/../../{tag}-nul-hidden.png", image(seed=5))]),
            kept=5,
            classes=("a", "b"),
            sentinels=(f"{tag}-nul-hidden.png",),
        ),
        Case(  # fullwidth full stops are not "..": a literal (odd) class name, nothing leaves the archive
            "slip-unicode-fullwidth-dots",
            raw_of([*good_raw(), Raw(f"\uff0e\uff0e/{tag}-fullwidth.png", image(seed=5))]),
            kept=5,
            classes=("a", "b", "\uff0e\uff0e"),
            sentinels=(f"{tag}-fullwidth.png",),
        ),
        Case(
            "slip-unicode-dot-leaders",
            raw_of([*good_raw(), Raw(f"a/\u2025/\u2024\u2024/{tag}-leaders.png", image(seed=5))]),
            kept=5,
            classes=("a", "b"),
            sentinels=(f"{tag}-leaders.png",),
        ),
        Case(  # a directory entry that climbs out: nothing to decode, nothing written
            "slip-directory-entry",
            raw_of([*good_raw(), Raw(f"../{tag}-dir/", mode=stat.S_IFDIR | 0o755, method=0)]),
            kept=4,
            classes=("a", "b"),
            exact=False,
            sentinels=(f"{tag}-dir",),
        ),
        Case(
            "slip-symlink-member-etc",
            raw_of([*good_raw(), Raw("a/link.png", b"/etc/passwd", mode=stat.S_IFLNK | 0o777, method=0)]),
            skipped={"a/link.png": SYMLINK},
            kept=4,
            classes=("a", "b"),
        ),
        Case(
            "slip-symlink-member-dotdot",
            raw_of([*good_raw(), Raw("a/up.png", f"../../../{tag}-up.png".encode(), mode=stat.S_IFLNK | 0o777)]),
            skipped={"a/up.png": SYMLINK},
            kept=4,
            classes=("a", "b"),
            sentinels=(f"{tag}-up.png",),
        ),
        Case(  # the two-step slip: a symlinked folder, then a file "inside" it; read from the archive, never extracted
            "slip-symlink-then-write-through",
            raw_of(
                [
                    *good_raw(),
                    Raw("a/dir", b"/tmp", mode=stat.S_IFLNK | 0o777, method=0),
                    Raw(f"a/dir/{tag}-through.png", image(seed=5)),
                ]
            ),
            skipped={"a/dir": SYMLINK + "|" + NOT_IMAGE},
            kept=5,
            classes=("a", "b"),
            sentinels=(f"{tag}-through.png",),
        ),
        Case(
            "slip-symlink-member-dos-system",
            raw_of([*good_raw(), Raw("b/link.png", b"/etc/shadow", mode=stat.S_IFLNK | 0o777, system=0, method=0)]),
            skipped={"b/link.png": SYMLINK},
            kept=4,
            classes=("a", "b"),
        ),
    ]


def archive_cases() -> list[Case]:
    png = image(seed=5)
    inner = local_header(b"b/inner.png", png) + png  # a whole member, quoted inside another's data
    overlap_quoted = [
        *good_raw(),
        Raw("a/outer.png", inner, method=0),
        Raw("b/inner.png", png, method=0, at=4, at_delta=41),
    ]
    split_head = bytes_of(lambda: b"PK\x07\x08" + b"".join(local_header(n.encode(), d) + d for n, d in good().items()))
    return [
        # Encryption and unsupported methods: skipped with the reason, the rest loads.
        raw_bad("encrypted-member", Raw("a/secret.png", method=0, flags=0x1, payload=noise(12) + png), r"encrypt"),
        refused(
            "encrypted-everything",
            raw_of([Raw(n, method=0, flags=0x1, payload=bytes(12) + d) for n, d in good().items()]),
            r"encrypt|no readable images",
        ),
        raw_bad("strong-encryption-flag", Raw("a/strong.png", method=0, flags=0x41, payload=bytes(64)), r"encrypt"),
        raw_bad(
            "aes-method-99",
            Raw("a/aes.png", method=99, flags=0x1, payload=bytes(64)),
            r"encrypt|compression method|unsupported",
        ),
        raw_bad("deflate64-method", Raw("a/d64.png", method=9, payload=bytes(64)), r"compression method|unsupported"),
        # Spanned and split archives: refused.
        refused("spanned-zip64-locator", raw_of(good_raw(), locator_disks=3), r"span|disk|split|multi"),
        refused(
            "spanned-last-part",
            raw_of(good_raw(), disks=(1, 1), local_headers=False),
            r"span|disk|split|multi|part",
        ),
        refused(
            "member-on-another-disk",
            raw_of([*good_raw(), Raw("a/far.png", png, volume=1)]),
            r"span|disk|split|multi",
        ),
        refused("split-first-part", split_head, NOT_A_ZIP + r"|span|split"),
        # Overlapping entries and duplicate names: refused with the reason.
        refused(
            "overlap-shared-header",
            raw_of([*good_raw(), *(Raw(f"a/x{i}.png", png, at=0) for i in range(5))]),
            r"overlap",
        ),
        refused("overlap-quoted-member", raw_of(overlap_quoted), r"overlap"),
        refused(
            "overlap-bomb-kernel",
            raw_of(lambda: [*good_raw(), kernel(), *(kernel(f"a/k{i}.png", at=4) for i in range(20))]),
            r"overlap",
            max_read=BOMB_READ_CAP,
        ),
        refused("duplicate-names", raw_of([*good_raw(), Raw("a/0.png", image(seed=0))]), DUPLICATE),
        refused("duplicate-names-differ", raw_of([*good_raw(), Raw("b/1.png", b"not a png")]), DUPLICATE),
        refused(
            "duplicate-names-bomb",
            raw_of(lambda: [*good_raw(), kernel(), kernel(), kernel()]),
            DUPLICATE,
            max_read=BOMB_READ_CAP,
        ),
        # Bombs and size lies.
        Case(
            "bomb-deflate-member",
            raw_of(lambda: [*good_raw(), kernel()]),
            skipped={"a/k.png": r"ratio|bomb"},
            kept=4,
            classes=("a", "b"),
            max_read=BOMB_READ_CAP,
        ),
        Case(
            "bomb-declared-tiny",  # zipfile stops at the declared size: the CRC no longer matches
            raw_of(lambda: [*good_raw(), kernel(declared=1000)]),
            skipped={"a/k.png": r"ratio|bomb|CRC|corrupt|size"},
            kept=4,
            classes=("a", "b"),
            max_read=BOMB_READ_CAP,
        ),
        Case(
            "size-declared-3gib",
            raw_of([*good_raw(), Raw("a/big.png", png, file_size=3 * GiB)]),
            skipped={"a/big.png": r"too large|ratio|bomb"},
            kept=4,
            classes=("a", "b"),
            max_read=BOMB_READ_CAP,
        ),
        refused(
            "size-declared-total-20gib",
            raw_of([*good_raw(), *(Raw(f"a/{i}x.png", png, file_size=90 * MiB) for i in range(230))]),
            r"bomb|budget|ratio|limit",
            max_read=BOMB_READ_CAP,
        ),
        raw_bad(
            "size-declared-smaller-stored",
            Raw("a/short.png", png, method=0, file_size=len(png) // 2),
            r"CRC|corrupt|size|truncat",
        ),
        Case(  # the data is intact and its CRC right; only the declared size is too large
            "size-declared-double",
            raw_of([*good_raw(), Raw("a/double.png", png, file_size=2 * len(png))]),
            kept=5,
            classes=("a", "b"),
        ),
        refused(  # a compressed size past the end of the file: the ratio looks harmless, the member is not
            "compressed-size-beyond-end",
            raw_of([*good_raw(), Raw("a/long.png", png, compress_size=50 * MiB, file_size=99 * MiB)]),
            r"table of contents|overlap|damaged|corrupt",
            max_read=BOMB_READ_CAP,
        ),
        raw_bad("crc-mismatch", Raw("a/crc.png", png, crc=0xDEADBEEF), r"CRC|corrupt"),
        Case(
            "local-name-differs",
            raw_of([*good_raw(), Raw("a/central.png", png, local_name=b"../../evil.png")]),
            skipped={"a/central.png": r"corrupt|differ|name|header"},
            kept=4,
            classes=("a", "b"),
            sentinels=("evil.png",),
        ),
        Case(
            "bomb-42-nested-zips",
            zip_of(good() | {f"a/{i}.zip": nested_zip(2, 8) for i in range(8)}),
            skipped={f"a/{i}.zip": NOT_IMAGE for i in range(8)},
            kept=4,
            classes=("a", "b"),
            max_read=MiB,
        ),
        with_bad("zip-renamed-png", "a/inner.png", nested_zip(1, 4), CORRUPT, max_read=BOMB_READ_CAP),
        Case(  # honest members, but more than the source's decompressed-bytes budget: refused, and stopped there
            "budget-exceeded",
            zip_of({f"{c}/{i}.png": image(size=(96, 96), seed=10 * i + ord(c)) for c in "ab" for i in range(10)}),
            error=r"decompress to more than|budget|limit",
            limits=Limits(decode_budget=64 * 1024),
            max_read=128 * 1024,
        ),
        with_bad(  # by design (~100:1): a flat uncompressed BMP over 1 MiB reads as a bomb
            "bmp-flat-over-ratio", "a/flat.bmp", bmp_flat(600), r"ratio|bomb", max_read=BOMB_READ_CAP
        ),
        Case(  # flat BMPs under 1 MiB pass the ratio limit, but only 64 MiB of them per source in all
            "many-small-flat-bmps",
            zip_of({f"{'ab'[i % 2]}/{i:03d}.bmp": bmp_flat(590) for i in range(200)}),
            kept=64,
            exact=False,
            max_read=96 * MiB,
        ),
        Case(
            "many-entries-over-limit",
            zip_of(good() | {f"a/n{i}.txt": b"" for i in range(60)}),
            error=r"entries|files",
            limits=Limits(max_entries=50),
        ),
        Case(
            "many-images-over-limit",
            zip_of(good({"a": 6, "b": 6})),
            error=r"image files|limit",
            limits=Limits(max_files=10),
        ),
    ]


def container_cases() -> list[Case]:
    return [
        refused("tar-renamed-zip", bytes_of(tar_bytes), NOT_A_ZIP),
        refused("gzip-renamed-zip", bytes_of(lambda: gzip.compress(tar_bytes())), NOT_A_ZIP),
        refused("bzip2-renamed-zip", bytes_of(lambda: bz2.compress(tar_bytes())), NOT_A_ZIP),
        refused("7z-magic-renamed-zip", bytes_of(b"7z\xbc\xaf\x27\x1c\x00\x04" + noise(200)), NOT_A_ZIP),
        refused("rar-magic-renamed-zip", bytes_of(b"Rar!\x1a\x07\x01\x00" + noise(200)), NOT_A_ZIP),
        refused("png-renamed-zip", bytes_of(lambda: image()), NOT_A_ZIP),
        refused("zero-byte-zip", bytes_of(b""), NOT_A_ZIP),
        refused("truncated-zip", bytes_of(lambda: zip_bytes(good())[:300]), NOT_A_ZIP),
        refused(
            "cd-offset-beyond-end",
            bytes_of(lambda: raw_zip(good_raw())[:-6] + b"\xff\xff\xff\x7f\x00\x00"),
            NOT_A_ZIP + r"|corrupt",
        ),
        refused("empty-zip", zip_of({}), r"no class folders|no images|empty"),
        refused("only-directories", zip_of({"a/": b"", "b/": b"", "a/c/": b""}), r"no class folders|no images|empty"),
        refused(
            "only-non-images",
            zip_of({"a/readme.txt": b"hi", "b/data.csv": b"1,2", "b/x.exe": b"MZ"}),
            r"no class folders|no images",
        ),
        refused("only-test-split", zip_of(good(prefix="test/")), r"(?s)(?=.*\btrain\b)(?=.*\btest\b)"),
        refused(
            "test-class-without-train",
            zip_of(good(prefix="train/") | good({"c": 2}, prefix="test/")),
            r"test images but no train",
        ),
        refused("single-class", zip_of(good({"only": 3})), r"only the class|at least 2"),
        refused("flat-images", zip_of({"x.png": image(), "y.png": image(seed=1)}), r"no class folders"),
        Case("comment-64k", zip_of(good(), comment=b"\xaa" * 65535), kept=4, classes=("a", "b")),
        Case("self-extractor-prefix", raw_of(good_raw(), prefix=b"MZ" + bytes(4094)), kept=4, classes=("a", "b")),
        Case("trailing-garbage", raw_of(good_raw(), suffix=noise(1024)), kept=4, classes=("a", "b")),
        Case("streamed-data-descriptors", bytes_of(lambda: streamed_zip(good())), kept=4, classes=("a", "b")),
        Case("zip64-members", bytes_of(lambda: zip64_zip(good())), kept=4, classes=("a", "b")),
        Case("stored-members", zip_of(good(), method=zipfile.ZIP_STORED), kept=4, classes=("a", "b")),
        Case("bzip2-members", zip_of(good(), method=zipfile.ZIP_BZIP2), kept=4, classes=("a", "b")),
        Case("lzma-members", zip_of(good(), method=zipfile.ZIP_LZMA), kept=4, classes=("a", "b")),
        Case(
            "mixed-good-and-bad",
            zip_of(
                good({"a": 3, "b": 3})
                | {
                    "a/notes.txt": b"hello",
                    "a/trunc.jpg": truncated("JPEG"),
                    "b/garbage.png": b"\x89PNG not really",
                    "b/huge.png": png_raw(30_000, 30_000, zlib.compress(b"")),
                    "a/nested.zip": zip_bytes(good()),
                    "a/.DS_Store": b"junk",
                    "__MACOSX/a/._0.png": b"junk",
                }
            ),
            skipped={
                "a/notes.txt": NOT_IMAGE,
                "a/trunc.jpg": CORRUPT,
                "b/garbage.png": CORRUPT,
                "b/huge.png": PIXELS,
                "a/nested.zip": NOT_IMAGE,
            },
            kept=6,
            classes=("a", "b"),
        ),
    ]


def image_cases() -> list[Case]:
    formats = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "webp": "WEBP", "gif": "GIF", "tif": "TIFF"}
    cases = [with_bad(f"truncated-{ext}", f"a/half.{ext}", truncated(fmt), CORRUPT) for ext, fmt in formats.items()]
    cases += [
        with_bad("png-bomb-30000-real", "a/bomb.png", png_bomb, PIXELS),
        with_bad("png-header-30000", "a/lie.png", png_raw(30_000, 30_000, zlib.compress(bytes(100))), PIXELS),
        # Below Pillow's own bomb error (2 x 89 Mpx) but above the engine's 50 Mpx: the engine's own check.
        with_bad("png-header-8000", "a/lie8k.png", png_raw(8000, 8000, zlib.compress(bytes(100))), PIXELS),
        with_bad("jpeg-header-10000", "a/lie10k.jpg", jpeg_claiming(10_000, 10_000), PIXELS),
        with_bad("jpeg-header-60000", "a/lie.jpg", jpeg_claiming(60_000, 60_000), PIXELS),
        with_bad("bmp-header-50000", "a/lie.bmp", bmp_claiming(50_000, 50_000), PIXELS),
        with_bad("gif-header-65535", "a/lie.gif", gif_claiming(65_535, 65_535), PIXELS),
        with_bad("webp-header-16384", "a/lie.webp", webp_claiming(16_384, 16_384), PIXELS + "|" + CORRUPT),
        with_bad("tiff-header-100000", "a/lie.tif", tiff_claiming(100_000, 100_000), PIXELS),
        with_bad("png-16bit-36mpx", "a/deep.png", lambda: png_16bit(6000), PIXELS),  # 36 Mpx x 16 bits > 50 Mpx x 8
        with_bad("tiff-float-16mpx-header", "a/float.tif", tiff_claiming(4000, 4000, bits=32, sample_format=3), PIXELS),
        with_bad("png-text-bomb", "a/text.png", png_text_bomb, CORRUPT + r"|bomb|large"),
        with_bad("png-zero-size", "a/zero.png", png_raw(0, 0, zlib.compress(b"")), CORRUPT),
        with_bad("png-bad-crc", "a/crc.png", png_bad_crc(), CORRUPT),
        with_bad("empty-png", "a/empty.png", b"", CORRUPT),
        with_bad("jpeg-soi-only", "a/soi.jpg", b"\xff\xd8\xff", CORRUPT),
        with_bad("random-bytes-png", "a/noise.png", noise(4096, seed=3), CORRUPT),
        with_bad("html-renamed-png", "a/page.png", b"<!doctype html><html><body>hi</body></html>", CORRUPT),
        with_bad(
            "eps-renamed-png", "a/doc.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", CORRUPT
        ),
        with_bad("svg-renamed-png", "a/vector.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>', CORRUPT),
        with_bad("ico-renamed-png", "a/icon.png", image("ICO", size=(16, 16)), CORRUPT),
        with_bad("no-extension", "a/picture", image(), NOT_IMAGE),
        with_bad("double-extension", "a/x.png.exe", image(), NOT_IMAGE),
        with_extra("jpeg-named-png", "a/photo.png", image("JPEG")),
        with_extra("uppercase-extension", "a/LOUD.PNG", image(seed=8)),
        with_extra("jpeg-progressive", "a/prog.jpg", image("JPEG", progressive=True)),
        with_extra("jpeg-exif-orientation-invalid", "a/exif.jpg", exif_orientation(9)),
        with_extra("gif-200-frames", "a/anim.gif", frames("GIF", 200)),
        with_extra("webp-animated", "a/anim.webp", frames("WEBP", 4)),
        with_extra("png-animated", "a/anim.png", frames("PNG", 4)),
        with_extra("tiff-multipage", "a/pages.tif", frames("TIFF", 3)),
        with_extra("extreme-aspect", "a/strip.png", image(size=(30_000, 1), mode="L"), side=128),
        Case(
            "hidden-files-ignored",
            zip_of(good() | {"a/.x.png": b"junk", ".git/config": b"x"}),
            kept=4,
            classes=("a", "b"),
        ),
        Case(  # minimum working resolution 8 px: 1x1 images are not blown up unasked
            "one-by-one-images",
            zip_of({f"{c}/{i}.png": image(size=(1, 1), seed=i) for c in "ab" for i in range(2)}),
            error=r"at least 8 px",
        ),
        Case(
            "one-by-one-beside-larger",
            zip_of(good() | {"a/dot.png": image(size=(1, 1))}),
            kept=5,
            classes=("a", "b"),
            side=12,
        ),
    ]
    modes = [
        ("png-16bit", "a/deep.png", image(mode="I;16")),
        ("png-palette", "a/pal.png", image(mode="P")),
        ("png-palette-transparency", "a/palt.png", image(mode="P", transparency=0)),
        ("png-LA", "a/la.png", image(mode="LA")),
        ("png-1bit", "a/bw.png", image(mode="1")),
        ("png-RGBA", "a/rgba.png", image(mode="RGBA")),
        ("png-L", "a/gray.png", image(mode="L")),
        ("jpeg-CMYK", "a/cmyk.jpg", image("JPEG", mode="CMYK")),
        ("jpeg-grayscale", "a/gray.jpg", image("JPEG", mode="L")),
        ("tiff-CMYK", "a/cmyk.tif", image("TIFF", mode="CMYK")),
        ("tiff-I-32bit", "a/int.tif", image("TIFF", mode="I")),
        ("tiff-F-float", "a/float.tif", image("TIFF", mode="F")),
        ("tiff-F-nan-inf", "a/nan.tif", float_with_nan()),
        ("tiff-1bit", "a/bw.tif", image("TIFF", mode="1")),
        ("tiff-16bit-big-endian", "a/be.tif", image("TIFF", mode="I;16B")),
        ("tiff-LAB", "a/lab.tif", image("TIFF", mode="LAB")),
        ("tiff-deflate", "a/zip.tif", image("TIFF", compression="tiff_adobe_deflate")),
        ("gif-palette", "a/pal.gif", image("GIF", mode="P")),
        ("bmp-1bit", "a/bw.bmp", image("BMP", mode="1")),
        ("bmp-palette", "a/pal.bmp", image("BMP", mode="P")),
        ("webp-RGBA", "a/rgba.webp", image("WEBP", mode="RGBA")),
        ("webp-lossless", "a/lossless.webp", image("WEBP", lossless=True)),
    ]
    cases += [with_extra(case_id, name, data) for case_id, name, data in modes]
    return cases


def name_cases() -> list[Case]:
    return [
        Case("unicode-class-names", zip_of(good({"猫": 2, "犬": 2})), kept=4, classes=("犬", "猫")),
        Case("emoji-class-names", zip_of(good({"🐱": 2, "🐶": 2})), kept=4, classes=("🐱", "🐶")),
        Case(
            "control-chars-in-file-names",
            zip_of(good() | {"a/red\x1b[31m.png": image(seed=8), "b/new\nline.png": image(seed=9)}),
            kept=6,
            classes=("a", "b"),
        ),
        Case(
            "rtl-override-in-name", zip_of(good() | {"a/\u202egnp.exe.png": image(seed=8)}), kept=5, classes=("a", "b")
        ),
        Case(
            "cp437-names",
            raw_of([*good_raw(), Raw(b"\x82t\x82/x.png", image(seed=8)), Raw(b"\x82t\x82/y.png", image(seed=9))]),
            kept=6,
            classes=("a", "b", "été"),
        ),
        Case(
            "empty-member-name",
            raw_of([*good_raw(), Raw("", image(seed=8))]),
            skipped={"": r"name|unsafe|not an image|empty"},
            kept=4,
            classes=("a", "b"),
        ),
        Case(  # zipfile cuts the name at NUL: nothing is left of it
            "nul-first-member-name",
            raw_of([*good_raw(), Raw("\0x.png", image(seed=8))]),
            skipped={"": r"name|unsafe|not an image|empty"},
            kept=4,
            classes=("a", "b"),
        ),
        Case(
            "dot-slash-prefix-everywhere",
            raw_of([Raw("./" + str(r.name), r.data) for r in good_raw()]),
            kept=4,
            classes=("a", "b"),
        ),
        Case(  # "./a/x.png" is "a/x.png" (the duplicate check already says so): not a class named "."
            "dot-slash-prefix-mixed",
            raw_of([*good_raw(), Raw("./a/x.png", image(seed=8))]),
            kept=5,
            classes=("a", "b"),
        ),
        Case(
            "empty-and-dot-segments",
            raw_of([*good_raw(), Raw("a//y.png", image(seed=8)), Raw("b/./z.png", image(seed=9))]),
            kept=6,
            classes=("a", "b"),
        ),
        Case(  # old Windows tools (.NET 4.5's Compress-Archive) wrote "\\" between folders
            "backslash-separators",
            raw_of([Raw(str(r.name).replace("/", "\\"), r.data) for r in good_raw()]),
            kept=4,
            classes=("a", "b"),
        ),
        refused(
            "invalid-utf8-name",
            raw_of([*good_raw(), Raw(b"a/\xff\xfe.png", image(seed=8), flags=0x800)]),
            r"zip|name|utf-?8|decode|encoding",
        ),
        Case(
            "long-names",
            zip_of(good({"c" * 300: 2, "b": 2}) | {"b/" + "x" * 5000 + ".png": image()}),
            kept=5,
            classes=("b", "c" * 300),
        ),
        Case(
            "folder-non-utf8-names",
            folder_of(
                {os.fsdecode(b"a/\xff\xfe.png"): image(seed=8), os.fsdecode(b"\xe9t\xe9/x.png"): image(seed=9)} | good()
            ),
            kind="folder",
            kept=6,
            classes=("a", "b", os.fsdecode(b"\xe9t\xe9")),
        ),
        Case(
            "folder-control-char-class",
            folder_of({"new\nline/x.png": image(seed=8), "tab\tbed/y.png": image(seed=9)} | good()),
            kind="folder",
            kept=6,
            classes=("a", "b", "new\nline", "tab\tbed"),
        ),
    ]


def folder_cases() -> list[Case]:
    def folder(case_id: str, then: Callable[[Path, Path], None], name: str, reason: str, **kw: Any) -> Case:
        kw.setdefault("kept", 4)
        kw.setdefault("classes", ("a", "b"))
        return Case(case_id, folder_of(good(), then), kind="folder", skipped={name: reason}, timeout=20, **kw)

    return [
        folder("folder-fifo", add_fifo, "a/pipe.png", SPECIAL),
        folder("folder-socket", add_socket, "a/sock.png", SPECIAL),
        folder("folder-char-device", add_char_device, "a/zero.png", SPECIAL),
        folder("folder-symlink-file-outside", link_file_outside, "a/link.png", SYMLINK, sentinels=("secret.png",)),
        folder("folder-symlink-dir-outside", link_dir_outside, "c", SYMLINK),
        folder("folder-symlink-loop", link_loop, "a/loop.png", SYMLINK),
        folder("folder-symlink-dir-loop", link_dir_loop, "a/up", SYMLINK),
        folder("folder-symlink-dangling", link_dangling, "a/dangling.png", SYMLINK),
        folder("folder-symlink-dev-zero", link_dev_zero, "a/zero.png", SYMLINK),
        Case(
            "folder-bad-images",
            folder_of(
                good()
                | {"a/bomb.png": png_bomb, "a/half.jpg": truncated("JPEG"), "b/x.txt": b"hi", "b/.hidden.png": b""}
            ),
            kind="folder",
            skipped={"a/bomb.png": PIXELS, "a/half.jpg": CORRUPT, "b/x.txt": NOT_IMAGE},
            kept=4,
            classes=("a", "b"),
        ),
        folder("folder-sparse-200mib", sparse_file, "a/sparse.png", r"too large"),
        Case("folder-root-symlink-outside", root_link_outside, kind="folder", error=r"outside the folders"),
        refused("zip-path-escapes-roots", path_escaping, r"outside the folders"),
        Case("folder-empty", folder_of({}), kind="folder", error=r"no class folders"),
        Case(
            "folder-only-hidden",
            folder_of({".a/x.png": image(), "b/.y.png": image()}),
            kind="folder",
            error=r"no class folders",
        ),
        Case("folder-path-is-file", bytes_of(lambda: image(), "folder.png"), kind="folder", error=r"not a folder"),
        refused("zip-path-is-folder", folder_named_zip, r"not a file"),
        refused("zip-path-is-fifo", fifo_zip, r"not a file", timeout=20),
    ]


def upload_cases() -> list[Case]:
    """Uploads live on the server: what the user sees names the file they sent, never the folder it was saved in."""
    return [
        refused("upload-not-a-zip", bytes_of(b"not a zip at all"), NOT_A_ZIP, uploaded=True),
        refused("upload-spanned", raw_of(good_raw(), locator_disks=2), r"span|disk|split|multi", uploaded=True),
        refused("upload-overlap", raw_of([*good_raw(), Raw("a/x.png", b"", at=0)]), r"overlap", uploaded=True),
        refused("upload-no-images", zip_of({"a/readme.txt": b"hi"}), r"no class folders", uploaded=True),
        Case(
            "upload-corrupt-members",
            raw_of([*good_raw(), Raw("a/crc.png", image(seed=5), crc=1), Raw("a/junk.png", b"junk")]),
            skipped={"a/crc.png": r"CRC|corrupt", "a/junk.png": CORRUPT},
            kept=4,
            classes=("a", "b"),
            uploaded=True,
        ),
    ]


def cases() -> list[Case]:
    """Every case of the corpus, ids unique."""
    found = slip_cases() + archive_cases() + container_cases() + image_cases() + name_cases() + folder_cases()
    found += upload_cases()
    ids = [c.id for c in found]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return found
