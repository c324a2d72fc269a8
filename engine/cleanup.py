"""What takes space in the workspace, item by item, and deleting it: uploads, decoded datasets, sets, generators.

:func:`list_items` lists what the acting user may clean up (their own items; every user's for an
admin) with its size, owner and last use; :func:`delete` removes one, checking the owner in the engine
(:mod:`engine.owners`) and going through each kind's own delete where it has one (synthetic sets). Deleting
works on a full disk: it only frees space. "Last use" is the last read where the file system or the cache
records one, else the last change. Where this stops: no Streamlit (``ui/cleanup_views.py`` draws it), no
runs or experiments (their own pages keep them).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine import disk, heartbeat, owners, store
from engine.synth import generators, sets

log = logging.getLogger(__name__)
Kind = Literal["upload", "cache", "set", "generator"]
KINDS: tuple[Kind, ...] = ("upload", "cache", "set", "generator")
OLD_CACHE_ENTRY = "decoded dataset of an older version (no longer read)"


class CleanupError(ValueError):
    """An item cannot be deleted now; the message names it and says why."""


@dataclass(frozen=True)
class Item:
    """One thing in the workspace a user may delete."""

    kind: Kind
    id: str  # what :func:`delete` takes for this kind
    name: str  # as the user knows it
    owner: str  # the user who made it
    size: int  # bytes on disk
    last_used: float  # seconds since the epoch: last read where known, else last change


def list_items() -> list[Item]:
    """Uploads, decode-cache entries, synthetic sets and generators the acting user may delete (their own; every
    user's for an admin), each kind newest use first."""
    return [*_uploads(), *_cache_entries(), *_sets(), *_generators()]


def free_bytes() -> int | None:
    """Bytes free on the disk holding the workspace (None when the system cannot say)."""
    return disk.free_bytes(store.home())


def delete(kind: str, item_id: str) -> None:
    """Delete one item (its owner or an admin only); an item that is gone already is no error.

    Raises :class:`~engine.owners.OwnershipError` for another user's item, :class:`CleanupError` for an unknown
    kind or a generator that is training now, :class:`~engine.synth.sets.SetError` for a malformed set id.
    """
    if kind == "upload":
        _delete_upload(item_id)
    elif kind == "cache":
        _delete_cache_entry(item_id)
    elif kind == "set":
        sets.delete_set(item_id)
    elif kind == "generator":
        _delete_generator(item_id)
    else:
        raise CleanupError(f"kind={kind!r} is not accepted: expected one of {', '.join(KINDS)}")


def _usage(paths: list[Path]) -> tuple[int, float]:
    """Bytes of ``paths`` and their latest read or change (seconds since the epoch)."""
    size, last = 0, 0.0
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        size += info.st_size
        last = max(last, info.st_atime, info.st_mtime)
    return size, last


def _files(folder: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name not in skip]


# 1. Uploads: uploads/<user folder>/<file>.
def _uploads() -> list[Item]:
    actor = owners.current()
    root = store.subdir("uploads")
    folders = [p for p in root.iterdir() if p.is_dir()] if actor.admin else [store.uploads_dir()]
    items = []
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            size, last = _usage([path])
            shown = path.name.split("-", 1)[-1]  # without the content hash the upload is stored under
            items.append(Item("upload", f"{folder.name}/{path.name}", shown, folder.name, size, last))
    return sorted(items, key=lambda i: i.last_used, reverse=True)


def _delete_upload(item_id: str) -> None:
    folder_name, _, file_name = item_id.partition("/")
    folder = store.subdir("uploads") / Path(folder_name).name
    actor = owners.current()
    if not actor.admin and folder.name != owners.folder_name(actor.name):
        raise owners.OwnershipError(
            f"the upload {file_name!r} belongs to another user: only its owner or an administrator can delete it."
        )
    (folder / Path(file_name).name).unlink(missing_ok=True)


# 2. Decode-cache entries, read from the cache's index without writing.
def _cache_entries() -> list[Item]:
    names = store.cache_key("name") + "/"  # a readable name beside each decoded dataset: source, images, side
    try:
        rows = store.index_rows(
            "SELECT rowid, key, raw, tag, CASE WHEN mode = 1 THEN length(value) ELSE size END, store_time,"
            " access_time FROM Cache"
        )
        readable = dict(
            store.index_rows("SELECT key, value FROM Cache WHERE raw = 1 AND mode = 1 AND key LIKE ?", (f"{names}%",))
        )
    except sqlite3.Error as err:
        log.warning("decode cache not listed: %s", err)
        return []
    prefix = store.cache_key("source") + "/"
    items = []
    for rowid, key, raw, tag, size, stored, used in rows:
        owner = owners.owner_of(tag if isinstance(tag, str) else "")
        if not owners.can_see(owner):
            continue
        if raw and isinstance(key, str) and not key.startswith(prefix):
            continue  # other kinds of entry (a fulfilled request's set id): a few bytes, kept with what they name
        name = OLD_CACHE_ENTRY
        if raw and isinstance(key, str):
            identity = key[len(prefix) :]
            label = readable.get(names + identity)
            name = label.decode(errors="replace") if isinstance(label, bytes) else f"decoded dataset {identity}"
        last = max(float(stored or 0.0), float(used or 0.0))
        items.append(Item("cache", str(rowid), name, owner, int(size or 0), last))
    return sorted(items, key=lambda i: i.last_used, reverse=True)


def _delete_cache_entry(item_id: str) -> None:
    """Delete one entry: its value file first, so the space comes back even when the disk is too full for the
    index to change (the entry then reads as a miss)."""
    if not item_id.isdigit():
        raise CleanupError(f"cache entry {item_id!r} is not accepted: expected a row number")
    rows = store.index_rows("SELECT tag, filename FROM Cache WHERE rowid = ?", (int(item_id),))
    if not rows:
        return
    tag, filename = rows[0]
    owners.check_can_change(tag if isinstance(tag, str) else "", "this decoded dataset", "delete")
    root = store.cache_dir().resolve()
    if isinstance(filename, str) and root in (value_file := (root / filename).resolve()).parents:
        value_file.unlink(missing_ok=True)
    try:
        store.change_index("DELETE FROM Cache WHERE rowid = ?", (int(item_id),), timeout=10)
    except sqlite3.Error as err:
        if not disk.is_full(err, root):
            raise
        log.warning("cache entry %s: its file is deleted, its row stays until the disk has room", item_id)


# 3. Synthetic sets: the acting user's own (shared sets of others are theirs to delete).
def _sets() -> list[Item]:
    items = []
    for info in sets.list_sets():
        if not owners.can_see(info.owner):
            continue
        size, last = _usage(_files(sets.sets_dir() / info.id, skip=("set.json",)))  # set.json is read by listings
        items.append(Item("set", info.id, info.name or info.id, info.owner, size, max(last, info.created)))
    return sorted(items, key=lambda i: i.last_used, reverse=True)


# 4. Generators: generators/<id>/ with origin.json (usable) or training.json (interrupted or training).
def _generator_record(folder: Path) -> dict[str, Any] | None:
    for name in ("origin.json", generators.STATUS):
        try:
            value = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _generators() -> list[Item]:
    items = []
    for folder in generators.generators_dir().iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        record = _generator_record(folder)
        if record is None:
            continue
        owner = owners.owner_of(str(record.get("owner", "")))
        if not owners.can_see(owner):
            continue
        size, last = _usage(_files(folder, skip=("origin.json",)))  # origin.json is read by listings
        usable = (folder / "origin.json").is_file()
        name = folder.name if usable else f"{folder.name} (unfinished training)"
        items.append(Item("generator", folder.name, name, owner, size, last))
    return sorted(items, key=lambda i: i.last_used, reverse=True)


def _delete_generator(gen_id: str) -> None:
    folder = generators.generators_dir() / Path(gen_id).name
    record = _generator_record(folder) if folder.is_dir() else None
    if record is None:
        return
    owners.check_can_change(str(record.get("owner", "")), f"the generator {gen_id!r}", "delete")
    status = _generator_status(folder)
    host, pid = str(status.get("host", "")), int(status.get("pid", 0) or 0)
    if status.get("status") == "running" and not heartbeat.has_stopped(host, pid):
        raise CleanupError(f"the generator {gen_id!r} is training now: stop its training first, then delete it")
    hidden = folder.parent / f".del-{folder.name}-{uuid.uuid4().hex[:6]}"
    os.replace(folder, hidden)  # gone from every listing at once, never half-deleted
    shutil.rmtree(hidden, ignore_errors=True)


def _generator_status(folder: Path) -> dict[str, Any]:
    try:
        value = json.loads((folder / generators.STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
