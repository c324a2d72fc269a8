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

REPO_ROOT = Path(__file__).resolve().parent.parent
FOLDER_ROOTS_ENV = "SYNTHLAB_FOLDER_ROOTS"


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
    with _cache() as cache:
        cache.set(key, value)


def cache_size_bytes() -> int:
    with _cache() as cache:
        return int(cache.volume())


def clear_cache() -> None:
    with _cache() as cache:
        cache.clear()


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


def save_upload(name: str, data: bytes) -> Path:
    """Write uploaded bytes inside ``uploads/`` under a content-hashed name; returns the path."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[-80:] or "upload"
    target = subdir("uploads") / f"{digest}-{stem}"
    if not target.exists():
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
    """Whether a server path lies inside the workspace or an allowed folder root."""
    resolved = path.expanduser().resolve()
    return any(resolved == root or root in resolved.parents for root in [home(), *folder_roots()])
