"""Preprocessing presets: torchvision references, aspect handling, margins, determinism, and training use."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from engine import preprocess, runs
from engine.config import DatasetConfig
from engine.datasets import build_dataset
from engine.mixes import MixConfig
from engine.preprocess import Preset
from engine.training import TrainConfig, TrainConfigError


def smooth(side: int, n: int = 1) -> torch.Tensor:
    """Smooth RGB test images (gradients): bilinear resampling differences stay small on them."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    base = torch.stack([xx * 255 // side, yy * 255 // side, (xx + yy) * 127 // side]).to(torch.uint8)
    return base.expand(n, -1, -1, -1).clone()


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


@pytest.mark.parametrize("aspect", [4 / 3, 3 / 4])
def test_stretch_and_letterbox_match_torchvision(aspect: float) -> None:
    side = 24
    image = smooth(side)
    crop_h, crop_w = (round(side / aspect), side) if aspect >= 1 else (side, round(side * aspect))
    cropped = TF.center_crop(image, [crop_h, crop_w])  # the square regarded as a photo of this aspect
    stretched = TF.resize(cropped, [side, side], antialias=True)
    ours = preprocess.apply(image, Preset(resize="stretch"), aspects=torch.tensor([aspect]))
    assert mean_abs(ours, stretched) < 1.0
    boxed = TF.resize(cropped, [crop_h, crop_w], antialias=True)
    pad_h, pad_w = side - crop_h, side - crop_w
    letterboxed = TF.pad(boxed, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=30)
    ours = preprocess.apply(image, Preset(resize="letterbox", fill=30), aspects=torch.tensor([aspect]))
    assert mean_abs(ours, letterboxed) < 1.0


def test_center_crop_matches_torchvision() -> None:
    side, aspect = 24, 4 / 3  # the aspect-4/3 photo is 24 x 18; filling the square makes it 32 x 24
    image = smooth(side)
    photo = TF.center_crop(image, [18, 24])
    reference = TF.center_crop(TF.resize(photo, [24, 32], antialias=True), [24, 24])
    ours = preprocess.apply(image, Preset(resize="center_crop"), aspects=torch.tensor([aspect]))
    assert mean_abs(ours, reference) < 1.5


def test_grayscale_and_jitter_match_torchvision() -> None:
    image = smooth(16, 3)
    ours = preprocess.apply(image, Preset(grayscale=True))
    assert (ours.float() - TF.rgb_to_grayscale(image, num_output_channels=3).float()).abs().max() <= 1
    factors = preprocess.jitter_factors(3, 0.4, torch.Generator().manual_seed(0))
    ours = preprocess.color_jitter(image.float(), factors).round().to(torch.uint8)
    for i in range(3):
        b, c, s = factors[i].tolist()
        reference = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image[i], b), c), s)
        assert (ours[i].float() - reference.float()).abs().max() <= 3  # torchvision rounds to uint8 between steps


def content_aspect(image: torch.Tensor, fill: int = 0) -> float:
    """Width / height of the bounding box of the pixels that are not ``fill``."""
    mask = (image != fill).any(dim=0)
    rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
    return (int(cols.max()) - int(cols.min()) + 1) / (int(rows.max()) - int(rows.min()) + 1)


def test_letterbox_keeps_the_aspect() -> None:
    white = torch.full((3, 3, 64, 64), 255, dtype=torch.uint8)
    aspects = torch.tensor([2.0, 0.5, 1.25])
    out = preprocess.apply(white, Preset(resize="letterbox"), aspects=aspects)
    for image, aspect in zip(out, aspects.tolist(), strict=True):
        assert content_aspect(image) == pytest.approx(aspect, rel=0.05)


def test_margins_reproduce_the_real_aspect_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    pool = torch.exp(torch.empty(5000).uniform_(-0.7, 0.7, generator=gen))  # the "real" aspects
    aspects = preprocess.draw_aspects(pool, 400, gen)
    white = torch.full((400, 1, 64, 64), 255, dtype=torch.uint8)
    out = preprocess.apply(white, Preset(resize="margins", margin_scale=0.6), aspects=aspects, gen=gen)
    measured = torch.tensor([content_aspect(im) for im in out])
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    assert torch.allclose(measured.quantile(quantiles), pool.quantile(quantiles), rtol=0.08)
    areas = (out > 0).float().mean(dim=(1, 2, 3))
    assert areas.min() < 0.6 and areas.max() > 0.6  # shrunk by random scales, placed at random positions


def test_a_seed_gives_the_same_batch_and_identity_is_free() -> None:
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    preset = Preset(resize="margins", crop_scale=0.5, jitter=0.3)
    a = preprocess.apply(images, preset, aspects=torch.full((5,), 1.5), gen=torch.Generator().manual_seed(3))
    b = preprocess.apply(images, preset, aspects=torch.full((5,), 1.5), gen=torch.Generator().manual_seed(3))
    c = preprocess.apply(images, preset, aspects=torch.full((5,), 1.5), gen=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.uint8 and a.shape == images.shape
    assert preprocess.apply(images, Preset()) is images


def test_mixed_batches_give_each_origin_its_preset() -> None:
    images = torch.full((4, 1, 8, 8), 200, dtype=torch.uint8)
    synthetic = torch.tensor([False, True, False, True])
    out = preprocess.apply_mixed(
        images,
        synthetic,
        Preset(),
        Preset(resize="letterbox", fill=0),
        pool=torch.tensor([2.0]),
        gen=torch.Generator().manual_seed(0),
    )
    assert torch.equal(out[~synthetic], images[~synthetic])
    assert (out[synthetic] == 0).any() and torch.equal(images, torch.full_like(images, 200))  # input untouched


def test_spec_strings_round_trip_and_name_bad_parts() -> None:
    preset = Preset(resize="margins", margin_scale=0.5, fill=127, grayscale=True)
    assert preset.spec() == "resize=margins;fill=127;margin_scale=0.5;grayscale"
    assert Preset.parse(preset.spec()) == preset and Preset.parse("") == Preset()
    with pytest.raises(preprocess.PresetError, match=r"'zoom=2'.*known settings"):
        Preset.parse("zoom=2")
    with pytest.raises(preprocess.PresetError, match="'grayscale=maybe'"):
        Preset.parse("grayscale=maybe")
    assert Preset.parse("grayscale=no") == Preset() and Preset.parse("grayscale").grayscale
    with pytest.raises(preprocess.PresetError, match="aspects of length 2"):
        preprocess.apply(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), Preset(resize="stretch"), aspects=torch.ones(2))
    with pytest.raises(preprocess.PresetError, match="resize='squash'"):
        Preset.parse("resize=squash")
    with pytest.raises(TrainConfigError, match=r"train\.preprocess_synthetic.*fill=300"):
        TrainConfig(preprocess_synthetic="fill=300")


def test_a_run_records_and_trains_with_the_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real_apply = preprocess.apply_mixed

    def counting(images, synthetic, real_preset, synthetic_preset, *, pool, gen):  # type: ignore[no-untyped-def]
        calls.append((int((~synthetic).sum()), int(synthetic.sum())))
        return real_apply(images, synthetic, real_preset, synthetic_preset, pool=pool, gen=gen)

    monkeypatch.setattr("engine.training.apply_mixed", counting)
    dataset = build_dataset(DatasetConfig())
    train = TrainConfig(max_epochs=1, preprocess_real="jitter=0.2", preprocess_synthetic="resize=margins")
    cfg = runs.RunConfig(dataset=dataset.config, mix=MixConfig("real"), model="simple_cnn", train=train, seed=0)
    record = runs.execute_run("pre1", cfg, dataset)
    assert record.status == "done" and calls and all(s == 0 for _, s in calls)  # every batch went through it
    stored = runs.load_record(record.id).config.train
    assert (stored.preprocess_real, stored.preprocess_synthetic) == ("jitter=0.2", "resize=margins")


def test_synthetic_images_get_their_preset_in_training_and_test_images_only_the_deterministic_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.datasets import ImageSet, Provenance

    calls: list[tuple[int, int]] = []
    real_apply = preprocess.apply_mixed

    def counting(images, synthetic, real_preset, synthetic_preset, *, pool, gen):  # type: ignore[no-untyped-def]
        calls.append((int((~synthetic).sum()), int(synthetic.sum())))
        assert len(pool) == len(dataset.train)  # the real aspects come from the dataset, whatever the mix
        return real_apply(images, synthetic, real_preset, synthetic_preset, pool=pool, gen=gen)

    seen: list[torch.Tensor] = []
    real_predict = runs.predict_proba

    def recording(model, images, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(images)
        return real_predict(model, images, **kwargs)

    monkeypatch.setattr("engine.training.apply_mixed", counting)
    monkeypatch.setattr(runs, "predict_proba", recording)
    dataset = build_dataset(
        DatasetConfig(source=__import__("engine.config", fromlist=["x"]).SourceConfig(kind="digits"))
    )
    n = len(dataset.train)  # a synthetic copy of every training image: enough of each class to replace it
    synthetic = ImageSet(
        dataset.train.images[:n].clone(),
        dataset.train.labels[:n].clone(),
        dataset.class_names,
        dataclasses.replace(
            Provenance.real("synthetic:test", [str(i) for i in range(n)], [(8, 8)] * n, [""] * n),
            synthetic=np.ones(n, dtype=bool),
        ),
    )
    train = TrainConfig(max_epochs=1, preprocess_real="grayscale", preprocess_synthetic="resize=margins;jitter=0.5")
    mix = MixConfig("replace", synthetic_fraction=1.0, synthetic_set="test")
    cfg = runs.RunConfig(dataset=dataset.config, mix=mix, model="simple_cnn", train=train, seed=0)
    record = runs.execute_run("pre2", cfg, dataset, synthetic=synthetic)
    assert record.status == "done", record.error
    assert calls and sum(s for _, s in calls) > 0 and sum(r for r, _ in calls) == 0  # a synthetic-only mix
    assert torch.equal(seen[-1], dataset.test.images)  # grayscale of 1-channel digits changes nothing; no jitter


def test_the_cli_config_format_carries_the_presets() -> None:
    import tomllib

    from engine.experiments import ExperimentConfig
    from engine.store import REPO_ROOT

    data = tomllib.loads((REPO_ROOT / "examples" / "digits_minority.toml").read_text())
    cfg = ExperimentConfig.from_dict(data)
    assert cfg.train.preprocess_synthetic == "resize=margins;margin_scale=0.8"
    assert ExperimentConfig.from_dict(cfg.to_dict()).train == cfg.train  # the JSON bundle keeps them too
    data["train"]["preprocess_real"] = "resize=fisheye"
    with pytest.raises(TrainConfigError, match="resize='fisheye'"):
        ExperimentConfig.from_dict(data)
