"""Realism in feature space: Kynkäänniemi precision/recall and the Fréchet distance, on known clouds and a set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.datasets import ImageSet, LabDataset, Provenance
from engine.synth import realism

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(200, 8)).astype(np.float32)


def test_the_same_distribution_is_precise_and_covering_and_a_far_one_is_neither() -> None:
    same = RNG.normal(size=(200, 8)).astype(np.float32)
    pr = realism.precision_recall(REAL, same)
    assert pr is not None and pr[0] > 0.8 and pr[1] > 0.8
    far = same + 20
    assert realism.precision_recall(REAL, far) == (0.0, 0.0)
    collapsed = np.repeat(same[:1], 50, axis=0) + 1e-3 * RNG.normal(size=(50, 8)).astype(np.float32)
    pr = realism.precision_recall(REAL, collapsed)  # one mode only: realistic, but covers little
    assert pr is not None and pr[0] == 1.0 and pr[1] < 0.2
    assert realism.precision_recall(REAL, same[:3]) is None  # too few for a ball of 3 neighbours


def test_frechet_distance_is_zero_for_the_same_cloud_and_grows_with_a_shift() -> None:
    assert realism.frechet_distance(REAL, REAL) == pytest.approx(0.0, abs=1e-3)
    near = realism.frechet_distance(REAL, REAL + 0.5)
    far = realism.frechet_distance(REAL, REAL + 2.0)
    assert near == pytest.approx(8 * 0.25, rel=1e-3) and far == pytest.approx(8 * 4.0, rel=1e-3)


def test_a_set_is_measured_per_class_in_backbone_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realism, "SIZE", 32)
    n = 16
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 255, size=(2 * n, 3, 32, 32), dtype=np.uint8))
    labels = torch.tensor([0] * n + [1] * n)
    prov = Provenance.real("t", [f"r{i}" for i in range(2 * n)], [(32, 32)] * (2 * n), [""] * (2 * n))
    real = ImageSet(images, labels, ("a", "b"), prov)
    dataset = LabDataset.__new__(LabDataset)
    object.__setattr__(dataset, "train", real)
    measured = realism.realism(real.subset(np.arange(n)), dataset)  # class a's own images, class b none
    assert measured.precision[0] == 1.0 and measured.recall[0] == 1.0  # every image is its own neighbour
    assert measured.precision[1] is None and measured.frechet is not None and measured.backbone == "efficientnet_lite0"


def test_a_set_of_32_px_images_is_stored_with_its_realism(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
    from engine.datasets import build_dataset
    from engine.models import build_model
    from engine.synth import make_sets, sets

    monkeypatch.setattr(realism, "SIZE", 32)
    cfg = DatasetConfig(source=SourceConfig(resolution=32), imbalance=ImbalanceConfig(kind="subsample", fraction=0.2))
    digits = build_dataset(cfg)
    pick = np.concatenate([np.flatnonzero(digits.train.labels.numpy() == c)[:6] for c in range(10)])
    images = digits.train.images[pick].numpy()
    records = [
        sets.ImageRecord("", int(y), digits.class_names[int(y)], "g", "h", 0, i, 1.0, True, "")
        for i, y in enumerate(digits.train.labels[pick].tolist())
    ]
    reference = build_model("simple_cnn", channels=1, num_classes=10, resolution=32, seed=0)
    info = make_sets._store(
        "copies",
        images,
        records,
        digits,
        generator="g",
        config={},
        reference=reference,
        report=lambda fraction, message: None,
        stop=lambda: False,
    )
    measured = info.quality["realism"]
    assert measured["precision"] == [1.0] * 10  # copies of training images lie among the real ones
    assert all(0 < r <= 1 for r in measured["recall"]) and measured["frechet"] > 0
