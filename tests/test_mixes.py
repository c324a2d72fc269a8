"""Training mixes: exact counts, seeded sampling, and synthetic images only ever in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.datasets import ImageSet, Provenance
from engine.mixes import MixConfig, MixError, build_mix, synthetic_short


def image_set(counts: list[int], *, synthetic: bool = False, value: int = 0) -> ImageSet:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
    n = len(labels)
    prov = Provenance.real("test", [f"{'s' if synthetic else 'r'}{i}" for i in range(n)], [(4, 4)] * n, [""] * n)
    if synthetic:
        prov = Provenance(**{**prov.__dict__, "synthetic": np.ones(n, bool), "generator": np.full(n, "stub", object)})
    images = torch.full((n, 1, 4, 4), value, dtype=torch.uint8)
    return ImageSet(images, torch.from_numpy(labels), ("a", "b", "c"), prov)


REAL = image_set([40, 8, 4])
SYNTH = image_set([50, 50, 50], synthetic=True, value=200)


def counts(mix_set: ImageSet, synthetic: bool) -> list[int]:
    labels = mix_set.labels.numpy()[mix_set.provenance.synthetic == synthetic]
    return np.bincount(labels, minlength=3).tolist()


def test_real_and_reweight_keep_the_real_split() -> None:
    base = build_mix(MixConfig("real"), REAL)
    assert base.train is REAL and base.weights is None and base.synthetic_share == 0
    weighted = build_mix(MixConfig("reweight"), REAL)
    assert weighted.train is REAL and weighted.weights is not None
    assert weighted.weights[2] / weighted.weights[0] == pytest.approx(10.0)


def test_add_fills_every_class_up_to_the_largest_with_synthetic_images() -> None:
    mix = build_mix(MixConfig("add", synthetic_set="s"), REAL, SYNTH, seed=1)
    assert counts(mix.train, False) == [40, 8, 4] and counts(mix.train, True) == [0, 32, 36]
    assert mix.real_counts == (40, 8, 4) and mix.synthetic_counts == (0, 32, 36)
    assert mix.synthetic_share == pytest.approx(68 / 120)
    again = build_mix(MixConfig("add", synthetic_set="s"), REAL, SYNTH, seed=1)
    other = build_mix(MixConfig("add", synthetic_set="s"), REAL, SYNTH, seed=2)
    assert list(again.train.provenance.origin) == list(mix.train.provenance.origin)
    assert list(other.train.provenance.origin) != list(mix.train.provenance.origin)


def test_add_n_per_class_and_a_short_set_gives_what_it_has_and_says_so() -> None:
    mix = build_mix(MixConfig("add", per_class=10, synthetic_set="s"), REAL, SYNTH)
    assert counts(mix.train, True) == [10, 10, 10] and mix.short == ()
    small = image_set([50, 3, 50], synthetic=True)
    short = build_mix(MixConfig("add", synthetic_set="s"), REAL, small)
    assert counts(short.train, True) == [0, 3, 36] and short.synthetic_counts == (0, 3, 36)
    assert short.short == ("'b': 3 of 32",)


def test_add_leaves_classes_the_set_was_not_made_for_and_the_form_check_agrees() -> None:
    minority_only = image_set([0, 20, 0], synthetic=True)  # e.g. a Stable Diffusion set for class b only
    mix = build_mix(MixConfig("add", per_class=20, synthetic_set="s"), REAL, minority_only)
    assert counts(mix.train, True) == [0, 20, 0] and mix.synthetic_counts == (0, 20, 0) and mix.short == ()
    cfg = MixConfig("add", per_class=30, synthetic_set="s")
    assert synthetic_short(cfg, [40, 8, 4], [0, 20, 0], ("a", "b", "c")) == ("'b': 20 of 30",)
    assert build_mix(cfg, REAL, minority_only).short == ("'b': 20 of 30",)
    assert synthetic_short(MixConfig("replace", synthetic_set="s"), [40, 8, 4], [0, 20, 0], "abc") == (
        "'a': 0 of 20",
        "'c': 0 of 2",
    )
    assert synthetic_short(MixConfig("oversample"), [40, 8, 4], [0, 0, 0], "abc") == ()


def test_controls_matched_to_a_short_set_add_the_same_counts_as_add() -> None:
    small = image_set([50, 3, 50], synthetic=True)
    add = build_mix(MixConfig("add", synthetic_set="s"), REAL, small)
    over = build_mix(MixConfig("oversample", synthetic_set="s"), REAL, small)
    aug = build_mix(MixConfig("augment", synthetic_set="s"), REAL, small, seed=3)
    totals = np.bincount(add.train.labels.numpy(), minlength=3).tolist()
    assert totals == [40, 11, 40]
    assert np.bincount(over.train.labels.numpy(), minlength=3).tolist() == totals
    assert np.bincount(aug.train.labels.numpy(), minlength=3).tolist() == totals
    assert not over.train.provenance.synthetic.any() and not aug.train.provenance.synthetic.any()
    weighted = build_mix(MixConfig("reweight", synthetic_set="s"), REAL, small)
    assert weighted.train is REAL and weighted.weights is not None
    # each class's summed weight is proportional to its count in the add mix: 40 : 11 : 40
    mass = weighted.weights * np.array([40, 8, 4])
    assert mass / mass[0] == pytest.approx(np.array(totals) / 40)
    assert float(mass.sum()) == pytest.approx(52.0)  # the mean weight per real image stays 1
    full = build_mix(MixConfig("reweight", synthetic_set="s"), REAL, SYNTH)
    assert full.weights == pytest.approx(build_mix(MixConfig("reweight"), REAL).weights)


def test_replace_with_a_short_set_fills_with_real_images() -> None:
    small = image_set([50, 3, 50], synthetic=True)
    mix = build_mix(MixConfig("replace", synthetic_set="s"), REAL, small)
    assert counts(mix.train, True) == [20, 3, 2] and counts(mix.train, False) == [20, 5, 2]
    assert mix.short == ("'b': 3 of 4",)


def test_controls_reach_the_same_counts_as_add() -> None:
    add = build_mix(MixConfig("add", synthetic_set="s"), REAL, SYNTH)
    over = build_mix(MixConfig("oversample"), REAL)
    aug = build_mix(MixConfig("augment"), REAL, seed=3)
    totals = np.bincount(add.train.labels.numpy(), minlength=3).tolist()
    assert np.bincount(over.train.labels.numpy(), minlength=3).tolist() == totals == [40, 40, 40]
    assert np.bincount(aug.train.labels.numpy(), minlength=3).tolist() == totals
    assert set(over.train.provenance.origin) == set(REAL.provenance.origin)  # only repeats of real images
    assert not over.train.provenance.synthetic.any() and not aug.train.provenance.synthetic.any()
    assert (aug.train.provenance.generator == "classic-augment").sum() == 68
    assert aug.synthetic_counts == (0, 32, 36) and over.synthetic_counts == (0, 0, 0)


def test_replace_gives_a_fixed_total_with_the_chosen_synthetic_share() -> None:
    mix = build_mix(MixConfig("replace", synthetic_fraction=0.7, total_per_class=4, synthetic_set="s"), REAL, SYNTH)
    assert counts(mix.train, False) == [1, 1, 1] and counts(mix.train, True) == [3, 3, 3]
    assert mix.train.provenance.origin[0] != mix.train.provenance.origin[1]
    only = build_mix(MixConfig("replace", synthetic_fraction=1.0, synthetic_set="s"), REAL, SYNTH)
    assert counts(only.train, False) == [0, 0, 0] and counts(only.train, True) == [40, 8, 4]
    assert MixConfig("replace", synthetic_fraction=0.7, synthetic_set="s").label == "replace 30/70"
    with pytest.raises(MixError, match=r"needs 10 real and 10 synthetic images of class 'b'; there are 8 real.*total"):
        build_mix(MixConfig("replace", total_per_class=20, synthetic_set="s"), REAL, SYNTH)


def test_bad_mixes_are_refused_with_a_clear_message() -> None:
    with pytest.raises(MixError, match=r"mix.kind='smote' is not accepted"):
        MixConfig("smote")
    with pytest.raises(MixError, match=r"mix.synthetic_set='' is not accepted for mix 'add'"):
        MixConfig("add")
    with pytest.raises(MixError, match=r"needs the synthetic set 's'"):
        build_mix(MixConfig("add", synthetic_set="s"), REAL, None)
    with pytest.raises(MixError, match=r"holds images not marked synthetic"):
        build_mix(MixConfig("add", synthetic_set="s"), REAL, image_set([50, 50, 50]))
    with pytest.raises(MixError, match=r"mix.synthetic_set='s' is not accepted for the real baseline"):
        MixConfig("real", synthetic_set="s")
    with pytest.raises(MixError, match=r"real training split holds synthetic images"):
        build_mix(MixConfig("real"), SYNTH)


@pytest.mark.parametrize(
    "cfg",
    [
        MixConfig("real"),
        MixConfig("reweight"),
        MixConfig("add", synthetic_set="s"),
        MixConfig("oversample"),
        MixConfig("augment"),
        MixConfig("replace", synthetic_fraction=0.7, synthetic_set="s"),
    ],
)
def test_every_training_image_says_where_it_comes_from(cfg: MixConfig) -> None:
    real = image_set([40, 8, 4], value=7)
    real = ImageSet(
        torch.arange(len(real), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone(),
        real.labels,
        real.class_names,
        real.provenance,
    )
    mix = build_mix(cfg, real, SYNTH if cfg.synthetic_set else None, seed=4)
    assert len(mix.sources) == len(mix.rows) == len(mix.train)
    for source, pool in ((0, real), (1, SYNTH)):
        picked = mix.sources == source
        assert torch.equal(mix.train.images[torch.from_numpy(picked)], pool.images[torch.from_numpy(mix.rows[picked])])
    augmented = mix.sources == 2
    assert torch.equal(
        mix.train.labels[torch.from_numpy(augmented)], real.labels[torch.from_numpy(mix.rows[augmented])]
    )
    assert augmented.any() == (cfg.kind == "augment")


def test_pretrain_phases_take_the_set_or_as_many_real_images_per_class() -> None:
    small = image_set([5, 7, 0], synthetic=True, value=200)
    mix = build_mix(MixConfig("pretrain", synthetic_set="s"), REAL, small)
    assert mix.train is REAL and mix.pretrain is small
    assert mix.synthetic_counts == (5, 7, 0) and mix.real_counts == (40, 8, 4)
    control = build_mix(MixConfig("pretrain_real", synthetic_set="s"), REAL, small, seed=3)
    assert control.train is REAL and control.pretrain is not None
    assert counts(control.pretrain, False) == [5, 7, 0]  # class b has 8 real images: 7 drawn without repeats
    assert not control.pretrain.provenance.synthetic.any() and control.synthetic_counts == (0, 0, 0)
    assert MixConfig("pretrain", synthetic_set="s").label == "pretrain synthetic"
    with pytest.raises(MixError, match=r"mix.pretrain_epochs=0 .* 1 to 1000"):
        MixConfig("pretrain", synthetic_set="s", pretrain_epochs=0)
    with pytest.raises(MixError, match=r"mix.finetune_lr_scale=2 .* \(0, 1\]"):
        MixConfig("pretrain", synthetic_set="s", finetune_lr_scale=2)
