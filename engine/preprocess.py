"""Preprocessing presets shared by the Preprocess preview and by training: what you see is what trains.

Every image in SynthLab is a uint8 square at the working resolution: real images were made square by
the dataset's fit (crop, stretch or pad, chosen on the Dataset page); synthetic ones are generated
square. A :class:`Preset` changes a batch of such squares, on tensors, in one batched pass per step:

1. **Geometry.** Each image is regarded as a photo of aspect ``a`` (width / height): a synthetic
   square takes ``a`` drawn from the real images' aspect ratios (kept by the dataset layer) and is
   centre-cropped to it; a real image keeps ``a = 1`` (its shape was settled by the dataset's fit).
   The resize mode then makes that photo square again: ``stretch`` (squash to the square),
   ``letterbox`` (keep the aspect, pad with ``fill``), ``center_crop`` (keep the aspect, crop the
   centre) or ``margins`` (keep the aspect, shrink by a random scale in [``margin_scale``, 1] and
   place at a random position on a ``fill`` background). ``none`` leaves the square alone.
2. **Random resized crop** of area in [``crop_scale``, 1] and aspect in [3/4, 4/3] (1 = off).
3. **Colour**: ``grayscale`` (ITU-R 601 weights, as torchvision), ``jitter`` (brightness, contrast
   and saturation factors drawn from [1 - jitter, 1 + jitter], as torchvision's ColorJitter).

Geometry and crops are affine maps sampled bilinearly (``F.grid_sample``); colour follows
torchvision's formulas. Parameters are drawn from a ``torch.Generator``, so a seed gives the same
batch. Normalisation stays inside the models (per-channel statistics of the training split), so
there is one place for it. A preset is written in run configs as a short spec string
(:meth:`Preset.spec`), e.g. ``"resize=margins;margin_scale=0.6;fill=127;jitter=0.2"``.
Where this stops: no widgets, no gap measures (see ``gap.py``), no decoding (see ``sources.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("none", "stretch", "letterbox", "center_crop", "margins")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


class PresetError(ValueError):
    """A preset setting is not accepted; the message names the field, the value and what would be."""


@dataclass(frozen=True)
class Preset:
    """One preprocessing recipe (see the module docstring for the order of the steps)."""

    resize: str = "none"  # none | stretch | letterbox | center_crop | margins
    fill: int = 0  # grey level 0-255 of letterbox bars and margins
    margin_scale: float = 0.6  # margins: the image is shrunk by a random factor in [margin_scale, 1]
    crop_scale: float = 1.0  # random resized crop: smallest area fraction kept (1 = off)
    grayscale: bool = False
    jitter: float = 0.0  # colour jitter strength in [0, 1) (0 = off)

    def __post_init__(self) -> None:
        checks = [
            ("resize", self.resize, self.resize in RESIZE_MODES, "one of " + ", ".join(RESIZE_MODES)),
            ("fill", self.fill, _whole(self.fill, 0, 255), "a whole number from 0 to 255"),
            ("margin_scale", self.margin_scale, _number(self.margin_scale, 0.1, 1.0), "a number from 0.1 to 1"),
            ("crop_scale", self.crop_scale, _number(self.crop_scale, 0.05, 1.0), "a number from 0.05 to 1"),
            ("grayscale", self.grayscale, isinstance(self.grayscale, bool), "true or false"),
            ("jitter", self.jitter, _number(self.jitter, 0.0, 0.99), "a number in [0, 1)"),
        ]
        for name, value, ok, accepted in checks:
            if not ok:
                raise PresetError(f"preset {name}={value!r} is not accepted: expected {accepted}")

    @property
    def is_identity(self) -> bool:
        return self == Preset()

    def spec(self) -> str:
        """The short form kept in run configs: the fields that differ from the defaults, ';'-separated."""
        default = Preset()
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                parts.append(f.name if value is True else f"{f.name}={value}")
        return ";".join(parts)

    @classmethod
    def parse(cls, spec: str) -> Preset:
        """The preset a :meth:`spec` string describes; "" is the identity. Errors name the part."""
        if not isinstance(spec, str):
            raise PresetError(f"preset {spec!r} is not accepted: expected a string such as 'resize=letterbox;fill=0'")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for part in [p.strip() for p in spec.split(";") if p.strip()]:
            name, _, raw = part.partition("=")
            name = name.strip()
            if name not in types:
                raise PresetError(f"preset part {part!r} is not accepted: known settings are {', '.join(types)}")
            try:
                kind = types[name]
                if kind == "bool" and raw.strip().lower() not in ("", "true", "1", "yes", "false", "0", "no"):
                    raise ValueError
                values[name] = (
                    (raw.strip().lower() in ("", "true", "1", "yes"))
                    if kind == "bool"
                    else int(raw)
                    if kind == "int"
                    else float(raw)
                    if kind == "float"
                    else raw.strip()
                )
            except ValueError:
                raise PresetError(f"preset part {part!r} is not accepted: {name} needs a {types[name]}") from None
        return cls(**values)  # type: ignore[arg-type]


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: object, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def real_aspects(orig_width: np.ndarray, orig_height: np.ndarray) -> torch.Tensor:
    """(N,) float32 width / height of the real images before they were made square."""
    w = torch.as_tensor(np.asarray(orig_width), dtype=torch.float32)
    h = torch.as_tensor(np.asarray(orig_height), dtype=torch.float32)
    return w / h.clamp_min(1)


# The resize mode that frames a synthetic square the way each dataset fit framed the real photos
# (sources.py pads with black, the default fill). Measured on digits "photos" of four aspects
# (bench/gap_presets.py): the domain-gap score falls from 0.97-1.0 to 0.51-0.53 with the matching mode
# and stays at 0.95-1.0 with the others.
MATCHING_RESIZE = {"pad": "letterbox", "crop": "center_crop", "stretch": "stretch"}


def suggested_synthetic(fit: str, aspects: torch.Tensor) -> Preset:
    """A starting preset for synthetic squares: the mode matching ``fit`` when the real images' ``aspects`` vary.

    When (nearly) every real image was square already (digits, CIFAR), no resize mode changes anything
    the real images show, so the suggestion is no preset at all.
    """
    if fit not in MATCHING_RESIZE:
        raise PresetError(f"fit={fit!r} is not accepted: expected one of {', '.join(MATCHING_RESIZE)}")
    a = torch.as_tensor(aspects, dtype=torch.float32)
    varied = len(a) > 0 and float(((a - 1).abs() > 0.02).float().mean()) > 0.05
    return Preset(resize=MATCHING_RESIZE[fit]) if varied else Preset()


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=gen.device)


def _sample(x: torch.Tensor, theta: torch.Tensor, inside: torch.Tensor, fill: float) -> torch.Tensor:
    """Bilinear resampling of float images (B, C, H, W) by affine maps (B, 2, 3); ``fill`` where not inside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(inside.unsqueeze(1), out, torch.full_like(out, fill))


def _grid_coords(b: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Output pixel centres in normalised coordinates, (B, H, W) each."""
    u = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    v = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    return u.view(1, 1, w).expand(b, h, w), v.view(1, h, 1).expand(b, h, w)


def _geometry(x: torch.Tensor, preset: Preset, aspects: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Step 1: crop each square to its aspect (centred), then make it square by the resize mode."""
    b, _, h, w = x.shape
    a = aspects.to(x.device, torch.float32).clamp(0.1, 10)
    wide = a >= 1
    one = torch.ones_like(a)
    # Source box (half sizes, normalised): the centred aspect-a crop of the square.
    src_w, src_h = torch.where(wide, one, a), torch.where(wide, 1 / a, one)
    # Destination box: where that photo lands in the output square.
    if preset.resize == "stretch":
        dst_w, dst_h = one, one
    elif preset.resize == "center_crop":  # keep the aspect, fill the square: the box overflows it
        dst_w, dst_h = torch.where(wide, a, one), torch.where(wide, one, 1 / a)
    else:  # letterbox and margins keep the aspect inside the square
        dst_w, dst_h = torch.where(wide, one, a), torch.where(wide, 1 / a, one)
    cx, cy = torch.zeros_like(a), torch.zeros_like(a)
    if preset.resize == "margins":
        scale = _uniform(b, preset.margin_scale, 1.0, gen).to(x.device)
        dst_w, dst_h = dst_w * scale, dst_h * scale
        cx = (_uniform(b, -1, 1, gen).to(x.device)) * (1 - dst_w)
        cy = (_uniform(b, -1, 1, gen).to(x.device)) * (1 - dst_h)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = src_w / dst_w, -cx * src_w / dst_w
    theta[:, 1, 1], theta[:, 1, 2] = src_h / dst_h, -cy * src_h / dst_h
    u, v = _grid_coords(b, h, w, x.device)
    inside = ((u - cx.view(-1, 1, 1)).abs() <= dst_w.view(-1, 1, 1)) & (
        (v - cy.view(-1, 1, 1)).abs() <= dst_h.view(-1, 1, 1)
    )
    return _sample(x, theta, inside, float(preset.fill))


def _resized_crop(x: torch.Tensor, scale_low: float, gen: torch.Generator) -> torch.Tensor:
    """Step 2: a random crop of area in [scale_low, 1] and aspect in [3/4, 4/3], resized to the square."""
    b = x.shape[0]
    area = _uniform(b, scale_low, 1.0, gen)
    log_ratio = _uniform(b, math.log(3 / 4), math.log(4 / 3), gen)
    ratio = log_ratio.exp()
    half_w = (area * ratio).sqrt().clamp(max=1.0)
    half_h = (area / ratio).sqrt().clamp(max=1.0)
    cx = _uniform(b, -1, 1, gen) * (1 - half_w)
    cy = _uniform(b, -1, 1, gen) * (1 - half_h)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = half_w, cx
    theta[:, 1, 1], theta[:, 1, 2] = half_h, cy
    inside = torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=torch.bool, device=x.device)
    return _sample(x, theta.to(x.device), inside, 0.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GRAY_WEIGHTS, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend: ratio * a + (1 - ratio) * b, clamped to [0, 255]."""
    r = ratio.view(-1, 1, 1, 1)
    return (r * a + (1 - r) * b).clamp(0, 255)


def jitter_factors(n: int, strength: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 3) brightness, contrast and saturation factors drawn from [1 - strength, 1 + strength]."""
    return torch.stack([_uniform(n, 1 - strength, 1 + strength, gen) for _ in range(3)], dim=1)


def color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, then contrast, then saturation of float images in [0, 255], as torchvision computes them."""
    factors = factors.to(x.device)
    x = _blend(x, torch.zeros_like(x), factors[:, 0])
    mean = _gray(x).round().mean(dim=(1, 2, 3), keepdim=True) if x.shape[1] == 3 else x.mean((1, 2, 3), True)
    x = _blend(x, mean.expand_as(x), factors[:, 1])
    if x.shape[1] == 3:
        x = _blend(x, _gray(x).round().expand_as(x), factors[:, 2])
    return x


def apply(
    images: torch.Tensor,
    preset: Preset,
    *,
    aspects: torch.Tensor | None = None,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """The preset applied to uint8 images (B, C, R, R); returns uint8 of the same shape and device.

    ``aspects`` (B,) are the aspects each image is regarded as having (default 1: no aspect change);
    ``gen`` (a CPU generator) draws every random parameter, so a seed gives the same batch.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise PresetError(f"images of {images.dtype} {tuple(images.shape)} are not accepted: uint8 (B, 1|3, R, R)")
    if preset.is_identity or not len(images):
        return images
    gen = gen or torch.Generator().manual_seed(0)
    b, c = images.shape[:2]
    x = images.float()
    if preset.resize != "none":
        a = torch.ones(b) if aspects is None else torch.as_tensor(aspects, dtype=torch.float32).flatten()
        if len(a) != b:
            raise PresetError(f"aspects of length {len(a)} are not accepted: one per image ({b})")
        x = _geometry(x, preset, a, gen)
    if preset.crop_scale < 1:
        x = _resized_crop(x, preset.crop_scale, gen)
    if preset.jitter > 0:
        x = color_jitter(x, jitter_factors(b, preset.jitter, gen))
    if preset.grayscale and c == 3:
        x = _gray(x).expand(-1, 3, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8)


def draw_aspects(pool: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) aspects drawn with replacement from the real images' aspects ``pool`` (1 when it is empty)."""
    if not len(pool):
        return torch.ones(n)
    return pool[torch.randint(len(pool), (n,), generator=gen)]


def apply_mixed(
    images: torch.Tensor,
    synthetic: torch.Tensor,
    real_preset: Preset,
    synthetic_preset: Preset,
    *,
    pool: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """Real and synthetic images in one batch, each by its own preset; synthetic ones draw aspects from ``pool``."""
    out = images
    mask = synthetic.to(torch.bool).cpu()
    for preset, chosen, is_synthetic in ((real_preset, ~mask, False), (synthetic_preset, mask, True)):
        if preset.is_identity or not chosen.any():
            continue
        where = chosen.nonzero().flatten()
        aspects = draw_aspects(pool, len(where), gen) if is_synthetic else None
        part = apply(images[where.to(images.device)], preset, aspects=aspects, gen=gen)
        out = out.clone() if out is images else out
        out[where.to(images.device)] = part
    return out


def evaluation_preset(spec: str) -> Preset:
    """What of the real images' preset also applies to validation and test images: the deterministic part."""
    return Preset(grayscale=Preset.parse(spec).grayscale)
