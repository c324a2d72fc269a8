"""Near-copies of training images in the validation and test splits are found and shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.config import DatasetConfig
from engine.dataset_health import cross_split_duplicates
from engine.datasets import ImageSet, build_dataset
from tests.conftest import app_page


def test_a_training_image_copied_into_the_test_split_is_reported() -> None:
    digits = build_dataset(DatasetConfig())
    before = {(d.split, d.image) for d in cross_split_duplicates(digits)}
    planted = dataclasses.replace(digits, test=ImageSet.concat([digits.test, digits.train.subset([5])]))
    found = [d for d in cross_split_duplicates(planted) if (d.split, d.image) not in before]
    assert len(found) == 1 and found[0].split == "test" and found[0].similarity >= 0.999
    assert found[0].train_image == Path(digits.train.provenance.origin[5]).name


def test_the_dataset_page_says_whether_other_splits_copy_training_images() -> None:
    at = app_page("dataset")
    assert not at.exception
    said = [c.value for c in at.caption] + [w.value for w in at.warning]
    assert any("nearly copies a training image" in s or "nearly copy a training image" in s for s in said)
