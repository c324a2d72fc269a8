"""The headline of an experiment: did the synthetic images beat every cheap control? And is the answer sound?

:func:`primary_metric` fixes, from the config alone and so before any run, the metric the headline
judges: the minority classes' mean recall when classes were cut on purpose, else macro-F1.
:func:`health_warnings` lists what makes a comparison meaningless (a run that predicts one class for
almost every test image, a from-scratch run that was best after one or two epochs, classes with too few
validation or test images, failed runs, classes the generator was given up on). :func:`headline`
compares the experiment's first synthetic mix, fixed by the config, with the real baseline and with
every control (oversample, augment, reweight) by the same two-level paired bootstrap as the summary:

* *yes*: the interval of the difference lies above 0 against every one of them;
* *no*: the interval lies below 0 against at least one (named);
* *can't tell*: otherwise, or whenever a health warning stands (then neither yes nor no), with the
  reason and the smallest difference this experiment could have detected (the widest interval's
  half-width).

The best control is never picked after seeing the results: every control must be beaten.
Where this stops: numbers and sentences out; no plotting, no training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine import runs, stats
from engine.experiments import (
    BASELINE,
    CONTROL_KINDS,
    MINORITY_RECALL,
    ExperimentConfig,
    ExperimentSummary,
    unit_name,
)
from engine.mixes import SYNTHETIC_KINDS
from engine.models import MODEL_NAMES
from engine.synth import sets

Answer = Literal["yes", "no", "can't tell"]
CONSTANT_SHARE = 0.9  # a run predicting one class for this share of the test images has learnt the frequencies
EARLY_EPOCH = 2  # a from-scratch run best at or before this epoch stopped learning at once
MIN_VAL, MIN_TEST = 10, 20  # images per class below which a class cannot be judged
METRIC_WORDS = {
    MINORITY_RECALL: "minority-class recall",
    "f1_macro": "macro-F1",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc_macro": "macro ROC-AUC",
}
AUC_BOOT = 1000  # resamples for macro ROC-AUC, a secondary metric whose resamples cost far more than the others


@dataclass(frozen=True)
class Headline:
    """One answer to "did the synthetic images beat every cheap control?" for one synthetic mix."""

    answer: Answer
    mix: str  # the synthetic mix judged (the first one in the config)
    metric: str  # the primary metric, fixed by the config before the runs
    sentence: str  # the answer in words, naming the control that won or the reason
    against: dict[str, stats.Comparison]  # opponent mix label -> comparison on the primary metric
    others: dict[str, dict[str, stats.Comparison]]  # secondary metric -> opponent -> comparison
    reasons: tuple[str, ...]  # health warnings that forbid a "yes"
    detectable: float | None  # half-width of the widest interval: smaller differences go unseen


def primary_metric(cfg: ExperimentConfig) -> str:
    """The headline's metric, from the config alone: minority recall when classes were cut, else macro-F1."""
    return MINORITY_RECALL if cfg.dataset.imbalance.kind != "none" else "f1_macro"


def health_warnings(summary: ExperimentSummary) -> list[str]:
    """Sentences naming what makes this experiment's comparisons unsound; empty when none applies."""
    record, names = summary.experiment, summary.class_names
    warnings: list[str] = []
    recs = {run_id: runs.load_record(run_id) for _, _, run_id in record.run_ids}
    # 1. Runs that failed: their mix is judged on fewer seeds, or not at all.
    for label, seed, run_id in record.run_ids:
        if recs[run_id].status == "failed":
            warnings.append(f"{label} {unit_name(seed)} failed ({_plain(recs[run_id].error)})")
    # 2. Runs that predict one class for nearly every test image, or stopped learning at once.
    for label, seed, run_id in record.run_ids:
        rec = recs[run_id]
        if rec.status != "done":
            continue
        y_true, probs = runs.load_predictions(run_id)
        predicted = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / max(1, len(y_true))
        top = int(predicted.argmax())
        true_share = float(np.mean(y_true == top)) if len(y_true) else 0.0
        if predicted[top] >= CONSTANT_SHARE > true_share and names:
            warnings.append(
                f"{label} {unit_name(seed)} predicts {names[top]!r} for {predicted[top]:.0%} of the test images: it "
                "learnt the class frequencies, not the classes, so any mix that shifts predictions looks like a gain"
            )
        scratch = rec.config.model in MODEL_NAMES
        if scratch and 0 < rec.best_epoch <= EARLY_EPOCH and rec.epochs > rec.best_epoch:
            warnings.append(
                f"{label} {unit_name(seed)} was best after epoch {rec.best_epoch} of {rec.epochs}: it stopped "
                "learning at once (too few validation images, or a learning rate too high)"
            )
    # 3. Classes with too few validation or test images to be judged.
    per_split = {r.config.dataset.split.seed: r for r in recs.values() if r.val_counts and r.test_counts}
    if per_split:  # pooled over repeated splits: each split holds its classes' images out once
        vals = np.sum([r.val_counts for r in per_split.values()], axis=0)
        tests = np.sum([r.test_counts for r in per_split.values()], axis=0)
        for c, name in enumerate(names):
            val, test = int(vals[c]), int(tests[c])
            if val < MIN_VAL or test < MIN_TEST:
                warnings.append(
                    f"class {name!r} has {val} validation and {test} test images (at least {MIN_VAL} and {MIN_TEST} "
                    "are needed to judge it): use more images of it"
                )
    # 4. Classes the generator was given up on: the synthetic mix never received them.
    for set_id in dict.fromkeys(m.synthetic_set for m in record.config.mixes if m.kind in SYNTHETIC_KINDS):
        try:
            given_up = sets.load_info(set_id).config.get("given_up", [])
        except sets.SetError:
            continue
        if given_up:
            warnings.append(
                f"the synthetic set {set_id} has no images of class {', '.join(map(repr, given_up))}: its generator "
                "drew nothing the filter recognised as that class"
            )
    return warnings


def headline(summary: ExperimentSummary, *, n_boot: int = 2000) -> Headline | None:
    """The answer for the config's first synthetic mix against the baseline and every control; None without one."""
    # 1. The mix judged and its opponents, both fixed by the config.
    cfg = summary.experiment.config
    judged = next((m for m in cfg.mixes if m.kind in SYNTHETIC_KINDS), None)
    if judged is None:
        return None
    metric = primary_metric(cfg)
    if metric == MINORITY_RECALL and not summary.minority:
        metric = "f1_macro"
    opponents = [BASELINE.label] + [m.label for m in cfg.mixes if m.kind in CONTROL_KINDS]
    # 2. Paired bootstrap of the mix against each opponent, on the seeds both finished.
    scorers = _scorers(summary)
    against: dict[str, stats.Comparison] = {}
    others: dict[str, dict[str, stats.Comparison]] = {m: {} for m in (*scorers, "roc_auc_macro") if m != metric}
    for opponent in opponents:
        pair = _paired_predictions(summary, opponent, judged.label)
        if pair is None:
            continue
        y_true, base_probs, mix_probs = pair
        base_p, mix_p = [p.argmax(1) for p in base_probs], [p.argmax(1) for p in mix_probs]
        for name, scorer in scorers.items():
            comp = stats.paired_bootstrap(name, y_true, base_p, mix_p, scorer, n_boot=n_boot)
            if name == metric:
                against[opponent] = comp
            else:
                others[name][opponent] = comp
        # Threshold-free: a gain in ranking, not only a moved decision threshold (which reweighting also gives).
        auc = stats.MacroAUC(len(summary.class_names))
        others["roc_auc_macro"][opponent] = stats.paired_bootstrap(
            "roc_auc_macro", y_true, base_probs, mix_probs, auc, n_boot=min(n_boot, AUC_BOOT)
        )
    # 3. The answer: every opponent beaten, some opponent ahead, or not enough to tell.
    reasons = tuple(health_warnings(summary))
    widths = [(c.ci_high - c.ci_low) / 2 for c in against.values() if np.isfinite(c.ci_high - c.ci_low)]
    detectable = max(widths) if widths else None
    words, label = METRIC_WORDS.get(metric, metric), judged.label
    missing = [o for o in opponents if o not in against]
    worse = [o for o, c in against.items() if c.ci_high < 0]
    if missing:
        answer: Answer = "can't tell"
        sentence = f"Can't tell yet: {_names(missing)} and {label!r} have no finished runs with the same seeds."
    elif reasons:  # an unsound experiment answers neither yes nor no
        answer = "can't tell"
        sentence = f"Can't tell: {reasons[0]}."
    elif worse:
        answer = "no"
        sentence = f"No: on {words}, {label!r} did worse than {_names(worse)}."
    elif all(c.ci_low > 0 for c in against.values()):
        answer = "yes"
        sentence = f"Yes: on {words}, {label!r} beat {_names(opponents)}, each by an interval above zero."
    else:
        answer = "can't tell"
        tied = [o for o, c in against.items() if c.ci_low <= 0]
        size = f" (about ±{100 * detectable:.1f} points)" if detectable is not None else ""
        sentence = (
            f"Can't tell: on {words}, {label!r} did not beat {_names(tied)} by more than this experiment can "
            f"detect{size}."
        )
    return Headline(answer, label, metric, sentence, against, others, reasons, detectable)


def _scorers(summary: ExperimentSummary) -> dict[str, stats.ScoreFn]:
    """Primary and secondary metrics by label-based scorers (balanced accuracy = mean recall over classes)."""
    n = len(summary.class_names)
    scorers: dict[str, stats.ScoreFn] = {
        "accuracy": stats.accuracy_score,
        "f1_macro": stats.MacroF1(n),
        "balanced_accuracy": stats.MinorityRecall(tuple(range(n))),
    }
    if summary.minority:
        scorers[MINORITY_RECALL] = stats.MinorityRecall(tuple(summary.class_names.index(c) for c in summary.minority))
    return scorers


def _paired_predictions(
    summary: ExperimentSummary, base: str, mix: str
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] | None:
    """Test labels and the class probabilities of both mixes on the seeds both finished; None when none did."""
    done = {
        (label, seed): run_id
        for label, seed, run_id in summary.experiment.run_ids
        if runs.load_record(run_id).status == "done"
    }
    seeds = [s for s in summary.experiment.config.unit_seeds() if (base, s) in done and (mix, s) in done]
    if not seeds:
        return None
    y_true = [runs.load_predictions(done[(base, s)])[0] for s in seeds]  # each split has its own test set
    base_p = [runs.load_predictions(done[(base, s)])[1] for s in seeds]
    mix_p = [runs.load_predictions(done[(mix, s)])[1] for s in seeds]
    return y_true, base_p, mix_p


def _names(labels: list[str]) -> str:
    quoted = [repr(x) for x in labels]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _plain(error: str) -> str:
    """A run's stored error without the exception class name in front."""
    head, sep, rest = error.partition(": ")
    return rest if sep and head.isidentifier() and head[:1].isupper() else error
