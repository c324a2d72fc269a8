"""How real a synthetic set looks in a pretrained backbone's feature space: precision, recall, Fréchet distance.

Per class, following Kynkäänniemi et al. (2019, "Improved precision and recall metric for assessing
generative models"): each image's neighbourhood is a ball reaching its k-th nearest neighbour among
the images of its own side. *Precision* is the share of synthetic images inside the union of the real
images' balls (do they look real?); *recall* the share of real images inside the synthetic images'
balls (do they cover the real variety?). The *Fréchet distance* compares Gaussian fits of the two
feature clouds over the whole set (0 for the same distribution; with a few hundred images it is
biased upwards, so compare sets of similar size only). Features come from the offline backbone
through the feature cache. Where this stops: numbers out; no training, no files beyond the cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import linalg

from engine.datasets import ImageSet, LabDataset
from engine.device import pick_device
from engine.features import cached_features
from engine.training import StopFn

BACKBONE = "efficientnet_lite0"  # always available offline
SIZE = 128  # the side probes use too, so the real images' features are shared with them in the cache
K = 3  # neighbourhood size of the precision/recall balls
MIN_IMAGES = K + 1  # per side and class, for a ball to exist
MIN_SIDE = 32  # below this working resolution (digits are 8 px) ImageNet features are not worth measuring with


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance of each row to its k-th nearest other row."""
    d = torch.cdist(torch.from_numpy(x), torch.from_numpy(x))
    return d.kthvalue(k + 1, dim=1).values.numpy()  # the 0th neighbour is the point itself


def _covered(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(N,) whether each point lies within the ball of some centre."""
    d = torch.cdist(torch.from_numpy(points), torch.from_numpy(centres))
    return (d <= torch.from_numpy(radii)[None, :]).any(dim=1).numpy()


def precision_recall(real: np.ndarray, synthetic: np.ndarray, k: int = K) -> tuple[float, float] | None:
    """Kynkäänniemi precision and recall of synthetic (M, D) against real (N, D) features; None if too few."""
    if len(real) < k + 1 or len(synthetic) < k + 1:
        return None
    precision = float(_covered(synthetic, real, _radii(real, k)).mean())
    recall = float(_covered(real, synthetic, _radii(synthetic, k)).mean())
    return precision, recall


def frechet_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two (N, D) feature clouds (each needs 2+ rows)."""
    mu_r, mu_s = real.mean(0), synthetic.mean(0)
    cov_r, cov_s = np.cov(real, rowvar=False), np.cov(synthetic, rowvar=False)
    with warnings.catch_warnings():  # fewer images than feature dimensions: singular covariances are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = np.real(linalg.sqrtm(cov_r @ cov_s))  # tiny imaginary parts come from numerical error
    return float(((mu_r - mu_s) ** 2).sum() + np.trace(cov_r + cov_s - 2 * root))


@dataclass(frozen=True)
class Realism:
    """Feature-space measures of a synthetic set against the real training images."""

    precision: tuple[float | None, ...]  # per class; None where a side has fewer than MIN_IMAGES
    recall: tuple[float | None, ...]
    frechet: float | None  # over all images; None with fewer than 2 on a side
    backbone: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": list(self.precision),
            "recall": list(self.recall),
            "frechet": self.frechet,
            "backbone": self.backbone,
        }


def realism(synthetic: ImageSet, dataset: LabDataset, *, should_stop: StopFn | None = None) -> Realism:
    """Precision and recall per class and the Fréchet distance of ``synthetic`` against the real training split."""
    setup = pick_device("auto", "fp32")
    real_f = cached_features(BACKBONE, dataset.train.images, size=SIZE, setup=setup, should_stop=should_stop)
    synth_f = cached_features(BACKBONE, synthetic.images, size=SIZE, setup=setup, should_stop=should_stop)
    real_y, synth_y = dataset.train.labels.numpy(), synthetic.labels.numpy()
    precision: list[float | None] = []
    recall: list[float | None] = []
    for c in range(len(dataset.class_names)):
        pr = precision_recall(real_f[real_y == c], synth_f[synth_y == c])
        precision.append(None if pr is None else pr[0])
        recall.append(None if pr is None else pr[1])
    frechet = frechet_distance(real_f, synth_f) if len(real_f) >= 2 and len(synth_f) >= 2 else None
    return Realism(tuple(precision), tuple(recall), frechet, BACKBONE)
