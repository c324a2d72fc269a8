"""The workspace on disk: where data, uploads and the decode cache live.

The workspace root is ``$SYNTHLAB_HOME`` or ``./workspace`` next to the code. New folders are created
private to the user (mode 0700), and on first use in a process the whole workspace is checked to be
private (:func:`engine.disk.check_private`): a workspace others can write into is refused with one line.

The decode cache (diskcache's SQLite index under ``cache/``) holds plain bytes only, under string keys
``v2/<kind>/<id>``: the lab never unpickles anything it reads back, and any entry that is not plain bytes
(an older pickled entry, or one planted by someone else) is a miss. Reading never writes, so a full disk
still reads what is cached; every write that finds the disk full raises
:class:`~engine.disk.DiskFull` with one line and leaves no partial file. The cache never evicts
(diskcache's default would silently drop entries past 1 GB); :func:`clear_cache` empties it.
Where this stops: it stores bytes and values; it does not know what a dataset or a run is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import pickletools
import re
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import diskcache
import numpy as np

from engine import disk, owners

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
FOLDER_ROOTS_ENV = "SYNTHLAB_FOLDER_ROOTS"
CACHE_FORMAT = "v2"  # the prefix of cache keys: entries written before it (pickled values) are never read
CACHE_INDEX = diskcache.core.DBNAME  # the cache's SQLite file in cache_dir()
_MODE_RAW, _MODE_BINARY = 1, 2  # diskcache's value modes that hold plain bytes (never 4: its pickle mode)
_checked: set[Path] = set()  # workspaces found private by this process
_check_lock = threading.Lock()
DiskFull = disk.DiskFull  # what every write here raises on a full disk (an OSError with one readable line)


class UploadRefused(ValueError):
    """An upload would pass the user's upload limit."""


def home() -> Path:
    """The workspace root, created on first use (private to this user), checked private once per process.

    Raises :class:`engine.disk.WorkspaceNotPrivate` when another user could write into it. From the first
    check on, this process creates nothing that its group or others could write (umask ``go-w``).
    """
    root = Path(os.environ.get("SYNTHLAB_HOME") or REPO_ROOT / "workspace").expanduser().resolve()
    if root in _checked:
        return root
    with _check_lock:
        _make_folder(root)
        disk.check_private(root)
        if not disk.shared_on_purpose():
            os.umask(os.umask(0o077) | 0o022)  # never a moment with a looser mask than before
        _checked.add(root)
    return root


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        if disk.is_full(err):
            raise disk.full_disk(f"the folder {path.name!r}", path.parent) from err
        raise


def subdir(name: str) -> Path:
    """A folder inside the workspace (``cache``, ``uploads``, ``torchvision``, ...)."""
    path = home() / name
    _make_folder(path)
    return path


def cache_key(key: str | tuple[str, ...]) -> str:
    """``v2/<parts joined by />``: a string, which diskcache stores as it is (a tuple key would be pickled)."""
    parts = (key,) if isinstance(key, str) else tuple(key)
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise TypeError(f"cache key {key!r} is not accepted: expected a non-empty string or tuple of strings")
    return "/".join((CACHE_FORMAT, *parts))


class _BytesDisk(diskcache.Disk):
    """diskcache's serialiser, restricted to bytes values: it refuses to pickle or unpickle, and remembers the
    files it wrote so that a failed write can remove them."""

    def __init__(self, directory: str, **settings: Any) -> None:
        super().__init__(directory, **settings)
        self.written: list[str] = []

    def filename(self, key: Any = diskcache.UNKNOWN, value: Any = diskcache.UNKNOWN) -> tuple[str, str]:
        name, full_path = super().filename(key, value)
        self.written.append(full_path)
        return name, full_path

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"cache key {key!r} is not accepted: expected a string")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise ValueError("a cache key stored pickled is not read")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.UNKNOWN) -> Any:
        if type(value) is not bytes:
            raise TypeError(f"a cache value must be bytes, got {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (_MODE_RAW, _MODE_BINARY):
            raise ValueError(f"a cache value stored in mode {mode} (not plain bytes) is not read")
        return super().fetch(mode, filename, value, read)


def cache_dir() -> Path:
    """The decode cache's folder (diskcache's index and value files); not created here."""
    return home() / "cache"


def _cache() -> diskcache.Cache:
    # eviction_policy="none": results must not vanish silently once the cache passes 1 GB.
    cache = diskcache.Cache.__new__(diskcache.Cache)
    try:
        cache.__init__(str(subdir("cache")), disk=_BytesDisk, eviction_policy="none", size_limit=2**62)
    except BaseException:
        with contextlib.suppress(Exception):  # a full disk fails the opening: its connection closes now, not at GC
            cache.close()
        raise
    return cache


def _read_only_index() -> sqlite3.Connection | None:
    """A read-only connection to the cache index (None when there is none yet): reading never writes.

    When even that cannot open (on a full disk SQLite cannot create the index's shared-memory file), the
    index is opened as immutable: no locks, no shared memory. Nothing can write meanwhile on a full disk;
    should something still change under it, what is read is validated like any entry.
    """
    path = cache_dir() / CACHE_INDEX
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        con.execute("SELECT 1 FROM Cache LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError as err:
        if not disk.is_full(err, path.parent):
            raise
        log.info("decode cache index opened as immutable (%s)", err)
        return sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)


def index_rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every row a read-only query on the decode cache's index returns ([] while there is no index); the
    connection is closed before this returns. :class:`sqlite3.Error` reaches the caller."""
    con = _read_only_index()
    if con is None:
        return []
    with contextlib.closing(con):
        return con.execute(sql, params).fetchall()


def change_index(sql: str, params: tuple[Any, ...], *, timeout: float) -> None:
    """One change to the decode cache's index, committed, waiting at most ``timeout`` seconds for its lock.
    :class:`sqlite3.Error` reaches the caller."""
    with contextlib.closing(sqlite3.connect(cache_dir() / CACHE_INDEX, timeout=timeout)) as con, con:
        con.execute(sql, params)


def cache_get(key: str | tuple[str, ...]) -> bytes | None:
    """The bytes stored under ``key``, or None: a miss, an unreadable index (a full disk, a damaged file) or an
    entry that is not plain bytes (logged, never unpickled)."""
    name = cache_key(key)
    try:
        rows = index_rows("SELECT rowid, mode, filename, value FROM Cache WHERE key = ? AND raw = 1", (name,))
    except sqlite3.Error as err:
        log.warning("decode cache not read (%s): %s is decoded again", err, name)
        return None
    if not rows:
        return None
    rowid, mode, filename, value = rows[0]
    data = _plain_bytes(mode, filename, value)
    if data is None:
        log.warning("cache entry %s ignored: it is not stored as plain bytes", name)
        return None
    _touch(rowid)
    return data


def _plain_bytes(mode: Any, filename: Any, value: Any) -> bytes | None:
    if mode == _MODE_RAW and isinstance(value, bytes):
        return value
    if mode != _MODE_BINARY or not isinstance(filename, str):
        return None
    root = cache_dir().resolve()
    path = (root / filename).resolve()
    if root not in path.parents:
        return None  # a value file outside the cache folder is not one diskcache wrote
    try:
        return path.read_bytes()
    except OSError:
        return None


def _touch(rowid: int) -> None:
    """Record when an entry was last read (what the cleanup view shows), if the disk lets us: never an error."""
    try:
        change_index("UPDATE Cache SET access_time = ? WHERE rowid = ?", (time.time(), rowid), timeout=0.5)
    except sqlite3.Error as err:
        log.debug("last use of a cache entry not recorded: %s", err)


def cache_set(key: str | tuple[str, ...], value: bytes, *, what: str = "a decoded dataset") -> None:
    """Store the bytes ``value`` under ``key``, tagged with the acting user (entries are shared read-only: keyed
    by content). A full disk raises :class:`DiskFull` (``what`` names the value in it) and leaves no file."""
    name = cache_key(key)
    if type(value) is not bytes:
        raise TypeError(f"a cache value must be bytes, got {type(value).__name__}")
    written: list[str] = []
    try:
        with _cache() as cache:
            assert isinstance(cache.disk, _BytesDisk)
            written = cache.disk.written
            cache.set(name, value, tag=owners.owner_name())
            written = []
    except (OSError, sqlite3.Error) as err:
        for path in written:  # a value file whose row was never committed
            Path(path).unlink(missing_ok=True)
        if disk.is_full(err, cache_dir()):
            raise disk.full_disk(what, cache_dir()) from err
        raise


def cache_size_bytes() -> int:
    """Bytes the decode cache takes (its index and its value files), read without writing."""
    index = sum(p.stat().st_size for p in cache_dir().glob(f"{CACHE_INDEX}*") if p.is_file())
    try:
        rows = index_rows("SELECT COALESCE(SUM(size), 0) FROM Cache")
    except sqlite3.Error:
        return index
    return index + (int(rows[0][0]) if rows else 0)


def clear_cache() -> int:
    """Empty the cache (an admin), or drop the acting user's own entries (anyone else); returns how many went.

    Entries another user made stay: they are shared read-only by everyone who loads the same data.
    """
    actor = owners.current()
    try:
        with _cache() as cache:
            return int(cache.clear() if actor.admin else cache.evict(actor.name))
    except sqlite3.Error as err:
        if disk.is_full(err, cache_dir()):
            raise DiskFull(
                "the disk holding the workspace is full, too full to change the decode cache's index: delete "
                "decoded datasets one by one on the Dataset page (Clean up), or free space on that disk"
            ) from err
        raise


def legacy_cache_text(key: tuple[str, ...]) -> str | None:
    """A short text an older version stored under the tuple ``key`` (e.g. a set id), found without unpickling:
    the key is pickled the way that version did and compared as bytes; only plain-text values are read."""
    blob = pickletools.optimize(pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL))
    try:
        rows = index_rows("SELECT mode, value FROM Cache WHERE key = ? AND raw = 0", (blob,))
    except sqlite3.Error:
        return None
    if not rows or rows[0][0] != _MODE_RAW or not isinstance(rows[0][1], str):
        return None
    return rows[0][1]


def write_atomic(path: Path, data: bytes, *, what: str | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary sibling: readers see the old file or the new one.

    A full disk raises :class:`DiskFull` (``what`` names the file for the user; its name by default) and
    leaves the old file as it was and no temporary file.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and disk.is_full(err) and not isinstance(err, DiskFull):
            raise disk.full_disk(what or f"the file {path.name!r}", path.parent) from err
        raise


def write_json(path: Path, value: Any, *, what: str | None = None) -> None:
    """:func:`write_atomic` of ``value`` as JSON (numpy scalars and tuples allowed)."""
    write_atomic(path, json.dumps(value, indent=1, default=_jsonable).encode(), what=what)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def uploads_dir(owner: str | None = None) -> Path:
    """``uploads/<user>/``: each user's uploads in a folder of their own (the acting user's by default)."""
    return subdir(f"uploads/{owners.folder_name(owner or owners.owner_name())}")


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def save_upload(name: str, data: bytes) -> Path:
    """Write uploaded bytes inside the acting user's ``uploads/<user>/`` under a content-hashed name; returns the path.

    Refused with a plain message when the user's uploads would pass their upload limit (set by an admin), and
    with :class:`DiskFull` when the disk has no room for it (nothing is left behind).
    """
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[-80:] or "upload"
    folder = uploads_dir()
    target = folder / f"{digest}-{stem}"
    if not target.exists():
        from engine import limits  # limits keeps its file in the workspace: imported here, not at the top

        limit_mb = limits.limits_for(owners.owner_name()).upload_mb
        used = folder_bytes(folder)
        if used + len(data) > limit_mb * 2**20:
            raise UploadRefused(
                f"uploading {Path(name).name!r} ({len(data) / 2**20:,.1f} MiB) would pass your upload limit of "
                f"{limit_mb:,} MiB ({used / 2**20:,.1f} MiB used): delete uploads you no longer need on the Dataset "
                "page, or ask an admin to raise the limit"
            )
        write_atomic(target, data, what=f"the upload {Path(name).name!r}")
    return target


def folder_roots() -> list[Path]:
    """Folders the server may read datasets from, besides the workspace: none unless set.

    ``$SYNTHLAB_FOLDER_ROOTS`` (``:``-separated) names them; unset, datasets come from the workspace only
    (uploads, torchvision downloads): on a shared server, people should not be able to browse the folders
    the server account can read.
    """
    raw = os.environ.get(FOLDER_ROOTS_ENV, "").strip()
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def is_readable_location(path: Path) -> bool:
    """Whether a server path lies inside the workspace or an allowed folder root, and not in another user's uploads."""
    resolved = path.expanduser().resolve()
    uploads = home() / "uploads"
    if uploads in resolved.parents and not owners.current().admin:
        own = uploads_dir()
        if not (resolved == own or own in resolved.parents):
            return False
    return any(resolved == root or root in resolved.parents for root in [home(), *folder_roots()])
