"""Classification metrics on a test set, from predicted class probabilities.

:func:`compute_metrics` takes true labels (N,) and probabilities (N, C) and returns one frozen
:class:`Metrics`: accuracy, balanced accuracy, macro and weighted precision / recall / F1, macro
one-vs-rest ROC-AUC, top-label expected calibration error, per-class scores, the confusion matrix
and one-vs-rest ROC and precision-recall curves. Everything is plain numpy; the definitions are
those of ``sklearn.metrics`` (``zero_division=0``, all C classes), and ``tests/test_metrics.py``
checks them against it. Where this stops: no model, no inference, no plotting; the curves are
points for ``ui/`` to draw, and ``to_dict`` / ``from_dict`` are the JSON form ``engine.store`` keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ECE_BINS = 15  # equal-width confidence bins on (0, 1]
PROB_SUM_TOLERANCE = 1e-3  # |sum of a probability row - 1| above this is rejected: logits or a broken softmax

SCALAR_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "f1_weighted",
    "precision_weighted",
    "recall_weighted",
    "roc_auc_macro",
    "ece",
)


class MetricsError(ValueError):
    """Labels or probabilities that metrics cannot be computed from; the message says what and why."""


@dataclass(frozen=True)
class ClassMetrics:
    """Scores of one class; precision is 0 for a class never predicted, recall 0 for one never present."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int  # number of test samples whose true class this is


@dataclass(frozen=True)
class Curve:
    """One one-vs-rest curve; empty (no points, ``auc`` None) where it is undefined for that class.

    ROC is undefined when the class has no positives or no negatives in ``y_true``; PR when it has no
    positives. Points are sklearn's: ``roc_curve`` (``drop_intermediate=True``) and
    ``precision_recall_curve`` (all thresholds, recall decreasing, ending at (0, 1)).
    """

    x: tuple[float, ...]  # ROC: false positive rate; PR: recall
    y: tuple[float, ...]  # ROC: true positive rate; PR: precision
    auc: float | None  # ROC: area under the curve; PR: average precision (step integral, no interpolation)

    def to_dict(self) -> dict[str, Any]:
        return {"x": list(self.x), "y": list(self.y), "auc": self.auc}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Curve:
        auc = data["auc"]
        return cls(
            x=tuple(float(v) for v in data["x"]),
            y=tuple(float(v) for v in data["y"]),
            auc=None if auc is None else float(auc),
        )


_EMPTY_CURVE = Curve(x=(), y=(), auc=None)


@dataclass(frozen=True)
class Metrics:
    """Metrics of one classifier on one test set; every scalar is a fraction in [0, 1]."""

    accuracy: float
    balanced_accuracy: float  # mean recall over the classes present in y_true
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float  # weighted by support
    recall_weighted: float
    f1_weighted: float
    roc_auc_macro: float | None  # mean one-vs-rest ROC-AUC; None when some class has no positives or negatives
    ece: float  # top-label expected calibration error, 15 equal-width bins on the max probability
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows = true class, columns = predicted class
    roc: tuple[Curve, ...]  # one-vs-rest, one per class
    pr: tuple[Curve, ...]  # one-vs-rest, one per class
    n: int  # number of test samples

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.per_class)

    def headline(self) -> dict[str, float | None]:
        """The scalar metrics by name, in :data:`SCALAR_METRICS` order."""
        return {name: getattr(self, name) for name in SCALAR_METRICS}

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of lists, strings, ints, floats and None, ready for ``json.dumps``."""
        return {
            **self.headline(),
            "per_class": [
                {"name": c.name, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support}
                for c in self.per_class
            ],
            "confusion": [list(row) for row in self.confusion],
            "roc": [c.to_dict() for c in self.roc],
            "pr": [c.to_dict() for c in self.pr],
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        """The inverse of :meth:`to_dict`, also after a JSON round trip."""
        missing = [k for k in (*SCALAR_METRICS, "per_class", "confusion", "roc", "pr", "n") if k not in data]
        if missing:
            raise MetricsError(f"metrics data lacks the keys {missing}; expected a dict made by Metrics.to_dict().")
        auc = data["roc_auc_macro"]
        scalars: dict[str, Any] = {k: float(data[k]) for k in SCALAR_METRICS if k != "roc_auc_macro"}
        return cls(
            **scalars,
            roc_auc_macro=None if auc is None else float(auc),
            per_class=tuple(
                ClassMetrics(
                    name=str(c["name"]),
                    precision=float(c["precision"]),
                    recall=float(c["recall"]),
                    f1=float(c["f1"]),
                    support=int(c["support"]),
                )
                for c in data["per_class"]
            ),
            confusion=tuple(tuple(int(v) for v in row) for row in data["confusion"]),
            roc=tuple(Curve.from_dict(c) for c in data["roc"]),
            pr=tuple(Curve.from_dict(c) for c in data["pr"]),
            n=int(data["n"]),
        )


def metric_value(m: Metrics, name: str) -> float:
    """One scalar metric by name; an undefined ROC-AUC (None) comes back as NaN."""
    if name not in SCALAR_METRICS:
        raise MetricsError(f"metric name={name!r} is not known; expected one of {', '.join(SCALAR_METRICS)}.")
    value = getattr(m, name)
    return math.nan if value is None else float(value)


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> Metrics:
    """All metrics of one test set.

    ``y_true`` is (N,) integer labels in [0, C); ``probs`` is (N, C) probabilities, each row summing to
    1 (within 1e-3); ``class_names`` holds the C names. Predictions are ``argmax(probs, axis=1)``, the
    first class winning ties. Raises :class:`MetricsError` (a ``ValueError``) on anything else.
    """
    # 1. Check inputs
    y, p = _check_inputs(y_true, probs, class_names)
    n, c = p.shape
    pred = p.argmax(axis=1)

    # 2. Confusion matrix and per-class scores (sklearn's zero_division=0)
    confusion = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2.0 * tp, support + predicted)
    present = support > 0

    # 3. One-vs-rest curves; the macro ROC-AUC exists only where every class's ROC does
    roc = tuple(_roc_curve(y == k, p[:, k]) for k in range(c))
    pr = tuple(_pr_curve(y == k, p[:, k]) for k in range(c))
    aucs = [curve.auc for curve in roc]
    roc_auc = None if any(a is None for a in aucs) else float(np.mean(np.asarray(aucs, dtype=np.float64)))

    return Metrics(
        accuracy=float(np.mean(pred == y)),
        balanced_accuracy=float(np.mean(recall[present])),
        precision_macro=float(np.mean(precision)),
        recall_macro=float(np.mean(recall)),
        f1_macro=float(np.mean(f1)),
        precision_weighted=float(np.average(precision, weights=support)),
        recall_weighted=float(np.average(recall, weights=support)),
        f1_weighted=float(np.average(f1, weights=support)),
        roc_auc_macro=roc_auc,
        ece=expected_calibration_error(y, p),
        per_class=tuple(
            ClassMetrics(str(name), float(precision[k]), float(recall[k]), float(f1[k]), int(support[k]))
            for k, name in enumerate(class_names)
        ),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        roc=roc,
        pr=pr,
        n=int(n),
    )


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over equal-width bins (lo, hi] of (|B| / N) * |accuracy(B) - mean confidence(B)|.

    The confidence of a sample is its max probability; inputs as for :func:`compute_metrics`, unchecked.
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge in the bin that edge closes: (lo, hi]
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    confidence_sum = np.bincount(index, weights=confidence, minlength=bins)
    # (|B| / N) * |correct_sum / |B| - confidence_sum / |B|| simplifies to |correct_sum - confidence_sum| / N
    return float(np.sum(np.abs(correct_sum - confidence_sum)) / len(confidence))


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _counts_at_thresholds(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative false and true positives at each distinct score, highest first.

    Tied scores form a single threshold, so a curve never steps through an arbitrary order of ties.
    """
    order = np.argsort(-score, kind="stable")
    score = score[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # last index of each run of equal scores
    tps = np.cumsum(positive[order], dtype=np.float64)[last]
    fps = 1.0 + last - tps
    return fps, tps


def _roc_curve(positive: np.ndarray, score: np.ndarray) -> Curve:
    fps, tps = _counts_at_thresholds(positive, score)
    if tps[-1] == 0 or fps[-1] == 0:
        return _EMPTY_CURVE
    if len(fps) > 2:
        # drop points collinear with their neighbours, as sklearn's drop_intermediate=True does
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[corner], tps[corner]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return Curve(x=tuple(fpr.tolist()), y=tuple(tpr.tolist()), auc=float(np.trapezoid(tpr, fpr)))


def _pr_curve(positive: np.ndarray, score: np.ndarray) -> Curve:
    fps, tps = _counts_at_thresholds(positive, score)
    if tps[-1] == 0:
        return _EMPTY_CURVE
    recall = np.r_[tps[::-1] / tps[-1], 0.0]
    precision = np.r_[tps[::-1] / (tps[::-1] + fps[::-1]), 1.0]  # every threshold holds >= 1 sample
    average_precision = max(0.0, float(-np.sum(np.diff(recall) * precision[:-1])))
    return Curve(x=tuple(recall.tolist()), y=tuple(precision.tolist()), auc=average_precision)


def _check_inputs(y_true: Any, probs: Any, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(y (N,) int64, probs (N, C) float64), or a MetricsError naming the argument and what is accepted."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.dtype.kind not in "fiu":
        raise MetricsError(f"probs must be a 2-D (N, C) float array, got {p.dtype} of shape {p.shape}.")
    n, c = p.shape
    if n == 0:
        raise MetricsError(f"probs has shape {p.shape}: at least one test sample (N >= 1) is needed.")
    if c < 2 or len(class_names) != c:
        raise MetricsError(
            f"probs has C={c} columns and class_names has {len(class_names)} names; "
            "expected the same number, at least 2."
        )
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise MetricsError(
            f"probs must hold finite probabilities in [0, 1], got values in [{p.min()}, {p.max()}] "
            "(logits need a softmax first)."
        )
    worst = float(np.max(np.abs(p.sum(axis=1) - 1.0)))
    if worst > PROB_SUM_TOLERANCE:
        raise MetricsError(f"probs rows must sum to 1 (within {PROB_SUM_TOLERANCE}), but one is off by {worst:.3g}.")
    y = np.asarray(y_true)
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != n:
        raise MetricsError(
            f"y_true must be a 1-D integer array of length N={n} (the rows of probs), got {y.dtype} of shape {y.shape}."
        )
    if y.min() < 0 or y.max() >= c:
        raise MetricsError(f"y_true holds labels in [{y.min()}, {y.max()}]; expected labels in [0, {c}) for C={c}.")
    return y.astype(np.int64), p
