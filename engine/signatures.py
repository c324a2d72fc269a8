"""Near-duplicate signatures of images, and the nearest signature of a reference set.

One signature for every near-copy question of the lab: synthetic candidates against the training
images (the synthetic-set filter), and validation or test images against the training split (the
dataset's health check, which also keeps such copies out of the test split). A signature is the
image in grayscale, area-resized to at most :data:`THUMB_SIDE` px and mean-centred, as a unit
vector; two images count as copies when the cosine similarity of their signatures is high.
Where this stops: arrays in, similarities out; no dataset, no files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

THUMB_SIDE = 16  # signatures compare images at this size, grayscale
CHUNK = 1024  # query rows of the similarity matrix at a time: memory stays bounded for large splits


def thumbnails(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Near-duplicate signatures of uint8 images (N, C, R, R): (N, d) float32 unit vectors.

    Grayscale, area-resized to at most THUMB_SIDE px, mean-centred per image: insensitive to small
    shifts of brightness and to compression, sensitive to content. Flat images get a zero vector.
    """
    x = (images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))).float() / 255.0
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images of shape {tuple(x.shape)} are not accepted: expected uint8 (N, 1 or 3, R, R)")
    gray = x.mean(dim=1, keepdim=True)
    side = min(THUMB_SIDE, gray.shape[-1])
    flat = F.adaptive_avg_pool2d(gray, side).reshape(len(x), -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-3, flat / norm.clamp_min(1e-12), torch.zeros_like(flat)).numpy()


def nearest(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query signature, the highest similarity to a reference signature and that reference's row.

    (Q,) float32 similarities and (Q,) int64 rows; with no reference, similarities of -1 and rows of -1.
    """
    if not len(reference) or not len(queries):
        return np.full(len(queries), -1.0, np.float32), np.full(len(queries), -1, np.int64)
    ref = torch.from_numpy(np.ascontiguousarray(reference))
    best, where = [], []
    for start in range(0, len(queries), CHUNK):
        sim = torch.from_numpy(np.ascontiguousarray(queries[start : start + CHUNK])) @ ref.T
        b, w = sim.max(dim=1)
        best.append(b.numpy())
        where.append(w.numpy().astype(np.int64))
    return np.concatenate(best), np.concatenate(where)
