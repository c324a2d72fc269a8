"""Linear probes on cached backbone features: real runs, a head that reloads exactly, a cache that is reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import backbones, experiments, models, probe, runs
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig, build_mix
from engine.probe import AUGMENTED_COPIES, ProbeFeatures, mix_features
from engine.training import TrainConfig, predict_proba

SMALL = DatasetConfig(imbalance=ImbalanceConfig(kind="subsample", fraction=0.3))


@pytest.fixture(autouse=True)
def small_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backbone input at 32 px: the same code path, several times cheaper than 128 px on two cores."""
    monkeypatch.setattr(models, "PRETRAINED_SIZE", 32)


def probe_config(*mixes: MixConfig, seeds: tuple[int, ...] = (0,)) -> experiments.ExperimentConfig:
    return experiments.ExperimentConfig(
        dataset=SMALL,
        mixes=mixes,
        model="probe:efficientnet_lite0",
        train=TrainConfig(max_epochs=30, patience=5),
        seeds=seeds,
    )


def test_a_probe_run_saves_only_its_head_and_reloads_to_the_same_predictions() -> None:
    dataset = build_dataset(SMALL)
    record = experiments.run_experiment(probe_config(MixConfig("augment")), dataset=dataset)
    recs = [runs.load_record(r) for _, _, r in record.run_ids]
    assert [r.status for r in recs] == ["done", "done"], [r.error for r in recs]
    assert all(r.headline["accuracy"] > 0.5 for r in recs)  # pretrained features of upscaled 8x8 digits
    stored = runs.runs_dir() / recs[0].id / "model.safetensors"
    from safetensors.torch import load_file

    assert sorted(load_file(str(stored))) == ["head.bias", "head.weight"]
    model = runs.load_model(recs[0].id)  # the standardisation is folded into the head: images in, same answers
    _, probs = runs.load_predictions(recs[0].id)
    again = predict_proba(model, dataset.test.images)
    assert np.abs(again - probs).max() < 2e-3
    assert isinstance(model, backbones.BackboneClassifier)


def test_features_are_computed_once_for_every_later_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = build_dataset(SMALL)
    experiments.run_experiment(probe_config(MixConfig("oversample"), seeds=(0,)), dataset=dataset)

    def no_extraction(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were extracted again")

    monkeypatch.setattr("engine.features.extract_features", no_extraction)
    probe._memo.clear()  # a new server process: only the disk cache remains
    record = experiments.run_experiment(probe_config(MixConfig("reweight"), seeds=(1, 2)), dataset=dataset)
    assert {runs.load_record(r).status for _, _, r in record.run_ids} == {"done"}


def test_mix_features_follow_each_image_to_its_source() -> None:
    dataset = build_dataset(SMALL)
    real = dataset.train
    n, d = len(real), 3
    feats = ProbeFeatures(
        real=np.arange(n * d, dtype=np.float32).reshape(n, d),
        synthetic=None,
        augmented=-np.arange(AUGMENTED_COPIES * n * d, dtype=np.float32).reshape(AUGMENTED_COPIES, n, d) - 1,
        val=np.zeros((1, d), np.float32),
        test=np.zeros((1, d), np.float32),
    )
    mix = build_mix(MixConfig("augment", per_class=2), real, seed=0)
    x = mix_features(mix, feats, seed=0)
    assert np.array_equal(x[:n], feats.real)
    extra = x[n:]
    assert (extra < 0).all() and len(extra) == 2 * real.num_classes
    rows = mix.rows[n:]
    assert all(
        any(np.array_equal(e, feats.augmented[k, r]) for k in range(AUGMENTED_COPIES))
        for e, r in zip(extra, rows, strict=True)
    )
    assert torch.equal(mix.train.labels[n:], real.labels[torch.from_numpy(rows)])


def test_a_fine_tuned_backbone_trains_its_last_stages_and_reloads() -> None:
    dataset = build_dataset(SMALL)
    cfg = experiments.ExperimentConfig(
        dataset=SMALL,
        mixes=(MixConfig("real"),),
        model="finetune:efficientnet_lite0",
        train=TrainConfig(max_epochs=1, lr=1e-4, batch_size=64, device="cpu", precision="fp32"),
        seeds=(0,),
    )
    before = models.build_classifier("finetune:efficientnet_lite0", channels=1, num_classes=10, resolution=8, seed=0)
    record = experiments.run_experiment(cfg, dataset=dataset)
    (run_id,) = [r for _, _, r in record.run_ids]
    rec = runs.load_record(run_id)
    assert rec.status == "done", rec.error
    after = runs.load_model(run_id)
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])}
    assert any(k.startswith("backbone._blocks.15") for k in changed) and "head.weight" in changed
    assert not any(k.startswith("backbone._blocks.0.") for k in changed)  # early stages stay as pretrained
    _, probs = runs.load_predictions(run_id)
    assert np.abs(predict_proba(after, dataset.test.images) - probs).max() < 1e-4


def test_every_backbone_gets_an_input_side_it_takes() -> None:
    for name, spec in backbones.BACKBONES.items():
        side = models.pretrained_side(name)
        assert backbones.input_side(spec, side) == side  # raises for a side the backbone does not take
    assert models.pretrained_side("vit_b_16") == 224 and models.pretrained_side("resnet18") == models.PRETRAINED_SIZE


def test_explain_attributes_a_pretrained_classifier_with_every_method() -> None:
    from engine import explain

    model = models.build_classifier("probe:efficientnet_lite0", channels=1, num_classes=3, resolution=8, seed=0)
    images = torch.randint(0, 255, (2, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for method in explain.METHODS:
        maps = explain.attribute(model.eval(), images, method, device="cpu")
        assert maps.shape == (2, 8, 8) and maps.max() > 0, method
