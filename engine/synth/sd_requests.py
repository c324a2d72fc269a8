"""Stable Diffusion requests on disk: a request's key, the set that fulfils it, what a stopped run wrote.

A request is an :class:`~engine.synth.stable_diffusion.SDConfig` for one dataset; its key is a hash of
every setting that changes the images and of the dataset's key. A run writes each image and its manifest
line as it comes into ``<workspace>/synthetic/.partial-<key>/`` (``images/``, ``manifest.jsonl`` and
``request.json``: the config and the dataset key), so a stopped run continues where it stopped, or is
discarded. A fulfilled request points at its set in the cache index. Where this stops: no rendering and
no judging (``make_sets.py`` runs the request), no sets stored here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from engine import owners, store
from engine.datasets import LabDataset
from engine.records import SCHEMA, migrate
from engine.synth import sets
from engine.synth.stable_diffusion import SDConfig

log = logging.getLogger(__name__)


def request_key(cfg: SDConfig, dataset: LabDataset) -> str:
    """The key of a request (20 hex characters): every setting that changes the images, the dataset and the
    acting user (requests are private: one user's unfinished request is never continued or discarded by another)."""
    # "-" where the dataset key has "#": the hash input keys had before LabDataset.key, so unfinished
    # requests of older workspaces still resume and fulfilled ones are still served from the cache
    key = f"{cfg.cache_key()}-{dataset.key.replace('#', '-')}"
    if (owner := owners.owner_name()) != owners.LOCAL:  # the local user keeps the keys it had before accounts
        key += f"-{owner}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def cached_set(cfg: SDConfig, dataset: LabDataset) -> sets.SetInfo | None:
    """The stored set that already fulfils this request, if any (a deleted set is not served)."""
    key = request_key(cfg, dataset)
    stored = store.cache_get(("sd-set", key))
    # requests fulfilled before the cache held plain bytes are found under their older key, never unpickled
    set_id = stored.decode(errors="replace") if stored is not None else store.legacy_cache_text(("sd-set", key))
    if not set_id:
        return None
    try:
        return sets.load_info(set_id)
    except sets.SetError:
        return None


def partial_folder(key: str) -> Path:
    return sets.sets_dir() / f".partial-{key}"


def open_partial(cfg: SDConfig, dataset: LabDataset) -> tuple[Path, list[sets.ImageRecord]]:
    """The request's folder, created if new, and the records a stopped run left there (images on disk).

    The manifest is rewritten with those records only, so a torn last line is gone before new lines follow.
    """
    folder = partial_folder(request_key(cfg, dataset))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    request = {"config": dataclasses.asdict(cfg), "dataset": dataset.key, "owner": owners.owner_name()}
    store.write_json(folder / "request.json", {**request, "schema": SCHEMA})
    records = read_partial(folder)
    store.write_atomic(folder / "manifest.jsonl", "".join(record_line(r) for r in records).encode())
    return folder, records


def read_partial(folder: Path) -> list[sets.ImageRecord]:
    """Records already written by an interrupted run; a torn last line or a missing image is dropped."""
    records = []
    path = folder / "manifest.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            record = sets.ImageRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue
        if (folder / record.file).is_file():
            records.append(record)
    return records


def record_line(record: sets.ImageRecord) -> str:
    """One manifest line."""
    return json.dumps(dataclasses.asdict(record)) + "\n"


def partial_requests() -> list[dict[str, Any]]:
    """Unfinished requests of this workspace, newest first: key, model, mode, images written so far, the
    request's :class:`SDConfig` (``config``, to resume it) and the key of the dataset it was made for."""
    out = []
    for folder in sorted(sets.sets_dir().glob(".partial-*"), key=lambda f: f.stat().st_mtime, reverse=True):
        try:
            request = migrate("sd_request", json.loads((folder / "request.json").read_text()))
            cfg = SDConfig(**request["config"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not owners.can_see(request["owner"]):  # unfinished requests are private
            continue
        out.append(
            {
                "key": folder.name.removeprefix(".partial-"),
                "model": cfg.model,
                "mode": cfg.mode,
                "images": len(read_partial(folder)),
                "config": cfg,
                "dataset": request.get("dataset", ""),
                "owner": owners.owner_of(request["owner"]),
            }
        )
    return out


def discard_partial(key: str) -> None:
    """Delete what an unfinished request wrote (its next run starts from scratch)."""
    if not re.fullmatch(r"[0-9a-f]{20}", key):
        raise sets.SetError(f"request key {key!r} is not accepted: 20 hexadecimal characters")
    try:
        request = migrate("sd_request", json.loads((partial_folder(key) / "request.json").read_text()))
    except (OSError, ValueError):
        request = {"owner": ""}  # a request folder without a readable request: the local user's leftover
    owners.check_can_change(request["owner"], "this unfinished Stable Diffusion request", "discard")
    shutil.rmtree(partial_folder(key), ignore_errors=True)


def finish(cfg: SDConfig, dataset: LabDataset, set_id: str) -> None:
    """The request became set ``set_id``: serve it from now on and delete what the runs wrote."""
    key = request_key(cfg, dataset)
    try:
        store.cache_set(("sd-set", key), set_id.encode(), what="the record of a finished Stable Diffusion request")
    except store.DiskFull as err:  # the set itself is stored: only serving it to the same request again is lost
        log.warning("%s", err)
    shutil.rmtree(partial_folder(key), ignore_errors=True)
