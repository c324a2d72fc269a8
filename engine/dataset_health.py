"""Dataset health: near-duplicate images shared by the training split and the validation or test split.

A test image that is a near-copy of a training image (the same photo saved twice, a resized copy, a
burst shot) is answered from memory, so it inflates every accuracy. :func:`cross_split_duplicates`
compares the near-duplicate signatures of :mod:`engine.signatures` (grayscale 16 px, mean-centred,
cosine similarity) of every validation and test image with every training image. By default the
dataset layer already moves such copies into the training split (``split.near_copies = "train"``),
so this finds none unless the user chose to keep them where they fell (``"keep"``).
Where this stops: it reports; the split itself is the dataset layer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.datasets import NEAR_COPY, ImageSet, LabDataset
from engine.signatures import nearest, thumbnails

THRESHOLD = NEAR_COPY  # the synthetic sets' near-duplicate threshold too: at or above it two images count as copies


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
    train = thumbnails(dataset.train.images)
    train_names = _names(dataset.train)
    found = []
    for split, images in (("val", dataset.val), ("test", dataset.test)):
        best, where = nearest(thumbnails(images.images), train)
        names = _names(images)
        for i in np.flatnonzero(best >= threshold):
            found.append(CrossDuplicate(split, names[i], train_names[int(where[i])], round(float(best[i]), 4)))
    return found
