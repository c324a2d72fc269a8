"""Repeated stratified splits: runs per split, the bootstrap paired by split and seed, sets made per split."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest

from engine import experiments, runs, stats, verdicts
from engine.config import DatasetConfig, ImbalanceConfig, SplitConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.synth import filters, gan, generators, make_sets, sets, split_sets
from engine.training import TrainConfig
from tests.conftest import store_images_as_set

CPU = TrainConfig(max_epochs=2, batch_size=64, device="cpu", precision="fp32")
CUT = DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1))


def test_per_split_labels_give_the_same_answer_on_every_path() -> None:
    rng = np.random.default_rng(0)
    y = [rng.integers(0, 4, 200) for _ in range(3)]  # three splits: three test sets of one size

    def run(t: np.ndarray, acc: float) -> np.ndarray:
        return np.where(rng.random(len(t)) < acc, t, (t + 1) % 4)

    base, treat = [run(t, 0.7) for t in y], [run(t, 0.8) for t in y]
    for score in (stats.accuracy_score, stats.MacroF1(4)):
        fast = stats.paired_bootstrap("m", y, base, treat, score, n_boot=200, seed=1)
        slow = stats.paired_bootstrap("m", y, base, treat, lambda a, b, s=score: s(a, b), n_boot=200, seed=1)
        assert (fast.ci_low, fast.ci_high, fast.diff) == pytest.approx((slow.ci_low, slow.ci_high, slow.diff))
        expected = np.mean([score(t, p) for t, p in zip(y, treat, strict=True)])
        assert fast.treatment_mean == pytest.approx(expected)
    shared = stats.paired_bootstrap("a", y[0], base[:1], treat[:1], stats.accuracy_score, n_boot=100)
    listed = stats.paired_bootstrap("a", y[:1], base[:1], treat[:1], stats.accuracy_score, n_boot=100)
    assert shared == listed
    with pytest.raises(ValueError, match=r"or one per seed \(3 of them\)"):
        stats.paired_bootstrap("a", y[:2], base, treat, stats.accuracy_score)


def test_every_mix_and_seed_runs_on_each_split_and_pairs_by_split_and_seed() -> None:
    one_epoch = dataclasses.replace(CPU, max_epochs=1)
    cfg = experiments.ExperimentConfig(
        dataset=CUT, mixes=(MixConfig("oversample"),), train=one_epoch, seeds=(0, 1), splits=2
    )
    assert cfg.unit_seeds() == (0, 1, 1000, 1001)
    record = experiments.run_experiment(cfg)
    recs = [runs.load_record(run_id) for _, _, run_id in record.run_ids]
    assert [r.status for r in recs] == ["done"] * 8
    assert {(r.config.dataset.split.seed, r.config.seed) for r in recs} == {(0, 0), (0, 1), (1, 1000), (1, 1001)}
    assert len({r.dataset_key for r in recs}) == 2  # two different splits
    summary = experiments.summarize(record.id, n_boot=100)
    over = summary.mixes[1]
    assert (over.runs_done, over.runs_total) == (4, 4) and over.comparisons["accuracy"].n_seeds == 4
    assert experiments.unit_name(1001) == "split 2 · seed 1" and experiments.unit_name(1) == "seed 1"
    again = experiments.ExperimentConfig.from_dict(json_roundtrip(cfg.to_dict()))
    assert again == cfg
    with pytest.raises(experiments.ExperimentError, match=r"splits=11 .* 1 to 10"):
        dataclasses.replace(cfg, splits=11)


def json_roundtrip(data: dict) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads(json.dumps(data))


def test_a_set_is_made_again_on_another_split_like_the_first_and_found_after(monkeypatch: pytest.MonkeyPatch) -> None:
    def keep_all(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        n = len(labels)
        return filters.FilterResult(labels, np.ones(n), np.ones(n, bool), ("",) * n)

    monkeypatch.setattr(filters, "confidence_filter", keep_all)  # a tiny GAN draws little: keep every image
    short = partial(filters.train_reference_classifier, max_epochs=2)  # the judge's quality is not under test
    monkeypatch.setattr(filters, "train_reference_classifier", short)
    first = build_dataset(DatasetConfig())
    tiny = gan.GanConfig(steps=4, width=8, batch_size=16, sample_every=2)
    request = make_sets.GenerateConfig(generator=generators.train_generator(tiny, first), per_class=2, classes=("0",))
    info = make_sets.make_set(request, first)
    found, missing = split_sets.split_sets([info.id], first.config, 2)
    assert found == () and missing == [(info.id, 1)]
    second = build_dataset(DatasetConfig(split=SplitConfig(seed=1)))
    made = split_sets.make_split_set(info.id, second)
    made_info = sets.load_info(made)
    assert made_info.dataset_key == second.key and made_info.generator != info.generator
    assert made_info.counts_kept == info.counts_kept and split_sets.recipe_key(made_info) == split_sets.recipe_key(info)
    assert split_sets.make_split_set(info.id, second) == made  # found, not made twice
    assert split_sets.split_sets([info.id], first.config, 2) == (((info.id, 1, made),), [])


def test_a_synthetic_mix_runs_on_each_split_with_that_splits_set() -> None:
    datasets = [build_dataset(dataclasses.replace(CUT, split=SplitConfig(seed=k))) for k in (0, 1)]
    ids = []
    for data in datasets:
        labels = data.train.labels.numpy()
        index = np.flatnonzero(labels == 0)[:5]
        ids.append(store_images_as_set(data, data.train.images[index].numpy(), labels[index]))
    add = MixConfig("add", per_class=5, synthetic_set=ids[0])
    with pytest.raises(experiments.ExperimentError, match="split_sets has no set for split seed 1"):
        experiments.ExperimentConfig(dataset=CUT, mixes=(add,), splits=2)
    cfg = experiments.ExperimentConfig(
        dataset=CUT,
        mixes=(add, MixConfig("oversample", per_class=5)),
        train=dataclasses.replace(CPU, max_epochs=1),
        seeds=(0,),
        splits=2,
        split_sets=((ids[0], 1, ids[1]),),
    )
    record = experiments.run_experiment(cfg, dataset=datasets[0], synthetic=sets.load_set)
    recs = {(label, seed): runs.load_record(run_id) for label, seed, run_id in record.run_ids}
    assert all(r.status == "done" for r in recs.values())
    assert recs[("add +5/class", 0)].config.mix.synthetic_set == ids[0]
    assert recs[("add +5/class", 1000)].config.mix.synthetic_set == ids[1]
    assert recs[("oversample +5/class", 1000)].config.mix.synthetic_set == ids[1]  # matched to that split's add
    assert recs[("add +5/class", 1000)].dataset_key == datasets[1].key
    head = verdicts.headline(experiments.summarize(record.id, n_boot=50), n_boot=50)
    assert head is not None and head.against["real"].n_seeds == 2


def test_a_set_the_lab_did_not_draw_cannot_be_made_again_for_another_split() -> None:
    first = build_dataset(DatasetConfig())
    labels = first.train.labels.numpy()
    index = np.flatnonzero(labels == 0)[:3]
    set_id = store_images_as_set(first, first.train.images[index].numpy(), labels[index])
    second = build_dataset(DatasetConfig(split=SplitConfig(seed=1)))
    with pytest.raises(split_sets.SplitSetError, match="cannot be made again for another split"):
        split_sets.make_split_set(set_id, second)
