"""Training mixes: the real baseline, real + synthetic mixes, and the controls they are judged against.

One function, :func:`build_mix`, turns the real training split and an optional synthetic set into
the images a run trains on. Kinds:

- ``real``: the real training split (the baseline).
- ``add``: real + N synthetic images per class, or fill every class up to the largest; only the
  classes the synthetic set holds images of get any (:func:`synthetic_asks`).
- ``replace``: per class a fixed total (the real count, or ``total_per_class``) of which a chosen
  fraction is synthetic (0.5 = 50/50, 0.7 = 30/70, 1.0 = synthetic only).
- controls at the same counts as ``add``: ``oversample`` (repeat real images), ``augment`` (classic
  augmentation of real images) and ``reweight`` (real data, class-weighted loss).
- ``pretrain``: two phases: first train on the synthetic set alone for ``pretrain_epochs``, then
  fine-tune on the real split at ``finetune_lr_scale`` times the learning rate. Its control,
  ``pretrain_real``, runs the same schedule with real images in the first phase (drawn per class, with
  repeats, to the set's counts), so any gain is the synthetic images', not the longer schedule's.

A set a few images short never stops a mix: ``add`` and ``replace`` take what the set holds of a
class (the rest of a ``replace`` total is real) and say which classes got fewer than asked
(:attr:`Mix.short`). A control that names the same synthetic set is *matched* to it: it adds exactly
as many images per class as ``add`` can take from that set, so the comparison stays fair.

Validation and test sets are never touched here: mixes only ever see the training split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from torchvision.transforms import v2

from engine.datasets import ImageSet, Provenance
from engine.training import class_weights

MIX_KINDS = ("real", "add", "replace", "pretrain", "oversample", "augment", "reweight", "pretrain_real")
SYNTHETIC_KINDS = ("add", "replace", "pretrain")
PRETRAIN_KINDS = ("pretrain", "pretrain_real")


class MixError(ValueError):
    """A mix cannot be built from what was given; the message names the field and the counts."""


@dataclass(frozen=True)
class MixConfig:
    """What a run trains on."""

    kind: str = "real"  # one of MIX_KINDS
    per_class: int = 0  # add / oversample / augment: extra images per class; 0 = fill up to the largest class
    synthetic_fraction: float = 0.5  # replace: share of each class's total that is synthetic, in (0, 1]
    total_per_class: int = 0  # replace: images per class; 0 = the class's real count
    synthetic_set: str = ""  # add / replace: the synthetic set used; controls: the set whose counts they match
    pretrain_epochs: int = 10  # pretrain / pretrain_real: epochs of the first phase
    finetune_lr_scale: float = 0.3  # pretrain / pretrain_real: the second phase's learning rate, times train.lr

    def __post_init__(self) -> None:
        if self.kind not in MIX_KINDS:
            raise MixError(f"mix.kind={self.kind!r} is not accepted: expected one of {', '.join(MIX_KINDS)}.")
        if not isinstance(self.per_class, int) or self.per_class < 0:
            raise MixError(f"mix.per_class={self.per_class!r} is not accepted: expected a whole number >= 0.")
        if not 0 < self.synthetic_fraction <= 1:
            raise MixError(f"mix.synthetic_fraction={self.synthetic_fraction!r} is not accepted: expected (0, 1].")
        if not isinstance(self.total_per_class, int) or self.total_per_class < 0:
            raise MixError(f"mix.total_per_class={self.total_per_class!r} is not accepted: expected >= 0.")
        if not isinstance(self.pretrain_epochs, int) or not 1 <= self.pretrain_epochs <= 1000:
            raise MixError(f"mix.pretrain_epochs={self.pretrain_epochs!r} is not accepted: expected 1 to 1000.")
        if not 0 < self.finetune_lr_scale <= 1:
            raise MixError(f"mix.finetune_lr_scale={self.finetune_lr_scale!r} is not accepted: expected (0, 1].")
        if self.kind in SYNTHETIC_KINDS and not self.synthetic_set:
            raise MixError(f"mix.synthetic_set='' is not accepted for mix {self.kind!r}: name a synthetic set.")
        if self.kind == "real" and self.synthetic_set:
            raise MixError(
                f"mix.synthetic_set={self.synthetic_set!r} is not accepted for the real baseline: expected ''."
            )

    @property
    def label(self) -> str:
        """A short display name, e.g. ``add +fill``, ``replace 30/70``."""
        amount = f"+{self.per_class}/class" if self.per_class else "fill"
        if self.kind in ("add", "oversample", "augment"):
            return f"{self.kind} {amount}"
        if self.kind == "replace":
            synth = round(self.synthetic_fraction * 100)
            return f"replace {100 - synth}/{synth}"
        if self.kind in PRETRAIN_KINDS:
            return "pretrain synthetic" if self.kind == "pretrain" else "pretrain real"
        return self.kind

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Mix:
    """The training images of one run, their class weights (reweight only) and a count table."""

    train: ImageSet
    weights: np.ndarray | None  # (num_classes,) loss weights, or None
    real_counts: tuple[int, ...]  # per class, real images (repeats included)
    synthetic_counts: tuple[int, ...]  # per class, synthetic or augmented images
    short: tuple[str, ...] = ()  # classes that got fewer synthetic images than asked, e.g. "'1': 5 of 115"
    # Where each training image comes from, so a probe can look up cached features instead of images:
    # source 0 = real split, 1 = synthetic set, 2 = classic augmentation of a real image; row = index there.
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pretrain: ImageSet | None = None  # pretrain mixes: the first phase's images (``train`` is the second's)

    @property
    def synthetic_share(self) -> float:
        total = sum(self.real_counts) + sum(self.synthetic_counts)
        return sum(self.synthetic_counts) / max(1, total)


def extra_counts(counts: np.ndarray, per_class: int) -> np.ndarray:
    """Images to add per class: ``per_class`` each, or fill every class up to the largest."""
    return np.full_like(counts, per_class) if per_class else counts.max() - counts


def synthetic_asks(cfg: MixConfig, real_counts: ArrayLike, synthetic_counts: ArrayLike) -> np.ndarray:
    """(num_classes,) synthetic images mix ``cfg`` asks for per class (zeros for mixes without any).

    ``add`` only adds to the classes the set holds images of: a set made for some classes (the
    minority ones, say) leaves the others as they are. What a mix takes is this, capped by what the
    set holds (:func:`synthetic_takes`).
    """
    counts = np.asarray(real_counts, dtype=np.int64)
    held = np.asarray(synthetic_counts, dtype=np.int64)
    if cfg.kind == "add":
        return np.where(held > 0, extra_counts(counts, cfg.per_class), 0)
    if cfg.kind == "replace":
        totals = np.full_like(counts, cfg.total_per_class) if cfg.total_per_class else counts
        return np.floor(totals * cfg.synthetic_fraction + 0.5).astype(np.int64)
    return np.zeros_like(counts)


def synthetic_takes(cfg: MixConfig, real_counts: ArrayLike, synthetic_counts: ArrayLike) -> np.ndarray:
    """(num_classes,) synthetic images mix ``cfg`` takes per class: what it asks for, at most what the set holds."""
    return np.minimum(synthetic_asks(cfg, real_counts, synthetic_counts), np.asarray(synthetic_counts, np.int64))


def matched_extra(cfg: MixConfig, real_counts: ArrayLike, synthetic_counts: ArrayLike) -> np.ndarray:
    """(num_classes,) images a control adds per class to match ``add`` with the same amount on this set."""
    counts = np.asarray(real_counts, dtype=np.int64)
    held = np.asarray(synthetic_counts, dtype=np.int64)
    return np.minimum(np.where(held > 0, extra_counts(counts, cfg.per_class), 0), held)


def synthetic_short(
    cfg: MixConfig, real_counts: ArrayLike, synthetic_counts: ArrayLike, class_names: Sequence[str]
) -> tuple[str, ...]:
    """Classes for which the set holds fewer images than mix ``cfg`` asks, e.g. ``("'1': 5 of 115",)``."""
    asks = synthetic_asks(cfg, real_counts, synthetic_counts)
    held = np.asarray(synthetic_counts, dtype=np.int64)
    return tuple(f"{class_names[int(c)]!r}: {int(held[c])} of {int(asks[c])}" for c in np.flatnonzero(held < asks))


def _take(pool: np.ndarray, k: int, gen: torch.Generator, *, repeat: bool) -> np.ndarray:
    """k indices from ``pool``, in a seeded order; with ``repeat`` the order cycles."""
    if k == 0:
        return pool[:0]
    order = pool[torch.randperm(len(pool), generator=gen).numpy()]
    return np.resize(order, k) if repeat else order[:k]


def augmented_copies(real: ImageSet, index: np.ndarray, seed: int) -> ImageSet:
    """Classic augmentation (affine + colour jitter) of the chosen real images, one draw per image."""
    transform = v2.Compose(
        [v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.85, 1.15)), v2.ColorJitter(0.3, 0.3)]
    )
    with torch.random.fork_rng(devices=[]):  # v2 draws from the global RNG; leave it as it was
        torch.manual_seed(seed)
        images = torch.stack([transform(real.images[int(i)]) for i in index]) if len(index) else real.images[:0]
    prov = real.provenance.take(index)
    prov = Provenance(**{**prov.__dict__, "generator": np.full(len(index), "classic-augment", dtype=object)})
    return ImageSet(images, real.labels[torch.from_numpy(index)], real.class_names, prov)


def build_mix(cfg: MixConfig, real: ImageSet, synthetic: ImageSet | None = None, *, seed: int = 0) -> Mix:
    """The training set of a run; deterministic for ``seed``.

    ``real`` is the real training split; ``synthetic`` the synthetic set for add / replace, or the set
    a control is matched to. A set short of some class is no error: see :attr:`Mix.short`. Raises
    :class:`MixError` naming the class and the counts when the real images cannot fill a mix.
    """
    # 1. Check inputs.
    if real.provenance.synthetic.any():
        raise MixError("the real training split holds synthetic images; pass them as `synthetic` instead")
    if cfg.synthetic_set:
        if synthetic is None or len(synthetic) == 0:
            raise MixError(f"mix {cfg.label!r} needs the synthetic set {cfg.synthetic_set!r}, and none was given")
        if synthetic.class_names != real.class_names:
            raise MixError("the synthetic set's classes differ from the dataset's: " + ", ".join(synthetic.class_names))
        if not synthetic.provenance.synthetic.all():
            raise MixError("the synthetic set holds images not marked synthetic; real images belong in the dataset")
    if cfg.kind in SYNTHETIC_KINDS and synthetic is not None and synthetic.images.shape[1:] != real.images.shape[1:]:
        raise MixError(
            f"synthetic images are {tuple(synthetic.images.shape[1:])}, the dataset's "
            f"{tuple(real.images.shape[1:])}; resize them to the working resolution first"
        )
    gen = torch.Generator().manual_seed(seed)
    counts = real.class_counts()
    labels = real.labels.numpy()
    zeros = tuple(0 for _ in counts)
    held = synthetic.class_counts() if synthetic is not None and cfg.synthetic_set else None
    # 2. Baseline and reweight: the real split as it is (a matched reweight weighs classes as add counts them).
    every_real = (np.zeros(len(real), np.int8), np.arange(len(real), dtype=np.int64))
    if cfg.kind == "real":
        return Mix(real, None, tuple(int(n) for n in counts), zeros, (), *every_real)
    if cfg.kind == "reweight":
        if held is None:
            weights = class_weights(labels, real.num_classes)
        else:
            target = (counts + matched_extra(cfg, counts, held)).astype(np.float64)
            weights = np.where(counts > 0, target / np.maximum(counts, 1) * counts.sum() / target.sum(), 0.0)
        return Mix(real, weights, tuple(int(n) for n in counts), zeros, (), *every_real)
    # 3. Mixes that add images per class: add takes what the set holds, matched controls as many.
    if cfg.kind in ("add", "oversample", "augment"):
        short: tuple[str, ...] = ()
        if held is None:
            extra = extra_counts(counts, cfg.per_class)
        elif cfg.kind == "add":
            extra = synthetic_takes(cfg, counts, held)
            short = synthetic_short(cfg, counts, held, real.class_names)
        else:
            extra = matched_extra(cfg, counts, held)
        pools = synthetic.labels.numpy() if cfg.kind == "add" and synthetic is not None else labels
        picks = []
        for c, k in enumerate(extra):
            pool = np.flatnonzero(pools == c)
            picks.append(_take(pool, int(k), gen, repeat=cfg.kind != "add"))
        index = np.concatenate(picks).astype(np.int64)
        if cfg.kind == "add" and synthetic is not None:
            added = synthetic.subset(index)
        elif cfg.kind == "oversample":
            added = real.subset(index)
        else:
            added = augmented_copies(real, index, seed)
        real_counts = counts + (extra if cfg.kind == "oversample" else 0)
        synth_counts = zeros if cfg.kind == "oversample" else tuple(int(k) for k in extra)
        source = {"add": 1, "oversample": 0, "augment": 2}[cfg.kind]
        sources = np.concatenate([every_real[0], np.full(len(index), source, np.int8)])
        rows = np.concatenate([every_real[1], index])
        train = ImageSet.concat([real, added])
        return Mix(train, None, tuple(int(n) for n in real_counts), synth_counts, short, sources, rows)
    # 4. Pretrain: the real split for the second phase; the first phase's images per class as the set holds them.
    if cfg.kind in PRETRAIN_KINDS:
        if held is None or synthetic is None:
            raise MixError(f"mix {cfg.label!r} needs a synthetic set whose counts its first phase follows")
        if cfg.kind == "pretrain":
            first = synthetic
        else:
            index = np.concatenate(
                [_take(np.flatnonzero(labels == c), int(k), gen, repeat=True) for c, k in enumerate(held)]
            ).astype(np.int64)
            first = real.subset(index)
        synth_counts = tuple(int(k) for k in held) if cfg.kind == "pretrain" else zeros
        return Mix(real, None, tuple(int(n) for n in counts), synth_counts, (), *every_real, pretrain=first)
    # 5. Replace: a fixed total per class, a share of it synthetic; real images stand in for missing synthetic ones.
    assert synthetic is not None and held is not None
    synth_labels = synthetic.labels.numpy()
    real_picks, synth_picks = [], []
    real_list: list[int] = []
    synth_list: list[int] = []
    takes = synthetic_takes(cfg, counts, held)  # one rule for the form's check and here
    for c, n in enumerate(counts):
        total = cfg.total_per_class or int(n)
        n_synth = int(takes[c])
        n_real = total - n_synth
        real_pool, synth_pool = np.flatnonzero(labels == c), np.flatnonzero(synth_labels == c)
        if len(real_pool) < n_real:
            raise MixError(
                f"mix {cfg.label!r} needs {n_real} real and {n_synth} synthetic images of class "
                f"{real.class_names[c]!r}; there are {len(real_pool)} real and {len(synth_pool)} synthetic: "
                "choose a smaller total per class"
            )
        real_picks.append(_take(real_pool, n_real, gen, repeat=False))
        synth_picks.append(_take(synth_pool, n_synth, gen, repeat=False))
        real_list.append(n_real)
        synth_list.append(n_synth)
    real_rows, synth_rows = np.sort(np.concatenate(real_picks)), np.concatenate(synth_picks)
    parts = [real.subset(real_rows), synthetic.subset(synth_rows)]
    short = synthetic_short(cfg, counts, held, real.class_names)
    sources = np.concatenate([np.zeros(len(real_rows), np.int8), np.ones(len(synth_rows), np.int8)])
    rows = np.concatenate([real_rows, synth_rows]).astype(np.int64)
    return Mix(ImageSet.concat(parts), None, tuple(real_list), tuple(synth_list), short, sources, rows)
