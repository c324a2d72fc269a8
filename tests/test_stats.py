"""engine.stats: the t-interval against scipy and by hand, verdicts, the bootstrap on synthetic problems, oracles."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics

from engine import stats as stats_module
from engine.stats import (
    Comparison,
    MacroAUC,
    MacroF1,
    MinorityRecall,
    ScoreFn,
    accuracy_score,
    macro_f1_score,
    paired_bootstrap,
    paired_seed_test,
    per_class_recall_diff,
    verdict_from_ci,
)

BASE = [0.80, 0.82, 0.79, 0.81]
TREAT = [0.83, 0.84, 0.80, 0.85]  # paired differences 0.03, 0.02, 0.01, 0.04


def make_arms(
    seed: int, n: int, acc_base: float, acc_treat: float, *, seeds: int = 3, classes: int = 5
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Labels (n,) and per-seed predictions, each item right with the arm's accuracy, else a uniformly wrong class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)

    def run(acc: float) -> np.ndarray:
        wrong = (y + rng.integers(1, classes, n)) % classes
        return np.where(rng.random(n) < acc, y, wrong)

    return y, [run(acc_base) for _ in range(seeds)], [run(acc_treat) for _ in range(seeds)]


# --- paired t over seeds ---


def test_seed_test_matches_scipy_ttest_rel_and_hand_computation() -> None:
    c = paired_seed_test("accuracy", BASE, TREAT)
    ref = sps.ttest_rel(TREAT, BASE)
    ci = ref.confidence_interval(0.95)
    assert c.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    # By hand: mean 0.025, sd sqrt(0.0005 / 3), t(0.975, df=3) = 3.182446305284263.
    half = 3.182446305284263 * math.sqrt(0.0005 / 3) / 2
    assert (c.ci_low, c.ci_high) == pytest.approx((0.025 - half, 0.025 + half), abs=1e-12)
    assert c.diff == pytest.approx(0.025)
    assert c.baseline_mean == pytest.approx(0.805)
    assert c.baseline_std == pytest.approx(np.std(BASE, ddof=1))
    assert c.treatment_std == pytest.approx(np.std(TREAT, ddof=1))
    assert (c.n_seeds, c.verdict, c.metric) == (4, "helps", "accuracy")
    assert "t-interval" in c.method and "95% CI" in c.method


def test_seed_test_alpha_sets_the_interval_level() -> None:
    c90 = paired_seed_test("accuracy", BASE, TREAT, alpha=0.10)
    ci = sps.ttest_rel(TREAT, BASE).confidence_interval(0.90)
    assert (c90.ci_low, c90.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    c95 = paired_seed_test("accuracy", BASE, TREAT)
    assert c95.ci_low < c90.ci_low < c90.ci_high < c95.ci_high
    assert "90% CI" in c90.method


@pytest.mark.parametrize(
    ("baseline", "treatment", "verdict"),
    [
        ([0.80, 0.81, 0.79], [0.85, 0.855, 0.845], "helps"),
        ([0.85, 0.855, 0.845], [0.80, 0.81, 0.79], "hurts"),
        ([0.80, 0.82, 0.79], [0.81, 0.80, 0.80], "no detectable effect"),
    ],
)
def test_seed_test_verdicts(baseline: list[float], treatment: list[float], verdict: str) -> None:
    c = paired_seed_test("f1_macro", baseline, treatment)
    assert c.verdict == verdict
    assert c.ci_low <= c.diff <= c.ci_high


def test_seed_test_with_one_seed_knows_nothing() -> None:
    c = paired_seed_test("accuracy", [0.5], [0.9])
    assert (c.ci_low, c.ci_high, c.p_value) == (-math.inf, math.inf, None)
    assert (c.verdict, c.n_seeds, c.baseline_std, c.treatment_std) == ("no detectable effect", 1, 0.0, 0.0)
    assert c.diff == pytest.approx(0.4)


def test_seed_test_zero_variance_collapses_to_the_difference() -> None:
    c = paired_seed_test("accuracy", [0.5, 0.25, 0.75], [0.625, 0.375, 0.875])  # exact binary fractions
    assert (c.ci_low, c.ci_high, c.p_value, c.verdict) == (0.125, 0.125, 0.0, "helps")
    same = paired_seed_test("accuracy", [0.5, 0.25], [0.5, 0.25])
    assert (same.ci_low, same.ci_high, same.p_value, same.verdict) == (0.0, 0.0, 1.0, "no detectable effect")


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (0.01, 0.02, "helps"),
        (-0.02, -0.01, "hurts"),
        (-0.01, 0.02, "no detectable effect"),
        (0.0, 0.1, "no detectable effect"),
        (-0.1, 0.0, "no detectable effect"),
        (-math.inf, math.inf, "no detectable effect"),
    ],
)
def test_verdict_from_ci(low: float, high: float, verdict: str) -> None:
    assert verdict_from_ci(low, high) == verdict


# --- two-level paired bootstrap over seeds and test images ---


@pytest.mark.parametrize("score", [accuracy_score, MacroF1(5)], ids=["accuracy", "f1_macro"])
def test_bootstrap_finds_a_real_gain_on_10000_items(score: ScoreFn) -> None:
    y, base, treat = make_arms(1, 10_000, 0.80, 0.85)
    c = paired_bootstrap("m", y, base, treat, score)
    # Errors are spread evenly over the other classes, so per-class F1 equals accuracy: the truth is +0.05 for both.
    assert c.ci_low > 0
    assert c.ci_low <= 0.05 <= c.ci_high
    assert c.ci_high - c.ci_low < 0.03
    assert c.verdict == "helps" and c.p_value is not None and c.p_value < 0.01
    per_seed = [[score(y, p) for p in arm] for arm in (base, treat)]
    assert c.baseline_mean == pytest.approx(np.mean(per_seed[0]))
    assert c.treatment_std == pytest.approx(np.std(per_seed[1], ddof=1))
    assert c.diff == pytest.approx(np.mean(per_seed[1]) - np.mean(per_seed[0]))
    assert c.n_seeds == 3 and "2,000 resamples" in c.method


def test_bootstrap_finds_no_effect_when_both_arms_are_alike() -> None:
    y, base, treat = make_arms(2, 2_000, 0.80, 0.80)
    c = paired_bootstrap("accuracy", y, base, treat, accuracy_score)
    assert c.ci_low < 0 < c.ci_high
    assert c.verdict == "no detectable effect" and c.p_value is not None and c.p_value > 0.05


def test_bootstrap_false_alarms_are_rare_under_the_null() -> None:
    alarms = 0
    for seed in range(20):
        y, base, treat = make_arms(100 + seed, 400, 0.7, 0.7, seeds=2)
        alarms += paired_bootstrap("accuracy", y, base, treat, accuracy_score, n_boot=500).verdict != (
            "no detectable effect"
        )
    assert alarms <= 3  # about 1 of 20 expected at the 95% level


def test_bootstrap_of_identical_arms_is_exactly_zero() -> None:
    y, base, _ = make_arms(3, 200, 0.8, 0.8)
    c = paired_bootstrap("accuracy", y, base, base, accuracy_score, n_boot=100)
    assert (c.ci_low, c.ci_high, c.p_value, c.diff, c.verdict) == (0.0, 0.0, 1.0, 0.0, "no detectable effect")


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    y, base, treat = make_arms(4, 500, 0.75, 0.78)
    first = paired_bootstrap("accuracy", y, base, treat, accuracy_score, n_boot=300, seed=7)
    again = paired_bootstrap("accuracy", y, base, treat, accuracy_score, n_boot=300, seed=7)
    other = paired_bootstrap("accuracy", y, base, treat, accuracy_score, n_boot=300, seed=8)
    assert first == again
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert other.diff == first.diff


@pytest.mark.parametrize(
    ("fast", "generic"),
    [
        (accuracy_score, lambda y, p: float(np.mean(y == p))),
        (MacroF1(4), functools.partial(macro_f1_score, num_classes=4)),
        (MinorityRecall((0, 2)), lambda y, p: MinorityRecall((0, 2))(y, p)),
        (MinorityRecall((0, 1, 2, 3)), lambda y, p: MinorityRecall((0, 1, 2, 3))(y, p)),
    ],
    ids=["accuracy", "f1_macro", "minority_recall", "balanced_accuracy"],
)
def test_vectorised_bootstrap_equals_the_generic_score_path(fast: ScoreFn, generic: ScoreFn) -> None:
    y, base, treat = make_arms(5, 300, 0.6, 0.7, seeds=2, classes=4)
    a = paired_bootstrap("m", y, base, treat, fast, n_boot=150, seed=3)
    b = paired_bootstrap("m", y, base, treat, generic, n_boot=150, seed=3)
    assert (a.ci_low, a.ci_high, a.p_value, a.diff) == pytest.approx((b.ci_low, b.ci_high, b.p_value, b.diff))


def test_vectorised_minority_recall_leaves_out_classes_a_resample_misses() -> None:
    rng = np.random.default_rng(4)
    y = np.array([0] * 60 + [1] * 2 + [2] + [3] * 20)  # classes 1 and 2 are missing from many resamples
    base = [np.where(rng.random(83) < 0.5, y, 3) for _ in range(2)]
    treat = [np.where(rng.random(83) < 0.8, y, 3) for _ in range(2)]
    fast, generic = MinorityRecall((0, 1, 2)), lambda y, p: MinorityRecall((0, 1, 2))(y, p)
    a = paired_bootstrap("m", y, base, treat, fast, n_boot=300, seed=1)
    b = paired_bootstrap("m", y, base, treat, generic, n_boot=300, seed=1)
    assert (a.ci_low, a.ci_high, a.p_value, a.diff) == pytest.approx((b.ci_low, b.ci_high, b.p_value, b.diff))
    assert a.ci_low != a.ci_high


# --- helpers against sklearn ---


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_helpers_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 60)  # classes 4 and 5 never occur in y_true
    p = np.where(rng.random(60) < 0.6, y, rng.integers(0, 5, 60))  # class 5 is never predicted either
    assert accuracy_score(y, p) == pytest.approx(metrics.accuracy_score(y, p))
    ref = metrics.f1_score(y, p, average="macro", labels=range(6), zero_division=0)
    assert macro_f1_score(y, p, 6) == pytest.approx(ref)
    assert MacroF1(6)(y, p) == pytest.approx(ref)


def test_per_class_recall_diff_matches_sklearn() -> None:
    y, base, treat = make_arms(6, 300, 0.6, 0.7, seeds=3, classes=4)
    mean, std = per_class_recall_diff(y, base, treat, num_classes=5)  # class 4 has no test images

    def recall(p: np.ndarray) -> np.ndarray:
        return metrics.recall_score(y, p, labels=range(4), average=None, zero_division=0)

    d = np.stack([recall(t) - recall(b) for b, t in zip(base, treat, strict=True)])
    np.testing.assert_allclose(mean[:4], d.mean(axis=0))
    np.testing.assert_allclose(std[:4], d.std(axis=0, ddof=1))
    assert np.isnan(mean[4]) and np.isnan(std[4])
    one_mean, one_std = per_class_recall_diff(y, base[:1], treat[:1], num_classes=4)
    np.testing.assert_allclose(one_mean, d[0])
    np.testing.assert_array_equal(one_std, np.zeros(4))


# --- serialisation ---


@pytest.mark.parametrize("n_seeds", [1, 4])
def test_comparison_round_trips_through_strict_json(n_seeds: int) -> None:
    c = paired_seed_test("accuracy", BASE[:n_seeds], TREAT[:n_seeds])
    back = Comparison.from_dict(json.loads(json.dumps(c.to_dict(), allow_nan=False)))
    assert back == c


def test_comparison_from_dict_rejects_incomplete_data() -> None:
    data = paired_seed_test("accuracy", BASE, TREAT).to_dict()
    with pytest.raises(ValueError, match=r"expected every key of Comparison\.to_dict"):
        Comparison.from_dict({k: v for k, v in data.items() if k != "diff"})
    with pytest.raises(ValueError, match="verdict='maybe'"):
        Comparison.from_dict({**data, "verdict": "maybe"})


# --- bad input ---


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, -0.1])
def test_alpha_outside_the_open_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(ValueError, match=rf"alpha={alpha} .* strictly between 0 and 1"):
        paired_seed_test("accuracy", BASE, TREAT, alpha=alpha)
    y, base, treat = make_arms(0, 20, 0.5, 0.5, seeds=1)
    with pytest.raises(ValueError, match=rf"alpha={alpha} "):
        paired_bootstrap("accuracy", y, base, treat, accuracy_score, alpha=alpha)


def test_seed_test_refuses_unpaired_or_non_finite_scores() -> None:
    with pytest.raises(ValueError, match=r"baseline=\[0.8, 0.9\] and treatment=\[0.8\] .* equally long"):
        paired_seed_test("accuracy", [0.8, 0.9], [0.8])
    with pytest.raises(ValueError, match="finite scores"):
        paired_seed_test("accuracy", [0.8, float("nan")], [0.8, 0.9])
    with pytest.raises(ValueError, match="non-empty"):
        paired_seed_test("accuracy", [], [])


def test_bootstrap_refuses_bad_predictions() -> None:
    y, base, treat = make_arms(0, 30, 0.5, 0.6, seeds=2, classes=3)
    with pytest.raises(ValueError, match=r"baseline_preds has 2 seed\(s\) and treatment_preds 1; expected the same"):
        paired_bootstrap("accuracy", y, base, treat[:1], accuracy_score)
    with pytest.raises(ValueError, match=r"treatment_preds\[1\] has shape \(29,\); expected \(30,\)"):
        paired_bootstrap("accuracy", y, base, [treat[0], treat[1][:-1]], accuracy_score)
    with pytest.raises(ValueError, match=r"y_true has shape \(1, 30\)"):
        paired_bootstrap("accuracy", y[None], base, treat, accuracy_score)
    with pytest.raises(ValueError, match="n_boot=0 is not accepted; expected a positive integer"):
        paired_bootstrap("accuracy", y, base, treat, accuracy_score, n_boot=0)
    with pytest.raises(ValueError, match=r"y_true holds values 0\.\.2; expected integer class labels in \[0, 2\)"):
        paired_bootstrap("f1_macro", y, base, treat, MacroF1(2))
    with pytest.raises(ValueError, match=r"baseline_preds holds float64 values"):
        paired_bootstrap("f1_macro", y, [b.astype(float) for b in base], treat, MacroF1(3))


def test_helpers_refuse_mismatched_or_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match=r"y_true \(3,\) and y_pred \(2,\)"):
        accuracy_score(np.array([0, 1, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"y_pred holds values -1\.\.1"):
        macro_f1_score(np.array([0, 1]), np.array([-1, 1]), 2)
    with pytest.raises(ValueError, match=r"treatment_preds holds values 0\.\.3; expected .* \[0, 3\)"):
        per_class_recall_diff(np.array([0, 1, 2]), [np.array([0, 1, 2])], [np.array([0, 1, 3])], num_classes=3)


def test_run_to_run_variation_widens_the_bootstrap_interval() -> None:
    """Seeds that disagree (+6, -6, +6 points) must not give a confident verdict: the seeds are resampled too."""
    rng = np.random.default_rng(0)
    n = 5_000
    y = rng.integers(0, 5, n)

    def preds(accuracy: float) -> np.ndarray:
        correct = rng.random(n) < accuracy
        return np.where(correct, y, (y + 1) % 5)

    base = [preds(0.80) for _ in range(3)]
    treat = [preds(0.86), preds(0.74), preds(0.86)]
    comp = paired_bootstrap("accuracy", y, base, treat, accuracy_score, n_boot=2000, seed=1)
    assert comp.ci_low < 0 < comp.ci_high and comp.verdict == "no detectable effect"
    steady = paired_bootstrap("accuracy", y, base, [preds(0.86) for _ in range(3)], accuracy_score, seed=1)
    assert steady.ci_low > 0.03 and steady.verdict == "helps"


@pytest.mark.parametrize("decimals", [1, 6])  # coarse scores tie often; fine ones almost never
def test_macro_auc_matches_sklearn_with_ties_and_bootstrap_weights(decimals: int) -> None:
    rng = np.random.default_rng(decimals)
    y = rng.integers(0, 4, 300)
    scores = rng.random((300, 4))
    scores[np.arange(300), y] += 0.4
    scores = np.round(scores, decimals)
    expected = np.mean([metrics.roc_auc_score(y == c, scores[:, c]) for c in range(4)])
    assert MacroAUC(4)(y, scores) == pytest.approx(expected, abs=1e-9)
    weights = rng.integers(0, 3, 300).astype(np.float64)
    weighted = np.mean([metrics.roc_auc_score(y == c, scores[:, c], sample_weight=weights) for c in range(4)])
    assert stats_module._weighted_macro_auc(y, scores, weights[None], 4)[0] == pytest.approx(weighted, abs=1e-6)


def test_macro_auc_bootstrap_sees_better_ranking_that_accuracy_cannot() -> None:
    # Both arms predict the same labels (argmax), but the treatment is surer where it is right, so it
    # ranks images better: only a threshold-free metric can tell them apart.
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 3, n)
    base, treat = [], []
    for _ in range(3):
        s = rng.random((n, 3))
        s[np.arange(n), y] += 0.3
        better = s + 0.05 * np.eye(3)[y] * (s.argmax(1) == y)[:, None]  # argmax unchanged for every item
        base.append(s)
        treat.append(better)
    assert all((b.argmax(1) == t.argmax(1)).all() for b, t in zip(base, treat, strict=True))
    comp = paired_bootstrap("roc_auc_macro", y, base, treat, MacroAUC(3), n_boot=300)
    assert comp.verdict == "helps" and comp.diff > 0
    labels = [b.argmax(1) for b in base], [t.argmax(1) for t in treat]
    assert paired_bootstrap("accuracy", y, *labels, accuracy_score).diff == 0
    with pytest.raises(ValueError, match=r"expected \(600, 3\) class scores"):
        paired_bootstrap("roc_auc_macro", y, [b[:, :2] for b in base], treat, MacroAUC(3))


def test_resamples_that_draw_no_minority_image_are_left_out_not_made_nan() -> None:
    stats = stats_module
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(37, dtype=int), np.ones(3, dtype=int)]  # 3 test images of the minority class
    base, treat = [np.where(rng.random(40) < 0.5, y, 1 - y) for _ in range(2)], [y.copy(), y.copy()]
    comp = stats.paired_bootstrap("minority", y, base, treat, stats.MinorityRecall((1,)), n_boot=2000)
    assert np.isfinite([comp.ci_low, comp.ci_high]).all() and comp.ci_low <= comp.diff <= comp.ci_high
    none = stats.paired_bootstrap("minority", y[:37], [b[:37] for b in base], [t[:37] for t in treat],
                                  stats.MinorityRecall((1,)), n_boot=200)  # fmt: skip
    assert np.isnan([none.diff, none.ci_low, none.ci_high]).all() and none.p_value is None
