"""Linear probes: a pretrained backbone's cached features in, a trained linear head out, in seconds.

A probe run never pushes images through the backbone while it trains. :func:`mix_features` gathers the
features of a mix's training images from four cached arrays (:func:`engine.features.cached_features`):
the real training split, the synthetic set, :data:`AUGMENTED_COPIES` fixed augmented copies of every
real training image (the augment control: a probe uses no per-batch random augmentation, so it draws
among these copies) and, for evaluation, the validation and test splits. :func:`train_probe` then
fits a linear layer on standardised features with the run's class weights and early stopping on the
real validation loss, and folds the standardisation into the layer, so the result is an ordinary
:class:`~engine.backbones.BackboneClassifier` that takes images (for Explain, exports, reloads).
Where this stops: no fine-tuning (that is :func:`engine.training.train` on the same classifier), no files.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.backbones import BackboneClassifier
from engine.datasets import ImageSet
from engine.device import DeviceSetup, pick_device
from engine.features import cached_features
from engine.jobs import Cancelled
from engine.mixes import Mix, augmented_copies
from engine.training import EventFn, StopFn, TrainConfig, TrainEvent

AUGMENTED_COPIES = 4  # fixed augmented copies of each real training image whose features are cached
PROBE_LR = 1e-2  # Adam on standardised features; the head is linear, so a larger step than a network's is safe
MEMO_ENTRIES = 4  # feature sets kept in memory for the next run on the same arrays (a few MB each)
ProgressFn = Callable[[str, int, int], None]
# (settings, the arrays themselves, their features): entries hold the arrays, so identity checks stay valid.
_memo: list[tuple[tuple[Any, ...], tuple[torch.Tensor | None, ...], ProbeFeatures]] = []
_memo_lock = threading.Lock()


@dataclass(frozen=True)
class ProbeFeatures:
    """Cached features (rows, D) of every array a probe run can draw from."""

    real: np.ndarray  # the real training split
    synthetic: np.ndarray | None  # the synthetic set, as loaded for the run
    augmented: np.ndarray  # (AUGMENTED_COPIES, real rows, D)
    val: np.ndarray
    test: np.ndarray


def probe_features(
    backbone: str,
    real: ImageSet,
    val: ImageSet,
    test: ImageSet,
    synthetic: ImageSet | None,
    *,
    augment: bool,
    size: int,
    setup: DeviceSetup | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ProbeFeatures:
    """Features of every split (computed once, then read from the cache); the augmented copies only if ``augment``.

    ``setup`` decides device and precision (default: this machine's device in float32, so that the stored
    classifier, which takes images, gives the run's own predictions; bfloat16 features differ enough to
    change a few).
    """
    report = on_progress or (lambda what, done, total: None)
    setup = setup or pick_device("auto", "fp32")
    sources = (real.images, val.images, test.images, synthetic.images if synthetic is not None else None)
    memo_key = (backbone, size, str(setup.device), str(setup.amp_dtype), augment)
    with _memo_lock:  # the runs of one experiment share their arrays: skip hashing and augmenting them again
        for key, held, feats in _memo:
            if key == memo_key and all(a is b for a, b in zip(held, sources, strict=True)):
                return feats

    def features(what: str, images: torch.Tensor) -> np.ndarray:
        return cached_features(
            backbone,
            images,
            size=size,
            setup=setup,
            on_progress=lambda done, total: report(what, done, total),
            should_stop=should_stop,
        )

    copies = (
        np.stack(
            [
                features(f"augmented copy {k + 1}", augmented_copies(real, np.arange(len(real)), 1000 + k).images)
                for k in range(AUGMENTED_COPIES)
            ]
        )
        if augment
        else np.zeros((0, len(real), 0), np.float32)
    )
    found = ProbeFeatures(
        real=features("real training images", real.images),
        synthetic=features("synthetic images", synthetic.images) if synthetic is not None else None,
        augmented=copies,
        val=features("validation images", val.images),
        test=features("test images", test.images),
    )
    with _memo_lock:
        _memo.insert(0, (memo_key, sources, found))
        del _memo[MEMO_ENTRIES:]
    return found


def mix_features(mix: Mix, feats: ProbeFeatures, *, seed: int) -> np.ndarray:
    """(N, D) features of the mix's training images, looked up by where each image comes from."""
    out = np.empty((len(mix.sources), feats.real.shape[1]), np.float32)
    real, synth, aug = mix.sources == 0, mix.sources == 1, mix.sources == 2
    out[real] = feats.real[mix.rows[real]]
    if synth.any():
        assert feats.synthetic is not None, "a mix with synthetic images needs the synthetic set's features"
        out[synth] = feats.synthetic[mix.rows[synth]]
    if aug.any():  # the seed decides which fixed copy stands for each augmented image
        copy_of = np.random.default_rng(seed).integers(0, len(feats.augmented), size=int(aug.sum()))
        out[aug] = feats.augmented[copy_of, mix.rows[aug]]
    return out


@dataclass
class ProbeResult:
    """The fitted classifier (standardisation folded into its head) and what happened."""

    model: BackboneClassifier
    history: list[dict[str, float]]
    best_epoch: int
    cancelled: bool
    features_per_second: float


def train_probe(
    model: BackboneClassifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    *,
    seed: int,
    weights: np.ndarray | None = None,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
) -> ProbeResult:
    """Fit ``model.head`` on features (N, D) with labels (N,); best validation epoch restored, in place.

    Mini-batches of ``cfg.batch_size`` in a seeded order, Adam at :data:`PROBE_LR` with
    ``cfg.weight_decay``, ``cfg.label_smoothing``, class ``weights`` on the training loss, early
    stopping after ``cfg.patience`` epochs without a better validation loss.
    """
    # 1. Standardise with the training features' statistics; the head learns on the standardised ones.
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    mean = x_train.mean(0)
    std = x_train.std(0)
    std = np.maximum(std, 0.01 * float(np.median(std)) + 1e-8)  # a feature flat on the training images stays quiet
    xt = torch.from_numpy((x_train - mean) / std).float()
    xv = torch.from_numpy((x_val - mean) / std).float()
    yt, yv = torch.from_numpy(y_train).long(), torch.from_numpy(y_val).long()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(xt.shape[1], model.head.out_features)
    weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    optimizer = torch.optim.Adam(head.parameters(), lr=PROBE_LR, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(xt) // cfg.batch_size)
    total = steps_per_epoch * cfg.max_epochs
    # 2. Epochs with early stopping on the real validation loss.
    history: list[dict[str, float]] = []
    best_loss, best_state, best_epoch, bad, step, cancelled = float("inf"), None, 0, 0, 0, False
    start = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        if stop():
            cancelled = True
            break
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(len(xt), generator=gen).split(cfg.batch_size):
            logits = head(xt[idx])
            loss = F.cross_entropy(logits, yt[idx], weight=weight, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
        with torch.no_grad():
            val_logits = head(xv)
            val_loss = F.cross_entropy(val_logits, yv).item()
            val_acc = float((val_logits.argmax(1) == yv).float().mean())
        row = {
            "epoch": float(epoch),
            "train_loss": loss_sum / len(xt),
            "train_acc": correct / len(xt),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": PROBE_LR,
            "images_per_s": len(xt) * epoch / max(time.perf_counter() - start, 1e-9),
        }
        history.append(row)
        emit(TrainEvent("epoch", epoch, step, total, row))
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, bad, best_state = val_loss, epoch, 0, copy.deepcopy(head.state_dict())
        else:
            bad += 1
            if cfg.patience and bad >= cfg.patience:
                break
    if cancelled and best_state is None:
        raise Cancelled(f"the probe was cancelled before its first epoch ended ({step} steps)")
    # 3. Fold the standardisation into the classifier's head: W' = W / std, b' = b - W' . mean.
    if best_state is not None:
        head.load_state_dict(best_state)
    with torch.no_grad():
        w = head.weight / torch.from_numpy(std).float()
        model.head.weight.copy_(w)
        model.head.bias.copy_(head.bias - w @ torch.from_numpy(mean).float())
    emit(TrainEvent("done", len(history), step, total, {"best_epoch": float(best_epoch)}))
    elapsed = max(time.perf_counter() - start, 1e-9)
    return ProbeResult(model.eval(), history, best_epoch, cancelled, len(xt) * len(history) / elapsed)


def head_probs(model: BackboneClassifier, features: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities of the classifier's head on backbone features (N, D)."""
    with torch.no_grad():
        return torch.softmax(model.head(torch.from_numpy(features).float()), dim=1).numpy()
