"""Gap measures: the real-vs-synthetic score, feature distances and image statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import gap
from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.synth import filters


@pytest.fixture(scope="module")
def digits() -> LabDataset:
    return build_dataset(DatasetConfig())


def test_two_random_halves_of_one_real_set_are_indistinguishable(digits: LabDataset) -> None:
    images = digits.train.images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    score = gap.domain_gap_score(images[order[:600]], images[order[600:1200]], seed=0)
    assert 0.4 <= score.accuracy <= 0.6 and score.held_out == 360 and score.per_side == 600


def test_a_trivially_different_set_scores_near_one(digits: LabDataset) -> None:
    images = digits.train.images
    score = gap.domain_gap_score(images[:400], 255 - images[400:800], seed=0)
    assert score.accuracy >= 0.95


def test_feature_distances_grow_with_the_difference(digits: LabDataset) -> None:
    model = filters.reference_classifier(digits)
    images = digits.train.images
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    same = gap.feature_distances(model, images[order[:300]], images[order[300:600]])
    other = gap.feature_distances(model, images[order[:300]], 255 - images[order[300:600]])
    assert other["frechet"] > 5 * same["frechet"] and other["kernel"] > 5 * max(same["kernel"], 1e-6)


def test_frechet_distance_matches_the_closed_form_for_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 2))
    b = rng.normal(0.0, 2.0, (20000, 2)) + np.array([3.0, 0.0])
    # |mu_a - mu_b|^2 + tr(Ca + Cb - 2 (Ca Cb)^(1/2)) = 9 + (2 + 8 - 2 * 4) = 11
    assert gap.frechet_distance(a, b) == pytest.approx(11.0, rel=0.05)
    assert abs(gap.kernel_distance(a[:2000], a[2000:4000])) < 0.05 < gap.kernel_distance(a[:2000], b[:2000])


def test_image_stats_measure_brightness_colour_and_sharpness() -> None:
    sharp = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    sharp[:, :, ::2] = 255  # stripes: a strong Laplacian
    flat = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
    stats = gap.image_stats(torch.cat([sharp, flat]))
    assert stats["brightness"] == pytest.approx([127.5, 128.0])
    assert stats["colour"].shape == (2, 3) and stats["sharpness"][0] > 1000 and stats["sharpness"][1] == 0


def test_too_few_images_are_refused_clearly() -> None:
    with pytest.raises(gap.GapError, match="at least 10 images on each side: got 3 and 50"):
        gap.domain_gap_score(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), torch.zeros(50, 1, 8, 8, dtype=torch.uint8))
