"""Set quality: what a lower filter would keep, and how the Generate page shows a short set."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.synth import quality, sets
from tests.conftest import app_page


def record(label: int, score: float | None, kept: bool, reason: str = "") -> sets.ImageRecord:
    return sets.ImageRecord("", label, str(label), "g", "h", 0, 0, score, kept, reason)


RECORDS = [
    record(0, 0.99, True),
    record(0, 0.97, True),
    record(1, 0.96, True),
    record(1, 0.90, False, "confidence 0.90 below 0.95"),
    record(1, 0.60, False, "confidence 0.60 below 0.95"),
    record(1, 0.55, False, "confidence 0.55 below 0.95"),
    record(1, 0.85, False, "near-duplicate of training image x.png (similarity 0.998)"),
    record(1, 0.45, False, "classifier says '0' (p=0.55)"),
    record(1, 0.88, False, "rejected by hand"),
]


def test_lower_filter_options_count_only_filter_rejections_and_give_mean_confidence() -> None:
    options = quality.lower_filter_options(RECORDS, [2, 4], 0.95, levels=(0.8, 0.5, 0.99))
    assert [o.threshold for o in options] == [0.8, 0.5]  # only levels below the set's own threshold
    at_08, at_05 = options
    assert at_08.kept == (2, 2) and at_08.confidence[1] == pytest.approx((0.96 + 0.90) / 2)
    assert at_05.kept == (2, 4) and at_05.confidence[1] == pytest.approx((0.96 + 0.90 + 0.60 + 0.55) / 4)
    assert at_05.confidence[0] == pytest.approx(0.98)
    capped = quality.lower_filter_options(RECORDS, [1, 2], 0.95, levels=(0.5,))[0]
    assert capped.kept == (1, 2) and capped.confidence[1] == pytest.approx(0.93)  # the most confident ones first
    assert quality.lower_filter_options(RECORDS, [2, 4], 0.0) == []  # no filter ran: nothing to lower


def test_the_generate_page_shows_a_short_set_with_its_ways_out_and_the_price_of_a_lower_filter() -> None:
    digits = build_dataset(DatasetConfig())
    images = np.zeros((len(RECORDS), *digits.train.images.shape[1:]), dtype=np.uint8)
    names = list(digits.class_names)
    recs = [
        sets.ImageRecord("", r.label, names[r.label], "g", "h", 0, i, r.score, r.kept, r.reason)
        for i, r in enumerate(RECORDS)
    ]
    sets.create_set(
        "short one",
        images,
        recs,
        digits.class_names,
        generator="g",
        dataset_key=digits.key,
        config={
            "wanted": [2, 4] + [0] * 8,
            "generate": {"threshold": 0.95},
            "judge": {"name": "j", "val_recall": [0.9, 0.3] + [0.95] * 8, "balanced_accuracy": 0.84},
        },
    )
    at = app_page("generate")
    assert not at.exception and not at.error
    warning = next(w.value for w in at.warning if "fewer images than asked" in w.value)
    assert "class '1': 1 of 4 images" in warning and "more steps" in warning and "fewer images per class" in warning
    assert any("recognises fewer than 50% of the real validation images of class '1'" in w.value for w in at.warning)
    counts = next(d.value for d in at.dataframe if "generated" in d.value.columns)
    assert list(counts["judge recall on real images"])[:2] == ["90%", "30%"]
    table = next(d.value for d in at.dataframe if "filter" in d.value.columns)
    assert list(table["filter"]) == ["0.95 (this set)", "0.8", "0.5"]
    assert list(table["1: images"]) == [1, 2, 4]
    assert list(table["1: labels right (expected)"]) == ["—", "93%", "75%"]
