"""Backbone features computed once and kept on disk, keyed by everything they depend on.

:func:`cached_features` returns the (N, D) float32 features of uint8 images under a backbone and
runs :func:`engine.backbones.extract_features` only when the cache lacks them. An entry is one
``.npz`` file (arrays only, read with ``allow_pickle=False``, so reading it runs no code) written
atomically with :func:`engine.store.write_atomic` as ``<cache_dir>/<backbone>/<key>.npz``;
``cache_dir`` defaults to ``<workspace>/features``. :func:`feature_key` hashes the image bytes and
shape, the backbone, its weights file, the input side and the precision (bf16 and fp32 features
differ slightly, and a rerun must get the features it got before). Where this stops: no eviction
(delete the folder to reclaim space), no training.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch

from engine import store
from engine.backbones import (
    ProgressFn,
    StopFn,
    check_images,
    extract_features,
    get_spec,
    input_side,
    weights_identity,
)
from engine.device import DeviceSetup, pick_device

log = logging.getLogger(__name__)
FORMAT = 1  # bump when the meaning of a stored entry changes
PRECISION_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def feature_key(name: str, images: torch.Tensor, *, size: int | None = None, precision: str = "fp32") -> str:
    """32 hex characters naming the features of ``images`` (uint8 (N, C, H, W)) under ``name`` at ``size``."""
    spec = get_spec(name)
    check_images(images)
    about = {
        "format": FORMAT,
        "backbone": spec.name,
        "weights": weights_identity(name),
        "size": input_side(spec, size),
        "precision": precision,
        "shape": list(images.shape),
    }
    digest = hashlib.sha256(json.dumps(about, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(images.cpu().numpy()).data)  # the buffer itself, no copy
    return digest.hexdigest()[:32]


def cache_path(name: str, key: str, cache_dir: Path | None = None) -> Path:
    """Where the entry ``key`` of backbone ``name`` lies."""
    return (cache_dir if cache_dir is not None else store.subdir("features")) / get_spec(name).name / f"{key}.npz"


def _read(path: Path, rows: int, dim: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as entry:
            feats = entry["features"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("feature cache entry %s cannot be read (%s); computing it again", path, err)
        return None
    if feats.shape != (rows, dim) or feats.dtype != np.float32:
        log.warning(
            "feature cache entry %s holds %s %s, not (%d, %d) float32", path, feats.dtype, feats.shape, rows, dim
        )
        return None
    return feats


def cached_features(
    name: str,
    images: torch.Tensor,
    *,
    size: int | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    setup: DeviceSetup | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> np.ndarray:
    """Pooled features (N, D) float32 of uint8 images (N, C, H, W): from the cache, else computed and stored.

    The arguments are those of :func:`engine.backbones.extract_features`; ``on_progress(N, N)`` is
    called once on a cache hit. A cancelled extraction (:class:`~engine.jobs.Cancelled`) stores nothing.
    """
    # 1. Key
    spec = get_spec(name)
    side = input_side(spec, size)
    setup = setup or pick_device()
    precision = PRECISION_NAMES[setup.amp_dtype]
    key = feature_key(name, images, size=side, precision=precision)
    path = cache_path(name, key, cache_dir)
    # 2. Hit
    if path.is_file():
        feats = _read(path, len(images), spec.feature_dim)
        if feats is not None:
            if on_progress is not None:
                on_progress(len(images), len(images))
            return feats
    # 3. Miss: compute, then store
    feats = extract_features(
        name,
        images,
        size=side,
        batch_size=batch_size,
        setup=setup,
        on_progress=on_progress,
        should_stop=should_stop,
    )
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=feats,
        backbone=np.array(spec.name),
        weights=np.array(weights_identity(name)),
        size=np.array(side),
        precision=np.array(precision),
    )
    store.write_atomic(path, buffer.getvalue())
    return feats
