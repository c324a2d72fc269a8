"""The confidence filter on known probabilities, near-duplicates, the judge step, the cached reference
classifier and the quality report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from engine import store
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import ImageSet, LabDataset, build_dataset
from engine.jobs import Cancelled
from engine.synth import filters, quality
from engine.synth.filters import FilterError, confidence_filter
from engine.training import predict_proba

NAMES = ("cat", "dog", "bird")
PROBS = np.array(
    [
        [0.97, 0.02, 0.01],  # label 0: kept
        [0.60, 0.30, 0.10],  # label 0: right class, not confident
        [0.03, 0.97, 0.00],  # label 0: the classifier sees a dog
        [0.05, 0.00, 0.95],  # label 2: exactly at the threshold, kept
        [0.50, 0.50, 0.00],  # label 1: a tie counts as agreement, but 0.5 is not confident
        [0.0501, 0.0, 0.9499],  # label 2: just below; shown with enough decimals to see it
    ]
)
LABELS = np.array([0, 0, 0, 2, 1, 2])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny 8x8 models train several times faster on one thread than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> LabDataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHLAB_HOME", str(tmp_path_factory.mktemp("digits-workspace")))
        return build_dataset(DatasetConfig(imbalance=ImbalanceConfig(kind="subsample", fraction=0.2)))


@pytest.fixture(scope="module")
def reference(dataset: LabDataset) -> nn.Module:
    return filters.train_reference_classifier(dataset, seed=0, max_epochs=12)


def test_verify_keeps_exactly_the_agreeing_confident_images() -> None:
    result = confidence_filter(PROBS, LABELS, NAMES, threshold=0.95)
    assert result.keep.tolist() == [True, False, False, True, False, False]
    assert result.labels.tolist() == LABELS.tolist()
    assert result.scores.tolist() == pytest.approx([0.97, 0.60, 0.03, 0.95, 0.50, 0.9499])
    assert result.reasons == (
        "",
        "confidence 0.60 below 0.95",
        "classifier says 'dog' (p=0.97)",
        "",
        "confidence 0.50 below 0.95",
        "confidence 0.9499 below 0.95",
    )
    assert result.per_class(NAMES) == [
        {"class": "cat", "kept": 1, "rejected": 2},
        {"class": "dog", "kept": 0, "rejected": 1},
        {"class": "bird", "kept": 1, "rejected": 1},
    ]


def test_threshold_edge_holds_for_float32_probabilities() -> None:
    result = confidence_filter(PROBS.astype(np.float32), LABELS, NAMES, threshold=0.95)
    assert result.keep[3] and not result.keep[5]
    assert confidence_filter(PROBS, LABELS, NAMES, threshold=0.5).keep.tolist() == [True, True, False, True, True, True]


def test_threshold_zero_turns_the_filter_off_but_keeps_the_scores() -> None:
    result = confidence_filter(PROBS, LABELS, NAMES, threshold=0)
    assert result.keep.all() and set(result.reasons) == {""}
    assert np.allclose(result.scores, PROBS[np.arange(len(LABELS)), LABELS])


def test_assign_relabels_with_the_classifier() -> None:
    result = confidence_filter(PROBS, None, NAMES, threshold=0.95, mode="assign")
    assert result.labels.tolist() == [0, 0, 1, 2, 0, 2]
    assert result.keep.tolist() == [True, False, True, True, False, False]
    assert result.reasons[1] == "confidence 0.60 below 0.95" and result.reasons[2] == ""
    assert [row["kept"] for row in result.per_class(NAMES)] == [1, 1, 1]
    given = confidence_filter(PROBS, LABELS, NAMES, mode="assign")
    assert given.labels.tolist() == result.labels.tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "vote"}, "mode='vote'"),
        ({"threshold": 1.5}, "threshold=1.5"),
        ({"labels": None}, "labels=None"),
        ({"labels": np.array([0, 0, 0, 2, 1, 3])}, r"labels in \[0, 3\)"),
        ({"probs": PROBS[:, :2]}, r"\(6, 2\)"),
    ],
)
def test_bad_filter_input_is_named(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"probs": PROBS, "labels": LABELS, "class_names": NAMES, **kwargs}
    with pytest.raises(FilterError, match=message):
        confidence_filter(**args)


def real_as_synthetic(dataset: LabDataset, classes: list[int]) -> ImageSet:
    """Real training images of ``classes``, marked as synthetic."""
    part = dataset.train.subset(np.flatnonzero(np.isin(dataset.train.labels.numpy(), classes)))
    n = len(part)
    prov = dataclasses.replace(
        part.provenance, synthetic=np.ones(n, dtype=bool), generator=np.full(n, "real-copy", dtype=object)
    )
    return ImageSet(part.images, part.labels, part.class_names, prov)


def test_quality_report_per_class(dataset: LabDataset, reference: nn.Module) -> None:
    synthetic = real_as_synthetic(dataset, [0, 1, 2])
    report = quality.quality_report(synthetic, dataset, reference, seed=0, max_epochs=4)
    assert [q.name for q in report.per_class] == list(dataset.class_names)
    for q in report.per_class[:3]:
        assert q.n_synthetic > 0
        assert q.label_fidelity is not None and 0 <= q.label_fidelity <= 1
        assert q.tstr_recall is not None and 0 <= q.tstr_recall <= 1
    for q in report.per_class[3:]:
        assert (q.n_synthetic, q.label_fidelity, q.tstr_recall) == (0, None, None)
    assert report.label_fidelity is not None and report.label_fidelity > 0.7
    assert report.tstr_accuracy is not None and 0 <= report.tstr_accuracy <= 1
    # Covered classes weigh by their real test images in the accuracy.
    test_counts = dataset.test.class_counts()[:3]
    recalls = [q.tstr_recall or 0.0 for q in report.per_class[:3]]
    assert report.tstr_accuracy == pytest.approx(np.dot(recalls, test_counts) / test_counts.sum())
    assert quality.QualityReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_quality_report_needs_two_classes_for_tstr(dataset: LabDataset, reference: nn.Module) -> None:
    report = quality.quality_report(real_as_synthetic(dataset, [4]), dataset, reference)
    assert report.tstr_accuracy is None and all(q.tstr_recall is None for q in report.per_class)
    assert report.per_class[4].label_fidelity is not None and report.label_fidelity is not None


def test_quality_report_refuses_other_classes(dataset: LabDataset, reference: nn.Module) -> None:
    synthetic = real_as_synthetic(dataset, [0, 1])
    renamed = ImageSet(synthetic.images, synthetic.labels, tuple(f"c{i}" for i in range(10)), synthetic.provenance)
    with pytest.raises(quality.QualityError, match="c0"):
        quality.quality_report(renamed, dataset, reference)


def test_cancelled_reference_classifier_raises_and_saves_nothing(dataset: LabDataset) -> None:
    with pytest.raises(Cancelled, match="cancelled"):
        filters.reference_classifier(dataset, seed=5, should_stop=lambda: True)
    folder = store.subdir("reference")
    assert not any(p.name.endswith("-5") for p in folder.iterdir())


def test_a_cancelled_quality_report_raises(dataset: LabDataset, reference: nn.Module) -> None:
    with pytest.raises(Cancelled, match="quality report was cancelled"):
        quality.quality_report(real_as_synthetic(dataset, [0, 1]), dataset, reference, should_stop=lambda: True)


def test_reference_classifier_is_trained_once_and_reloaded(
    dataset: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = filters.train
    calls: list[int] = []

    def train_once(model: nn.Module, train_set: ImageSet, val_set: ImageSet, cfg: Any, **kw: Any) -> Any:
        calls.append(len(train_set))
        if len(calls) > 1:
            raise AssertionError("the reference classifier was trained a second time")
        return real_train(model, train_set, val_set, dataclasses.replace(cfg, max_epochs=1), **kw)

    monkeypatch.setattr(filters, "train", train_once)
    first = filters.reference_classifier(dataset, seed=3)
    second = filters.reference_classifier(dataset, seed=3)
    assert calls == [len(dataset.train)]
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    (folder,) = [Path(p) for p in store.subdir("reference").iterdir()]
    other = build_dataset(dataclasses.replace(dataset.config, imbalance=ImbalanceConfig()))  # same source, all of it
    assert folder.name == f"{hashlib.sha256(dataset.key.encode()).hexdigest()[:20]}-3" and other.key != dataset.key
    assert sorted(p.name for p in folder.iterdir()) == ["judge.json", "model.json", "model.safetensors"]
    images = dataset.val.images[:16]
    assert np.allclose(predict_proba(first, images), predict_proba(second, images))


def test_duplicate_index_catches_copies_within_a_set_and_passes_new_images() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0] * 5 + [1] * 5)
    index = filters.DuplicateIndex(train, labels, [f"t{i}.png" for i in range(10)], threshold=0.95)
    fresh = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    thumbs = filters.thumbnails(np.concatenate([train[:1], train[6:7], fresh, fresh[:1]]))
    assert "'t0.png'" in index.judge(thumbs[0], 0)
    assert index.judge(thumbs[1], 0) == ""  # a training image of another class is not this class's duplicate
    assert index.judge(thumbs[2], 0) == ""
    index.add(thumbs[2], 0)
    assert "already kept" in index.judge(thumbs[4], 0) and index.judge(thumbs[3], 0) == ""
    off = filters.DuplicateIndex(train, labels, ["x"] * 10, threshold=1.0)
    assert off.judge(thumbs[0], 0) == ""


def test_judge_runs_the_checks_in_order_and_counts_what_it_keeps() -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    index = filters.DuplicateIndex(train, np.array([0, 0, 1, 1]), ["a", "b", "c", "d"], threshold=0.95)
    new = rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    #           flagged    rejected by verdict  a training copy  new, kept  its copy  blank      new, one too many
    images = np.stack([new[0], new[1], train[0], new[2], new[2], np.zeros_like(new[0]), new[3]])
    labels = np.array([0, 0, 0, 0, 0, 0, 0])
    verdict = filters.FilterResult(labels, np.ones(7), np.array([1, 0, 1, 1, 1, 1, 1], bool), ("", "low", *[""] * 5))
    kept, wanted = np.zeros(2, np.int64), np.array([1, 0])
    reasons = filters.judge(images, labels, index, kept, wanted, verdict=verdict, flagged=[True] + [False] * 6)
    assert reasons[0] == "blacked out by the pipeline's safety checker" and reasons[1] == "low"
    assert reasons[2].startswith("near-duplicate of training image 'a'") and reasons[3] == ""
    assert reasons[4] == reasons[6] == "surplus beyond the requested count"  # one was wanted, one is kept
    assert reasons[5] == "surplus beyond the requested count" and kept.tolist() == [1, 0]
    kept[:] = 0
    more = filters.judge(images[4:6], labels[:2], index, kept, np.array([5, 0]))
    assert more[0].startswith("near-duplicate of an image already kept") and more[1] == "blank image (no content)"


def test_the_judge_is_class_balanced_and_says_how_well_it_knows_each_class(monkeypatch: pytest.MonkeyPatch) -> None:
    cut = build_dataset(DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1)))
    weighted: list[np.ndarray | None] = []
    real_train = filters.train

    def spy(*args: Any, **kw: Any) -> Any:
        weighted.append(kw.get("weights"))
        return real_train(*args, **kw)

    monkeypatch.setattr(filters, "train", spy)
    assert filters.judge_info(cut) is None  # nothing is known before the judge is trained
    model = filters.reference_classifier(cut)
    weights = weighted[0]
    assert weights is not None and weights[0] > 5 * weights[5]  # the cut classes weigh about ten times more
    info = filters.judge_info(cut)
    assert info is not None and len(info.val_recall) == 10
    y = cut.val.labels.numpy()
    pred = predict_proba(model, cut.val.images).argmax(1)
    assert info.val_recall[0] == pytest.approx(np.mean(pred[y == 0] == 0))
    assert info.balanced_accuracy == pytest.approx(np.mean(info.val_recall))
    assert min(info.val_recall[:2]) >= 0.6  # 12 training images of each cut digit still teach it
    assert info.weak_classes(cut.class_names, floor=1.01) == list(cut.class_names)
    assert info.weak_classes(cut.class_names, floor=0.0) == []


def test_for_images_of_32_px_the_better_of_two_judges_judges(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import models
    from engine.config import SourceConfig

    monkeypatch.setattr(models, "PRETRAINED_SIZE", 32)
    cfg = DatasetConfig(source=SourceConfig(resolution=32), imbalance=ImbalanceConfig(kind="subsample", fraction=0.3))
    digits32 = build_dataset(cfg)
    model = filters.reference_classifier(digits32)
    folder = next(p for p in store.subdir("reference").iterdir() if p.name.endswith("-0"))
    judged = json.loads((folder / "judge.json").read_text())
    assert set(judged["candidates"]) == {"simple_cnn", filters.PROBE_JUDGE}
    best = max(judged["candidates"], key=judged["candidates"].get)
    assert judged["judge"] == filters.JUDGE_NAMES[best] and judged["balanced_accuracy"] == judged["candidates"][best]
    again = filters.reference_classifier(digits32)  # reloaded, not retrained: the same answers
    images = digits32.val.images[:16]
    assert np.allclose(predict_proba(model, images), predict_proba(again, images), atol=1e-5)
