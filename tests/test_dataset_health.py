"""Near-copies of training images in the validation and test splits are found, shown, and moved out of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.config import ConfigError, DatasetConfig, SourceConfig, SplitConfig
from engine.dataset_health import cross_split_duplicates
from engine.datasets import DatasetError, ImageSet, build_dataset, move_near_copies
from tests.conftest import app_page, class_files


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


def test_near_copies_leave_validation_and_test_by_default_and_stay_with_keep(
    make_folder: Callable[[dict[str, bytes]], Path],
) -> None:
    files = class_files({"a": 20, "b": 20}, size=(24, 24))
    for i in range(20):  # every image twice: wherever the split puts the pair, one copy may be held out
        files[f"a/copy{i:03d}.png"] = files[f"a/{i:03d}.png"]
    source = SourceConfig(kind="folder", path=str(make_folder(files)))
    kept = build_dataset(DatasetConfig(source=source, split=SplitConfig(near_copies="keep")))
    copies = cross_split_duplicates(kept)
    assert copies, "the split put some pair across training and a held-out split"
    moved = build_dataset(DatasetConfig(source=source))
    assert cross_split_duplicates(moved) == []
    assert len(moved.train) == len(kept.train) + len(copies)
    assert len(moved.val) + len(moved.test) == len(kept.val) + len(kept.test) - len(copies)
    assert any("moved into the training split" in note for note in moved.notes)
    assert moved.key != kept.key and moved.key == build_dataset(DatasetConfig(source=source)).key


def test_a_held_out_split_made_only_of_copies_is_refused_with_the_way_out() -> None:
    digits = build_dataset(DatasetConfig())
    with pytest.raises(DatasetError, match="near_copies='keep'"):
        move_near_copies(digits.train, digits.train.subset([0, 1]), digits.test)
    with pytest.raises(ConfigError, match=r"split.near_copies='move'.*'train', 'keep'"):
        SplitConfig(near_copies="move")


def test_a_class_whose_held_out_images_were_all_copies_is_named(
    make_folder: Callable[[dict[str, bytes]], Path],
) -> None:
    files = class_files({"a": 20, "b": 20}, size=(24, 24))
    one = files["c/000.png"] = class_files({"x": 1}, size=(24, 24))["x/000.png"]
    for i in range(1, 9):  # a burst: nine shots of one scene, so its validation and test images copy training
        files[f"c/{i:03d}.png"] = one
    moved = build_dataset(DatasetConfig(source=SourceConfig(kind="folder", path=str(make_folder(files)))))
    assert moved.summary()[2]["class"] == "c" and moved.summary()[2]["test"] == 0
    said = [note for note in moved.notes if "no test images left" in note]
    assert len(said) == 1 and "'c'" in said[0] and "'a'" not in said[0], moved.notes
