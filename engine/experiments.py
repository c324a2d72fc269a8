"""Experiments: a grid of mixes × seeds (× repeated splits) on one dataset, and the honest summary of what helped.

:func:`plan_experiment` writes the experiment and one queued run record per (mix, split, seed);
:func:`run_experiment` executes them in order (the CLI); the Train page submits the same runs as
jobs. Both build each split's dataset and load its synthetic sets once, first (:func:`split_inputs`).
With repeated splits, runs on split k > 1 are paired by seed ``1000·(k−1) + seed`` (:func:`unit_name`
says it in words) and every split has its own synthetic sets (``split_sets``; made by
``synth/split_sets.py``). :func:`summarize` compares every mix with the real baseline, paired by
split and seed: mean ± std, the 95% interval of the difference in
accuracy, macro-F1 and the minority classes' mean recall from a two-level paired bootstrap
(seeds and test images resampled), a paired t-interval over seeds as a second opinion, per-class recall
differences with the minority classes marked, and a verdict: helps / no detectable effect / hurts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import heartbeat, owners, records, runs, stats, store
from engine.config import DatasetConfig
from engine.datasets import ImageSet, LabDataset, build_dataset
from engine.jobs import user_message
from engine.metrics import SCALAR_METRICS
from engine.mixes import PRETRAIN_KINDS, MixConfig
from engine.models import ALL_MODELS, pretrained_parts
from engine.synth import sets
from engine.training import TrainConfig, TrainEvent

BASELINE = MixConfig(kind="real")
CONTROL_KINDS = ("oversample", "augment", "reweight", "pretrain_real")
DEFAULT_MIXES = (BASELINE, MixConfig(kind="oversample"), MixConfig(kind="augment"), MixConfig(kind="reweight"))
COMPARED = ("accuracy", "f1_macro")
MINORITY_RECALL = "minority_recall"  # mean recall over the minority classes, compared when there are some
MINORITY_SHARE = 0.5  # a class is "minority" when its real training count is below half the largest
MAX_SPLITS = 10
SPLIT_STRIDE = 1000  # with repeated splits, split k's runs use seeds k * SPLIT_STRIDE + seed
FEW_TEST_IMAGES = 30  # repeated splits are suggested when the smallest class has fewer test images than this


class ExperimentError(ValueError):
    """An experiment config or id is not accepted."""


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid of mixes × seeds; the real baseline is always part of it.

    Controls (oversample, augment, reweight) are matched to the ``add`` mix: they take its synthetic
    set (for the counts only) and, for reweight, its amount, so that each adds exactly as many images
    per class as ``add`` can take from the set, even when the set is short of some class.
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    mixes: tuple[MixConfig, ...] = DEFAULT_MIXES
    model: str = "simple_cnn"
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = (0, 1, 2)
    name: str = ""  # free text shown on the Compare page
    # Repeated stratified splits: split seeds dataset.split.seed + 0 .. splits - 1, every mix and seed on each,
    # so the intervals cover the variance of the split too. Synthetic sets are made per split (their
    # generators learn from the training split): split_sets maps (set of the first split, split seed) to
    # the set made the same way for that split.
    splits: int = 1
    split_sets: tuple[tuple[str, int, str], ...] = ()

    def __post_init__(self) -> None:
        if self.model not in ALL_MODELS:
            raise ExperimentError(f"model={self.model!r} is not accepted: expected one of {', '.join(ALL_MODELS)}.")
        seeds = tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
            raise ExperimentError(f"seeds={list(seeds)!r} is not accepted: expected distinct whole numbers >= 0.")
        mixes = tuple(self.mixes)
        if len({m.label for m in mixes}) != len(mixes):
            raise ExperimentError("mixes=" + ", ".join(m.label for m in mixes) + " is not accepted: a mix is repeated.")
        if BASELINE not in mixes:  # every mix is judged against the real baseline
            mixes = (BASELINE, *mixes)
        mixes = _match_controls(mixes)
        if not isinstance(self.splits, int) or not 1 <= self.splits <= MAX_SPLITS:
            raise ExperimentError(
                f"splits={self.splits!r} is not accepted: expected a whole number from 1 to {MAX_SPLITS}."
            )
        if self.splits > 1 and max(seeds) >= SPLIT_STRIDE:
            raise ExperimentError(
                f"seeds={list(seeds)!r} is not accepted with repeated splits: expected seeds below {SPLIT_STRIDE}."
            )
        split_sets = tuple((str(a), int(k), str(b)) for a, k, b in self.split_sets)
        object.__setattr__(self, "split_sets", split_sets)
        mapping = {(a, k): b for a, k, b in split_sets}
        needed = dict.fromkeys(m.synthetic_set for m in mixes if m.synthetic_set)
        missing = [(a, k) for a in needed for k in self.split_seeds()[1:] if (a, k) not in mapping]
        if missing:
            raise ExperimentError(
                f"split_sets has no set for split seed {missing[0][1]} made like {missing[0][0]!r}: with repeated "
                "splits every split needs its own synthetic set (its generator learns from that split's training "
                "images); make them first"
            )
        pretraining = [m.label for m in mixes if m.kind in PRETRAIN_KINDS]
        parts = pretrained_parts(self.model)
        if pretraining and parts is not None and parts[0] == "probe":
            raise ExperimentError(
                f"mix {pretraining[0]!r} is not accepted with model={self.model!r}: a linear probe on fixed features "
                "has no features to pretrain; choose a net trained from scratch or a fine-tuned backbone"
            )
        unmatched = [m.label for m in mixes if m.kind == "pretrain_real" and not m.synthetic_set]
        if unmatched:
            raise ExperimentError(
                f"mix {unmatched[0]!r} is not accepted without a synthetic set: its first phase takes as many real "
                "images per class as the set holds; add a 'pretrain' or 'add' mix, or name the set"
            )
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "mixes", mixes)

    def split_seeds(self) -> tuple[int, ...]:
        """The split seeds of the experiment, the dataset's own first."""
        return tuple(self.dataset.split.seed + k for k in range(self.splits))

    def split_dataset(self, split_seed: int) -> DatasetConfig:
        """The dataset config of one of the experiment's splits."""
        return dataclasses.replace(self.dataset, split=dataclasses.replace(self.dataset.split, seed=split_seed))

    def unit_seeds(self) -> tuple[int, ...]:
        """The seeds runs are paired by: the training seeds on the first split, offset per further split."""
        return tuple(k * SPLIT_STRIDE + seed for k in range(self.splits) for seed in self.seeds)

    def run_configs(self) -> list[runs.RunConfig]:
        """One run per mix, split and seed; runs on a further split use that split's synthetic sets."""
        mapping = {(a, k): b for a, k, b in self.split_sets}
        out = []
        for mix in self.mixes:
            for k, split_seed in enumerate(self.split_seeds()):
                data = self.split_dataset(split_seed) if k else self.dataset
                here = mix
                if k and mix.synthetic_set:
                    here = dataclasses.replace(mix, synthetic_set=mapping[(mix.synthetic_set, split_seed)])
                out += [runs.RunConfig(data, here, self.model, self.train, k * SPLIT_STRIDE + s) for s in self.seeds]
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """From a TOML or JSON mapping; unknown keys are an error naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExperimentError(f"{unknown[0]}={data[unknown[0]]!r} is not accepted: expected keys {sorted(known)}.")
        try:
            return cls(
                dataset=DatasetConfig.from_dict(data.get("dataset", {})),
                mixes=tuple(MixConfig(**m) for m in data.get("mixes", [dataclasses.asdict(m) for m in DEFAULT_MIXES])),
                model=data.get("model", "simple_cnn"),
                train=TrainConfig(**data.get("train", {})),
                seeds=tuple(data.get("seeds", (0, 1, 2))),
                name=str(data.get("name", "")),
                splits=data.get("splits", 1),
                split_sets=tuple(tuple(x) for x in data.get("split_sets", ())),
            )
        except TypeError as err:  # an unknown field inside a section
            raise ExperimentError(f"experiment config not accepted: {err}") from err


def _match_controls(mixes: tuple[MixConfig, ...]) -> tuple[MixConfig, ...]:
    """Controls without a set of their own take the set of the ``add`` mix they are compared with.

    The pretraining control takes the ``pretrain`` mix's set and schedule (or, without one, the add mix's set).
    """
    adds = {m.per_class: m for m in mixes if m.kind == "add"}
    only = next(iter(adds.values())) if len(adds) == 1 else None
    pretrain = next((m for m in mixes if m.kind == "pretrain"), None)
    out = []
    for mix in mixes:
        if mix.kind == "pretrain_real" and not mix.synthetic_set:
            if pretrain is not None:
                mix = dataclasses.replace(
                    mix,
                    synthetic_set=pretrain.synthetic_set,
                    pretrain_epochs=pretrain.pretrain_epochs,
                    finetune_lr_scale=pretrain.finetune_lr_scale,
                )
            elif only is not None:
                mix = dataclasses.replace(mix, synthetic_set=only.synthetic_set)
        elif mix.kind in CONTROL_KINDS and not mix.synthetic_set:
            add = only if mix.kind == "reweight" else adds.get(mix.per_class)
            if add is not None:
                mix = dataclasses.replace(mix, per_class=add.per_class, synthetic_set=add.synthetic_set)
        out.append(mix)
    return tuple(out)


@dataclass(frozen=True)
class ExperimentRecord:
    id: str
    config: ExperimentConfig
    run_ids: tuple[tuple[str, int, str], ...]  # (mix label, seed, run id)
    created: float
    dataset_key: str = ""  # LabDataset.key of the dataset the runs trained on
    owner: str = ""  # the user who started it ("" in records older than owners: the local user's)
    shared: bool = False  # every user of the server sees it (read-only)
    schema: int = records.SCHEMA


@dataclass(frozen=True)
class MixSummary:
    """One mix of an experiment against the baseline."""

    label: str
    kind: str
    runs_done: int
    runs_total: int
    synthetic_share: float
    means: dict[str, float]  # scalar metric -> mean over finished seeds
    stds: dict[str, float]
    comparisons: dict[str, stats.Comparison]  # "accuracy" / "f1_macro" -> two-level bootstrap
    seed_tests: dict[str, stats.Comparison]  # the same, paired t over seeds
    recall_diff: tuple[float, ...]  # per class, mean over seeds vs baseline
    recall_diff_std: tuple[float, ...]
    short: tuple[str, ...] = ()  # classes that got fewer synthetic images than asked, e.g. "'1': 5 of 115"


@dataclass(frozen=True)
class ExperimentSummary:
    experiment: ExperimentRecord
    class_names: tuple[str, ...]
    minority: tuple[str, ...]
    mixes: tuple[MixSummary, ...]


def experiments_dir() -> Path:
    return store.subdir("experiments")


def plan_experiment(cfg: ExperimentConfig, dataset_key: str = "") -> ExperimentRecord:
    """Save the experiment and a queued record for each of its runs."""
    exp_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    planned = []
    for run_cfg in cfg.run_configs():
        run_id = runs.new_run_id()
        runs.save_record(
            runs.RunRecord(
                run_id,
                run_cfg,
                "queued",
                experiment=exp_id,
                created=time.time(),
                pid=os.getpid(),
                owner=owners.owner_name(),
                host=heartbeat.host(),
            )
        )
        planned.append((run_cfg.mix.label, run_cfg.seed, run_id))
    record = ExperimentRecord(exp_id, cfg, tuple(planned), time.time(), dataset_key, owner=owners.owner_name())
    save_experiment(record)
    return record


def save_experiment(record: ExperimentRecord) -> None:
    data = dataclasses.asdict(record)
    data["config"] = record.config.to_dict()
    store.write_json(experiments_dir() / f"{record.id}.json", data)


def load_experiment(exp_id: str) -> ExperimentRecord:
    path = experiments_dir() / f"{exp_id}.json"
    if not path.is_file():
        raise ExperimentError(f"experiment={exp_id!r} is not in this workspace")
    data = records.migrate("experiment", json.loads(path.read_text()), exp_id)
    return ExperimentRecord(
        data["id"],
        ExperimentConfig.from_dict(data["config"]),
        tuple((str(label), int(seed), str(run_id)) for label, seed, run_id in data["run_ids"]),
        data["created"],
        data["dataset_key"],
        owner=owners.owner_of(data["owner"]),
        shared=bool(data["shared"]),
    )


def list_experiments() -> list[ExperimentRecord]:
    """The experiments the acting user may see (their own and shared ones; all for an admin), newest first."""
    out = []
    for path in sorted(experiments_dir().glob("*.json"), reverse=True):
        try:
            record = load_experiment(path.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if owners.can_see(record.owner, record.shared):
            out.append(record)
    return out


def set_shared(exp_id: str, shared: bool) -> ExperimentRecord:
    """Share an experiment with every user of the server (read-only), or stop sharing it; owner or admin only."""
    record = load_experiment(exp_id)
    owners.check_can_change(record.owner, f"the experiment {exp_id!r}", "share or unshare")
    record = dataclasses.replace(record, shared=bool(shared))
    save_experiment(record)
    return record


def synthetic_pools(
    cfg: ExperimentConfig, dataset: LabDataset, synthetic: Callable[[str], ImageSet] | None
) -> dict[str, ImageSet]:
    """Every synthetic set the experiment's mixes name, loaded once, before any run is planned.

    All seeds then train on the same images even if the set is edited or deleted while runs wait in the
    queue. A stored set made for another split or imbalance of the source is refused: its generator may
    have learnt from this dataset's test images.
    """
    return _load_pools([m.synthetic_set for m in cfg.mixes if m.synthetic_set], dataset, synthetic)


def split_inputs(
    cfg: ExperimentConfig, dataset: LabDataset | None, synthetic: Callable[[str], ImageSet] | None
) -> dict[int, tuple[LabDataset, dict[str, ImageSet]]]:
    """Per split seed: the dataset of that split and the synthetic sets its runs name, loaded once and checked.

    ``dataset`` is the experiment's own (first) split when the caller has it built already.
    """
    configs = cfg.run_configs()
    out = {}
    for k, split_seed in enumerate(cfg.split_seeds()):
        data = dataset if k == 0 and dataset is not None else build_dataset(cfg.split_dataset(split_seed))
        named = [c.mix.synthetic_set for c in configs if c.dataset.split.seed == split_seed and c.mix.synthetic_set]
        out[split_seed] = (data, _load_pools(named, data, synthetic))
    return out


def _load_pools(
    set_ids: list[str], dataset: LabDataset, synthetic: Callable[[str], ImageSet] | None
) -> dict[str, ImageSet]:
    pools: dict[str, ImageSet] = {}
    for set_id in dict.fromkeys(set_ids):
        try:
            made_for = sets.load_info(set_id).dataset_key
        except sets.SetError:
            made_for = None  # not a stored set: the caller's loader knows it
        if made_for is not None and made_for != dataset.key:
            raise ExperimentError(
                f"mix.synthetic_set={set_id!r} is not accepted: it was made for another split or imbalance of "
                "this source, whose generator may have seen this dataset's test images; make a set for this one"
            )
        if synthetic is None:
            raise ExperimentError(f"mix.synthetic_set={set_id!r} needs a synthetic set loader, and none was given")
        pools[set_id] = synthetic(set_id)
    return pools


def run_experiment(
    cfg: ExperimentConfig,
    *,
    dataset: LabDataset | None = None,
    synthetic: Callable[[str], ImageSet] | None = None,
    on_run: Callable[[int, int, str], None] | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
) -> ExperimentRecord:
    """Plan and execute every run in order (headless); a failed run is recorded and the rest go on."""
    inputs = split_inputs(cfg, dataset, synthetic)
    record = plan_experiment(cfg, inputs[cfg.dataset.split.seed][0].key)
    for i, (label, seed, run_id) in enumerate(record.run_ids):
        if on_run:
            on_run(i, len(record.run_ids), f"{label} {unit_name(seed)}")
        run_cfg = runs.load_record(run_id).config
        data, pools = inputs[run_cfg.dataset.split.seed]
        try:
            pool = pools.get(run_cfg.mix.synthetic_set)
            runs.execute_run(run_id, run_cfg, data, synthetic=pool, experiment=record.id, on_event=on_event)
        except Exception as err:  # execute_run recorded it; a missing synthetic set fails before it starts
            rec = runs.load_record(run_id)
            if rec.status != "failed":
                runs.save_record(dataclasses.replace(rec, status="failed", error=user_message(err)))
    return record


def unit_name(seed: int) -> str:
    """How a run's pairing seed reads: "seed 2", or "split 2 · seed 1" on a further split."""
    split, train_seed = divmod(seed, SPLIT_STRIDE)
    return f"split {split + 1} · seed {train_seed}" if split else f"seed {train_seed}"


def minority_classes(counts: tuple[int, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """Classes whose real training count is below half the largest class's."""
    if not counts:
        return ()
    largest = max(counts)
    return tuple(n for n, c in zip(names, counts, strict=True) if c < MINORITY_SHARE * largest)


def summarize(exp_id: str, *, n_boot: int = 2000) -> ExperimentSummary:
    """Compare every mix with the real baseline over the seeds both have finished."""
    record = load_experiment(exp_id)
    recs = {run_id: runs.load_record(run_id) for _, _, run_id in record.run_ids}
    done = {(label, seed): run_id for label, seed, run_id in record.run_ids if recs[run_id].status == "done"}
    preds = {run_id: runs.load_predictions(run_id) for run_id in done.values()}
    base_label = BASELINE.label
    base_recs = [recs[rid] for (lab, _), rid in done.items() if lab == base_label]
    # A run cancelled in the queue never learnt the class names: take them from one that ran.
    named = [r for r in (*base_recs, *(recs[rid] for rid in done.values()), *recs.values()) if r.class_names]
    names = named[0].class_names if named else ()
    imbalance = record.config.dataset.imbalance
    if imbalance.kind == "step":  # the classes the user cut are the minority, whatever their counts
        minority = tuple(n for n in names if n in imbalance.minority)
    else:
        counted = [r for r in named if r.real_counts]
        minority = minority_classes(counted[0].real_counts, names) if counted else ()
    summaries = []
    units = record.config.unit_seeds()
    for mix in record.config.mixes:
        seeds = [s for s in units if (mix.label, s) in done]
        mix_recs = [recs[done[(mix.label, s)]] for s in seeds]
        means, stds = {}, {}
        for m in SCALAR_METRICS:  # a metric can be undefined (None) for some or all runs, e.g. ROC-AUC
            values = [v for v in (_metric(r, m) for r in mix_recs) if not np.isnan(v)]
            means[m] = float(np.mean(values)) if values else float("nan")
            stds[m] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        paired = [s for s in seeds if (base_label, s) in done]
        comparisons: dict[str, stats.Comparison] = {}
        seed_tests: dict[str, stats.Comparison] = {}
        diff: tuple[float, ...] = ()
        diff_std: tuple[float, ...] = ()
        if mix.label != base_label and paired:
            y_true = [preds[done[(base_label, s)]][0] for s in paired]  # each split has its own test set
            base_p = [preds[done[(base_label, s)]][1].argmax(1) for s in paired]
            mix_p = [preds[done[(mix.label, s)]][1].argmax(1) for s in paired]
            scorers: dict[str, stats.ScoreFn] = {
                "accuracy": stats.accuracy_score,
                "f1_macro": stats.MacroF1(len(names)),
            }
            if minority:  # the question users ask: did the minority classes gain?
                scorers[MINORITY_RECALL] = stats.MinorityRecall(tuple(names.index(n) for n in minority))
            for metric, scorer in scorers.items():
                comparisons[metric] = stats.paired_bootstrap(metric, y_true, base_p, mix_p, scorer, n_boot=n_boot)
                scores = [
                    (scorer(y, b), scorer(y, p)) for y, b, p in zip(y_true, base_p, mix_p, strict=True)
                ]  # undefined (NaN) on a test set without the metric's classes: health_warnings names them
                scored = [pair for pair in scores if np.isfinite(pair).all()]
                if scored:
                    seed_tests[metric] = stats.paired_seed_test(metric, [b for b, _ in scored], [t for _, t in scored])
            d, sd = stats.per_class_recall_diff(y_true, base_p, mix_p, len(names))
            diff, diff_std = tuple(float(x) for x in d), tuple(float(x) for x in sd)
        share = mix_recs[0].synthetic_share if mix_recs else 0.0
        started = [recs[rid] for lab, _, rid in record.run_ids if lab == mix.label and recs[rid].short]
        summaries.append(
            MixSummary(
                mix.label,
                mix.kind,
                len(mix_recs),
                len(units),
                share,
                means,
                stds,
                comparisons,
                seed_tests,
                diff,
                diff_std,
                started[0].short if started else (),
            )
        )
    return ExperimentSummary(record, tuple(names), minority, tuple(summaries))


def unconverged_runs(summary: ExperimentSummary) -> list[str]:
    """Finished runs that hit the epoch limit while their validation loss was still at its best.

    Such runs were cut short: a mix with more images took more optimiser steps per epoch than the
    baseline, so a difference may come from training length rather than from the data.
    """
    limit = summary.experiment.config.train.max_epochs
    out = []
    for label, seed, run_id in summary.experiment.run_ids:
        rec = runs.load_record(run_id)
        first = rec.config.mix.pretrain_epochs if rec.config.mix.kind in PRETRAIN_KINDS else 0  # the first phase's
        if rec.status == "done" and rec.epochs - first >= limit and rec.best_epoch - first >= limit - 1:
            out.append(f"{label} {unit_name(seed)}")
    return out


def shortfall_notes(summary: ExperimentSummary) -> list[str]:
    """One sentence per mix whose synthetic set was short of some class, naming the classes and counts."""
    notes = []
    for mix in summary.mixes:
        if mix.short:
            matched = " (the controls were matched to the same counts)" if mix.kind == "add" else ""
            notes.append(
                f"{mix.label}: the synthetic set had fewer images than asked for class {', '.join(mix.short)}; "
                f"the mix used what the set had{matched}"
            )
    return notes


def _metric(record: runs.RunRecord, name: str) -> float:
    value = record.headline.get(name)
    return float("nan") if value is None else float(value)


def measured(comp: stats.Comparison) -> bool:
    """Whether the comparison has a difference and an interval: not when the test sets hold none of the metric's
    classes (e.g. minority classes whose held-out images were all near-copies of training images)."""
    return bool(np.isfinite([comp.diff, comp.ci_low, comp.ci_high]).all())


def verdict_word(comp: stats.Comparison) -> str:
    """A comparison's verdict, or "not measured" (see :func:`measured`)."""
    return comp.verdict if measured(comp) else "not measured"


def results_table(summary: ExperimentSummary) -> list[dict[str, Any]]:
    """One row per mix: the verdicts against the baseline first, then the differences with their intervals, means."""
    rows = []
    compared = (*([MINORITY_RECALL] if summary.minority else []), *COMPARED)
    for mix in summary.mixes:
        row: dict[str, Any] = {"mix": mix.label, "runs": f"{mix.runs_done}/{mix.runs_total}"}
        for metric in compared:
            comp = mix.comparisons.get(metric)
            row[f"verdict ({metric})"] = verdict_word(comp) if comp else ("baseline" if mix.kind == "real" else "")
        row["synthetic or augmented %"] = round(100 * mix.synthetic_share, 1)
        for metric in compared:
            comp = mix.comparisons.get(metric)
            shown = comp is not None and measured(comp)
            absent = "baseline" if mix.kind == "real" else "—"
            row[f"Δ {metric}"] = f"{comp.diff:+.4f}" if comp and shown else absent
            row[f"Δ {metric} 95% CI"] = f"[{comp.ci_low:+.4f}, {comp.ci_high:+.4f}]" if comp and shown else ""
        for metric in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_macro"):
            value = mix.means[metric]  # nan until a run of the mix finishes (or for a metric it cannot have)
            row[metric] = "—" if np.isnan(value) else f"{value:.4f} ± {mix.stds[metric]:.4f}"
        rows.append(row)
    return rows


def export_bundle(summary: ExperimentSummary) -> dict[str, Any]:
    """A JSON-ready bundle: the config the CLI can re-run, seeds, dataset identity, metrics per run."""
    record = summary.experiment
    per_run = []
    for label, seed, run_id in record.run_ids:
        rec = runs.load_record(run_id)
        per_run.append({"mix": label, "seed": seed, "run": run_id, "status": rec.status, "metrics": rec.headline})
    config = record.config.to_dict()
    source = config["dataset"]["source"]
    source["path"] = owners.public_source_path(source["path"])  # a bundle leaves the server: no server paths
    return {
        "experiment": record.id,
        "config": config,
        "dataset_key": record.dataset_key,
        "runs": per_run,
        "results": results_table(summary),
        "minority_classes": list(summary.minority),
        "method": next((c.method for m in summary.mixes for c in m.comparisons.values()), ""),
    }
