"""Did a training mix help? Paired comparisons of a treatment mix against the baseline, with intervals.

Two honest answers to one question, both paired because every mix is trained with the same seeds and
scored on the same real test set (the same per split, with repeated splits):

* :func:`paired_seed_test`: a Student t-interval of the mean per-seed difference (variation between
  training runs; weak with 3 seeds, and says so with a wide interval).
* :func:`paired_bootstrap`: a two-level bootstrap: each resample draws seeds (pairs of runs) and test
  images with replacement (per test set, when repeated splits give each pair its own), the same images
  for both arms; label scores (accuracy, macro-F1, any callable) and macro ROC-AUC from class scores
  (:class:`MacroAUC`), so both the run-to-run variation and the
  finite test set widen the interval. (Resampling images alone treats the trained models as fixed and
  called a no-effect mix "helps" or "hurts" about 30% of the time in a simulation with 3 seeds.)

Each returns a :class:`Comparison` whose verdict follows the interval only (:func:`verdict_from_ci`).
Where this stops: predictions and scores in, numbers out; no training, no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import numpy as np
from scipy import sparse
from scipy import stats as sps

Verdict = Literal["helps", "no detectable effect", "hurts"]
ScoreFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Comparison:
    """One metric, one treatment mix against the baseline. Scores are fractions in [0, 1] for the built-ins."""

    metric: str  # "accuracy", "f1_macro" or any name the caller gives
    baseline_mean: float  # mean over seeds
    baseline_std: float  # sample std over seeds (ddof=1; 0.0 with one seed)
    treatment_mean: float
    treatment_std: float
    diff: float  # treatment_mean - baseline_mean
    ci_low: float  # (1 - alpha) interval of the difference; -inf when it cannot be estimated
    ci_high: float  # +inf when it cannot be estimated
    p_value: float | None  # two-sided; None when it cannot be estimated
    n_seeds: int
    method: str  # human-readable, shown in the UI
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict; infinite interval bounds become None."""
        data = asdict(self)
        for key in ("ci_low", "ci_high"):
            data[key] = data[key] if math.isfinite(data[key]) else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Inverse of :meth:`to_dict`."""
        values: dict[str, Any] = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if len(values) < len(fields(cls)) or values["verdict"] not in get_args(Verdict):
            raise ValueError(
                f"Comparison data with keys {sorted(data)} and verdict={data.get('verdict')!r} is not accepted; "
                f"expected every key of Comparison.to_dict() and a verdict in {get_args(Verdict)}"
            )
        values["ci_low"] = -math.inf if values["ci_low"] is None else float(values["ci_low"])
        values["ci_high"] = math.inf if values["ci_high"] is None else float(values["ci_high"])
        return cls(**values)


def verdict_from_ci(low: float, high: float) -> Verdict:
    """Return "helps" when the whole interval lies above 0, "hurts" when below 0, else "no detectable effect"."""
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "no detectable effect"


def accuracy_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of (N,) predictions equal to the (N,) labels."""
    y, p = _check_pair(y_true, y_pred)
    return float(np.mean(y == p))


def macro_f1_score(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes 0..C-1; a class with no true and no predicted item scores 0.

    Same as ``sklearn.metrics.f1_score(average="macro", labels=range(C), zero_division=0)``.
    """
    y, p = _check_pair(y_true, y_pred)
    _check_labels("y_true", y, num_classes)
    _check_labels("y_pred", p, num_classes)
    tp = np.bincount(y[y == p], minlength=num_classes)
    support = np.bincount(y, minlength=num_classes) + np.bincount(p, minlength=num_classes)
    return float(np.mean(np.divide(2.0 * tp, support, out=np.zeros(num_classes), where=support > 0)))


@dataclass(frozen=True)
class MacroF1:
    """Macro-F1 over ``num_classes`` as a score callable; :func:`paired_bootstrap` vectorises it."""

    num_classes: int

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return macro_f1_score(y_true, y_pred, self.num_classes)


@dataclass(frozen=True)
class MinorityRecall:
    """Mean recall over the chosen ``classes`` (the minority ones) as a score callable.

    A class with no item in a resample is left out of that resample's mean; with none at all, NaN.
    """

    classes: tuple[int, ...]

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in self.classes if np.any(y_true == c)]
        return float(np.mean(recalls)) if recalls else float("nan")


@dataclass(frozen=True)
class MacroAUC:
    """Mean one-vs-rest ROC-AUC over the classes that have both positives and negatives, from (N, C) scores.

    Threshold-free: a gain here means the model ranks images better, not that a decision threshold moved
    (which is what reweighting also gives). Same as the mean of ``sklearn.metrics.roc_auc_score(y == c,
    scores[:, c])`` over those classes; NaN when none qualifies. :func:`paired_bootstrap` vectorises it.
    """

    num_classes: int

    def __call__(self, y_true: np.ndarray, scores: np.ndarray) -> float:
        y = np.asarray(y_true)
        weights = np.ones((1, len(y)))
        return float(_weighted_macro_auc(y, np.asarray(scores, dtype=np.float64), weights, self.num_classes)[0])


def _weighted_macro_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    """(B,) macro one-vs-rest AUC of (N, C) ``scores`` with (B, N) item weights (bootstrap counts); ties count 1/2.

    Per class the items are sorted by score once; a positive item earns the negative weight strictly below
    its score plus half of the negative weight tied with it. Classes without positive or negative weight in
    a resample are left out of its mean.
    """
    total = np.zeros(len(weights))
    classes = np.zeros(len(weights))
    for c in range(num_classes):
        order = np.argsort(scores[:, c], kind="stable")
        s = scores[order, c]
        w = weights[:, order]
        pos = y[order] == c
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first item of each group of tied scores
        group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1
        neg_w = np.where(pos, 0, w)
        neg_group = neg_w if len(starts) == len(s) else np.add.reduceat(neg_w, starts, axis=1)  # (B, G)
        below = np.cumsum(neg_group, axis=1) - neg_group
        earned = below + 0.5 * neg_group
        earned = earned if len(starts) == len(s) else earned[:, group]  # (B, N)
        w_pos = np.where(pos, w, 0)
        p_total, n_total = w_pos.sum(axis=1), neg_group.sum(axis=1)
        ok = (p_total > 0) & (n_total > 0)
        auc = np.divide((w_pos * earned).sum(axis=1), p_total * n_total, out=np.zeros(len(w)), where=ok)
        total += np.where(ok, auc, 0.0)
        classes += ok
    return np.divide(total, classes, out=np.full(len(weights), np.nan), where=classes > 0)


def paired_seed_test(
    metric: str, baseline: Sequence[float], treatment: Sequence[float], *, alpha: float = 0.05
) -> Comparison:
    """Paired over seeds: ``baseline[i]`` and ``treatment[i]`` are scores of runs that share seed i.

    The interval is the Student t-interval of the mean paired difference with n-1 degrees of freedom and
    the p-value that of the two-sided paired t-test (as ``scipy.stats.ttest_rel``). With fewer than 2 seeds
    nothing about the spread is known: the interval is (-inf, inf), the p-value None. When every paired
    difference is the same, the interval collapses to that difference (p = 0, or 1 when it is 0): the seeds
    agree exactly, and no wider interval is defensible from them.
    """
    _check_alpha(alpha)
    b, t = np.asarray(baseline, dtype=float), np.asarray(treatment, dtype=float)
    if b.ndim != 1 or t.shape != b.shape or b.size == 0 or not np.isfinite(np.concatenate([b, t])).all():
        raise ValueError(
            f"baseline={b.tolist()} and treatment={t.tolist()} are not accepted; expected two equally long, "
            "non-empty sequences of finite scores, one per seed, paired by index"
        )
    n, d = b.size, t - b
    diff = float(d.mean())
    low, high, p_value = -math.inf, math.inf, None
    if n >= 2:
        sem = float(d.std(ddof=1)) / math.sqrt(n)
        if sem > 0:
            half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * sem
            low, high = diff - half, diff + half
            p_value = float(2 * sps.t.sf(abs(diff) / sem, n - 1))
        else:
            low, high, p_value = diff, diff, 1.0 if diff == 0 else 0.0
    method = f"paired t-interval over seeds ({n} seed{'s' if n != 1 else ''}, {_pct(alpha)} CI)"
    return _compare(metric, b, t, low, high, p_value, method)


Labels = np.ndarray | Sequence[np.ndarray]  # (N,) shared by every seed, or one (N,) per seed (repeated splits)


def paired_bootstrap(
    metric: str,
    y_true: Labels,
    baseline_preds: Sequence[np.ndarray],
    treatment_preds: Sequence[np.ndarray],
    score: ScoreFn,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Comparison:
    """Two-level paired bootstrap over seeds and test images.

    ``y_true`` (N,) labels; ``baseline_preds[i]`` and ``treatment_preds[i]`` (N,) predicted labels of the
    seed-i runs. With repeated splits each pair of runs has its own test set: ``y_true`` is then one array
    of labels per pair, in the same order (pairs with equal labels share their image draws). Each resample
    draws S pair indices and, per test set, its N test indices with replacement (the images are the same
    for both arms and every pair on that test set) and records the mean over the drawn pairs of
    score(treatment) - score(baseline). Interval: percentiles alpha/2 and 1-alpha/2; p-value:
    2 * min(share <= 0, share >= 0), capped at 1; both over the resamples where the score is defined (a
    minority recall is not where a resample drew no image of those classes), NaN and None when none is.
    Means, stds and ``diff`` come from the per-seed scores on
    the full test set. ``score`` is any ``score(y_true, y_pred) -> float``; :func:`accuracy_score`,
    :class:`MacroF1`, :class:`MinorityRecall` and :class:`MacroAUC` (which takes (N, C) class scores instead
    of labels) take a vectorised path, anything else is called once per resample, arm and seed.
    """
    _check_alpha(alpha)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} is not accepted; expected a positive integer, e.g. 2000")
    auc = isinstance(score, MacroAUC)
    num_classes = score.num_classes if isinstance(score, (MacroF1, MacroAUC)) else None
    ys, base, treat = _check_preds(y_true, baseline_preds, treatment_preds, num_classes, scores=auc)
    n_seeds = len(ys)
    groups = _groups(ys)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    prepared = [_prepare(score, ys[g[0]], [treat[u] for u in g], [base[u] for u in g]) for g in groups]
    chunk = max(1, 4_000_000 // (max(len(y) for y in ys) * n_seeds))  # bounds the blocks to a few tens of MB
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        per_seed = np.empty((size, n_seeds))
        for units, prep in zip(groups, prepared, strict=True):
            y = ys[units[0]]
            idx = rng.integers(0, len(y), size=(size, len(y)), dtype=np.int32)
            pairs = [treat[u] for u in units], [base[u] for u in units]
            per_seed[:, units] = _resampled_diffs(score, y, *pairs, prep, idx)
        drawn = rng.integers(0, n_seeds, size=(size, n_seeds))
        weights = _draw_counts(drawn, n_seeds) / n_seeds  # (B, S)
        diffs[start : start + size] = (weights * (np.nan_to_num(per_seed) if auc else per_seed)).sum(axis=1)
    defined = diffs[np.isfinite(diffs)]  # a resample that drew no image of the scored classes has no score
    low, high, p_value = math.nan, math.nan, None
    if len(defined):
        low, high = (float(q) for q in np.quantile(defined, [alpha / 2, 1 - alpha / 2]))
        p_value = min(1.0, 2 * min(float(np.mean(defined <= 0)), float(np.mean(defined >= 0))))
    b_scores, t_scores = (np.array([score(y, p) for y, p in zip(ys, arm, strict=True)]) for arm in (base, treat))
    method = (
        f"two-level paired bootstrap over seeds and test images ({n_boot:,} resamples, {n_seeds} seed(s), "
        f"{_pct(alpha)} CI)"
    )
    return _compare(metric, b_scores, t_scores, low, high, p_value, method)


def _groups(ys: list[np.ndarray]) -> list[list[int]]:
    """Pairs that share one test set (equal labels), in order of first appearance."""
    groups: list[list[int]] = []
    for i, y in enumerate(ys):
        home = next((g for g in groups if ys[g[0]] is y or np.array_equal(ys[g[0]], y)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return groups


def _prepare(score: ScoreFn, y: np.ndarray, treat: list[np.ndarray], base: list[np.ndarray]) -> Any:
    """What the vectorised path of ``score`` needs once per test set: items right, or F1 indicators."""
    if score is accuracy_score:
        return np.stack([(t == y).astype(np.float32) - (b == y) for t, b in zip(treat, base, strict=True)])
    if isinstance(score, MacroF1):
        preds = np.stack([*treat, *base])
        return _f1_indicators(np.broadcast_to(y, preds.shape), preds, score.num_classes)
    return None


def _resampled_diffs(
    score: ScoreFn, y: np.ndarray, treat: list[np.ndarray], base: list[np.ndarray], prep: Any, idx: np.ndarray
) -> np.ndarray:
    """(B, U) score(treatment) - score(baseline) of the U pairs on one test set, for the drawn (B, N) indices."""
    if score is accuracy_score:
        return np.asarray(prep[:, idx].mean(axis=2).T)  # (B, U)
    if isinstance(score, MacroF1):
        f1 = _resampled_macro_f1(idx, prep, score.num_classes)  # (B, 2 U): treatment runs, then baseline
        return np.asarray(f1[:, : len(treat)] - f1[:, len(treat) :])
    pairs = list(zip(treat, base, strict=True))
    if isinstance(score, MinorityRecall):
        return _resampled_minority_recall(idx, y, pairs, score.classes)
    if isinstance(score, MacroAUC):
        counts = _draw_counts(idx, len(y)).astype(np.float32)  # (B, N)
        c = score.num_classes
        return np.stack(
            [_weighted_macro_auc(y, t, counts, c) - _weighted_macro_auc(y, b, counts, c) for t, b in pairs], axis=1
        )
    return np.array([[score(y[row], t[row]) - score(y[row], b[row]) for t, b in pairs] for row in idx])


def _draw_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) how often each of ``n`` items was drawn in each row of the (B, K) indices ``idx``."""
    rows = idx.shape[0]
    return np.bincount((np.arange(rows)[:, None] * n + idx).ravel(), minlength=rows * n).reshape(rows, n)


def _resampled_minority_recall(
    idx: np.ndarray, y: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], classes: tuple[int, ...]
) -> np.ndarray:
    """(B, U) :class:`MinorityRecall` of treatment less baseline per resample; idx (B, N) drawn indices.

    The same numbers as calling the score on each resample (a class absent from a resample is left out of
    its mean), from the (B, N) draw counts times per-image indicators instead of 2 x B x U Python calls.
    """
    counts = _draw_counts(idx, len(y)).astype(np.float64)
    is_class = y[:, None] == np.asarray(classes)[None, :]  # (N, K)
    support = counts @ is_class.astype(np.float64)  # (B, K) drawn images of each class
    present = support > 0
    kept = present.sum(axis=1)

    def mean_recall(pred: np.ndarray) -> np.ndarray:
        hits = counts @ (is_class & (pred[:, None] == np.asarray(classes)[None, :])).astype(np.float64)
        recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
        return np.where(kept > 0, recall.sum(axis=1) / np.maximum(kept, 1), np.nan)

    return np.stack([mean_recall(t) - mean_recall(base) for t, base in pairs], axis=1)


def per_class_recall_diff(
    y_true: Labels, baseline_preds: Sequence[np.ndarray], treatment_preds: Sequence[np.ndarray], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(C,) mean over seeds of recall(treatment) - recall(baseline), and (C,) std over seeds of that difference.

    Paired by seed; std uses ddof=1 (0.0 with one seed). Classes without test images get NaN in both.
    """
    ys, base, treat = _check_preds(y_true, baseline_preds, treatment_preds, num_classes)

    def recall(y: np.ndarray, p: np.ndarray) -> np.ndarray:
        support = np.bincount(y, minlength=num_classes).astype(float)
        hits = np.bincount(y[p == y], minlength=num_classes).astype(float)
        return np.divide(hits, support, out=np.full(num_classes, np.nan), where=support > 0)

    d = np.stack([recall(y, t) - recall(y, b) for y, t, b in zip(ys, treat, base, strict=True)])
    std = d.std(axis=0, ddof=1) if len(d) > 1 else np.where(np.isnan(d[0]), np.nan, 0.0)
    return d.mean(axis=0), std


def _f1_indicators(y: np.ndarray, preds: np.ndarray, num_classes: int) -> sparse.csr_array:
    """(N, 3 C R) sparse 0/1 from (R, N) labels and predictions: per run, true class; true positives; prediction."""
    runs, n = preds.shape
    correct = preds == y  # (R, N)
    rows = np.concatenate([np.tile(np.arange(n), runs), np.nonzero(correct)[1], np.tile(np.arange(n), runs)])
    true_cols = [r * num_classes + t for r, t in enumerate(y)]
    tp_cols = [(runs + r) * num_classes + t[c] for r, (t, c) in enumerate(zip(y, correct, strict=True))]
    pred_cols = [(2 * runs + r) * num_classes + p for r, p in enumerate(preds)]
    cols = np.concatenate([*true_cols, *tp_cols, *pred_cols])
    shape = (n, 3 * num_classes * runs)
    return sparse.coo_array((np.ones(len(rows)), (rows, cols)), shape=shape).tocsr()


def _resampled_macro_f1(idx: np.ndarray, indicators: sparse.csr_array, num_classes: int) -> np.ndarray:
    """(B, R) macro-F1 of each run on each resample; idx (B, N) drawn indices, indicators of :func:`_f1_indicators`."""
    (b, n), c = idx.shape, num_classes
    runs = indicators.shape[1] // (3 * c)
    draws = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=idx.size).reshape(b, n)
    counts = (indicators.T @ draws.T.astype(float)).T.reshape(b, 3, runs, c)  # exact integer counts
    tp, support = counts[:, 1], counts[:, 0] + counts[:, 2]
    return np.divide(2 * tp, support, out=np.zeros_like(tp), where=support > 0).mean(axis=2)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not accepted; expected a number strictly between 0 and 1, e.g. 0.05")


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y_true), np.asarray(y_pred)
    if y.ndim != 1 or y.size == 0 or p.shape != y.shape:
        raise ValueError(f"y_true {y.shape} and y_pred {p.shape} are not accepted; expected two (N,) arrays, N > 0")
    return y, p


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes:  # callers ensure N > 0
        found = f"{labels.dtype} values" if labels.dtype.kind not in "iu" else f"values {labels.min()}..{labels.max()}"
        raise ValueError(f"{name} holds {found}; expected integer class labels in [0, {num_classes})")


def _check_preds(
    y_true: Labels,
    baseline_preds: Sequence[np.ndarray],
    treatment_preds: Sequence[np.ndarray],
    num_classes: int | None = None,
    *,
    scores: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Per pair: labels (N,), baseline and treatment predictions (N,), or (N, C) class scores with ``scores``.

    ``y_true`` is one (N,) array shared by every pair or one per pair. With ``num_classes``, every label must
    also be an integer in [0, num_classes). A ValueError says what does not fit.
    """
    n_seeds = len(baseline_preds)
    if len(treatment_preds) != n_seeds or n_seeds == 0:
        raise ValueError(
            f"baseline_preds has {n_seeds} seed(s) and treatment_preds {len(treatment_preds)}; "
            "expected the same number of seeds, at least one, paired by index"
        )
    shared = isinstance(y_true, np.ndarray) and y_true.ndim != 2
    ys = [np.asarray(y_true)] * n_seeds if shared else [np.asarray(y) for y in y_true]
    if len(ys) != n_seeds or any(y.ndim != 1 or y.size == 0 for y in ys):
        shapes = np.shape(y_true) if isinstance(y_true, np.ndarray) else [y.shape for y in ys[:3]]
        raise ValueError(
            f"y_true has shape {shapes}; expected a non-empty 1-D array of labels (N,), or one per seed "
            f"({n_seeds} of them)"
        )
    arms: list[list[np.ndarray]] = []
    for name, preds in (("baseline_preds", baseline_preds), ("treatment_preds", treatment_preds)):
        arrays = [np.asarray(p) for p in preds]
        for i, (p, y) in enumerate(zip(arrays, ys, strict=True)):
            expected = (len(y), num_classes) if scores else y.shape
            if p.shape != expected:
                what = "class scores" if scores else "like y_true"
                raise ValueError(f"{name}[{i}] has shape {p.shape}; expected {expected} {what}")
        arms.append(arrays)
    if num_classes is not None:
        for y in ys:
            _check_labels("y_true", y, num_classes)
        if not scores:
            for name, arm in (("baseline_preds", arms[0]), ("treatment_preds", arms[1])):
                for p in arm:
                    _check_labels(name, p, num_classes)
    return ys, arms[0], arms[1]


def _compare(
    metric: str, baseline: np.ndarray, treatment: np.ndarray, low: float, high: float, p: float | None, method: str
) -> Comparison:
    """A Comparison from (S,) per-seed scores of each arm and an interval of the difference; seeds whose score is
    undefined (a test set without the scored classes) are left out of the means while others have one."""
    defined = np.isfinite(baseline) & np.isfinite(treatment)
    if defined.any():
        baseline, treatment = baseline[defined], treatment[defined]
    bm, tm = float(baseline.mean()), float(treatment.mean())
    bs, ts = (float(x.std(ddof=1)) if x.size > 1 else 0.0 for x in (baseline, treatment))
    return Comparison(metric, bm, bs, tm, ts, tm - bm, low, high, p, len(baseline), method, verdict_from_ci(low, high))


def _pct(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"
