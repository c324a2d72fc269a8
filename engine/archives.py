"""List and read the files of a .zip or a folder of images, within bounds that keep a small archive cheap.

An archive is checked as a whole before any member is decompressed: too many entries, a part of a split
archive, duplicate member names (one image could land in both train and test), members whose bytes
overlap (a zip-bomb construction that some Python builds do not detect) and a declared total over the
limit refuse it with :class:`SourceError`. Single members that cannot be used (unsafe names, non-images,
encrypted, an unsupported compression method, a compression ratio over the limit, too large) are skipped
with a reason. :class:`MemberReader` then reads each member once, in chunks, stopping a member as soon as
it passes the compression-ratio limit and the whole source as soon as the decompressed-bytes budget is
spent. :func:`assign` maps the files to splits and classes by their folders. Where this stops: decoding
the images, and the classes kept, live in :mod:`engine.sources`.
"""

from __future__ import annotations

import itertools
import lzma
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from engine import store

TRAIN_DIRS = ("train", "val", "valid", "validation")  # a source's own validation folder joins the training pool
SPLIT_DIRS = (*TRAIN_DIRS, "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
BUDGET_ENV = "SYNTHLAB_DECODE_BUDGET_MB"  # decompressed MiB one archive may cost; unset: see Limits.decode_budget
RATIO_ENV = "SYNTHLAB_MAX_RATIO"  # decompressed : compressed bytes of one member; unset: DEFAULT_RATIO
BUDGET_FLOOR = 4 * 2**30  # the default budget is the larger of this and BUDGET_FACTOR x the archive's size
BUDGET_FACTOR = 3
DEFAULT_RATIO = 100.0  # PNG, JPEG and WebP hardly compress further; deflate's own maximum is about 1032:1
CHUNK = 2**20  # members are read in pieces of this size; the stop flag is checked between pieces
# Small members past the ratio limit (an all-black BMP) are read anyway, up to this many bytes per source in all:
# without a total, thousands of tiny high-ratio members would make a 4 MB zip cost 4 GiB of decoding.
EXEMPT_TOTAL = 64 * 2**20
# The zip methods Python reads: stored, deflate, bzip2, LZMA.
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
READ_ERRORS = (
    *(zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError, struct.error),
    *(zlib.error, lzma.LZMAError),
)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the name and extra-field lengths at bytes 26 and 28
_END_RECORD_SEARCH = 22 + 65535  # the end record and the longest comment it may carry
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{16}-")  # store.save_upload's content hash in front of the file's name
_OBJECT_REPR = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")
_ZIPINFO_REPR = re.compile(r"<ZipInfo filename=('[^']*'|\"[^\"]*\")[^>]*>")

StopCheck = Callable[[], None]  # raises to stop (a cancel); called per member and per chunk


class SourceError(ValueError):
    """The source cannot be used; the message names the path or field and what is wrong."""


class BadFile(Exception):
    """One file cannot be used; the message is the reason shown beside its name (kind, a colon, details)."""


def _setting(name: str, unit: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 1):
        raise SourceError(f"the server setting {name}={raw!r} is not accepted: expected {unit}, 1 or more")
    return value


@dataclass(frozen=True)
class Limits:
    """Guards against archive and decompression bombs. ``None`` fields take the server setting, else the default."""

    max_files: int = 500_000  # image files in one folder or archive
    max_total_bytes: int = 16 * 2**30  # declared uncompressed bytes of all image files
    max_file_bytes: int = 100 * 2**20  # bytes of one image file
    max_pixels: int = 50_000_000  # width * height of one image at 8 bits a sample; 16-bit: half, 32-bit: a quarter
    max_entries: int = 2_000_000  # files of any kind looked at in one folder or archive
    max_decoded_bytes: int = 4 * 2**30  # the decoded uint8 array at the working resolution
    # Decompressed bytes all members of one source may cost together; None: $SYNTHLAB_DECODE_BUDGET_MB,
    # else the larger of 4 GiB and 3 times the archive's (or folder's) size. Passing it refuses the source.
    decode_budget: int | None = None
    # Decompressed : compressed bytes of one member; None: $SYNTHLAB_MAX_RATIO, else 100. A member past it
    # is skipped with a reason.
    max_ratio: float | None = None
    ratio_exempt_bytes: int = 2**20  # members up to this size skip the ratio check, up to EXEMPT_TOTAL in all

    def __post_init__(self) -> None:
        if self.decode_budget is not None and not (isinstance(self.decode_budget, int) and self.decode_budget >= 1):
            raise SourceError(f"limits.decode_budget={self.decode_budget!r} is not accepted: expected bytes, 1 or more")
        if self.max_ratio is not None and not (isinstance(self.max_ratio, (int, float)) and self.max_ratio >= 1):
            raise SourceError(f"limits.max_ratio={self.max_ratio!r} is not accepted: expected a number, 1 or more")

    def budget_for(self, source_bytes: int) -> int:
        """The decompressed-bytes budget of a source of ``source_bytes`` bytes on disk."""
        if self.decode_budget is not None:
            return self.decode_budget
        mib = _setting(BUDGET_ENV, "a number of MiB")
        return int(mib * 2**20) if mib is not None else max(BUDGET_FLOOR, BUDGET_FACTOR * source_bytes)

    def ratio(self) -> float:
        """The compression-ratio limit of one member."""
        if self.max_ratio is not None:
            return float(self.max_ratio)
        return _setting(RATIO_ENV, "a ratio such as 100") or DEFAULT_RATIO


@dataclass(frozen=True)
class Entry:
    """One image file of a source, not yet read."""

    path: str  # posix path inside the source
    size: int  # declared uncompressed bytes
    stored: int  # bytes it takes in the archive (compressed); a folder file's own size
    open: Callable[[], IO[bytes]]


@dataclass(frozen=True)
class Listing:
    """What a source holds: image files to read, files skipped with a reason, folders, bytes on disk."""

    entries: list[Entry]
    skipped: list[tuple[str, str]]  # (file, reason)
    dirs: set[str]
    source_bytes: int
    zipped: bool = True  # members of an archive (else files of a folder), for the words of a reason


def shown_name(path: Path, given: str) -> str:
    """The name a person knows a source by: an upload's own file name, else the path as they gave it."""
    try:
        uploads = store.home() / "uploads"
        if uploads in path.expanduser().resolve().parents:
            return _UPLOAD_PREFIX.sub("", path.name)
    except OSError:
        pass
    return given


def clean(err: BaseException) -> str:
    """An error's text without object addresses or server paths, for a reason shown to a person."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return err.strerror  # the text without the server path it names
    text = _ZIPINFO_REPR.sub(r"\1", str(err))
    text = _OBJECT_REPR.sub("", text).strip()
    return text.replace(str(store.home()), "<workspace>") or type(err).__name__.lower()


# 1. Listing files -----------------------------------------------------------------------------


def _unsafe_name(name: str) -> str | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or not name.strip():
        return "unsafe path: empty name"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "unsafe path: absolute path"
    if ".." in parts:
        return "unsafe path: contains '..'"
    return None


def ignored(name: str) -> bool:
    """Hidden files and macOS archive metadata, left out quietly."""
    parts = name.split("/")
    return any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)


def _kind_of(name: str) -> str | None:
    if not name.lower().endswith(IMAGE_EXTENSIONS):
        suffix = PurePosixPath(name).suffix or "(none)"
        return f"not an image: extension {suffix!r} is not one of {', '.join(IMAGE_EXTENSIONS)}"
    return None


def _check_totals(shown: str, count: int, total: int, limits: Limits) -> None:
    if count > limits.max_files:
        raise SourceError(f"{shown} holds {count:,} image files; the limit is {limits.max_files:,}")
    if total > limits.max_total_bytes:
        raise SourceError(
            f"{shown} declares {total / 2**20:,.0f} MiB of uncompressed images; the limit is "
            f"{limits.max_total_bytes / 2**20:,.0f} MiB (a possible zip bomb)"
        )


def _local_header_size(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Bytes of the member's local header, read from the archive; the central directory's guess if unreadable."""
    guess = 30 + len(info.orig_filename.encode("utf-8", "surrogateescape")) + len(info.extra)
    if archive.fp is None:
        return guess
    try:
        archive.fp.seek(info.header_offset)
        raw = archive.fp.read(_LOCAL_HEADER.size)
    except (OSError, ValueError):
        return guess
    if len(raw) < _LOCAL_HEADER.size:
        return guess
    signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
    return 30 + name_len + extra_len if signature == b"PK\x03\x04" else guess


def spanned(shown: str) -> SourceError:
    """The error for one part of an archive split over several files."""
    return SourceError(
        f"source.path={shown!r} is one part of an archive split over several files (a spanned or multi-disk "
        ".zip), which cannot be read; join the parts into one .zip (zip -s 0 in.zip --out whole.zip) and use that"
    )


def _end_record_disks(archive: zipfile.ZipFile) -> tuple[int, int]:
    """The end record's disk number and the disk its table of contents starts on (both 0 in a whole archive)."""
    if archive.fp is None:
        return 0, 0
    try:
        size = archive.fp.seek(0, os.SEEK_END)
        archive.fp.seek(max(0, size - _END_RECORD_SEARCH))
        tail = archive.fp.read(_END_RECORD_SEARCH)
    except (OSError, ValueError):
        return 0, 0
    at = tail.rfind(b"PK\x05\x06")  # the same search zipfile makes: the last end record in the file
    if at < 0 or len(tail) < at + 8:
        return 0, 0
    disk, directory_disk = struct.unpack_from("<HH", tail, at + 4)
    return disk, directory_disk


def _check_structure(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], shown: str) -> None:
    """Refuse split archives, duplicate member names and members whose bytes overlap, naming the members."""
    if any(getattr(m, "volume", 0) for m in members) or any(_end_record_disks(archive)):
        raise spanned(shown)
    names = Counter(_clean(m.filename) for m in members if not _is_dir(m) and _clean(m.filename) != ".")
    twice = [name for name, n in names.items() if n > 1]
    if twice:
        raise SourceError(
            f"{shown} lists the member {twice[0]!r} more than once ({len(twice)} name(s) repeated): every file "
            "needs a name of its own, so that one image cannot land in both the training and the test split; "
            "make the .zip again from a folder"
        )
    spans = sorted(
        (m.header_offset, m.header_offset + _local_header_size(archive, m) + m.compress_size, m.filename)
        for m in members
    )
    for (_, end, name), (next_start, _, next_name) in itertools.pairwise(spans):
        if next_start < end:
            raise SourceError(
                f"{shown} is refused: the members {name!r} and {next_name!r} share bytes in the archive "
                "(overlapping entries, a zip-bomb construction); make the .zip again with a standard zip tool"
            )
    directory = getattr(archive, "start_dir", None)
    if spans and isinstance(directory, int) and max(end for _, end, _ in spans) > directory:
        name = max(spans, key=lambda span: span[1])[2]
        raise SourceError(
            f"{shown} is refused: the member {name!r} runs into the archive's table of contents (a damaged or "
            "crafted archive); make the .zip again with a standard zip tool"
        )


def _clean(name: str) -> str:
    """A member's path with ``\\`` read as ``/`` (zips from older Windows tools) and ``.`` or empty parts dropped."""
    return PurePosixPath(name.replace("\\", "/")).as_posix()


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith(("/", "\\"))  # ZipInfo.is_dir() fails on an empty name


def _member_reason(info: zipfile.ZipInfo, limits: Limits) -> str | None:
    """Why a listed image member cannot be read, from the central directory alone; None when it may be."""
    if info.flag_bits & 0x1:
        return "encrypted: password-protected members cannot be read; make the .zip again without a password"
    if info.compress_type not in METHODS:
        return (
            f"unsupported compression: method {info.compress_type} cannot be read; use deflate "
            "(what zip tools use by default)"
        )
    if info.file_size > limits.max_file_bytes:
        return f"too large: {info.file_size:,} bytes declared, limit {limits.max_file_bytes:,}"
    ratio = limits.ratio()
    if info.file_size > limits.ratio_exempt_bytes and info.file_size > ratio * info.compress_size:
        return (
            f"compression ratio too high: {info.file_size:,} bytes declared from {info.compress_size:,}, "
            f"limit {ratio:,.0f}:1 (a possible zip bomb)"
        )
    return None


def list_zip(archive: zipfile.ZipFile, shown: str, source_bytes: int, limits: Limits) -> Listing:
    """The image members of an open archive; refuses the archive when its structure is unsafe."""
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    dirs: set[str] = set()
    images = declared = 0  # image files by name, skipped or not, and their declared bytes
    members = archive.infolist()
    if len(members) > limits.max_entries:
        raise SourceError(f"{shown} holds {len(members):,} entries; the limit is {limits.max_entries:,}")
    _check_structure(archive, members, shown)
    for info in members:
        reason = _unsafe_name(info.filename)
        name = _clean(info.filename) if reason is None else info.filename
        if reason is None and ignored(name):
            continue
        if _is_dir(info):
            if reason is None:
                dirs.add(name)
            continue
        if reason is None and stat.S_ISLNK(info.external_attr >> 16):
            reason = "unsafe path: symbolic link"
        reason = reason or _kind_of(name)
        if reason is None:  # an image by its name: its declared size counts, even if it is skipped below
            images, declared = images + 1, declared + info.file_size
            reason = _member_reason(info, limits)
        if reason:
            skipped.append((name, reason))
            continue
        entries.append(Entry(name, info.file_size, info.compress_size, _member_opener(archive, info)))
        dirs.update("/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1))
    _check_totals(shown, images, declared, limits)
    return Listing(entries, skipped, dirs, source_bytes)


def _member_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(info)


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    def open_file() -> IO[bytes]:
        # No links followed, and no blocking should the file have become a FIFO since it was listed.
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb")

    return open_file


def list_folder(root: Path, shown: str, limits: Limits) -> Listing:
    """The image files under a server folder, links not followed."""
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    dirs: set[str] = set()
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir != "." and not ignored(rel_dir):
            dirs.add(rel_dir)
        seen += len(filenames)
        if seen > limits.max_entries:
            raise SourceError(f"the folder {shown!r} holds more than {limits.max_entries:,} files")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if ignored(rel):
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
            entries.append(Entry(rel, info.st_size, info.st_size, _opener(full)))
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                skipped.append(((Path(dirpath) / name).relative_to(root).as_posix(), "unsafe path: symbolic link"))
    _check_totals(f"the folder {shown!r}", len(entries), sum(e.size for e in entries), limits)
    return Listing(entries, skipped, dirs, sum(e.size for e in entries), zipped=False)


# 2. Reading members ---------------------------------------------------------------------------


class MemberReader:
    """Reads members of one source, each once, in chunks, within the budget and the ratio limit.

    ``bytes_read`` counts the decompressed bytes read so far. A member past the ratio limit or the
    size limit raises :class:`BadFile` (skip it); passing the budget raises :class:`SourceError` (refuse
    the source). ``check`` is called before every member and every chunk: raising from it stops the read.
    """

    def __init__(self, shown: str, limits: Limits, budget: int, check: StopCheck, *, zipped: bool = True) -> None:
        self.shown, self.limits, self.budget, self.check = shown, limits, budget, check
        self.broken = "corrupt archive member" if zipped else "unreadable file"
        self.ratio = limits.ratio()
        self.bytes_read = 0
        self.exempt_left = EXEMPT_TOTAL  # bytes small members may still read past the ratio limit

    def read(self, entry: Entry) -> bytes:
        """The member's bytes, decompressed."""
        self.check()
        cap = self.limits.max_file_bytes
        by_ratio = int(self.ratio * entry.stored)
        ratio_cap = max(by_ratio, min(self.limits.ratio_exempt_bytes, self.exempt_left))
        data = bytearray()
        try:
            stream = entry.open()
        except READ_ERRORS as err:
            raise BadFile(f"{self.broken}: {clean(err)}") from None
        with stream:
            while True:
                want = min(CHUNK, cap + 1 - len(data), ratio_cap + 1 - len(data), self.budget + 1 - self.bytes_read)
                try:
                    block = stream.read(want)
                except READ_ERRORS as err:
                    raise BadFile(f"{self.broken}: {clean(err)}") from None
                if not block:
                    if len(data) > by_ratio:  # read under the exemption for small members: it counts
                        self.exempt_left -= len(data)
                    return bytes(data)
                data += block
                self.bytes_read += len(block)
                self._bounds(entry, len(data), cap, ratio_cap)
                self.check()

    def _bounds(self, entry: Entry, size: int, cap: int, ratio_cap: int) -> None:
        if self.bytes_read > self.budget:
            raise SourceError(
                f"{self.shown} is refused: its members decompress to more than {_mib(self.budget)} "
                f"(the limit for this source, reached while reading {entry.path!r}; a possible zip bomb). The "
                f"server's {BUDGET_ENV} sets the limit"
            )
        if size > cap:  # the header lied about the size
            raise BadFile(f"too large: more than {cap:,} bytes when decompressed")
        if size > ratio_cap:
            raise BadFile(
                f"compression ratio too high: more than {size:,} bytes from {entry.stored:,}, "
                f"limit {self.ratio:,.0f}:1 (a possible zip bomb)"
            )


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size / 2**20:.2f} MiB"


# 3. Finding the class folders -----------------------------------------------------------------


def assign(
    entries: list[Entry], dirs: set[str], source: str
) -> tuple[list[tuple[Entry, str, str]], list[tuple[str, str]], str, set[str]]:
    """Map each file to (split, class) from the folder layout.

    Returns the assigned files, skipped files, the layout found and the class folders seen (with or
    without images). The split layout needs a ``train`` folder and only split-named folders beside it,
    so a class that happens to be called "train" does not switch layouts; split folders without a
    ``train`` folder (only ``test/<class>/``, say) are refused with the layout expected.
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
    if tops and not split_layout and tops <= set(SPLIT_DIRS) and all(len(p) >= depth + 3 for p in parts):
        found = " and ".join(f"{t}/" for t in sorted(tops))
        raise SourceError(
            f"{source} has only the split folder(s) {found} and no train/ folder: expected "
            "<root>/train/<class>/<image> (with test/<class>/<image> beside it for a test split of your own), "
            "or <root>/<class>/<image> and the lab holds out a test split itself"
        )
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
