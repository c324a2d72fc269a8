"""Dataset health: near-duplicate images shared by the training split and the validation or test split.

A test image that is a near-copy of a training image (the same photo saved twice, a resized copy, a
burst shot) is answered from memory, so it inflates every accuracy. :func:`cross_split_duplicates`
compares the near-duplicate signatures of :func:`engine.synth.filters.thumbnails` (grayscale 16 px,
mean-centred, cosine similarity) of every validation and test image with every training image.
Where this stops: it reports; the split itself is left as the user chose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.datasets import ImageSet, LabDataset
from engine.synth.filters import thumbnails

THRESHOLD = 0.99  # the synthetic sets' near-duplicate threshold: at or above it two images count as copies
CHUNK = 1024  # rows of the similarity matrix at a time: memory stays bounded for large splits


@dataclass(frozen=True)
class CrossDuplicate:
    """One validation or test image that nearly copies a training image."""

    split: str  # "val" or "test"
    image: str  # its file name
    train_image: str  # the training image it copies
    similarity: float


def _names(images: ImageSet) -> list[str]:
    return [Path(o).name for o in images.provenance.origin]


def cross_split_duplicates(dataset: LabDataset, threshold: float = THRESHOLD) -> list[CrossDuplicate]:
    """Validation and test images whose signature is at least ``threshold`` similar to a training image's."""
    train = torch.from_numpy(thumbnails(dataset.train.images))
    train_names = _names(dataset.train)
    found = []
    for split, images in (("val", dataset.val), ("test", dataset.test)):
        sigs = torch.from_numpy(thumbnails(images.images))
        names = _names(images)
        for start in range(0, len(sigs), CHUNK):
            sim = sigs[start : start + CHUNK] @ train.T
            best, where = sim.max(dim=1) if len(train) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
            for i in np.flatnonzero((best >= threshold).numpy()):
                found.append(
                    CrossDuplicate(split, names[start + i], train_names[int(where[i])], round(float(best[i]), 4))
                )
    return found
