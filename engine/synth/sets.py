"""Synthetic sets on disk: lossless PNGs, one manifest record per image, and the set's info.

A set lives in ``<workspace>/synthetic/<set_id>/``: ``images/<class_index>_<class-name>/<NNNNNN>.png``
(uint8, 1 or 3 channels), ``manifest.jsonl`` (one :class:`ImageRecord` per image, kept or not) and
``set.json`` (:class:`SetInfo`). A set is written in a hidden sibling folder and renamed into place,
so a half-written set never appears; later edits (hand rejections, quality) replace files atomically.
A set records the :attr:`~engine.datasets.LabDataset.key` of the dataset it was made for and is listed
for that dataset only. Where this stops: no generation, no filtering, no quality measures (see
``make_sets.py``, ``filters.py`` and ``quality.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine import owners, store
from engine.datasets import ImageSet, Provenance
from engine.records import SCHEMA, migrate

log = logging.getLogger(__name__)
ID_PATTERN = re.compile(r"[0-9A-Za-z_-]+")
_edit_lock = threading.Lock()  # manifest edits from two sessions of one server must not interleave


class SetError(ValueError):
    """A synthetic set cannot be stored, found or changed; the message names the value."""


@dataclass(frozen=True)
class ImageRecord:
    """What is known about one synthetic image."""

    file: str  # path relative to the set folder, e.g. "images/0_zero/000017.png" ("" before saving)
    label: int
    class_name: str
    generator: str  # generator id, e.g. "cgan-<hash8>"
    config_hash: str  # hash of the generator config
    seed: int
    noise_index: int
    score: float | None  # filter confidence for the label (None when no filter ran)
    kept: bool
    reason: str  # why rejected ("" when kept), e.g. "classifier says 'seven' (p=0.91)", "rejected by hand"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. prompt, steps, source image (diffusion)


@dataclass(frozen=True)
class SetInfo:
    """What ``set.json`` says about a set."""

    id: str
    name: str
    generator: str
    created: float  # seconds since the epoch
    class_names: tuple[str, ...]
    channels: int
    resolution: int
    counts_total: tuple[int, ...]  # per class, all images generated
    counts_kept: tuple[int, ...]  # per class, kept (filter and hand rejections applied)
    dataset_key: str  # LabDataset.key of the dataset it was made for: source content, split and imbalance
    config: dict[str, Any]  # generator config and generation settings (JSON-able)
    quality: dict[str, Any]  # filled later by quality reports ({} at first)
    owner: str = ""  # the user who made it ("" in sets older than owners: the local user's)
    shared: bool = False  # every user of the server may see and train on it (read-only)
    schema: int = SCHEMA

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SetInfo:
        data = migrate("set", data, str(data.get("id", "")))
        for name in ("class_names", "counts_total", "counts_kept"):
            data[name] = tuple(data[name])
        data["owner"] = owners.owner_of(data["owner"])
        return cls(**data)


def sets_dir() -> Path:
    return store.subdir("synthetic")


def check_id(set_id: str) -> str:
    """``set_id`` if it is a safe folder name (letters, digits, ``_`` and ``-``), else :class:`SetError`."""
    if not isinstance(set_id, str) or not ID_PATTERN.fullmatch(set_id):
        raise SetError(f"set id {set_id!r} is not accepted: expected letters, digits, '_' and '-' only")
    return set_id


def _folder(set_id: str) -> Path:
    return sets_dir() / check_id(set_id)


def _class_folder(label: int, name: str) -> str:
    return f"{label}_{re.sub(r'[^0-9A-Za-z_-]+', '_', name)[:40] or 'class'}"


def save_png(path: Path, image: np.ndarray) -> None:
    """Write one uint8 (C, R, R) image as a lossless PNG."""
    pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")


def read_png(path: Path, channels: int) -> np.ndarray:
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _write_manifest(folder: Path, records: Sequence[ImageRecord]) -> None:
    lines = "".join(json.dumps(dataclasses.asdict(r), default=_plain) + "\n" for r in records)
    store.write_atomic(folder / "manifest.jsonl", lines.encode())


def _plain(value: Any) -> Any:
    """numpy scalars (a label from ``np.argmax``, a float32 score) are stored as plain numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_info(folder: Path, info: SetInfo) -> None:
    store.write_atomic(folder / "set.json", json.dumps(dataclasses.asdict(info), indent=1).encode())


def _counts(records: Sequence[ImageRecord], num_classes: int, *, kept_only: bool) -> tuple[int, ...]:
    labels = [r.label for r in records if r.kept or not kept_only]
    return tuple(int(n) for n in np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes))


def _check_jsonable(name: str, value: dict[str, Any]) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise SetError(f"{name} is not accepted: {err}; expected a mapping of JSON values") from err


def _check_inputs(name: str, images: np.ndarray, records: Sequence[ImageRecord], class_names: Sequence[str]) -> None:
    if not name.strip():
        raise SetError("name='' is not accepted: give the set a name")
    if not class_names or len(set(class_names)) != len(class_names):
        raise SetError(f"class_names={list(class_names)!r} is not accepted: expected distinct names, at least one")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise SetError(
            f"images {getattr(images, 'dtype', type(images))} {shape} are not accepted: expected uint8 (N, C, R, R)"
        )
    if images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3]:
        raise SetError(f"images of shape {images.shape} are not accepted: expected 1 or 3 channels, square images")
    if len(images) != len(records):
        raise SetError(f"{len(images)} images and {len(records)} records are not accepted: expected one record each")
    for r in records:
        ok = isinstance(r.label, (int, np.integer)) and 0 <= r.label < len(class_names)
        if not ok or class_names[r.label] != r.class_name:
            raise SetError(
                f"record label={r.label!r} class_name={r.class_name!r} is not accepted: expected a label "
                f"in [0, {len(class_names)}) whose class name matches class_names"
            )


def create_set(
    name: str,
    images: np.ndarray,
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    *,
    generator: str,
    dataset_key: str,
    config: dict[str, Any],
    quality: dict[str, Any] | None = None,
) -> SetInfo:
    """Store uint8 images (N, C, R, R) with their records (labels in the records); returns the new set's info.

    ``dataset_key`` is the :attr:`~engine.datasets.LabDataset.key` of the dataset the set is made for.
    The records' ``file`` fields are filled in; ``kept`` and ``reason`` are stored as given. ``quality``
    is a quality report measured before storing (JSON-able; {} when none).
    """
    # 1. Check inputs.
    _check_inputs(name, images, records, class_names)
    _check_jsonable("config", config)  # an error now, not after the images are written
    _check_jsonable("quality", quality or {})
    set_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    tmp = sets_dir() / f".tmp-{set_id}"
    try:
        # 2. Write the images, the manifest and the info into a hidden folder.
        saved = []
        for i, (image, record) in enumerate(zip(images, records, strict=True)):
            rel = f"images/{_class_folder(record.label, record.class_name)}/{i:06d}.png"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            save_png(tmp / rel, image)
            saved.append(dataclasses.replace(record, file=rel))
        _write_manifest(tmp, saved)
        info = SetInfo(
            id=set_id,
            name=name.strip(),
            generator=generator,
            created=time.time(),
            class_names=tuple(class_names),
            channels=int(images.shape[1]),
            resolution=int(images.shape[2]),
            counts_total=_counts(saved, len(class_names), kept_only=False),
            counts_kept=_counts(saved, len(class_names), kept_only=True),
            dataset_key=dataset_key,
            config=config,
            quality=quality or {},
            owner=owners.owner_name(),
        )
        _write_info(tmp, info)
        # 3. Rename it into place: the set appears whole or not at all.
        os.replace(tmp, sets_dir() / set_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("stored synthetic set %s (%d images)", set_id, len(saved))
    return info


def load_info(set_id: str) -> SetInfo:
    path = _folder(set_id) / "set.json"
    if not path.is_file():
        raise SetError(f"set id {set_id!r} is not a synthetic set of this workspace")
    return SetInfo.from_dict(json.loads(path.read_text()))


def list_sets(dataset_key: str | None = None) -> list[SetInfo]:
    """Readable sets the acting user may see (their own and shared ones; all for an admin), newest first,
    optionally only those made for ``dataset_key`` (a ``LabDataset.key``)."""
    infos = []
    for folder in sets_dir().iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue  # sets being written or deleted
        try:
            info = load_info(folder.name)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping unreadable synthetic set %s: %s", folder.name, err)
            continue
        if (dataset_key is None or info.dataset_key == dataset_key) and owners.can_see(info.owner, info.shared):
            infos.append(info)
    return sorted(infos, key=lambda i: (i.created, i.id), reverse=True)


def load_manifest(set_id: str) -> list[ImageRecord]:
    path = _folder(set_id) / "manifest.jsonl"
    if not path.is_file():
        raise SetError(f"set id {set_id!r} is not a synthetic set of this workspace")
    return [ImageRecord(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def load_set(set_id: str, *, kept_only: bool = True) -> ImageSet:
    """The set's images as an :class:`ImageSet` (provenance marks them synthetic), kept ones by default.

    Only the acting user's own sets and shared ones load (all for an admin): another user's private set is
    refused as if it did not exist.
    """
    info = load_info(set_id)
    if not owners.can_see(info.owner, info.shared):
        raise SetError(f"set id {set_id!r} is not a synthetic set you can use: its owner has not shared it")
    records = [r for r in load_manifest(set_id) if r.kept or not kept_only]
    folder, shape = _folder(set_id), (info.channels, info.resolution, info.resolution)
    images = np.zeros((len(records), *shape), dtype=np.uint8)
    for i, record in enumerate(records):
        try:
            pixels = read_png(folder / record.file, info.channels)
        except OSError as err:  # named by the set's own file name: no server paths in the message
            reason = "it is missing" if isinstance(err, FileNotFoundError) else "it is not a readable PNG image"
            raise SetError(f"image {record.file!r} of set {set_id!r} could not be read: {reason}") from None
        if pixels.shape != shape:
            raise SetError(f"image {record.file!r} of set {set_id!r} has shape {pixels.shape}, expected {shape}")
        images[i] = pixels
    return as_image_set(images, records, info.class_names, source=f"synthetic:{set_id}")


def as_image_set(
    images: np.ndarray, records: Sequence[ImageRecord], class_names: Sequence[str], *, source: str
) -> ImageSet:
    """uint8 images (N, C, R, R) with their records as an :class:`ImageSet` whose provenance marks them synthetic."""
    n, side = len(records), int(images.shape[-1])
    provenance = dataclasses.replace(
        Provenance.real(source, [r.file for r in records], [(side, side)] * n, [""] * n),
        synthetic=np.ones(n, dtype=bool),
        generator=np.asarray([r.generator for r in records], dtype=object),
    )
    labels = torch.tensor([r.label for r in records], dtype=torch.int64)
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), labels, tuple(class_names), provenance)


def set_kept(set_id: str, files: Sequence[str], kept: bool, *, reason: str = "rejected by hand") -> SetInfo:
    """Reject (``kept=False``) or restore images by file name; returns the info with updated ``counts_kept``."""
    with _edit_lock:
        info, records = load_info(set_id), load_manifest(set_id)
        owners.check_can_change(info.owner, f"the synthetic set {info.name or set_id!r}", "change")
        known = {r.file for r in records}
        unknown = [f for f in files if f not in known]
        if unknown:
            raise SetError(f"file {unknown[0]!r} is not an image of set {set_id!r}")
        chosen = set(files)
        records = [
            dataclasses.replace(r, kept=kept, reason="" if kept else reason) if r.file in chosen else r for r in records
        ]
        folder = _folder(set_id)
        _write_manifest(folder, records)
        info = dataclasses.replace(info, counts_kept=_counts(records, len(info.class_names), kept_only=True))
        _write_info(folder, info)
    return info


def update_quality(set_id: str, quality: dict[str, Any]) -> SetInfo:
    """Replace the set's quality report (a JSON-able mapping); returns the updated info."""
    _check_jsonable("quality", quality)
    with _edit_lock:
        info = dataclasses.replace(load_info(set_id), quality=quality)
        _write_info(_folder(set_id), info)
    return info


def set_shared(set_id: str, shared: bool) -> SetInfo:
    """Share a set with every user of the server (read-only), or stop sharing it; its owner or an admin only."""
    with _edit_lock:
        info = load_info(set_id)
        owners.check_can_change(info.owner, f"the synthetic set {info.name or set_id!r}", "share or unshare")
        info = dataclasses.replace(info, shared=bool(shared))
        _write_info(_folder(set_id), info)
    return info


def delete_set(set_id: str) -> None:
    """Remove a set (its owner or an admin only); it is hidden first, so it never appears half-deleted.

    Missing sets are no error.
    """
    folder = _folder(set_id)
    with _edit_lock:  # never between an edit's read and its write (which would bring back a folder)
        if not folder.exists():
            return
        info = load_info(set_id)
        owners.check_can_change(info.owner, f"the synthetic set {info.name or set_id!r}", "delete")
        hidden = sets_dir() / f".del-{set_id}-{uuid.uuid4().hex[:6]}"
        os.replace(folder, hidden)
    shutil.rmtree(hidden, ignore_errors=True)
