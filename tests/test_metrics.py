"""Metrics against sklearn.metrics on seeded random problems, ECE by hand, JSON round trip, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from engine.metrics import (
    ECE_BINS,
    SCALAR_METRICS,
    Curve,
    Metrics,
    MetricsError,
    compute_metrics,
    expected_calibration_error,
    metric_value,
)

EXACT = 1e-12  # our numpy and sklearn do the same float operations, up to summation order


def make_problem(seed: int, n: int, c: int, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels covering every class and probabilities that lean towards the true class.

    ``never``: the last class is never the argmax. ``ties``: probabilities from small integers, so many
    scores tie within a column and many rows tie for the argmax.
    """
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    if variant == "ties":
        raw = rng.integers(1, 4, size=(n, c)).astype(np.float64)
        raw[np.arange(n), y] += rng.integers(0, 3, size=n)
        return y, raw / raw.sum(axis=1, keepdims=True)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if variant == "never":
        probs[:, -1] = 0.5 * probs[:, :-1].min(axis=1)
        probs /= probs.sum(axis=1, keepdims=True)
    return y, probs


def names(c: int) -> list[str]:
    return [f"class_{k}" for k in range(c)]


PROBLEMS = [
    (0, 40, 2, "plain"),
    (1, 60, 3, "plain"),
    (2, 200, 10, "plain"),
    (3, 50, 3, "never"),
    (4, 300, 10, "never"),
    (5, 40, 2, "ties"),
    (6, 45, 3, "ties"),
    (7, 200, 10, "ties"),
]
PROBLEM_IDS = [f"seed{s}-n{n}-c{c}-{v}" for s, n, c, v in PROBLEMS]


@pytest.fixture(params=PROBLEMS, ids=PROBLEM_IDS)
def problem(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, Metrics]:
    y, probs = make_problem(*request.param)
    return y, probs, compute_metrics(y, probs, names(probs.shape[1]))


def test_problems_cover_the_cases_they_claim() -> None:
    y, probs = make_problem(4, 300, 10, "never")
    assert 9 not in probs.argmax(axis=1)
    y, probs = make_problem(7, 200, 10, "ties")
    assert len(np.unique(probs[:, 0])) < len(y) / 4
    assert np.any(np.sort(probs, axis=1)[:, -1] == np.sort(probs, axis=1)[:, -2])


def test_scalars_match_sklearn(problem: tuple[np.ndarray, np.ndarray, Metrics]) -> None:
    y, probs, m = problem
    c = probs.shape[1]
    pred = probs.argmax(axis=1)
    labels = list(range(c))
    assert m.n == len(y)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred), abs=EXACT)
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=EXACT)
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=average, zero_division=0)
        assert getattr(m, f"precision_{average}") == pytest.approx(p, abs=EXACT)
        assert getattr(m, f"recall_{average}") == pytest.approx(r, abs=EXACT)
        assert getattr(m, f"f1_{average}") == pytest.approx(f, abs=EXACT)
    if c == 2:  # sklearn's binary path takes one score column; macro OvR is the multilabel-indicator average
        expected_auc = skm.roc_auc_score(np.eye(c)[y], probs, average="macro")
    else:
        expected_auc = skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels)
    assert m.roc_auc_macro == pytest.approx(expected_auc, abs=EXACT)


def test_per_class_and_confusion_match_sklearn(problem: tuple[np.ndarray, np.ndarray, Metrics]) -> None:
    y, probs, m = problem
    c = probs.shape[1]
    pred = probs.argmax(axis=1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=list(range(c)), average=None, zero_division=0)
    assert [k.name for k in m.per_class] == names(c)
    np.testing.assert_allclose([k.precision for k in m.per_class], p, rtol=0, atol=EXACT)
    np.testing.assert_allclose([k.recall for k in m.per_class], r, rtol=0, atol=EXACT)
    np.testing.assert_allclose([k.f1 for k in m.per_class], f, rtol=0, atol=EXACT)
    assert [k.support for k in m.per_class] == s.tolist()
    assert np.array_equal(np.array(m.confusion), skm.confusion_matrix(y, pred, labels=list(range(c))))


def test_never_predicted_class_scores_zero() -> None:
    y, probs = make_problem(3, 50, 3, "never")
    last = compute_metrics(y, probs, names(3)).per_class[-1]
    assert (last.precision, last.recall, last.f1) == (0.0, 0.0, 0.0)
    assert last.support == int(np.sum(y == 2)) > 0


def test_curves_match_sklearn(problem: tuple[np.ndarray, np.ndarray, Metrics]) -> None:
    y, probs, m = problem
    assert len(m.roc) == len(m.pr) == probs.shape[1]
    for k, (roc, pr) in enumerate(zip(m.roc, m.pr, strict=True)):
        positive = (y == k).astype(int)
        fpr, tpr, _ = skm.roc_curve(positive, probs[:, k])
        np.testing.assert_allclose(roc.x, fpr, rtol=0, atol=EXACT)
        np.testing.assert_allclose(roc.y, tpr, rtol=0, atol=EXACT)
        assert roc.auc == pytest.approx(skm.roc_auc_score(positive, probs[:, k]), abs=EXACT)
        precision, recall, _ = skm.precision_recall_curve(positive, probs[:, k])
        np.testing.assert_allclose(pr.x, recall, rtol=0, atol=EXACT)
        np.testing.assert_allclose(pr.y, precision, rtol=0, atol=EXACT)
        assert pr.auc == pytest.approx(skm.average_precision_score(positive, probs[:, k]), abs=EXACT)


def test_tied_scores_form_one_threshold() -> None:
    # Class 1's scores are all 0.5: one threshold, so the ROC is the diagonal, not a staircase.
    y = np.array([1, 0, 1, 0])
    probs = np.full((4, 2), 0.5)
    m = compute_metrics(y, probs, ["a", "b"])
    assert m.roc[1] == Curve(x=(0.0, 1.0), y=(0.0, 1.0), auc=0.5)
    assert m.pr[1] == Curve(x=(1.0, 0.0), y=(0.5, 1.0), auc=0.5)
    assert m.accuracy == 0.5  # argmax ties go to the first class


def test_class_absent_from_y_true() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, size=30)  # class 2 never occurs
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=30)
    pred = probs.argmax(axis=1)
    assert 2 in pred
    m = compute_metrics(y, probs, names(3))
    with pytest.warns(UndefinedMetricWarning, match="Only one class is present in y_true"):
        assert math.isnan(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=[0, 1, 2]))
    assert m.roc_auc_macro is None
    assert math.isnan(metric_value(m, "roc_auc_macro"))
    assert m.roc[2] == m.pr[2] == Curve(x=(), y=(), auc=None)
    assert m.roc[0].auc is not None and m.pr[0].auc is not None
    assert (m.per_class[2].recall, m.per_class[2].support) == (0.0, 0)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = skm.balanced_accuracy_score(y, pred)
    assert m.balanced_accuracy == pytest.approx(expected, abs=EXACT)
    expected_macro = skm.recall_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert m.recall_macro == pytest.approx(expected_macro, abs=EXACT)


def test_class_without_negatives_has_pr_but_no_roc() -> None:
    rng = np.random.default_rng(12)
    y = np.zeros(20, dtype=np.int64)
    probs = rng.dirichlet([2.0, 1.0], size=20)
    m = compute_metrics(y, probs, ["a", "b"])
    assert m.roc_auc_macro is None
    assert m.roc[0] == m.roc[1] == Curve(x=(), y=(), auc=None)
    assert m.pr[0].auc == pytest.approx(skm.average_precision_score(np.ones(20), probs[:, 0]), abs=EXACT)
    assert m.pr[0].auc == pytest.approx(1.0, abs=EXACT)
    assert m.pr[0].y == (1.0,) * len(m.pr[0].y)
    assert m.pr[1].auc is None


def loop_ece(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def test_ece_by_hand() -> None:
    # Confidences 0.9, 0.9 (bin (13/15, 14/15]: one right, one wrong), 0.6 (bin (8/15, 9/15]: right)
    # and 1.0 (last bin: right): ECE = 2/4 * |0.5 - 0.9| + 1/4 * |1 - 0.6| + 1/4 * |1 - 1| = 0.3.
    y = np.array([0, 0, 1, 2])
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.0]])
    assert compute_metrics(y, probs, names(3)).ece == pytest.approx(0.3, abs=EXACT)


def test_ece_bin_edges_are_closed_on_the_right() -> None:
    # Confidence exactly 0.6 = 9/15 belongs to bin (8/15, 9/15]; wrong, so that bin contributes 0.6.
    y = np.array([1])
    probs = np.array([[0.6, 0.4]])
    assert expected_calibration_error(y, probs) == pytest.approx(0.6, abs=EXACT)
    assert ECE_BINS == 15


@pytest.mark.parametrize(("seed", "n", "c", "variant"), PROBLEMS, ids=PROBLEM_IDS)
def test_ece_matches_loop(seed: int, n: int, c: int, variant: str) -> None:
    y, probs = make_problem(seed, n, c, variant)
    ece = compute_metrics(y, probs, names(c)).ece
    assert ece == pytest.approx(loop_ece(y, probs), abs=EXACT)
    assert 0.0 < ece < 1.0


def test_json_round_trip(problem: tuple[np.ndarray, np.ndarray, Metrics]) -> None:
    _, _, m = problem
    data = json.loads(json.dumps(m.to_dict()))
    assert Metrics.from_dict(data) == m
    assert Metrics.from_dict(data).to_dict() == data


def test_json_round_trip_with_undefined_auc() -> None:
    m = compute_metrics(np.zeros(5, dtype=np.int64), np.full((5, 2), 0.5), ["a", "b"])
    data = json.loads(json.dumps(m.to_dict()))
    assert data["roc_auc_macro"] is None and data["roc"][0] == {"x": [], "y": [], "auc": None}
    assert Metrics.from_dict(data) == m


def test_from_dict_names_missing_keys() -> None:
    data = compute_metrics(np.array([0, 1]), np.eye(2), ["a", "b"]).to_dict()
    del data["ece"]
    with pytest.raises(MetricsError, match=r"lacks the keys \['ece'\]"):
        Metrics.from_dict(data)


def test_headline_and_metric_value() -> None:
    y, probs = make_problem(1, 60, 3, "plain")
    m = compute_metrics(y, probs, names(3))
    headline = m.headline()
    assert tuple(headline) == SCALAR_METRICS
    assert headline["f1_macro"] == m.f1_macro and headline["ece"] == m.ece
    assert [metric_value(m, k) for k in SCALAR_METRICS] == list(headline.values())
    assert m.class_names == tuple(names(3))
    with pytest.raises(ValueError, match="metric name='auc' is not known"):
        metric_value(m, "auc")


GOOD_Y = np.array([0, 1, 2, 1])
GOOD_P = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]])


@pytest.mark.parametrize(
    ("y_true", "probs", "class_names", "match"),
    [
        (GOOD_Y, GOOD_P[:, 0], names(3), r"probs must be a 2-D \(N, C\) float array, got float64 of shape \(4,\)"),
        (GOOD_Y, GOOD_P.astype(str), names(3), r"probs must be a 2-D .* got <U"),
        (GOOD_Y[:0], GOOD_P[:0], names(3), r"probs has shape \(0, 3\): at least one test sample"),
        (GOOD_Y, GOOD_P, names(2), r"probs has C=3 columns and class_names has 2 names"),
        (np.zeros(4, dtype=int), np.ones((4, 1)), ["a"], r"C=1 columns .* at least 2"),
        (GOOD_Y, GOOD_P * 2, names(3), r"finite probabilities in \[0, 1\], got values in \[0.2, 1.6\]"),
        (GOOD_Y, np.where(GOOD_P == 0.8, np.nan, GOOD_P), names(3), r"finite probabilities"),
        (GOOD_Y, GOOD_P * 0.9, names(3), r"rows must sum to 1 \(within 0.001\), but one is off by 0.1"),
        (GOOD_Y[:3], GOOD_P, names(3), r"y_true must be a 1-D integer array of length N=4 .* shape \(3,\)"),
        (GOOD_Y.astype(float), GOOD_P, names(3), r"y_true must be .* integer .* got float64"),
        (GOOD_Y[:, None], GOOD_P, names(3), r"y_true must be a 1-D .* shape \(4, 1\)"),
        (GOOD_Y + 1, GOOD_P, names(3), r"y_true holds labels in \[1, 3\]; expected labels in \[0, 3\) for C=3"),
        (GOOD_Y - 1, GOOD_P, names(3), r"y_true holds labels in \[-1, 1\]"),
    ],
)
def test_bad_input_is_rejected(y_true: np.ndarray, probs: np.ndarray, class_names: list[str], match: str) -> None:
    with pytest.raises(MetricsError, match=match):
        compute_metrics(y_true, probs, class_names)


def test_good_input_is_accepted_from_lists_and_float32() -> None:
    m = compute_metrics(GOOD_Y.tolist(), GOOD_P.astype(np.float32).tolist(), names(3))
    assert m.accuracy == 0.75 and m.confusion == ((1, 0, 0), (1, 1, 0), (0, 0, 1))
