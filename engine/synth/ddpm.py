"""A small class-conditional diffusion model trained on the user's training split, for offline use.

A diffusers ``UNet2DModel`` with a class embedding (one extra "no class" entry, so that classifier-free
guidance works), trained with the DDPM noise-prediction loss on the training split it is given (8 to
64 px, 1 or 3 channels, side a multiple of 4), with an exponential moving average of the weights. It is
sampled with DDIM at a chosen number of steps and guidance scale; the starting noise of image k depends
on (seed, k) only, so the same seed gives the same images at any batch size. Progress leaves as
:class:`~engine.synth.events.GeneratorEvent` rows (loss) and sample grids, like the GANs'; ``should_stop``
raises :class:`~engine.jobs.Cancelled`, in training and in sampling. Presets (``quick``, ``standard``,
``thorough``) fill the steps and the width. The training state (UNet, EMA copy, optimiser, learning-rate
schedule, RNG) is checkpointed through :mod:`engine.checkpoints` every ``sample_every`` steps and when a
stop is asked, and training resumes from it exactly. Where this stops: no filtering and no sets (see
``make_sets.py``), no Stable Diffusion (see ``stable_diffusion.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import checkpoints, store
from engine.datasets import ImageSet
from engine.device import pick_device
from engine.jobs import Cancelled
from engine.synth.events import GeneratorEvent

log = logging.getLogger(__name__)
SAMPLES_PER_CLASS = 8  # columns of the sample grid
PRESETS = ("quick", "standard", "thorough")
DEFAULT_PRESET = "standard"
# What each preset fills in (fields left at 0). On the built-in 8x8 digits with 1 thread a step took about
# 75 ms at width 16 and 150 ms at width 32; "thorough" is what the default was before presets.
PRESET_VALUES: dict[str, dict[str, int]] = {
    "quick": {"steps": 800, "width": 16},
    "standard": {"steps": 2000, "width": 32},
    "thorough": {"steps": 4000, "width": 32},
}


class DdpmConfigError(ValueError):
    """A diffusion model setting is not accepted; the message names the field, the value and what would be."""


class DdpmDiverged(RuntimeError):
    """The loss stopped being finite; the message says where the last checkpoint is."""


@dataclass(frozen=True)
class DdpmConfig:
    """How to train the small diffusion model and how to sample it by default."""

    kind: str = "ddpm"  # fixed: tells generator folders apart from the GANs'
    width: int = 0  # base channels of the UNet (levels: width, 2 width, 2 width); 0 = the preset's
    steps: int = 0  # training steps; 0 = the preset's
    batch_size: int = 64
    lr: float = 3e-4  # AdamW learning rate, cosine-decayed to 10%
    timesteps: int = 1000  # DDPM noise levels (cosine schedule)
    p_uncond: float = 0.1  # share of training labels replaced by "no class", for classifier-free guidance
    ema: float = 0.999  # exponential moving average of the weights; 0 = off
    sample_steps: int = 50  # DDIM steps for the sample grids (and the default at generation)
    guidance: float = 2.0  # classifier-free guidance scale for the sample grids (1 = none)
    sample_every: int = 500  # steps between sample grids and checkpoints
    seed: int = 0
    preset: str = DEFAULT_PRESET  # fills steps and width left at 0: "quick", "standard" or "thorough"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            accepted = ", ".join(map(repr, PRESETS))
            raise DdpmConfigError(f"ddpm.preset={self.preset!r} is not accepted: expected one of {accepted}.")
        for field_name, preset_value in PRESET_VALUES[self.preset].items():
            if getattr(self, field_name) == 0:  # frozen: fill the preset's value once, here
                object.__setattr__(self, field_name, preset_value)
        checks = [
            ("ddpm.kind", self.kind, self.kind == "ddpm", "'ddpm'"),
            ("ddpm.width", self.width, _whole(self.width, 8, 256) and self.width % 8 == 0, "a multiple of 8, 8 to 256"),
            ("ddpm.steps", self.steps, _whole(self.steps, 1, 10_000_000), "a whole number from 1 to 10,000,000"),
            ("ddpm.batch_size", self.batch_size, _whole(self.batch_size, 2, 4096), "a whole number from 2 to 4096"),
            ("ddpm.lr", self.lr, _number(self.lr, 1e-9, 1.0), "a number in (0, 1]"),
            ("ddpm.timesteps", self.timesteps, _whole(self.timesteps, 10, 10_000), "a whole number from 10 to 10,000"),
            ("ddpm.p_uncond", self.p_uncond, _number(self.p_uncond, 0.0, 0.9), "a number from 0 to 0.9"),
            ("ddpm.ema", self.ema, _number(self.ema, 0.0, 0.99999), "a number in [0, 1) (0 = off)"),
            ("ddpm.sample_steps", self.sample_steps, _whole(self.sample_steps, 1, self.timesteps), "1 to timesteps"),
            ("ddpm.guidance", self.guidance, _number(self.guidance, 0.0, 20.0), "a number from 0 to 20"),
            ("ddpm.sample_every", self.sample_every, _whole(self.sample_every, 1, 10_000_000), "a whole number >= 1"),
            ("ddpm.seed", self.seed, _whole(self.seed, 0, 2**63 - 1), "a whole number >= 0"),
        ]
        for name, value, ok, accepted in checks:
            if not ok:
                raise DdpmConfigError(f"{name}={value!r} is not accepted: expected {accepted}.")

    def cache_key(self) -> str:
        """Stable sha256 hex (32 chars) of the settings; the preset's name is left out: the values it filled count."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "preset"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class DdpmResult:
    """The trained model and what happened."""

    model: Any  # EMA UNet (a diffusers UNet2DModel) when ema > 0, eval mode, on CPU
    config: DdpmConfig
    channels: int
    resolution: int
    class_names: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)  # every 10 steps: step, loss
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0  # training time, summed over a stop and its resume
    steps_done: int = 0  # config.steps when complete; fewer for a model stopped and kept


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: object, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def build_unet(cfg: DdpmConfig, *, channels: int, resolution: int, num_classes: int) -> Any:
    """A UNet2DModel for (channels, resolution, resolution) images and ``num_classes`` + 1 class embeddings."""
    from diffusers import UNet2DModel

    if channels not in (1, 3) or not 8 <= resolution <= 64 or resolution % 4:
        raise DdpmConfigError(
            f"images of {channels} channels and {resolution} px are not accepted: expected 1 or 3 channels and "
            "a side from 8 to 64 px that is a multiple of 4"
        )
    w = cfg.width
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(w, 2 * w, 2 * w),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        num_class_embeds=num_classes + 1,  # the last one means "no class"
    )


def _schedulers(cfg: DdpmConfig) -> tuple[Any, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler

    ddpm: Any = DDPMScheduler(num_train_timesteps=cfg.timesteps, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    # trailing spacing: a few DDIM steps still start from pure noise (t = T - 1), not from t = 800 or 900
    return ddpm, DDIMScheduler.from_config(ddpm.config, timestep_spacing="trailing")


def _noise(seed: int, indices: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Starting noise (len(indices), *shape); row i depends on (seed, indices[i]) only."""
    out = torch.empty(len(indices), *shape)
    for row, index in enumerate(indices.tolist()):
        digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
        out[row] = torch.randn(shape, generator=torch.Generator().manual_seed(int.from_bytes(digest) >> 1))
    return out


@torch.no_grad()
def sample(
    model: Any,
    labels: np.ndarray,
    *,
    seed: int,
    noise_indices: np.ndarray | None = None,
    steps: int = 50,
    guidance: float = 2.0,
    timesteps: int = 1000,
    batch_size: int = 256,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """DDIM samples uint8 (N, C, R, R) for ``labels`` (N,), with classifier-free guidance ``guidance``.

    Image i starts from the noise of index ``noise_indices[i]`` (default i); eta is 0, so the same seed
    and indices give the same images whatever the batch size. ``should_stop`` is checked before every
    denoising step and raises :class:`~engine.jobs.Cancelled`.
    """
    num_classes = int(model.config.num_class_embeds) - 1
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}): got {int(y.min())} to {int(y.max())}")
    idx = torch.arange(len(y)) if noise_indices is None else torch.as_tensor(np.asarray(noise_indices)).long()
    shape = (int(model.config.in_channels), int(model.config.sample_size), int(model.config.sample_size))
    device = next(model.parameters()).device
    _, ddim = _schedulers(DdpmConfig(timesteps=timesteps, sample_steps=min(steps, timesteps)))
    ddim.set_timesteps(steps)
    out = []
    for part_y, part_idx in zip(y.split(batch_size), idx.split(batch_size), strict=True):
        x = _noise(seed, part_idx, shape).to(device)
        yc = part_y.to(device)
        null = torch.full_like(yc, num_classes)
        for t in ddim.timesteps:
            if should_stop is not None and should_stop():
                raise Cancelled("sampling was cancelled")
            if guidance == 1:
                eps = model(x, t, class_labels=yc).sample
            else:
                both = model(torch.cat([x, x]), t, class_labels=torch.cat([yc, null])).sample
                cond, uncond = both.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            x = ddim.step(eps, t, x, eta=0.0).prev_sample
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    if not out:
        return np.zeros((0, *shape), dtype=np.uint8)
    return torch.cat(out).numpy()


def _grid(model: Any, cfg: DdpmConfig, num_classes: int) -> np.ndarray:
    """uint8 (classes*R, 8*R, 3): one row per class from fixed noise."""
    labels = np.repeat(np.arange(num_classes), SAMPLES_PER_CLASS)
    was_training = model.training
    model.eval()
    images = torch.from_numpy(
        sample(
            model,
            labels,
            seed=cfg.seed,
            steps=min(cfg.sample_steps, 25),
            guidance=cfg.guidance,
            timesteps=cfg.timesteps,
        )
    )
    model.train(was_training)
    c, r = images.shape[1], images.shape[2]
    grid = images.view(num_classes, SAMPLES_PER_CLASS, c, r, r).permute(0, 3, 1, 4, 2).reshape(num_classes * r, -1, c)
    return grid.expand(-1, -1, 3).numpy().copy()


def train_ddpm(
    cfg: DdpmConfig,
    train_set: ImageSet,
    *,
    on_event: Callable[[GeneratorEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> DdpmResult:
    """Train the UNet on ``train_set`` (uint8 (N, C, R, R)); the caller's global RNG is left as it was.

    With ``checkpoint_dir``, the training state is checkpointed there every ``sample_every`` steps while
    the loss is finite and when a stop is asked; with ``resume`` too, training continues from a checkpoint
    found there (same config and images) to ``cfg.steps``, to the same weights bit for bit on the CPU as a
    run never stopped. Raises :class:`DdpmDiverged` when the loss is not finite, and
    :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true (checked before every step).
    """
    # 1. Check inputs.
    n, channels, height, side = train_set.images.shape
    if n == 0:
        raise ValueError("diffusion training needs images: the training split is empty")
    if height != side:
        raise ValueError(f"images of {height}x{side} pixels are not accepted: expected square images")
    emit = on_event or (lambda e: None)
    stop = should_stop or (lambda: False)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        # 2. Model, EMA copy, optimiser, schedule, the data on the device.
        device = pick_device("auto", "fp32").device
        num_classes = train_set.num_classes
        net = build_unet(cfg, channels=channels, resolution=side, num_classes=num_classes).to(device).train()
        ema = copy.deepcopy(net).eval() if cfg.ema > 0 else None
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
        )
        noise_sched, _ = _schedulers(cfg)
        rng = torch.Generator().manual_seed(cfg.seed)
        images, labels = train_set.images.to(device), train_set.labels.to(device)
        history: list[dict[str, float]] = []
        where, first, seconds_before, saved = "no checkpoint was saved", 1, 0.0, 0

        def result(step: int) -> DdpmResult:
            final = copy.deepcopy(ema if ema is not None else net).eval().cpu()
            seconds = seconds_before + time.perf_counter() - started
            return DdpmResult(final, cfg, channels, side, train_set.class_names, history, [], seconds, step)

        def checkpoint(step: int) -> None:
            if checkpoint_dir is None:
                return
            models = {"unet": net.state_dict()} | ({"ema": ema.state_dict()} if ema is not None else {})
            state = {
                "models": models,
                "optimizers": {"unet": opt.state_dict()},
                "schedulers": {"lr": sched.state_dict()},
                "rng": checkpoints.capture_rng({"batches": rng}, global_rngs=("torch",)),
                "history": history,
            }
            meta = {
                "family": "ddpm",
                "config": dataclasses.asdict(cfg),
                "config_key": cfg.cache_key(),
                "shape": [n, channels, height, side],
                "channels": channels,
                "resolution": side,
                "class_names": list(train_set.class_names),
                "seconds": seconds_before + time.perf_counter() - started,
            }
            checkpoints.save_checkpoint(checkpoint_dir, step=step, state=state, meta=meta)

        # 3. A resume: every state as the checkpoint has it, the steps go on from the one after it.
        if resume and checkpoint_dir is not None and checkpoints.has_checkpoint(checkpoint_dir):
            ckpt = checkpoints.load_checkpoint(checkpoint_dir)
            if ckpt.meta.get("config_key") != cfg.cache_key() or ckpt.meta.get("shape") != [n, channels, height, side]:
                raise ValueError(
                    f"the checkpoint in {checkpoint_dir} was written for other settings or images: "
                    "delete it to train afresh"
                )
            net.load_state_dict(ckpt.state["models"]["unet"])
            if ema is not None:
                ema.load_state_dict(ckpt.state["models"]["ema"])
            opt.load_state_dict(ckpt.state["optimizers"]["unet"])
            sched.load_state_dict(ckpt.state["schedulers"]["lr"])
            checkpoints.restore_rng(ckpt.state["rng"], {"batches": rng})
            history = ckpt.state["history"]
            first, saved, seconds_before = ckpt.step + 1, ckpt.step, float(ckpt.meta["seconds"])
            where = f"last good checkpoint at step {ckpt.step} in {checkpoint_dir}"
            log.info("resuming diffusion training at step %d of %d", first, cfg.steps)

        # 4. Steps: noise a batch at random levels, predict the noise, MSE; EMA; health.
        step = first - 1
        for step in range(first, cfg.steps + 1):
            if stop():
                if saved < step - 1:  # what a Stop and keep keeps, and a Resume starts from
                    checkpoint(step - 1)
                raise Cancelled(f"cancelled at step {step - 1} of {cfg.steps}")
            idx = torch.randint(n, (cfg.batch_size,), generator=rng).to(device)
            x0 = images[idx].float().div(127.5).sub(1)
            y = labels[idx].clone()
            y[torch.rand(cfg.batch_size, generator=rng).to(device) < cfg.p_uncond] = num_classes
            noise = torch.randn(x0.shape, generator=rng).to(device)
            t = torch.randint(cfg.timesteps, (cfg.batch_size,), generator=rng).to(device)
            pred = net(noise_sched.add_noise(x0, noise, t), t, class_labels=y).sample
            loss = F.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            if ema is not None:
                decay = min(cfg.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
                        p_ema.lerp_(p, 1 - decay)
            value = loss.item()
            if not math.isfinite(value):
                raise DdpmDiverged(f"diffusion training diverged at step {step} of {cfg.steps} (loss={value}); {where}")
            emit(GeneratorEvent("step", step, cfg.steps, {"loss": value}))
            if step % 10 == 0 or step == cfg.steps:
                history.append({"step": float(step), "loss": value})
            # 5. Every sample_every steps and at the end: a sample grid and a checkpoint.
            if step % cfg.sample_every == 0 or step == cfg.steps:
                emit(
                    GeneratorEvent(
                        "samples", step, cfg.steps, {}, grid=_grid(ema if ema is not None else net, cfg, num_classes)
                    )
                )
                if step % cfg.sample_every == 0:
                    checkpoint(step)
                    saved, where = step, f"last good checkpoint at step {step} in {checkpoint_dir}"
        emit(GeneratorEvent("done", step, cfg.steps, {}))
        return result(step)


def result_from_checkpoint(folder: Path) -> DdpmResult:
    """The (EMA) UNet as the checkpoint in ``folder`` has it (eval mode, CPU), with ``steps_done`` its step.

    What *Stop and keep* stores: a model usable for sets, stopped at that step of its planned steps.
    """
    ckpt = checkpoints.load_checkpoint(folder)
    meta = ckpt.meta
    cfg = DdpmConfig(**meta["config"])
    with torch.random.fork_rng(devices=[]):  # the weights are loaded next; leave the caller's RNG alone
        unet = build_unet(
            cfg, channels=meta["channels"], resolution=meta["resolution"], num_classes=len(meta["class_names"])
        )
    models = ckpt.state["models"]
    unet.load_state_dict(models["ema"] if "ema" in models else models["unet"])
    return DdpmResult(
        unet.eval(),
        cfg,
        meta["channels"],
        meta["resolution"],
        tuple(meta["class_names"]),
        ckpt.state["history"],
        [],
        float(meta["seconds"]),
        ckpt.step,
    )


def save_model(result: DdpmResult, folder: Path) -> None:
    """``folder/unet/`` (diffusers layout, safetensors) and ``folder/generator.json`` (config, shape, history)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(folder / "unet", safe_serialization=True)
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
    store.write_json(folder / "generator.json", meta)


def load_model(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The UNet saved in ``folder`` (eval mode, CPU) and its metadata (see :func:`save_model`)."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    if not (folder / "generator.json").is_file() or not (folder / "unet").is_dir():
        raise FileNotFoundError(f"no diffusion model in {folder}: expected generator.json and unet/")
    meta = json.loads((folder / "generator.json").read_text())
    return UNet2DModel.from_pretrained(folder / "unet").eval(), meta
