"""Archives: bounded reading (budget, ratio, each member once, cancel) and unsafe structures refused by name."""

from __future__ import annotations

import functools
import io
import struct
import threading
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from engine import archives, sources
from engine.config import SourceConfig
from engine.jobs import Cancelled
from engine.sources import Limits, SourceError
from tests.conftest import class_files

Member = tuple[bytes, bytes, int, int, int, int, int]  # name, stored bytes, crc, size, flags, volume, method


@functools.lru_cache(maxsize=4)
def kernel(size: int) -> tuple[bytes, int]:
    """``size`` zero bytes as one raw deflate stream (about 1,000:1), and their CRC-32.

    After a full flush the compressor starts afresh, so every MiB of zeros compresses to the same bytes:
    one MiB is compressed and its bytes repeated, the rest and the final block appended.
    """
    whole, rest = divmod(size, 2**20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(2**20)) + packer.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = functools.reduce(lambda c, _: zlib.crc32(bytes(2**20), c), range(whole), 0)
    return block * whole + last.compress(bytes(rest)) + last.flush(), zlib.crc32(bytes(rest), crc)


def member(name: str, data: bytes, *, flags: int = 0, volume: int = 0, method: int = 8) -> Member:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    stored = packer.compress(data) + packer.flush() if method == 8 else data
    return name.encode(), stored, zlib.crc32(data), len(data), flags, volume, method


def local_header(name: bytes, crc: int, stored: int, size: int, flags: int = 0, method: int = 8) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0, crc, stored, size, len(name), 0) + name


def central_header(
    name: bytes, crc: int, stored: int, size: int, offset: int, flags: int, volume: int, method: int
) -> bytes:
    fields = (b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc, stored, size, len(name), 0, 0, volume, 0, 0, offset)
    return struct.pack("<4s6H3L5H2L", *fields) + name


def end_record(count: int, directory_size: int, directory_offset: int, disk: int = 0) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", disk, disk, count, count, directory_size, directory_offset, 0)


def raw_zip(path: Path, members: list[Member], *, disk: int = 0) -> Path:
    """A zip written byte by byte, so that it may hold what zip tools never write."""
    body, directory = bytearray(), bytearray()
    for name, stored, crc, size, flags, volume, method in members:
        directory += central_header(name, crc, len(stored), size, len(body), flags, volume, method)
        body += local_header(name, crc, len(stored), size, flags, method) + stored
    path.write_bytes(bytes(body + directory) + end_record(len(members), len(directory), len(body), disk))
    return path


def overlapping_zip(path: Path, count: int, size: int) -> Path:
    """The quoted-overlap zip bomb: every member's data runs on through all the later members to one kernel.

    Each member decompresses to the later local headers and ``size`` zeros; a zip of about 100 KB declares
    ``count`` x ``size`` bytes.
    """
    data, _ = kernel(size)
    names = [f"{'ab'[i % 2]}/{i:03d}.png".encode() for i in range(count)]
    header = [30 + len(n) for n in names]
    stored, plain = [0] * count, [0] * count
    stored[-1], plain[-1] = len(data), size
    for i in range(count - 2, -1, -1):
        stored[i] = 5 + header[i + 1] + stored[i + 1]  # a stored deflate block quoting the next local header
        plain[i] = header[i + 1] + plain[i + 1]
    body, offsets = bytearray(), []
    for i in range(count):
        offsets.append(len(body))
        body += local_header(names[i], 0, stored[i], plain[i])
        if i < count - 1:
            body += struct.pack("<BHH", 0, header[i + 1], header[i + 1] ^ 0xFFFF)
    body += data
    directory = b"".join(central_header(names[i], 0, stored[i], plain[i], offsets[i], 0, 0, 8) for i in range(count))
    path.write_bytes(bytes(body) + directory + end_record(count, len(directory), len(body)))
    return path


def zeros_zip(path: Path, count: int, size: int) -> Path:
    """``count`` members of ``size`` zero bytes each, honest and not overlapping: a slow read, not a refusal."""
    data, crc = kernel(size)
    members = [(f"{'ab'[i % 2]}/{i:03d}.png".encode(), data, crc, size, 0, 0, 8) for i in range(count)]
    return raw_zip(path, members)


@pytest.fixture
def decompressed(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Decompressed bytes returned by every archive member's read(), by member name."""
    counts: dict[str, int] = {}
    original = zipfile.ZipExtFile.read

    def read(self: zipfile.ZipExtFile, n: int | None = -1) -> bytes:
        data = original(self, n)
        counts[self.name] = counts.get(self.name, 0) + len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return counts


def load_zip(path: Path, *, resolution: int | None = None, **kwargs: object) -> sources.Decoded:
    limits = kwargs.pop("limits", Limits())
    cfg = SourceConfig(kind="zip", path=str(path), resolution=resolution)
    return sources.load(cfg, limits=limits, **kwargs)  # type: ignore[arg-type]


def test_each_member_is_read_once_and_bytes_read_counts_them(make_zip, decompressed: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    files = class_files({"a": 5, "b": 4})
    decoded = load_zip(make_zip(files))  # auto resolution: the header sample is read, then decoded, once
    assert decompressed == {name: len(data) for name, data in files.items()}
    assert decoded.report.bytes_read == sum(len(data) for data in files.values())
    budgeted = load_zip(make_zip(files, "budgeted.zip"), limits=Limits(decode_budget=10**6))
    assert 0 < budgeted.report.bytes_read == decoded.report.bytes_read <= 10**6


def test_bytes_read_of_a_folder(make_folder) -> None:  # type: ignore[no-untyped-def]
    files = class_files({"a": 2, "b": 2})
    decoded = sources.load(SourceConfig(kind="folder", path=str(make_folder(files))))
    assert decoded.report.bytes_read == sum(len(data) for data in files.values())


def test_the_budget_refuses_the_archive_once_spent(tmp_path: Path, decompressed: dict[str, int]) -> None:
    path = zeros_zip(tmp_path / "zeros.zip", 6, 8 * 2**20)
    with pytest.raises(SourceError, match=r"zeros.zip is refused: its members decompress to more than 20 MiB .*'a/002"):
        load_zip(path, limits=Limits(decode_budget=20 * 2**20, max_ratio=5000))
    assert 16 * 2**20 < sum(decompressed.values()) <= 20 * 2**20 + 1


def test_the_budget_setting_and_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decompressed: dict[str, int]
) -> None:
    assert Limits().budget_for(1000) == 4 * 2**30 and Limits().budget_for(2 * 2**30) == 6 * 2**30
    monkeypatch.setenv("SYNTHLAB_DECODE_BUDGET_MB", "12")
    assert Limits().budget_for(1000) == 12 * 2**20 and Limits(decode_budget=5).budget_for(1000) == 5
    with pytest.raises(SourceError, match=r"more than 12 MiB .*SYNTHLAB_DECODE_BUDGET_MB sets the limit"):
        load_zip(zeros_zip(tmp_path / "zeros.zip", 3, 8 * 2**20), limits=Limits(max_ratio=5000))
    assert sum(decompressed.values()) <= 12 * 2**20 + 1
    monkeypatch.setenv("SYNTHLAB_DECODE_BUDGET_MB", "lots")
    with pytest.raises(SourceError, match=r"SYNTHLAB_DECODE_BUDGET_MB='lots' is not accepted: expected a number"):
        Limits().budget_for(1000)
    with pytest.raises(SourceError, match=r"limits.max_ratio=0.5 is not accepted"):
        Limits(max_ratio=0.5)


def bmp(size: tuple[int, int], value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buffer, format="BMP")
    return buffer.getvalue()


def test_a_member_past_the_ratio_is_skipped_unread_and_small_ones_are_exempt(
    make_zip, decompressed: dict[str, int]
) -> None:  # type: ignore[no-untyped-def]
    files = class_files({"a": 2, "b": 2}) | {"a/white.bmp": bmp((1200, 1000), 255), "b/black.bmp": bmp((300, 300))}
    decoded = load_zip(make_zip(files), resolution=16)
    why = dict(decoded.report.skipped)
    assert why["a/white.bmp"].startswith("compression ratio too high: 3,600,054 bytes declared from ")
    assert why["a/white.bmp"].endswith("limit 100:1 (a possible zip bomb)")
    assert "a/white.bmp" not in decompressed  # refused from the directory, never decompressed
    assert "b/black.bmp" in decoded.origin  # 270 kB of black at about 600:1, below the 1 MiB exemption
    relaxed = load_zip(make_zip(files, "relaxed.zip"), resolution=16, limits=Limits(max_ratio=10_000))
    assert "a/white.bmp" in relaxed.origin


def test_the_ratio_is_checked_while_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    lying = archives.Entry("a/x.png", size=1000, stored=1000, open=lambda: io.BytesIO(bytes(5 * 2**20)))
    reader = archives.MemberReader("x.zip", Limits(), 2**30, lambda: None)
    with pytest.raises(archives.BadFile, match=r"compression ratio too high: more than 1,048,577 bytes from 1,000"):
        reader.read(lying)
    assert reader.bytes_read == 2**20 + 1  # stopped at the limit, not at the end of the stream
    monkeypatch.setenv("SYNTHLAB_MAX_RATIO", "10000")
    assert archives.MemberReader("x.zip", Limits(), 2**30, lambda: None).read(lying) == bytes(5 * 2**20)
    monkeypatch.setenv("SYNTHLAB_MAX_RATIO", "0")
    with pytest.raises(SourceError, match=r"SYNTHLAB_MAX_RATIO='0' is not accepted: expected a ratio"):
        Limits().ratio()


def test_overlapping_members_are_refused_by_name_before_any_is_read(
    tmp_path: Path, decompressed: dict[str, int]
) -> None:
    path = overlapping_zip(tmp_path / "quoted.zip", 5, 2 * 2**20)
    with pytest.raises(
        SourceError, match=r"quoted.zip is refused: the members 'a/000.png' and 'b/001.png' share bytes"
    ):
        load_zip(path, limits=Limits(max_ratio=10_000))
    assert decompressed == {}


def test_the_two_bombs_from_the_field_are_refused_unread(tmp_path: Path, decompressed: dict[str, int]) -> None:
    """A 100 KB zip of 20 overlapping 100 MB members, and a 114 KB one declaring 16,000 MiB (timings: docs)."""
    twenty = overlapping_zip(tmp_path / "twenty.zip", 20, 100_000_000)
    declared = overlapping_zip(tmp_path / "declared.zip", 160, 100 * 2**20)
    assert twenty.stat().st_size < 120_000 and declared.stat().st_size < 130_000
    with zipfile.ZipFile(declared) as archive:
        assert sum(m.file_size for m in archive.infolist()) // 2**20 == 16_000
    for path in (twenty, declared):
        with pytest.raises(SourceError, match=r"is refused: the members .* share bytes"):
            load_zip(path)
    assert decompressed == {}


def test_duplicate_member_names_are_refused(make_zip) -> None:  # type: ignore[no-untyped-def]
    path = make_zip(class_files({"a": 2, "b": 2}))
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as archive:
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name" and writes it anyway
        archive.writestr("a/000.png", b"another image, the same name")
    with pytest.raises(SourceError, match=r"data.zip lists the member 'a/000.png' more than once .*train"):
        load_zip(path)


def test_encrypted_and_unsupported_members_are_skipped_with_reasons(tmp_path: Path) -> None:
    good = [member(name, data) for name, data in class_files({"a": 2, "b": 2}).items()]
    odd = [
        member("a/secret.png", class_files({"s": 1})["s/000.png"], flags=0x1),
        member("b/odd.png", b"whatever", method=99),
    ]
    decoded = load_zip(raw_zip(tmp_path / "mixed.zip", good + odd))
    why = dict(decoded.report.skipped)
    assert why["a/secret.png"].startswith("encrypted: password-protected members cannot be read")
    assert why["b/odd.png"].startswith("unsupported compression: method 99")
    assert len(decoded.labels) == 4 and "ZipInfo" not in str(decoded.report.skipped)


def test_a_split_archive_is_refused(tmp_path: Path) -> None:
    members = [member(name, data) for name, data in class_files({"a": 2, "b": 2}).items()]
    members[1] = member("a/001.png", b"on the first disk", volume=1)
    with pytest.raises(SourceError, match=r"split\.zip' is one part of an archive split over several files"):
        load_zip(raw_zip(tmp_path / "split.zip", members))
    whole = [member(name, data) for name, data in class_files({"a": 2, "b": 2}).items()]
    assert len(load_zip(raw_zip(tmp_path / "whole.zip", whole)).labels) == 4
    with pytest.raises(SourceError, match=r"last\.zip' is one part of an archive split over several files"):
        load_zip(raw_zip(tmp_path / "last.zip", whole, disk=1))  # the end record of a split archive's last part


def test_cancel_stops_within_a_second_while_reading_a_bomb_like_archive(
    tmp_path: Path, decompressed: dict[str, int]
) -> None:
    path = zeros_zip(tmp_path / "slow.zip", 32, 64 * 2**20)  # 2 GiB to decompress, from 2 MB
    stop, asked = threading.Event(), []

    def cancel() -> None:
        asked.append(time.monotonic())
        stop.set()

    timer = threading.Timer(0.3, cancel)
    timer.start()
    try:
        with pytest.raises(Cancelled, match="cancelled"):
            load_zip(path, limits=Limits(max_ratio=5000), should_stop=stop.is_set)
    finally:
        timer.cancel()
    assert asked and time.monotonic() - asked[0] < 1.0
    assert sum(decompressed.values()) < 32 * 64 * 2**20


def test_raising_from_on_progress_stops_the_read_too(tmp_path: Path, decompressed: dict[str, int]) -> None:
    path = zeros_zip(tmp_path / "slow.zip", 32, 64 * 2**20)
    calls: list[tuple[int, int]] = []

    class Stop(Exception):
        pass

    def on_progress(done: int, total: int) -> None:
        calls.append((done, total))
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        load_zip(path, limits=Limits(max_ratio=5000), on_progress=on_progress)
    assert calls[0] == (0, 32) and sum(decompressed.values()) < 32 * 64 * 2**20


def test_small_high_ratio_members_are_read_only_up_to_a_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decompressed: dict[str, int]
) -> None:
    # An all-black BMP is fine, but thousands of them would turn a 4 MB zip into 4 GiB of decoding.
    monkeypatch.setattr(archives, "EXEMPT_TOTAL", 1_000_000)
    black = io.BytesIO()
    Image.new("RGB", (200, 200)).save(black, "BMP")  # 120 KB of zeros: about 500:1 compressed
    path = tmp_path / "black.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(40):
            archive.writestr(f"{'ab'[i % 2]}/{i:02d}.bmp", black.getvalue())
    decoded = load_zip(path, resolution=8)
    kept, skipped = len(decoded.labels), decoded.report.reasons().get("compression ratio too high", 0)
    assert kept + skipped == 40 and kept == 1_000_000 // len(black.getvalue())  # within the total, then refused
    stored = max(i.compress_size for i in zipfile.ZipFile(path).infolist())
    assert sum(decompressed.values()) <= 1_000_000 + len(black.getvalue()) + skipped * (100 * stored + 2**20)
