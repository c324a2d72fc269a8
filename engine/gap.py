"""How far synthetic images are from the real ones: simple statistics, a domain-gap score, feature distances.

:func:`image_stats` gives per-image brightness, per-channel colour and sharpness (variance of the
Laplacian) for histograms. :func:`domain_gap_score` trains a small classifier to tell real from
synthetic images and reports its accuracy on held-out images: 0.5 means it cannot tell them apart,
1.0 means they are trivially different. :func:`feature_distances` gives the Fréchet distance and the
kernel (MMD) distance between the two sets' features under a classifier trained on real images (the
penultimate layer). :func:`gap_report` gives both for real and synthetic images before and after the
presets (the Preprocess page's job). Where this stops: no preprocessing (see ``preprocess.py``), no
classifier for the features (``synth/filters.py`` trains it), no widgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.datasets import ImageSet, Provenance
from engine.jobs import Cancelled
from engine.models import build_model
from engine.training import StopFn, TrainConfig, channel_stats, predict_proba, train

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class GapError(ValueError):
    """Gap measure input is not accepted; the message names the value and what would be."""


def image_stats(images: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image, from uint8 (N, C, R, R): brightness (N,) and colour (N, C) as means in [0, 255],
    sharpness (N,) as the variance of the Laplacian of the grey image (higher is sharper)."""
    x = images.float()
    gray = x.mean(dim=1, keepdim=True)
    lap = F.conv2d(gray, LAPLACIAN.view(1, 1, 3, 3))
    return {
        "brightness": gray.mean(dim=(1, 2, 3)).numpy(),
        "colour": x.mean(dim=(2, 3)).numpy(),
        "sharpness": lap.var(dim=(1, 2, 3)).numpy() if lap.numel() else np.zeros(len(x)),
    }


@dataclass(frozen=True)
class GapScore:
    """The real-vs-synthetic classifier's held-out accuracy and what it was measured on."""

    accuracy: float  # 0.5 = indistinguishable, 1.0 = trivially different
    held_out: int  # images it was scored on (half real, half synthetic)
    per_side: int  # images used from each side


def _two_class_set(real: torch.Tensor, synthetic: torch.Tensor) -> ImageSet:
    images = torch.cat([real, synthetic])
    labels = torch.cat([torch.zeros(len(real)), torch.ones(len(synthetic))]).long()
    n = len(images)
    provenance = Provenance.real("gap", [str(i) for i in range(n)], [(images.shape[-1],) * 2] * n, [""] * n)
    return ImageSet(images, labels, ("real", "synthetic"), provenance)


def domain_gap_score(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    *,
    seed: int = 0,
    max_per_side: int = 2000,
    max_epochs: int = 15,
    should_stop: StopFn | None = None,
) -> GapScore:
    """Held-out accuracy of a simple CNN trained to tell uint8 ``real`` from ``synthetic`` (N, C, R, R) images.

    Both sides are cut to the same size (at most ``max_per_side``), then split 50/20/30 into training,
    validation (early stopping) and held-out images, stratified, for ``seed``. Raises
    :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true.
    """
    if real.shape[1:] != synthetic.shape[1:]:
        raise GapError(
            f"real {tuple(real.shape[1:])} and synthetic {tuple(synthetic.shape[1:])} images differ in shape"
        )
    n = min(len(real), len(synthetic), max_per_side)
    if n < 10:
        raise GapError(
            f"the domain-gap score needs at least 10 images on each side: got {len(real)} and {len(synthetic)}"
        )
    gen = torch.Generator().manual_seed(seed)
    sides = [
        real[torch.randperm(len(real), generator=gen)[:n]],
        synthetic[torch.randperm(len(synthetic), generator=gen)[:n]],
    ]
    cut_train, cut_val = int(0.5 * n), int(0.7 * n)
    parts = [
        _two_class_set(sides[0][a:b], sides[1][a:b]) for a, b in ((0, cut_train), (cut_train, cut_val), (cut_val, n))
    ]
    mean, std = channel_stats(parts[0].images)
    model = build_model(
        "simple_cnn", channels=real.shape[1], num_classes=2, resolution=real.shape[-1], mean=mean, std=std, seed=seed
    )
    cfg = TrainConfig(max_epochs=max_epochs, patience=3, augment=False)
    if train(model, parts[0], parts[1], cfg, seed=seed, should_stop=should_stop).cancelled:
        raise Cancelled("the domain-gap score was cancelled")
    probs = predict_proba(model.cpu(), parts[2].images)
    accuracy = float((probs.argmax(axis=1) == parts[2].labels.numpy()).mean())
    return GapScore(accuracy, len(parts[2]), n)


def features(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """(N, D) float64 inputs of ``model``'s last linear layer (its penultimate features) for uint8 images."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise GapError("the feature model has no linear layer to take penultimate features from")
    captured: list[torch.Tensor] = []
    hook = last[-1].register_forward_hook(lambda module, args, out: captured.append(args[0].detach().flatten(1).cpu()))
    try:
        predict_proba(model, images, batch_size=batch_size)
    finally:
        hook.remove()
    return torch.cat(captured).double().numpy() if captured else np.zeros((0, last[-1].in_features))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr sqrt(cov_a cov_b) = tr sqrt(S cov_b S) with S = cov_a^(1/2): symmetric, so eigh is stable
    # where scipy's sqrtm warns on the singular covariances of small samples.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    value = float(
        ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    )
    return max(value, 0.0)


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared MMD with the cubic polynomial kernel (x.y / D + 1)^3, as in the KID."""
    d = a.shape[1]

    def k(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / d + 1) ** 3

    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float(
        (kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1)) - 2 * kab.mean()
    )


def feature_distances(model: nn.Module, real: torch.Tensor, synthetic: torch.Tensor) -> dict[str, float]:
    """Fréchet and kernel distances between real and synthetic uint8 images under ``model``'s features."""
    if min(len(real), len(synthetic)) < 2:
        raise GapError(f"feature distances need at least 2 images on each side: got {len(real)} and {len(synthetic)}")
    fa, fb = features(model, real), features(model, synthetic)
    return {"frechet": frechet_distance(fa, fb), "kernel": kernel_distance(fa, fb), "dims": float(fa.shape[1])}


def summary_row(name: str, values: np.ndarray) -> dict[str, float | str]:
    """Mean, standard deviation and quartiles of one measure, for a table."""
    v = np.asarray(values, dtype=np.float64)
    q = np.percentile(v, [25, 50, 75]) if len(v) else [math.nan] * 3
    return {
        "measure": name,
        "mean": float(v.mean()) if len(v) else math.nan,
        "std": float(v.std()) if len(v) else math.nan,
        "q25": float(q[0]),
        "median": float(q[1]),
        "q75": float(q[2]),
    }


def gap_report(
    reference: nn.Module,
    sides: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int = 0,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: StopFn | None = None,
) -> dict[str, dict[str, float]]:
    """For each side (e.g. "before" and "after" the presets) of uint8 (real, synthetic) images: the
    domain-gap accuracy, its held-out image count, and the feature distances under ``reference``."""
    report = on_progress or (lambda fraction, message: None)
    out: dict[str, dict[str, float]] = {}
    for i, (name, (real, synthetic)) in enumerate(sides.items()):
        report(0.2 + 0.4 * i, f"real vs synthetic classifier, {name} the presets")
        score = domain_gap_score(real, synthetic, seed=seed, should_stop=should_stop)
        distances = feature_distances(reference, real, synthetic)
        out[name] = {"domain-gap accuracy": score.accuracy, "held-out images": score.held_out, **distances}
    return out
