"""The workspace on disk: where data, uploads and the decode cache live.

The workspace root is ``$SYNTHLAB_HOME`` or ``./workspace`` next to the code. It is created
private to the user (mode 0700) because diskcache unpickles what it reads. The cache never evicts
(diskcache's default would silently drop entries past 1 GB); :func:`clear_cache` empties it.
Where this stops: it stores bytes and values; it does not know what a dataset or a run is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import diskcache
import numpy as np

from engine import owners

REPO_ROOT = Path(__file__).resolve().parent.parent
FOLDER_ROOTS_ENV = "SYNTHLAB_FOLDER_ROOTS"


class UploadRefused(ValueError):
    """An upload would pass the user's upload limit."""


def home() -> Path:
    """The workspace root, created on first use (private to this user)."""
    root = Path(os.environ.get("SYNTHLAB_HOME") or REPO_ROOT / "workspace").expanduser().resolve()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    """A folder inside the workspace (``cache``, ``uploads``, ``torchvision``, ...)."""
    path = home() / name
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _cache() -> diskcache.Cache:
    # eviction_policy="none": results must not vanish silently once the cache passes 1 GB.
    return diskcache.Cache(str(subdir("cache")), eviction_policy="none", size_limit=2**62)


def cache_get(key: tuple[str, ...]) -> Any:
    with _cache() as cache:
        return cache.get(key)


def cache_set(key: tuple[str, ...], value: Any) -> None:
    """Store ``value`` under ``key``, tagged with the acting user (entries are shared read-only: keyed by content)."""
    with _cache() as cache:
        cache.set(key, value, tag=owners.owner_name())


def cache_size_bytes() -> int:
    with _cache() as cache:
        return int(cache.volume())


def clear_cache() -> int:
    """Empty the cache (an admin), or drop the acting user's own entries (anyone else); returns how many went.

    Entries another user made stay: they are shared read-only by everyone who loads the same data.
    """
    actor = owners.current()
    with _cache() as cache:
        return int(cache.clear() if actor.admin else cache.evict(actor.name))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """:func:`write_atomic` of ``value`` as JSON (numpy scalars and tuples allowed)."""
    write_atomic(path, json.dumps(value, indent=1, default=_jsonable).encode())


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

    Refused with a plain message when the user's uploads would pass their upload limit (set by an admin).
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
        write_atomic(target, data)
    return target


def folder_roots() -> list[Path]:
    """Folders the server may read datasets from, besides the workspace.

    ``$SYNTHLAB_FOLDER_ROOTS`` (``:``-separated) when set, else the server user's home folder: on a
    shared server, people should not be able to browse every folder the server account can read.
    """
    raw = os.environ.get(FOLDER_ROOTS_ENV, "").strip()
    if not raw:
        return [Path.home().resolve()]
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
