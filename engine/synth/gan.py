"""Conditional GAN and WGAN-GP trained on the user's own (imbalanced) training split.

The networks (``gan_networks.py``): a DCGAN-style generator with class-conditional BatchNorm and a
discriminator with, when conditional, a projection term. ``cgan`` trains with the hinge loss and
spectral norm; ``wgan-gp`` with the Wasserstein loss and a gradient penalty (Gulrajani et al. 2017).
DiffAugment (Zhao et al. 2020) is applied in batches to everything D sees, real or fake; G's weights are
averaged (EMA). Fake labels are drawn uniformly over the classes present, so minority classes get as much
generator practice as majority ones. Presets (``quick``, ``standard``, ``thorough``) fill the steps and
the width; any field given explicitly wins. Progress leaves through ``on_event`` as
:class:`~engine.synth.events.GeneratorEvent`: losses every step, a fixed-noise sample grid and a
mode-collapse check every ``sample_every`` steps; ``should_stop`` is checked every step and raises
:class:`~engine.jobs.Cancelled`. The whole training state (G, D, the EMA copy, both optimisers, the RNG)
is checkpointed through :mod:`engine.checkpoints` every ``sample_every`` steps and when a stop is asked,
and training resumes from it exactly. Where this stops: no synthetic sets, no filtering, no quality
measures (see ``generators.py`` and ``make_sets.py``); the only files are the generator and its checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from engine import checkpoints, store
from engine.datasets import ImageSet
from engine.device import pick_device
from engine.jobs import Cancelled
from engine.synth.events import GeneratorEvent
from engine.synth.gan_networks import build_discriminator, build_generator, check_shape

log = logging.getLogger(__name__)

GAN_KINDS = ("cgan", "wgan-gp")
PRESETS = ("quick", "standard", "thorough")
DEFAULT_PRESET = "standard"
# What each preset fills in (fields left at 0), sized on the built-in 8x8 digits on 2 CPU cores: see
# docs/generators.md for the times measured.
PRESET_VALUES: dict[str, dict[str, dict[str, float]]] = {
    # On the digits, with 0-2 cut to 10%: the share of a minority class's samples the judge keeps rose
    # with the learning rate far sooner than with the steps (2e-4: 15-59% at 3,000 steps; 6e-4: 35-94%
    # at 1,500; width 16 stayed below 5% at 3,000).
    "cgan": {
        "quick": {"steps": 1000, "width": 32, "lr_g": 6e-4, "lr_d": 6e-4},
        "standard": {"steps": 1500, "width": 32, "lr_g": 6e-4, "lr_d": 6e-4},
        "thorough": {"steps": 4000, "width": 32, "lr_g": 4e-4, "lr_d": 4e-4},
    },
    "wgan-gp": {  # 5 critic steps per generator step: each step costs about 5 of the conditional GAN's
        "quick": {"steps": 300, "width": 16, "lr_g": 2e-4, "lr_d": 2e-4},
        "standard": {"steps": 800, "width": 32, "lr_g": 2e-4, "lr_d": 2e-4},
        "thorough": {"steps": 2000, "width": 32, "lr_g": 2e-4, "lr_d": 2e-4},
    },
}
AUGMENT_POLICIES = ("translation", "cutout", "color")
MAX_LOSS = 1e4  # a loss this large (or not finite) counts as divergence
COLLAPSE_RATIO = 0.25  # samples varying less than this share of the real images' variation raise a warning
SAMPLES_PER_CLASS = 8  # columns of the sample grid
REAL_PER_CLASS = 64  # real images per class for the diversity reference
NOISE_BLOCK = 256  # noise is drawn in blocks of this many indices, each block seeded by (seed, block) only

EventFn = Callable[[GeneratorEvent], None]
StopFn = Callable[[], bool]


class GanConfigError(ValueError):
    """A GAN setting is not accepted."""


class GanDiverged(RuntimeError):
    """Training produced a loss that is not finite or too large; the message says where the last checkpoint is."""


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: object, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class GanConfig:
    """How to train a generator; the data is the training split it is given."""

    kind: str = "cgan"  # "cgan": hinge loss, projection discriminator; "wgan-gp": Wasserstein loss + gradient penalty
    conditional: bool = True  # wgan-gp may be unconditional; cgan is always conditional
    z_dim: int = 64  # noise dimensions
    width: int = 0  # base channel width of G and D; 0 = the preset's
    steps: int = 0  # generator steps; 0 = the preset's
    batch_size: int = 64
    lr_g: float = 0.0  # Adam learning rate of G (betas 0.0, 0.9); 0 = the preset's
    lr_d: float = 0.0  # Adam learning rate of D; 0 = the preset's
    critic_steps: int = 0  # D steps per G step; 0 = default (1 for cgan, 5 for wgan-gp)
    gp_lambda: float = 10.0  # wgan-gp gradient penalty weight
    diffaugment: str = "translation,cutout"  # comma list from translation, cutout, color; "" = off
    ema: float = 0.999  # exponential moving average of G's weights; 0 = off
    spectral_norm: bool = True  # on D's layers
    sample_every: int = 250  # steps between fixed-noise sample grids (and checkpoints when a folder is given)
    seed: int = 0
    preset: str = DEFAULT_PRESET  # fills steps and width left at 0: "quick", "standard" or "thorough"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            accepted = ", ".join(map(repr, PRESETS))
            raise GanConfigError(f"gan.preset={self.preset!r} is not accepted: expected one of {accepted}.")
        for field_name, preset_value in PRESET_VALUES.get(self.kind, PRESET_VALUES["cgan"])[self.preset].items():
            if getattr(self, field_name) == 0:  # frozen: fill the preset's value once, here
                object.__setattr__(self, field_name, preset_value)
        policies = self.diffaugment.split(",") if isinstance(self.diffaugment, str) else [None]
        accepted_policies = "a comma list from " + ", ".join(map(repr, AUGMENT_POLICIES)) + ", or '' for none"
        checks: list[tuple[str, Any, bool, str]] = [
            ("gan.kind", self.kind, self.kind in GAN_KINDS, "one of " + ", ".join(map(repr, GAN_KINDS))),
            (
                "gan.conditional",
                self.conditional,
                isinstance(self.conditional, bool) and (self.conditional or self.kind != "cgan"),
                "True for kind 'cgan' (a cGAN is always conditional); False only with kind 'wgan-gp'",
            ),
            ("gan.z_dim", self.z_dim, _whole(self.z_dim, 1, 1024), "a whole number from 1 to 1024"),
            ("gan.width", self.width, _whole(self.width, 4, 512), "a whole number from 4 to 512"),
            ("gan.steps", self.steps, _whole(self.steps, 1, 10_000_000), "a whole number from 1 to 10,000,000"),
            ("gan.batch_size", self.batch_size, _whole(self.batch_size, 2, 4096), "a whole number from 2 to 4096"),
            ("gan.lr_g", self.lr_g, _number(self.lr_g, 1e-12, 1.0), "a number in (0, 1]"),
            ("gan.lr_d", self.lr_d, _number(self.lr_d, 1e-12, 1.0), "a number in (0, 1]"),
            ("gan.critic_steps", self.critic_steps, _whole(self.critic_steps, 0, 100), "a whole number from 0 to 100"),
            ("gan.gp_lambda", self.gp_lambda, _number(self.gp_lambda, 0.0, 1e4), "a number from 0 to 10,000"),
            (
                "gan.diffaugment",
                self.diffaugment,
                all(p is not None and (p.strip() in AUGMENT_POLICIES or not p.strip()) for p in policies),
                accepted_policies,
            ),
            ("gan.ema", self.ema, _number(self.ema, 0.0, 0.99999), "a number in [0, 1) (0 = off)"),
            ("gan.spectral_norm", self.spectral_norm, isinstance(self.spectral_norm, bool), "True or False"),
            ("gan.sample_every", self.sample_every, _whole(self.sample_every, 1, 10_000_000), "a whole number >= 1"),
            ("gan.seed", self.seed, _whole(self.seed, 0, 2**63 - 1), "a whole number >= 0"),
        ]
        for name, value, ok, accepted in checks:
            if not ok:
                raise GanConfigError(f"{name}={value!r} is not accepted: expected {accepted}.")

    @property
    def policies(self) -> tuple[str, ...]:
        """DiffAugment policies in the order they are applied."""
        chosen = {p.strip() for p in self.diffaugment.split(",")}
        return tuple(p for p in ("color", "translation", "cutout") if p in chosen)

    @property
    def d_steps(self) -> int:
        return self.critic_steps or (1 if self.kind == "cgan" else 5)

    def cache_key(self) -> str:
        """Stable sha256 hex (32 chars) of the settings; the preset's name is left out: the values it filled count."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "preset"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class GanResult:
    """The trained generator and what happened."""

    generator: nn.Module  # EMA generator when ema > 0, in eval mode, on CPU
    config: GanConfig
    channels: int
    resolution: int
    class_names: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)  # every 10 steps: step, d_loss, g_loss (gp)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # training time, summed over a stop and its resume
    steps_done: int = 0  # config.steps when complete; fewer for a generator stopped and kept


def diff_augment(x: torch.Tensor, policies: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment of a batch (B, C, R, R) in [-1, 1]: differentiable, random per image, drawn from ``gen``.

    color: brightness ±0.5, saturation ×[0, 2), contrast ×[0.5, 1.5); translation: zero-padded shift of up
    to 1/8 of the side; cutout: a zeroed square of half the side, centred anywhere in the image.
    """
    b, c, h, w = x.shape

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen).to(x.device)

    def ints(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (2, b, 1, 1), generator=gen).to(x.device)

    rows, cols = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
    if "color" in policies:
        x = x + (uniform(b, 1, 1, 1) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (uniform(b, 1, 1, 1) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (uniform(b, 1, 1, 1) + 0.5) + mean
    if "translation" in policies:
        s = max(1, int(h * 0.125 + 0.5))
        shift = ints(-s, s + 1) + s
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
        x = F.pad(x, (s, s, s, s))[batch, chans, (rows + shift[0]).unsqueeze(1), (cols + shift[1]).unsqueeze(1)]
    if "cutout" in policies:
        cut = int(h * 0.5 + 0.5)
        start = ints(0, h + 1 - cut % 2) - cut // 2
        inside = (rows >= start[0]) & (rows < start[0] + cut) & (cols >= start[1]) & (cols < start[1] + cut)
        x = x * (~inside).unsqueeze(1).to(x.dtype)
    return x


def _noise(seed: int, indices: torch.Tensor, z_dim: int) -> torch.Tensor:
    """(len(indices), z_dim) float32 standard normal; row i depends on (seed, indices[i], z_dim) only."""
    blocks = indices // NOISE_BLOCK
    out = torch.empty(len(indices), z_dim)
    for block in torch.unique(blocks).tolist():
        digest = hashlib.blake2b(f"{seed}:{block}".encode(), digest_size=8).digest()
        table = torch.randn(NOISE_BLOCK, z_dim, generator=torch.Generator().manual_seed(int.from_bytes(digest) >> 1))
        mask = blocks == block
        out[mask] = table[indices[mask] % NOISE_BLOCK]
    return out


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def generate(
    generator: nn.Module, labels: np.ndarray, *, z_dim: int, seed: int, noise_offset: int = 0, batch_size: int = 256
) -> np.ndarray:
    """Images uint8 (N, C, R, R) for ``labels`` (N,); ignored by an unconditional generator.

    Image i gets noise index ``noise_offset + i``; the noise of index k depends on (seed, k) only, so the
    same seed and indices give the same images whatever the batch size or order.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    num_classes = int(getattr(generator, "num_classes", 0))
    if len(y) and num_classes and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}): got {int(y.min())} to {int(y.max())}")
    if noise_offset < 0 or batch_size < 1:
        raise ValueError(f"noise_offset={noise_offset} and batch_size={batch_size}: expected >= 0 and >= 1")
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    indices = torch.arange(len(y)) + noise_offset
    out = [
        _to_uint8(generator(_noise(seed, idx, z_dim).to(device), part.to(device))).cpu()
        for idx, part in zip(indices.split(batch_size), y.split(batch_size), strict=True)
    ]
    generator.train(was_training)
    if not out:
        side = int(getattr(generator, "resolution", 0))
        return np.zeros((0, int(getattr(generator, "channels", 1)), side, side), dtype=np.uint8)
    return torch.cat(out).numpy()


def _mean_pairwise(images: np.ndarray | torch.Tensor) -> float:
    """Mean L2 distance over pairs of images, pixels in [0, 1] (uint8 is divided by 255); nan below two."""
    x = torch.as_tensor(images)
    flat = x.reshape(len(x), -1).double() / (255.0 if x.dtype == torch.uint8 else 1.0)
    n = len(flat)
    if n < 2:
        return math.nan
    distances = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")  # exact 0 for equal rows
    return float(distances.sum() / (n * (n - 1)))


def diversity_ratio(samples: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor) -> float:
    """Mean pairwise L2 distance of ``samples`` over that of ``real`` (both (N, C, H, W), uint8 or [0, 1]).

    About 1 when samples vary as much as real images, 0 when all are identical (mode collapse); nan when
    either has fewer than two images or the real images are all identical.
    """
    reference = _mean_pairwise(real)
    return _mean_pairwise(samples) / reference if reference > 0 else math.nan


def _sample_grid(net: nn.Module, z: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """The fixed-noise grid uint8 (rows*R, 8*R, 3) and the samples uint8 (rows*8, C, R, R)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    with torch.no_grad():
        images = _to_uint8(net(z.to(device), labels.to(device))).cpu()
    net.train(was_training)
    rows, (c, r) = len(images) // SAMPLES_PER_CLASS, images.shape[1:3]
    grid = images.view(rows, SAMPLES_PER_CLASS, c, r, r).permute(0, 3, 1, 4, 2).reshape(rows * r, -1, c)
    return grid.expand(-1, -1, 3).numpy().copy(), images


def train_gan(
    cfg: GanConfig,
    train_set: ImageSet,
    *,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> GanResult:
    """Train G and D on ``train_set`` (uint8 (N, C, R, R), R from 8 to 64) and return the (EMA) generator.

    The same seed and data give the same weights bit for bit on the CPU; the caller's global RNG is left as
    it was. With ``checkpoint_dir``, the training state is checkpointed there every ``sample_every`` steps
    while the losses are healthy and when a stop is asked; with ``resume`` too, training continues from a
    checkpoint found there (same config and images) to ``cfg.steps``, to the same weights bit for bit on
    the CPU as a run never stopped. Raises :class:`GanDiverged` when a loss is not finite or above 1e4,
    and :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true (checked before every step).
    """
    # 1. Check inputs.
    n, channels, height, side = train_set.images.shape
    if n == 0:
        raise ValueError("gan training needs images: the training split is empty")
    if height != side:
        raise ValueError(f"images of {height}x{side} pixels are not accepted: expected square images")
    check_shape(channels, side)
    counts = train_set.class_counts()
    present = torch.from_numpy(np.flatnonzero(counts))
    if len(present) < 2:
        raise ValueError(f"gan training needs at least 2 classes with images: got {len(present)} of {len(counts)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        stop = should_stop or (lambda: False)
        return _train(cfg, train_set, present, on_event or (lambda e: None), stop, checkpoint_dir, resume)


def _checkpoint_meta(cfg: GanConfig, data: ImageSet, seconds: float) -> dict[str, Any]:
    side = data.images.shape[-1]
    return {
        "family": "gan",
        "config": dataclasses.asdict(cfg),
        "config_key": cfg.cache_key(),
        "shape": [len(data), *data.images.shape[1:]],
        "channels": data.images.shape[1],
        "resolution": side,
        "class_names": list(data.class_names),
        "seconds": seconds,
    }


def _train(
    cfg: GanConfig,
    data: ImageSet,
    present: torch.Tensor,
    emit: EventFn,
    stop: StopFn,
    folder: Path | None,
    resume: bool,
) -> GanResult:
    started = time.perf_counter()
    # 2. Models, optimisers, the data on the device, fixed noise and the real images' diversity per class.
    device = pick_device("auto", "fp32").device
    channels, side, num_classes, b = data.images.shape[1], data.images.shape[-1], data.num_classes, cfg.batch_size
    shape = {"channels": channels, "resolution": side, "num_classes": num_classes}
    gen_net, disc = build_generator(cfg, **shape).to(device), build_discriminator(cfg, **shape).to(device)
    ema_net = copy.deepcopy(gen_net).eval() if cfg.ema > 0 else None
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=cfg.lr_g, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=(0.0, 0.9))
    rng = torch.Generator().manual_seed(cfg.seed)
    images, labels = data.images.to(device), data.labels.to(device)
    grid_labels = torch.arange(num_classes).repeat_interleave(SAMPLES_PER_CLASS)
    grid_z = _noise(cfg.seed, torch.arange(len(grid_labels)), cfg.z_dim)
    # Rows of an unconditional grid are just more noise: judge them all together against all real images.
    groups = [data.labels.numpy() == c for c in range(num_classes)] if cfg.conditional else [np.ones(len(data), bool)]
    spread = [np.flatnonzero(g)[np.linspace(0, g.sum() - 1, min(g.sum(), REAL_PER_CLASS)).astype(int)] for g in groups]
    real_div = [_mean_pairwise(data.images[idx]) for idx in spread]
    names = list(data.class_names) if cfg.conditional else ["all classes"]

    def real_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(data), (b,), generator=rng).to(device)
        return images[idx].float().div_(127.5).sub_(1), labels[idx]

    def fakes(y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(b, cfg.z_dim, generator=rng).to(device)
        y = y if y is not None else present[torch.randint(len(present), (b,), generator=rng)].to(device)
        return gen_net(z, y), y

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, cfg.policies, rng) if cfg.policies else x

    history: list[dict[str, float]] = []
    warnings: list[str] = []
    warned: set[int] = set()
    where, first, seconds_before, saved = "no checkpoint was saved", 1, 0.0, 0

    def result(step: int) -> GanResult:
        net = ema_net if ema_net is not None else gen_net
        seconds = seconds_before + time.perf_counter() - started
        return GanResult(net, cfg, channels, side, data.class_names, history, warnings, seconds, step)

    def checkpoint(step: int) -> None:
        if folder is None:
            return
        models = {"generator": gen_net.state_dict(), "discriminator": disc.state_dict()}
        if ema_net is not None:
            models["ema"] = ema_net.state_dict()
        state = {
            "models": models,
            "optimizers": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
            "rng": checkpoints.capture_rng({"batches": rng}, global_rngs=("torch",)),
            "history": history,
            "warnings": warnings,
            "warned": sorted(warned),
        }
        meta = _checkpoint_meta(cfg, data, seconds_before + time.perf_counter() - started)
        checkpoints.save_checkpoint(folder, step=step, state=state, meta=meta)

    # 3. A resume: every state as the checkpoint has it, the steps go on from the one after it.
    if resume and folder is not None and checkpoints.has_checkpoint(folder):
        ckpt = checkpoints.load_checkpoint(folder)
        _check_resumable(ckpt, cfg, data, folder)
        gen_net.load_state_dict(ckpt.state["models"]["generator"])
        disc.load_state_dict(ckpt.state["models"]["discriminator"])
        if ema_net is not None:
            ema_net.load_state_dict(ckpt.state["models"]["ema"])
        opt_g.load_state_dict(ckpt.state["optimizers"]["generator"])
        opt_d.load_state_dict(ckpt.state["optimizers"]["discriminator"])
        checkpoints.restore_rng(ckpt.state["rng"], {"batches": rng})
        history, warnings, warned = ckpt.state["history"], ckpt.state["warnings"], set(ckpt.state["warned"])
        first, saved, seconds_before = ckpt.step + 1, ckpt.step, float(ckpt.meta["seconds"])
        where = f"last good checkpoint at step {ckpt.step} in {folder}"
        log.info("resuming %s training at step %d of %d", cfg.kind, first, cfg.steps)

    # 4. Steps: D (critic) steps on augmented real and fake batches, then one G step, EMA and health checks.
    step = first - 1
    for step in range(first, cfg.steps + 1):
        if stop():
            if saved < step - 1:  # what a Stop and keep keeps, and a Resume starts from
                checkpoint(step - 1)
            raise Cancelled(f"cancelled at step {step - 1} of {cfg.steps}")
        d_sum, gp_sum = 0.0, 0.0
        for _ in range(cfg.d_steps):
            x_real, y_real = real_batch()
            with torch.no_grad():
                x_fake, y_fake = fakes(y_real if cfg.kind == "wgan-gp" and cfg.conditional else None)
            both = augment(torch.cat([x_real, x_fake]))
            if cfg.kind == "cgan":
                d_real, d_fake = disc(both, torch.cat([y_real, y_fake])).split(b)
                d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            else:
                eps = torch.rand(b, 1, 1, 1, generator=rng).to(device)
                mixed = (eps * both[:b] + (1 - eps) * both[b:]).detach().requires_grad_(True)
                d_real, d_fake, d_mixed = disc(torch.cat([both, mixed]), torch.cat([y_real, y_fake, y_real])).split(b)
                (grad,) = torch.autograd.grad(d_mixed.sum(), mixed, create_graph=True)
                gp = ((grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()
                d_loss = d_fake.mean() - d_real.mean() + cfg.gp_lambda * gp
                gp_sum += gp.item()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d_sum += d_loss.item()
        disc.requires_grad_(False)  # G's step needs no gradients of D's weights
        x_fake, y_fake = fakes()
        g_loss = -disc(augment(x_fake), y_fake).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        disc.requires_grad_(True)
        if ema_net is not None:  # warm-up: early on the average follows G closely, later it moves at 1 - ema
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema_net.parameters(), gen_net.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
                for b_ema, buf in zip(ema_net.buffers(), gen_net.buffers(), strict=True):
                    b_ema.copy_(buf)
        values = {"d_loss": d_sum / cfg.d_steps, "g_loss": g_loss.item()}
        if cfg.kind == "wgan-gp":
            values["gp"] = gp_sum / cfg.d_steps
        if not all(math.isfinite(v) and abs(v) < MAX_LOSS for v in (values["d_loss"], values["g_loss"])):
            losses = f"d_loss={values['d_loss']:.4g}, g_loss={values['g_loss']:.4g}"
            raise GanDiverged(f"GAN training diverged at step {step} of {cfg.steps} ({losses}); {where}")
        emit(GeneratorEvent("step", step, cfg.steps, values))
        if step % 10 == 0 or step == cfg.steps:
            history.append({"step": float(step), **values})

        # 5. Every sample_every steps and at the end: the sample grid, the mode-collapse check, a checkpoint.
        if step % cfg.sample_every == 0 or step == cfg.steps:
            grid, samples = _sample_grid(ema_net if ema_net is not None else gen_net, grid_z, grid_labels)
            emit(GeneratorEvent("samples", step, cfg.steps, {}, grid=grid))
            per_group = samples.view(len(groups), -1, *samples.shape[1:])
            for g, reference in enumerate(real_div):
                ratio = _mean_pairwise(per_group[g]) / reference if reference > 0 else math.nan
                if g not in warned and ratio < COLLAPSE_RATIO:
                    warned.add(g)
                    warnings.append(
                        f"possible mode collapse in class '{names[g]}' at step {step}: samples vary "
                        f"{ratio:.2f}× as much as its real images (warned below {COLLAPSE_RATIO})"
                    )
                    log.warning(warnings[-1])
                    emit(GeneratorEvent("warning", step, cfg.steps, {"ratio": ratio}, message=warnings[-1]))
            if folder is not None and step % cfg.sample_every == 0:
                checkpoint(step)
                saved, where = step, f"last good checkpoint at step {step} in {folder}"

    # 6. The (EMA) generator, in eval mode, on the CPU.
    final = result(step)
    final.generator = final.generator.eval().cpu()
    emit(GeneratorEvent("done", step, cfg.steps, {}))
    return final


def _check_resumable(ckpt: checkpoints.Checkpoint, cfg: GanConfig, data: ImageSet, folder: Path) -> None:
    """Raise ValueError unless the checkpoint was written by training this config on images of this shape."""
    if ckpt.meta.get("config_key") != cfg.cache_key() or ckpt.meta.get("shape") != [len(data), *data.images.shape[1:]]:
        raise ValueError(
            f"the checkpoint in {folder} was written for other settings or images: delete it to train afresh"
        )
    if ckpt.step > cfg.steps:
        raise ValueError(f"the checkpoint in {folder} is at step {ckpt.step}, beyond gan.steps={cfg.steps}")


def result_from_checkpoint(folder: Path) -> GanResult:
    """The (EMA) generator as the checkpoint in ``folder`` has it (eval mode, CPU), with ``steps_done`` its step.

    What *Stop and keep* stores: a generator usable for sets, stopped at that step of its planned steps.
    """
    ckpt = checkpoints.load_checkpoint(folder)
    meta = ckpt.meta
    cfg = GanConfig(**meta["config"])
    shape = {"channels": meta["channels"], "resolution": meta["resolution"], "num_classes": len(meta["class_names"])}
    with torch.random.fork_rng(devices=[]):  # the weights are loaded next; leave the caller's RNG alone
        net = build_generator(cfg, **shape)
    models = ckpt.state["models"]
    net.load_state_dict(models["ema"] if "ema" in models else models["generator"])
    return GanResult(
        net.eval(),
        cfg,
        meta["channels"],
        meta["resolution"],
        tuple(meta["class_names"]),
        ckpt.state["history"],
        ckpt.state["warnings"],
        float(meta["seconds"]),
        ckpt.step,
    )


def save_generator(result: GanResult, folder: Path) -> None:
    """``folder/generator.safetensors`` (weights) and ``folder/generator.json`` (config, shape, history)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in result.generator.state_dict().items()}
    meta = {
        "config": dataclasses.asdict(result.config),
        "channels": result.channels,
        "resolution": result.resolution,
        "class_names": list(result.class_names),
        "history": result.history,
        "warnings": result.warnings,
        "seconds": result.seconds,
        "steps_done": result.steps_done,
    }
    store.write_atomic(folder / "generator.safetensors", save(state))
    store.write_json(folder / "generator.json", meta)


def load_generator(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The generator saved in ``folder`` (eval mode, CPU) and its metadata (see :func:`save_generator`)."""
    folder = Path(folder)
    if not (folder / "generator.json").is_file() or not (folder / "generator.safetensors").is_file():
        raise FileNotFoundError(f"no generator in {folder}: expected generator.json and generator.safetensors")
    meta = json.loads((folder / "generator.json").read_text())
    cfg = GanConfig(**meta["config"])
    shape = {"channels": meta["channels"], "resolution": meta["resolution"], "num_classes": len(meta["class_names"])}
    with torch.random.fork_rng(devices=[]):  # the weights are loaded next; leave the caller's RNG alone
        net = build_generator(cfg, **shape)
    net.load_state_dict(load_file(folder / "generator.safetensors"))
    return net.eval(), meta
