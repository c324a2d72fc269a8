"""Quality of a synthetic set per class, first version: label fidelity and train-on-synthetic, test-on-real.

Label fidelity: the share of a class's synthetic images that a classifier trained on real data only
assigns to that class. TSTR: a simple CNN trained on the synthetic images alone (validated on the real
validation images of the classes the set covers) is scored on the real test images of those classes;
its per-class recall says which classes the generator has learnt well enough to teach. Classes the set
does not cover get None. Where this stops: no image-distribution distances (FID and the like), no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from engine.datasets import ImageSet, LabDataset
from engine.jobs import Cancelled
from engine.models import build_model
from engine.synth.sets import ImageRecord
from engine.training import EventFn, StopFn, TrainConfig, channel_stats, predict_proba, train


class QualityError(ValueError):
    """A quality report cannot be made from what was given; the message says what does not match."""


@dataclass(frozen=True)
class ClassQuality:
    """Quality measures of one class; None where a measure has nothing to measure."""

    name: str
    n_synthetic: int
    label_fidelity: float | None  # share of this class's synthetic images the real-trained classifier assigns to it
    tstr_recall: float | None  # recall on the real test set of a classifier trained on the synthetic set alone


@dataclass(frozen=True)
class QualityReport:
    """Per-class measures and their totals over the whole set."""

    per_class: tuple[ClassQuality, ...]
    label_fidelity: float | None  # over all synthetic images
    tstr_accuracy: float | None  # accuracy on the real test images of the classes the synthetic set covers

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": [asdict(q) for q in self.per_class],
            "label_fidelity": self.label_fidelity,
            "tstr_accuracy": self.tstr_accuracy,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityReport:
        return cls(
            per_class=tuple(ClassQuality(**row) for row in data.get("per_class", [])),
            label_fidelity=data.get("label_fidelity"),
            tstr_accuracy=data.get("tstr_accuracy"),
        )


def _share(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if len(hits) else None


def quality_report(
    synthetic: ImageSet,
    dataset: LabDataset,
    reference: nn.Module,
    *,
    seed: int = 0,
    max_epochs: int = 30,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
) -> QualityReport:
    """Label fidelity under ``reference`` and TSTR recall per class of a synthetic set made for ``dataset``.

    TSTR needs at least two covered classes; with fewer, every ``tstr_*`` value is None. Raises
    :class:`~engine.jobs.Cancelled` when ``should_stop`` stops the TSTR classifier's training: a report
    from a half-trained classifier would understate what the set teaches.
    """
    # 1. Check inputs.
    if synthetic.class_names != dataset.class_names:
        raise QualityError(
            f"the synthetic set's classes {list(synthetic.class_names)} are not accepted: expected the dataset's "
            f"classes {list(dataset.class_names)}"
        )
    if synthetic.images.shape[1:] != dataset.train.images.shape[1:]:
        raise QualityError(
            f"synthetic images of shape {tuple(synthetic.images.shape[1:])} are not accepted: expected "
            f"{tuple(dataset.train.images.shape[1:])} like the dataset's"
        )
    labels = synthetic.labels.numpy()
    counts = synthetic.class_counts()
    covered = np.flatnonzero(counts > 0)

    # 2. Label fidelity: does a real-data classifier see the intended class?
    if len(synthetic):
        predicted = predict_proba(reference, synthetic.images).argmax(axis=1)
    else:
        predicted = np.zeros(0, dtype=np.int64)
    fidelity = [_share(predicted[labels == c] == c) for c in range(synthetic.num_classes)]

    # 3. TSTR: train on the synthetic images alone, test on the real images of the covered classes.
    recall: list[float | None] = [None] * synthetic.num_classes
    accuracy = None
    if len(covered) >= 2:
        val = dataset.val.subset(np.flatnonzero(np.isin(dataset.val.labels.numpy(), covered)))
        test = dataset.test.subset(np.flatnonzero(np.isin(dataset.test.labels.numpy(), covered)))
        mean, std = channel_stats(synthetic.images)
        model = build_model(
            "simple_cnn",
            channels=dataset.channels,
            num_classes=synthetic.num_classes,
            resolution=dataset.resolution,
            mean=mean,
            std=std,
            seed=seed,
        )
        cfg = TrainConfig(max_epochs=max_epochs)
        result = train(model, synthetic, val, cfg, seed=seed, on_event=on_event, should_stop=should_stop)
        if result.cancelled:
            raise Cancelled(f"the quality report was cancelled after {len(result.history)} epoch(s)")
        result.model.cpu()
        # The classifier only ever saw the covered classes, so it chooses among them.
        test_labels = test.labels.numpy()
        test_pred = covered[predict_proba(model, test.images)[:, covered].argmax(axis=1)] if len(test) else test_labels
        for c in covered:
            recall[c] = _share(test_pred[test_labels == c] == c)
        accuracy = _share(test_pred == test_labels)

    per_class = tuple(
        ClassQuality(name, int(counts[c]), fidelity[c], recall[c]) for c, name in enumerate(synthetic.class_names)
    )
    return QualityReport(per_class, _share(predicted == labels), accuracy)


@dataclass(frozen=True)
class FilterOption:
    """What a set would hold at a lower filter threshold, judged from the candidates already made."""

    threshold: float
    kept: tuple[int, ...]  # per class, images that would be kept (at most the count wanted)
    confidence: tuple[float | None, ...]  # per class, the real-data classifier's mean confidence in their label


def lower_filter_options(
    records: Sequence[ImageRecord], wanted: Sequence[int], threshold: float, levels: Sequence[float] = (0.8, 0.5)
) -> list[FilterOption]:
    """Per level below ``threshold``: kept images per class and how sure the filter's classifier is of their labels.

    Only candidates that the filter alone rejected count (not near-duplicates, not hand rejections, not
    those the classifier assigns to another class); more generation at that level can only add to the
    counts. The mean confidence is the share of right labels a calibrated classifier would expect: the
    honest price of a lower filter.
    """
    scored = [
        (r.label, float(r.score))
        for r in records
        if r.score is not None and (r.kept or r.reason.startswith(("confidence ", "surplus ")))
    ]
    options = []
    for level in (lv for lv in levels if lv < threshold):
        kept, confidence = [], []
        for c, n in enumerate(wanted):
            scores = sorted((score for label, score in scored if label == c and score >= level), reverse=True)
            scores = scores[: int(n)]
            kept.append(len(scores))
            confidence.append(float(np.mean(scores)) if scores else None)
        options.append(FilterOption(level, tuple(kept), tuple(confidence)))
    return options
