"""Gap measures: the real-vs-synthetic score, feature distances and image statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.gap_presets import photos_and_squares
from engine import gap, preprocess
from engine.config import DatasetConfig, SourceConfig
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


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_the_mode_matching_the_fit_closes_the_gap_to_photos_of_varied_shapes(
    digits: LabDataset, tmp_path: Path, fit: str
) -> None:
    """The issue's check: real photos of varied shapes (made square by the dataset's fit), synthetic squares."""
    root = tmp_path / "photos"
    squares = photos_and_squares(digits.train.images.numpy(), digits.train.labels.numpy(), root)
    real = build_dataset(DatasetConfig(source=SourceConfig(kind="folder", path=str(root), resolution=24, fit=fit)))
    parts = (real.train, real.val, real.test)
    real_images = torch.cat([p.images for p in parts])
    pool = torch.cat([preprocess.real_aspects(p.provenance.orig_width, p.provenance.orig_height) for p in parts])
    synthetic = torch.from_numpy(squares)
    preset = preprocess.suggested_synthetic(fit, pool)
    assert preset.resize == preprocess.MATCHING_RESIZE[fit]
    gen = torch.Generator().manual_seed(0)
    framed = preprocess.apply(synthetic, preset, aspects=preprocess.draw_aspects(pool, len(synthetic), gen), gen=gen)
    before = gap.domain_gap_score(real_images, synthetic, seed=0).accuracy
    after = gap.domain_gap_score(real_images, framed, seed=0).accuracy
    assert before >= 0.9 and after <= before - 0.2, (before, after)


def test_square_real_images_get_no_suggested_resize() -> None:
    assert preprocess.suggested_synthetic("crop", torch.ones(100)).is_identity
    assert preprocess.suggested_synthetic("pad", torch.tensor([1.0] * 90 + [1.5] * 10)).resize == "letterbox"
    with pytest.raises(preprocess.PresetError, match="fit='zoom'"):
        preprocess.suggested_synthetic("zoom", torch.ones(3))
