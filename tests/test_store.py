"""The workspace on disk: a cache that never unpickles, a workspace only its user may change, and full disks
that read what is stored and refuse every write in one line without leaving partial files."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest

from engine import cli, disk, sources, store
from engine.config import DatasetConfig
from engine.datasets import build_dataset, cached_report, load_source_cached

FULL = "the disk holding the workspace is full"


class Planted:
    """A cache value that, once unpickled, creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def digits_identity() -> str:
    """The cache identity of the default digits dataset, built as the engine builds it."""
    cfg = DatasetConfig().source
    return f"{sources.DECODER_VERSION}-{cfg.cache_key()}-{sources.content_identity(cfg)}"


def old_cache() -> diskcache.Cache:
    """The cache opened the way older versions did: plain diskcache, which pickles what it is given."""
    return diskcache.Cache(str(store.subdir("cache")), eviction_policy="none", size_limit=2**62)


# 1. No code from the workspace.
def test_a_planted_pickle_under_the_digits_key_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    identity = digits_identity()
    with old_cache() as cache:
        cache.set(("source", identity), Planted(marker))  # the key older versions read
        cache.set(f"{store.CACHE_FORMAT}/source/{identity}", Planted(marker))  # today's key, pickled value
    assert not marker.exists()
    first = build_dataset(DatasetConfig())
    assert not first.from_cache and len(first.train) > 0  # the planted entry is a miss: decoded again
    second = build_dataset(DatasetConfig())
    assert second.from_cache  # the decode replaced the planted entry with plain bytes
    assert cached_report(identity) == second.report
    assert not marker.exists()


def test_cache_values_are_plain_bytes_under_string_keys() -> None:
    store.cache_set(("source", "x"), b"\x00plain")
    rows = store.index_rows("SELECT key, raw, mode FROM Cache")
    assert rows == [(f"{store.CACHE_FORMAT}/source/x", 1, 1)]  # a raw string key, a raw bytes value (mode 1)
    assert store.cache_get(("source", "x")) == b"\x00plain"
    with pytest.raises(TypeError, match="a cache value must be bytes, got dict"):
        store.cache_set(("source", "y"), {"a": 1})  # type: ignore[arg-type]


def test_an_entry_that_is_not_the_expected_bytes_is_a_miss(caplog: pytest.LogCaptureFixture) -> None:
    identity = digits_identity()
    with old_cache() as cache:
        cache.set(f"{store.CACHE_FORMAT}/source/{identity}", "a text value")
    assert store.cache_get(("source", identity)) is None
    store.cache_set(("source", identity), b"not an npz")
    with caplog.at_level(logging.WARNING):
        loaded = build_dataset(DatasetConfig())
    assert not loaded.from_cache
    assert any("cached decode of" in r.getMessage() for r in caplog.records)
    assert build_dataset(DatasetConfig()).from_cache


def test_a_request_fulfilled_before_plain_bytes_is_still_found_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with old_cache() as cache:
        cache.set(("sd-set", "0123456789abcdef0123"), "digits-sd-1")
        cache.set(("sd-set", "ffffffffffffffffffff"), Planted(marker))
    assert store.legacy_cache_text(("sd-set", "0123456789abcdef0123")) == "digits-sd-1"
    assert store.legacy_cache_text(("sd-set", "ffffffffffffffffffff")) is None
    assert not marker.exists()


# 2. A workspace only its user may change.
@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A workspace this process has not checked yet, and the process umask restored afterwards."""
    root = tmp_path / "fresh"
    (root / "cache").mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    monkeypatch.setenv("SYNTHLAB_HOME", str(root))
    monkeypatch.delenv(disk.SHARED_ENV, raising=False)
    mask = os.umask(0o022)
    os.umask(mask)
    yield root
    os.umask(mask)


def test_a_workspace_others_can_write_into_is_refused_with_the_fix(fresh_home: Path) -> None:
    (fresh_home / "cache").chmod(0o777)
    with pytest.raises(disk.WorkspaceNotPrivate) as caught:
        store.home()
    message = str(caught.value)
    assert f"the workspace folder {fresh_home / 'cache'} may be changed by other users (mode 777)" in message
    assert f"run `chmod -R go-w {fresh_home}`, or set SYNTHLAB_SHARED_WORKSPACE=1" in message
    assert "\n" not in message
    (fresh_home / "cache").chmod(0o700)
    assert store.home() == fresh_home  # fixed: accepted, and remembered for this process


def test_a_workspace_of_another_user_is_refused(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk.os, "geteuid", lambda: os.stat(fresh_home).st_uid + 1)
    with pytest.raises(disk.WorkspaceNotPrivate, match=r"belongs to user id \d+, not to the user running SynthLab"):
        store.home()


def test_a_workspace_shared_on_purpose_is_accepted(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_home.chmod(0o770)
    monkeypatch.setenv(disk.SHARED_ENV, "1")
    assert store.home() == fresh_home


def test_folders_made_after_the_check_are_private_whatever_the_umask(fresh_home: Path) -> None:
    os.umask(0o002)
    store.home()
    (store.subdir("runs") / "a" / "b").mkdir(parents=True)
    assert all(not p.stat().st_mode & 0o022 for p in [fresh_home / "runs", fresh_home / "runs" / "a"])


def test_the_cli_refuses_such_a_workspace_in_one_line(fresh_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fresh_home / "cache").chmod(0o757)
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert "may be changed by other users" in err and "chmod -R go-w" in err and len(err.splitlines()) == 1


# 3. Full disks.
def enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_on_a_full_disk_fails_in_one_line_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = store.subdir("runs") / "run.json"
    store.write_json(target, {"v": 1})
    monkeypatch.setattr(store.os, "fsync", enospc)
    with pytest.raises(store.DiskFull) as caught:
        store.write_json(target, {"v": 2})
    assert str(caught.value).startswith(f"{FULL} (") and "'run.json' was not saved" in str(caught.value)
    assert "Dataset page" in str(caught.value) and caught.value.errno == errno.ENOSPC
    assert isinstance(caught.value, OSError)
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"]  # no temporary file left
    assert target.read_text() == '{\n "v": 1\n}'


def test_an_upload_on_a_full_disk_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.os, "fsync", enospc)
    with pytest.raises(store.DiskFull, match=r"the upload 'pets.zip' was not saved"):
        store.save_upload("pets.zip", b"PK" * 1000)
    assert list(store.uploads_dir().iterdir()) == []


def cache_files() -> list[Path]:
    return [p for p in store.cache_dir().rglob("*.val")]


def test_a_cache_write_on_a_full_disk_leaves_no_value_file(monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = diskcache.Disk._write

    def write_then_fill(self: diskcache.Disk, full_path: str, *args: Any, **kwargs: Any) -> int:
        real_write(self, full_path, *args, **kwargs)  # part of the value is on disk when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diskcache.Disk, "_write", write_then_fill)
    with pytest.raises(store.DiskFull, match=FULL):
        store.cache_set(("source", "big"), b"x" * 100_000)
    assert cache_files() == []


def test_a_full_index_leaves_no_value_file(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def full_transaction(*args: Any, **kwargs: Any) -> Iterator[Any]:
        raise sqlite3.OperationalError("database or disk is full")
        yield

    monkeypatch.setattr(diskcache.Cache, "_transact", full_transaction)
    with pytest.raises(store.DiskFull, match="a decoded dataset was not saved"):
        store.cache_set(("source", "big"), b"x" * 100_000)
    assert cache_files() == []


def full_index(*args: Any, **kwargs: Any) -> None:
    raise sqlite3.OperationalError("database or disk is full")


def test_digits_load_on_a_full_disk_from_the_cache_or_without_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cached = build_dataset(DatasetConfig())
    monkeypatch.setattr(diskcache.Cache, "__init__", full_index)  # opening the cache to write fails
    monkeypatch.setattr(store.os, "fsync", enospc)
    assert build_dataset(DatasetConfig()).from_cache  # reading opens the index read-only
    with pytest.raises(store.DiskFull, match="too full to change the decode cache's index"):
        store.clear_cache()
    monkeypatch.setenv("SYNTHLAB_HOME", str(store.home().parent / "empty"))
    with caplog.at_level(logging.WARNING):
        raw, _, _, from_cache = load_source_cached(DatasetConfig().source)
    assert not from_cache and len(raw) == len(cached.train) + len(cached.val) + len(cached.test)
    assert any(FULL in r.getMessage() and "loaded without caching" in r.getMessage() for r in caplog.records)


def test_an_unreadable_index_is_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    store.cache_set(("source", "a"), b"bytes")
    monkeypatch.setattr(store.sqlite3, "connect", full_index)
    assert store.cache_get(("source", "a")) is None
    assert store.cache_size_bytes() > 0  # the files are still counted


# 5. Readable server folders: the workspace only, unless set.
def test_server_folders_are_the_workspace_only_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(store.FOLDER_ROOTS_ENV)
    assert store.folder_roots() == []
    assert store.is_readable_location(store.subdir("uploads"))
    assert not store.is_readable_location(tmp_path / "elsewhere")
    assert not store.is_readable_location(Path.home())
    monkeypatch.setenv(store.FOLDER_ROOTS_ENV, str(tmp_path))
    assert store.is_readable_location(tmp_path / "elsewhere")


@pytest.mark.slow
def test_a_real_full_disk_reads_the_cache_and_refuses_writes_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a 16 MiB tmpfs filled to the last byte (root only; skipped elsewhere)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir(mode=0o700)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        monkeypatch.setenv("SYNTHLAB_HOME", str(mount / "ws"))
        assert not build_dataset(DatasetConfig()).from_cache
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        for size in (2**16, 2**12, 2**9, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
        os.close(fd)
        assert disk.free_bytes(mount) == 0
        assert build_dataset(DatasetConfig()).from_cache  # read without writing
        with pytest.raises(store.DiskFull, match=rf"^{FULL} \(0.0 MiB free\): the upload 'a.zip' was not saved"):
            store.save_upload("a.zip", b"PK" * 50_000)
        with pytest.raises(store.DiskFull, match="a decoded dataset was not saved"):
            store.cache_set(("source", "more"), b"x" * 100_000)
        assert list(store.uploads_dir().iterdir()) == [] and len(cache_files()) == 1
    finally:
        gc.collect()  # in case a connection of a refused write still holds a file on the mount
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(mount)], check=False)
