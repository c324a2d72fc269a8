"""The GAN module on tiny seeded data: shapes, determinism, noise indexing, files, divergence, stopping, collapse."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.datasets import ImageSet, Provenance
from engine.jobs import Cancelled
from engine.synth import gan, gan_networks
from engine.synth.events import GeneratorEvent

TINY = gan.GanConfig(steps=5, width=8, batch_size=16, sample_every=5)


def tiny_set(counts: tuple[int, ...] = (20, 12, 8), *, side: int = 8, height: int | None = None) -> ImageSet:
    """Random uint8 images, ``counts[c]`` of class c (imbalanced by default)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    n = len(labels)
    images = rng.integers(0, 256, (n, 1, height or side, side), dtype=np.uint8)
    prov = Provenance.real("test", [f"r{i}" for i in range(n)], [(side, side)] * n, [""] * n)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), ("a", "b", "c", "d")[: len(counts)], prov)


@pytest.fixture(scope="module")
def trained() -> gan.GanResult:
    return gan.train_gan(TINY, tiny_set())


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("resolution", [8, 16, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("kind", "conditional"), [("cgan", True), ("wgan-gp", True), ("wgan-gp", False)])
def test_generator_and_discriminator_shapes(resolution: int, channels: int, kind: str, conditional: bool) -> None:
    cfg = gan.GanConfig(kind=kind, conditional=conditional, width=4, z_dim=8)
    shape = {"channels": channels, "resolution": resolution, "num_classes": 3}
    g, d = gan_networks.build_generator(cfg, **shape), gan_networks.build_discriminator(cfg, **shape)
    y = torch.tensor([0, 2])
    x = g(torch.randn(2, 8), y)
    assert x.shape == (2, channels, resolution, resolution)
    assert x.abs().max().item() <= 1.0
    assert d(x, y).shape == (2,)


def test_training_changes_the_weights_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    result = gan.train_gan(TINY, tiny_set())
    assert torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY.seed)  # the initial weights, built as train_gan builds them
        initial = gan_networks.build_generator(TINY, channels=1, resolution=8, num_classes=3)
    assert not same_state(result.generator, initial)
    # Each step runs G in training mode once for D's fakes and once for its own step.
    assert int(result.generator.state_dict()["norms.0.bn.num_batches_tracked"]) == 2 * TINY.steps
    assert not result.generator.training
    assert [row["step"] for row in result.history] == [5.0] and set(result.history[0]) == {"step", "d_loss", "g_loss"}


@pytest.mark.parametrize("kind", gan.GAN_KINDS)
def test_the_same_seed_gives_bit_identical_weights(kind: str) -> None:
    cfg = gan.GanConfig(kind=kind, steps=3, width=8, batch_size=16, diffaugment="translation,cutout,color")
    first, second = gan.train_gan(cfg, tiny_set()), gan.train_gan(cfg, tiny_set())
    other = gan.train_gan(gan.GanConfig(kind=kind, steps=3, width=8, batch_size=16, seed=1), tiny_set())
    assert same_state(first.generator, second.generator)
    assert not same_state(first.generator, other.generator)


def test_wgan_gp_reports_the_gradient_penalty() -> None:
    events: list[GeneratorEvent] = []
    cfg = gan.GanConfig(kind="wgan-gp", conditional=False, steps=2, width=8, batch_size=16, critic_steps=2)
    gan.train_gan(cfg, tiny_set(), on_event=events.append)
    steps = [e for e in events if e.kind == "step"]
    assert [e.step for e in steps] == [1, 2] and all(set(e.values) == {"d_loss", "g_loss", "gp"} for e in steps)
    assert all(e.values["gp"] >= 0 for e in steps)


def test_events_carry_losses_and_a_grid_with_one_row_per_class() -> None:
    events: list[GeneratorEvent] = []
    gan.train_gan(gan.GanConfig(steps=5, width=8, batch_size=16, sample_every=2), tiny_set(), on_event=events.append)
    assert [e.kind for e in events if e.kind in ("samples", "done")] == ["samples"] * 3 + ["done"]
    grids = [e for e in events if e.kind == "samples"]
    assert [e.step for e in grids] == [2, 4, 5]
    grid = grids[-1].grid
    assert grid is not None and grid.dtype == np.uint8 and grid.shape == (3 * 8, 8 * 8, 3)


def test_generate_depends_on_seed_and_index_only(trained: gan.GanResult) -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    kwargs = {"z_dim": TINY.z_dim, "seed": 7}
    full = gan.generate(trained.generator, labels, **kwargs)
    assert full.dtype == np.uint8 and full.shape == (6, 1, 8, 8)
    for batch_size in (1, 4, 256):
        assert np.array_equal(gan.generate(trained.generator, labels, batch_size=batch_size, **kwargs), full)
    assert np.array_equal(gan.generate(trained.generator, labels[3:], noise_offset=3, **kwargs), full[3:])
    assert not np.array_equal(gan.generate(trained.generator, labels, z_dim=TINY.z_dim, seed=8), full)
    far = gan.generate(trained.generator, labels, noise_offset=1_000_000, **kwargs)
    assert not np.array_equal(far, full)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        gan.generate(trained.generator, np.array([3]), **kwargs)


def test_save_and_load_round_trip(trained: gan.GanResult, tmp_path: Path) -> None:
    gan.save_generator(trained, tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["generator.json", "generator.safetensors"]
    loaded, meta = gan.load_generator(tmp_path / "g")
    assert not loaded.training and meta["class_names"] == ["a", "b", "c"] and meta["config"]["z_dim"] == TINY.z_dim
    assert gan.GanConfig(**meta["config"]) == TINY and meta["history"] == trained.history
    labels = np.arange(12) % 3
    expected = gan.generate(trained.generator, labels, z_dim=TINY.z_dim, seed=3)
    assert np.array_equal(gan.generate(loaded, labels, z_dim=TINY.z_dim, seed=3), expected)
    with pytest.raises(FileNotFoundError, match="no generator in"):
        gan.load_generator(tmp_path / "missing")


def poison_after(monkeypatch: pytest.MonkeyPatch, step: int) -> list[GeneratorEvent]:
    """D returns NaN once the event for ``step`` has been seen; returns the event list to pass as on_event."""
    events: list[GeneratorEvent] = []
    build = gan.build_discriminator

    class Poisoned(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            poisoned = any(e.kind == "step" and e.step >= step for e in events)
            return self.inner(x, y) * (math.nan if poisoned else 1.0)

    monkeypatch.setattr(gan, "build_discriminator", lambda *a, **k: Poisoned(build(*a, **k)))
    return events


def test_a_nan_loss_stops_training_and_names_the_last_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = poison_after(monkeypatch, 3)
    cfg = gan.GanConfig(steps=10, width=8, batch_size=16, sample_every=2)
    with pytest.raises(gan.GanDiverged, match=r"at step 4 of 10 \(d_loss=nan.*last good checkpoint at step 2 in"):
        gan.train_gan(cfg, tiny_set(), on_event=events.append, checkpoint_dir=tmp_path / "ckpt")
    kept = gan.result_from_checkpoint(tmp_path / "ckpt")
    assert kept.steps_done == 2 and all(torch.isfinite(p).all() for p in kept.generator.parameters())
    events.clear()
    with pytest.raises(gan.GanDiverged, match=r"at step 4 .*no checkpoint was saved"):
        gan.train_gan(cfg, tiny_set(), on_event=events.append)


def test_should_stop_is_honoured_within_one_step() -> None:
    events: list[GeneratorEvent] = []
    with pytest.raises(Cancelled, match="cancelled at step 3 of 50"):
        gan.train_gan(
            gan.GanConfig(steps=50, width=8, batch_size=16),
            tiny_set(),
            on_event=events.append,
            should_stop=lambda: sum(e.kind == "step" for e in events) >= 3,
        )
    assert [e.kind for e in events] == ["step"] * 3


def test_diversity_ratio() -> None:
    real = np.random.default_rng(0).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
    assert gan.diversity_ratio(np.repeat(real[:1], 8, axis=0), real) == 0.0
    assert gan.diversity_ratio(real, real) == pytest.approx(1.0)
    assert gan.diversity_ratio(real.astype(np.float32) / 255, real) == pytest.approx(1.0)
    assert math.isnan(gan.diversity_ratio(real[:1], real)) and math.isnan(gan.diversity_ratio(real, real[:1]))


def test_a_collapsed_generator_raises_one_warning_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    build = gan.build_generator

    class Collapsed(nn.Module):  # ignores its noise: every sample of a class is the same image
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.zeros_like(z), y)

    monkeypatch.setattr(gan, "build_generator", lambda *a, **k: Collapsed(build(*a, **k)))
    events: list[GeneratorEvent] = []
    result = gan.train_gan(
        gan.GanConfig(steps=4, width=8, batch_size=16, sample_every=2), tiny_set(), on_event=events.append
    )
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 3 and result.warnings == [e.message for e in warnings]
    assert "class 'a'" in warnings[0].message and warnings[0].values["ratio"] == 0.0


def test_diff_augment_keeps_shapes_and_gradients() -> None:
    x = torch.ones(8, 3, 16, 16, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    out = gan.diff_augment(x, ("cutout",), gen)
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert out.shape == x.shape and (zeros > 0).all() and (zeros <= 8 * 8).all()
    moved = gan.diff_augment(x, ("color", "translation"), gen)
    moved.sum().backward()
    assert moved.shape == x.shape and x.grad is not None and torch.isfinite(x.grad).all()


def test_cache_key_is_stable_and_sensitive() -> None:
    assert gan.GanConfig().cache_key() == gan.GanConfig().cache_key() and len(gan.GanConfig().cache_key()) == 32
    assert gan.GanConfig(steps=3001).cache_key() != gan.GanConfig().cache_key()


def test_a_preset_fills_the_fields_left_at_zero_and_given_ones_win() -> None:
    for kind in gan.GAN_KINDS:
        quick, thorough = gan.GanConfig(kind=kind, preset="quick"), gan.GanConfig(kind=kind, preset="thorough")
        assert quick.steps < thorough.steps and quick.width <= thorough.width
        assert all(getattr(quick, name) == value for name, value in gan.PRESET_VALUES[kind]["quick"].items())
    assert gan.GanConfig() == gan.GanConfig(preset=gan.DEFAULT_PRESET)
    assert gan.GanConfig(preset="quick", steps=7).steps == 7
    # the name is a label: the same values give the same key, so the same stored generator
    same = gan.GanConfig(preset="thorough", **gan.PRESET_VALUES["cgan"]["quick"])
    assert same.cache_key() == gan.GanConfig(preset="quick").cache_key()
    assert gan.GanConfig(**dataclasses.asdict(gan.GanConfig(preset="quick"))) == gan.GanConfig(preset="quick")


def test_a_stopped_training_resumes_to_the_same_weights_bit_for_bit(tmp_path: Path) -> None:
    cfg = gan.GanConfig(steps=8, width=8, batch_size=16, sample_every=3, kind="wgan-gp", critic_steps=2)
    whole = gan.train_gan(cfg, tiny_set())
    steps: list[int] = []
    with pytest.raises(Cancelled, match="cancelled at step 5 of 8"):
        gan.train_gan(
            cfg,
            tiny_set(),
            on_event=lambda e: steps.append(e.step) if e.kind == "step" else None,
            should_stop=lambda: len(steps) >= 5,
            checkpoint_dir=tmp_path,
        )
    kept = gan.result_from_checkpoint(tmp_path)
    assert kept.steps_done == 5 and not same_state(kept.generator, whole.generator)
    events: list[GeneratorEvent] = []
    resumed = gan.train_gan(cfg, tiny_set(), on_event=events.append, checkpoint_dir=tmp_path, resume=True)
    assert [e.step for e in events if e.kind == "step"] == [6, 7, 8]  # it went on from the step after the stop
    assert resumed.steps_done == 8 and same_state(resumed.generator, whole.generator)
    assert resumed.history == whole.history


def test_a_resume_refuses_a_checkpoint_of_other_settings(tmp_path: Path) -> None:
    with pytest.raises(Cancelled):
        gan.train_gan(TINY, tiny_set(), checkpoint_dir=tmp_path, should_stop=iter([False, False, True]).__next__)
    with pytest.raises(ValueError, match="written for other settings or images: delete it"):
        gan.train_gan(dataclasses.replace(TINY, seed=1), tiny_set(), checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "vae"}, r"gan.kind='vae' is not accepted: expected one of 'cgan', 'wgan-gp'"),
        ({"conditional": False}, r"gan.conditional=False is not accepted: expected True for kind 'cgan'"),
        ({"diffaugment": "translation,flip"}, r"gan.diffaugment='translation,flip' .* 'translation', 'cutout'"),
        ({"steps": -1}, r"gan.steps=-1 is not accepted"),
        ({"preset": "fast"}, r"gan.preset='fast' is not accepted: expected one of 'quick', 'standard', 'thorough'"),
        ({"ema": 1.0}, r"gan.ema=1.0 is not accepted"),
        ({"batch_size": 1}, r"gan.batch_size=1 is not accepted"),
    ],
)
def test_config_errors_name_the_field_and_accepted_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(gan.GanConfigError, match=message):
        gan.GanConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tiny_set((4, 4), side=8, height=10), r"10x8 pixels are not accepted: expected square"),
        (tiny_set((4, 4), side=4), r"resolution=4 is not accepted: expected a square side from 8 to 64"),
        (tiny_set((8,)), r"at least 2 classes with images: got 1"),
        (tiny_set((8, 0)), r"at least 2 classes with images: got 1 of 2"),
        (tiny_set((0, 0)), r"the training split is empty"),
    ],
)
def test_bad_training_data_is_refused(data: ImageSet, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gan.train_gan(TINY, data)
