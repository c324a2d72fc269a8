"""The small class-conditional diffusion model: shapes, training, DDIM sampling, health, and sets from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import ImageSet, LabDataset, Provenance, build_dataset
from engine.jobs import Cancelled
from engine.synth import ddpm, filters, generators, make_sets, sets

TINY = ddpm.DdpmConfig(width=8, steps=4, batch_size=8, sample_every=2, sample_steps=3, timesteps=50)


def tiny_set(channels: int, side: int, n: int = 12, classes: int = 3) -> ImageSet:
    rng = np.random.default_rng(side + channels)
    images = torch.from_numpy(rng.integers(0, 256, (n, channels, side, side), dtype=np.uint8))
    names = tuple(f"c{i}" for i in range(classes))
    origins = [f"x{i}.png" for i in range(n)]
    provenance = Provenance.real("test", origins, [(side, side)] * n, [""] * n)
    return ImageSet(images, torch.arange(n) % classes, names, provenance)


@pytest.mark.parametrize(("channels", "side"), [(1, 8), (3, 16), (1, 12), (3, 32)])
def test_samples_have_the_training_images_shape(channels: int, side: int) -> None:
    result = ddpm.train_ddpm(TINY, tiny_set(channels, side))
    images = ddpm.sample(result.model, np.array([0, 2]), seed=0, steps=2, timesteps=TINY.timesteps)
    assert images.shape == (2, channels, side, side) and images.dtype == np.uint8


def test_training_changes_the_weights_and_repeats_for_a_seed() -> None:
    data = tiny_set(1, 8)
    torch.manual_seed(123)
    before = torch.rand(1)
    first = ddpm.train_ddpm(TINY, data)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is left alone
    second = ddpm.train_ddpm(TINY, data)
    other = ddpm.train_ddpm(ddpm.DdpmConfig(**{**TINY.__dict__, "seed": 1}), data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY.seed)
        init = ddpm.build_unet(TINY, channels=1, resolution=8, num_classes=3)
    a, b, c = first.model.state_dict(), second.model.state_dict(), other.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], init.state_dict()[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert len(first.history) == 1 and first.history[0]["step"] == 4


def test_ddim_samples_repeat_at_any_batch_size_and_guidance_matters() -> None:
    model = ddpm.train_ddpm(TINY, tiny_set(1, 8)).model
    labels = np.array([0, 1, 2, 1])
    whole = ddpm.sample(model, labels, seed=5, steps=3, timesteps=50)
    parts = ddpm.sample(model, labels[2:], seed=5, noise_indices=np.array([2, 3]), steps=3, timesteps=50, batch_size=1)
    assert np.array_equal(whole[2:], parts)
    assert not np.array_equal(whole, ddpm.sample(model, labels, seed=6, steps=3, timesteps=50))
    unguided = ddpm.sample(model, labels, seed=5, steps=3, guidance=1.0, timesteps=50)
    assert not np.array_equal(whole, unguided)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ddpm.sample(model, np.array([3]), seed=0, steps=2, timesteps=50)
    with pytest.raises(Cancelled, match="sampling was cancelled"):
        ddpm.sample(model, labels, seed=5, steps=3, timesteps=50, should_stop=lambda: True)


def test_events_carry_losses_and_sample_grids() -> None:
    events: list = []
    ddpm.train_ddpm(TINY, tiny_set(3, 8), on_event=events.append)
    steps = [e for e in events if e.kind == "step"]
    grids = [e for e in events if e.kind == "samples"]
    assert [e.step for e in steps] == [1, 2, 3, 4] and all(np.isfinite(e.values["loss"]) for e in steps)
    assert [g.step for g in grids] == [2, 4] and grids[0].grid.shape == (3 * 8, ddpm.SAMPLES_PER_CLASS * 8, 3)


def test_a_nan_loss_stops_with_an_error_naming_the_checkpoint(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = ddpm.F.mse_loss
    calls = {"n": 0}

    def poisoned(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(pred, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(ddpm.F, "mse_loss", poisoned)
    with pytest.raises(ddpm.DdpmDiverged, match=r"diverged at step 3 of 4.*last good checkpoint at step 2"):
        ddpm.train_ddpm(TINY, tiny_set(1, 8), checkpoint_dir=tmp_path / "ck")
    kept = ddpm.result_from_checkpoint(tmp_path / "ck")
    assert kept.steps_done == 2 and kept.resolution == 8 and kept.model.config.num_class_embeds == 4
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())


def test_a_stopped_training_resumes_to_the_same_weights_bit_for_bit(tmp_path) -> None:
    cfg = ddpm.DdpmConfig(width=8, steps=5, batch_size=8, sample_every=2, sample_steps=2, timesteps=50)
    data = tiny_set(1, 8)
    whole = ddpm.train_ddpm(cfg, data)
    steps: list[int] = []
    with pytest.raises(Cancelled, match="cancelled at step 3 of 5"):
        ddpm.train_ddpm(
            cfg,
            data,
            on_event=lambda e: steps.append(e.step) if e.kind == "step" else None,
            should_stop=lambda: len(steps) >= 3,
            checkpoint_dir=tmp_path,
        )
    assert ddpm.result_from_checkpoint(tmp_path).steps_done == 3  # saved when the stop came, not only at step 2
    resumed = ddpm.train_ddpm(cfg, data, checkpoint_dir=tmp_path, resume=True)
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert resumed.steps_done == 5 and all(torch.equal(a[k], b[k]) for k in a)  # the lr schedule went on too


def test_presets_fill_steps_and_width() -> None:
    quick, thorough = ddpm.DdpmConfig(preset="quick"), ddpm.DdpmConfig(preset="thorough")
    assert quick.steps < thorough.steps and quick.width <= thorough.width
    assert ddpm.DdpmConfig(preset="quick", width=24).width == 24
    assert ddpm.DdpmConfig(**{**quick.__dict__}).cache_key() == quick.cache_key()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"width": 12}, "ddpm.width"),
        ({"p_uncond": 1.5}, "ddpm.p_uncond"),
        ({"steps": -1}, "ddpm.steps"),
        ({"preset": "x"}, "ddpm.preset"),
    ],
)
def test_bad_settings_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ddpm.DdpmConfigError, match=field):
        ddpm.DdpmConfig(**changes)  # type: ignore[arg-type]


def test_a_side_that_is_not_a_multiple_of_4_is_refused_clearly() -> None:
    with pytest.raises(ddpm.DdpmConfigError, match="multiple of 4"):
        ddpm.train_ddpm(TINY, tiny_set(1, 10))


def test_a_set_from_the_diffusion_model_fills_counts_and_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    def keep_all(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        n = len(labels)
        return filters.FilterResult(labels, np.ones(n), np.ones(n, bool), ("",) * n)

    monkeypatch.setattr(filters, "confidence_filter", keep_all)
    digits: LabDataset = build_dataset(
        DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0",), keep_fraction=0.1))
    )
    gen_id = generators.train_generator(TINY, digits)
    assert gen_id.startswith("ddpm-") and generators.list_generators(digits)[0]["kind"] == "ddpm"
    request = make_sets.GenerateConfig(generator=gen_id, per_class=2, classes=("0", "1"), sample_steps=3)
    info = make_sets.make_set(request, digits)
    again = make_sets.make_set(request, digits)
    assert info.counts_kept[:2] == (2, 2) and info.config["kind"] == "ddpm"
    assert torch.equal(sets.load_set(info.id).images, sets.load_set(again.id).images)
