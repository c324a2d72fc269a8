"""Judging synthetic candidates: the real-data classifier's verdict, near-duplicates, and the one judge step.

Wrong labels are what makes synthetic images hurt, so every candidate is judged. :func:`confidence_filter`
turns class probabilities from a real-data classifier into a verdict per image: ``verify`` keeps an
image whose given label the classifier agrees with at or above a threshold; ``assign`` relabels every
image with the classifier's choice and keeps the confident ones. :func:`reference_classifier` trains
that classifier (the judge) on the real training split once per dataset (:attr:`LabDataset.key`) and
seed and keeps it in the workspace. The judge is trained class-balanced (a reweighted loss), so it does
not inherit the imbalance it is meant to repair, and :func:`judge_info` tells how well it recognises
each class on real validation images: where it cannot, its decisions on that class mean little.
:class:`DuplicateIndex` catches near-duplicates, of a training image (memorisation, or img2img at a
strength so low it copies its source) or of an image already kept in the set.
:func:`judge` is the step every set recipe runs on a batch of candidates: safety checker, verdict,
requested count, near-duplicates, in that order. Where this stops: no generation, no sets, no files other
than the cached reference classifier.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from engine import probe, store
from engine.backbones import BackboneClassifier, is_available
from engine.datasets import LabDataset
from engine.jobs import Cancelled
from engine.models import build_classifier, build_model
from engine.signatures import thumbnails
from engine.training import EventFn, StopFn, TrainConfig, channel_stats, class_weights, predict_proba, train

log = logging.getLogger(__name__)
FILTER_MODES = ("verify", "assign")
REFERENCE_RECIPE = 3  # bump when train_reference_classifier changes, so cached classifiers are retrained
PROBE_JUDGE = "probe:efficientnet_lite0"  # the pretrained judge candidate (always available offline)
PROBE_JUDGE_MIN_SIDE = 32  # below this (digits are 8 px) ImageNet features lose to raw pixels: no probe candidate
JUDGE_NAMES = {
    "simple_cnn": "simple CNN trained class-balanced on the real training images",
    PROBE_JUDGE: "EfficientNet-Lite0 linear probe trained class-balanced on the real training images",
}
WEAK_RECALL = 0.5  # a judge recognising fewer of a class's real validation images than this cannot judge it
_TOLERANCE = 1e-6  # float32 probabilities: 0.95 stored as 0.9499999 still counts as "at the threshold"


class FilterError(ValueError):
    """Filter input is not accepted; the message names the field, the value and what would be."""


@dataclass(frozen=True)
class FilterResult:
    """The verdict on N images."""

    labels: np.ndarray  # (N,) int64 final labels: the given ones (verify) or the classifier's (assign)
    scores: np.ndarray  # (N,) float64 probability of the final label
    keep: np.ndarray  # (N,) bool
    reasons: tuple[str, ...]  # "" when kept, else e.g. "classifier says 'cat' (p=0.97)" or "confidence 0.62 below 0.95"

    def per_class(self, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """One row per class (by final label): class, kept, rejected."""
        kept = np.bincount(self.labels[self.keep], minlength=len(class_names))
        total = np.bincount(self.labels, minlength=len(class_names))
        return [
            {"class": name, "kept": int(kept[c]), "rejected": int(total[c] - kept[c])}
            for c, name in enumerate(class_names)
        ]


def _below(p: float, threshold: float) -> str:
    """``p`` with as few decimals as show it below ``threshold`` (0.949 is not "0.95 below 0.95")."""
    for digits in (2, 3, 4, 5):
        text = f"{p:.{digits}f}"
        if float(text) < threshold:
            return text
    return f"{p:.6f}"


def confidence_filter(
    probs: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    *,
    threshold: float = 0.95,
    mode: str = "verify",
) -> FilterResult:
    """Judge N images from their class probabilities ``probs`` (N, C) under a real-data classifier.

    verify: keep image n when its given label is the classifier's choice (ties count as agreement) and
    ``probs[n, label] >= threshold``; ``threshold=0`` turns the filter off (every image kept, its score
    still recorded). assign: the label becomes the argmax; keep when its probability is at least
    ``threshold``. ``labels`` may be None in assign mode.
    """
    # 1. Check inputs.
    if mode not in FILTER_MODES:
        raise FilterError(f"mode={mode!r} is not accepted: expected one of {', '.join(FILTER_MODES)}")
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise FilterError(f"threshold={threshold!r} is not accepted: expected a number in [0, 1]")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(class_names) or not np.isfinite(probs).all():
        raise FilterError(
            f"probs of shape {probs.shape} are not accepted: expected finite (N, {len(class_names)}) probabilities"
        )
    n = len(probs)
    if labels is None and mode == "verify":
        raise FilterError("labels=None is not accepted in mode 'verify': give the labels to check, or use 'assign'")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= len(class_names))):
            raise FilterError(
                f"labels of shape {labels.shape} are not accepted: expected ({n},) labels in [0, {len(class_names)})"
            )
    # 2. Final labels and their scores.
    top = probs.argmax(axis=1)
    final = top if mode == "assign" or labels is None else labels.astype(np.int64)
    scores = probs[np.arange(n), final]
    agrees = scores >= probs.max(axis=1) if n else np.zeros(0, dtype=bool)
    if threshold == 0:  # the filter is off: labels are not checked either
        agrees = np.ones(n, dtype=bool)
    confident = scores >= threshold - _TOLERANCE
    keep = agrees & confident
    # 3. A reason for every rejection.
    reasons = []
    for i in range(n):
        if keep[i]:
            reasons.append("")
        elif not agrees[i]:
            reasons.append(f"classifier says {class_names[top[i]]!r} (p={probs[i, top[i]]:.2f})")
        else:
            reasons.append(f"confidence {_below(float(scores[i]), threshold)} below {threshold:g}")
    return FilterResult(final.astype(np.int64), scores, keep, tuple(reasons))


def train_reference_classifier(
    dataset: LabDataset,
    *,
    seed: int = 0,
    max_epochs: int = 60,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
) -> nn.Module:
    """A simple CNN trained class-balanced on the real training split only (early stopping on real validation).

    The loss weighs every class alike (inverse-frequency weights), so a class cut to a few percent is still
    recognised: a judge that inherits the imbalance rejects exactly the classes a set should fill.
    Returned on the CPU in eval mode. Raises :class:`~engine.jobs.Cancelled` when ``should_stop`` turns
    true: a half-trained judge would reject good images and keep bad ones without saying so.
    """
    mean, std = channel_stats(dataset.train.images)
    meta = _build_args(dataset)
    model = build_model("simple_cnn", **meta, mean=mean, std=std, seed=seed)
    result = train(
        model,
        dataset.train,
        dataset.val,
        TrainConfig(max_epochs=max_epochs),
        seed=seed,
        weights=class_weights(dataset.train.labels.numpy(), dataset.train.num_classes),
        on_event=on_event,
        should_stop=should_stop,
    )
    if result.cancelled:
        raise Cancelled(f"training of the reference classifier was cancelled after {len(result.history)} epoch(s)")
    return result.model.cpu().eval()


def _build_args(dataset: LabDataset) -> dict[str, int]:
    return {"channels": dataset.channels, "num_classes": len(dataset.class_names), "resolution": dataset.resolution}


def reference_classifier(
    dataset: LabDataset, *, seed: int = 0, on_event: EventFn | None = None, should_stop: StopFn | None = None
) -> nn.Module:
    """The real-data classifier for ``dataset`` and ``seed``: loaded from the workspace, or trained once and saved.

    Kept under ``<workspace>/reference/<hash of the dataset key>-<seed>/`` as ``model.safetensors`` and
    ``model.json`` (build arguments); the key includes the split and the imbalance profile, so a scarcer
    training split gets its own classifier. Two candidates are trained class-balanced: the simple CNN,
    and for images of at least :data:`PROBE_JUDGE_MIN_SIDE` px a linear probe on EfficientNet-Lite0
    features; the one with the higher balanced accuracy on the real validation images judges, and
    ``judge.json`` names it with every candidate's score. A cancelled training raises :class:`~engine.jobs.Cancelled`
    and saves nothing.
    """
    meta_path, weights_path = _reference_files(dataset, seed)
    if meta_path.is_file() and weights_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.pop("recipe", None) == REFERENCE_RECIPE:
            name = meta.pop("name")
            loaded = build_classifier(name, **meta)
            probe_head = name == PROBE_JUDGE  # a probe judge stored its head; the backbone comes with its package
            loaded.load_state_dict(load_file(str(weights_path)), strict=not probe_head)
            return loaded.eval()
        log.info("retraining reference classifier %s: its recipe changed", meta_path.parent.name)
    # 1. The candidates: the from-scratch judge, and a probe on pretrained features for images big enough.
    candidates = {
        "simple_cnn": train_reference_classifier(dataset, seed=seed, on_event=on_event, should_stop=should_stop)
    }
    if dataset.resolution >= PROBE_JUDGE_MIN_SIDE and is_available(PROBE_JUDGE.partition(":")[2]):
        candidates[PROBE_JUDGE] = train_probe_judge(dataset, seed=seed, should_stop=should_stop)
    # 2. The one that recognises the classes best on real validation images (balanced accuracy) judges.
    recalls = {name: _val_recall(model, dataset) for name, model in candidates.items()}
    scores = {name: float(np.nanmean(r)) for name, r in recalls.items()}
    name = max(scores, key=lambda n: scores[n])
    model = candidates[name]
    state = model.head.state_dict(prefix="head.") if isinstance(model, BackboneClassifier) else model.state_dict()
    store.write_atomic(weights_path, save({k: v.contiguous() for k, v in state.items()}))
    info = {"judge": JUDGE_NAMES[name], "val_recall": recalls[name], "balanced_accuracy": scores[name]}
    store.write_json(meta_path.with_name("judge.json"), {**info, "candidates": scores})
    # written last: its presence marks a complete classifier
    store.write_json(meta_path, {"name": name, "recipe": REFERENCE_RECIPE, **_build_args(dataset)})
    return model


def train_probe_judge(dataset: LabDataset, *, seed: int = 0, should_stop: StopFn | None = None) -> nn.Module:
    """A linear probe on pretrained features, trained class-balanced on the real training split (a judge candidate)."""
    args = _build_args(dataset)
    model = build_classifier(
        PROBE_JUDGE,
        channels=args["channels"],
        num_classes=args["num_classes"],
        resolution=args["resolution"],
        seed=seed,
    )
    assert isinstance(model, BackboneClassifier)
    feats = probe.probe_features(
        model.spec.name,
        dataset.train,
        dataset.val,
        dataset.val,
        None,
        augment=False,
        size=model.side,
        should_stop=should_stop,
    )
    labels = dataset.train.labels.numpy()
    result = probe.train_probe(
        model,
        feats.real,
        labels,
        feats.val,
        dataset.val.labels.numpy(),
        TrainConfig(max_epochs=100, patience=10),
        seed=seed,
        weights=class_weights(labels, dataset.train.num_classes),
        should_stop=should_stop,
    )
    if result.cancelled:
        raise Cancelled(f"training of the probe judge was cancelled after {len(result.history)} epoch(s)")
    return result.model


@dataclass(frozen=True)
class JudgeInfo:
    """How well the judge recognises each class on real validation images it never trained on."""

    name: str  # what the judge is, for people
    val_recall: tuple[float, ...]  # per class, share of real validation images it assigns to their class
    balanced_accuracy: float  # mean of val_recall

    def weak_classes(self, class_names: Sequence[str], floor: float = WEAK_RECALL) -> list[str]:
        """Classes whose real validation images the judge recognises less than ``floor`` of the time (or has none)."""
        return [n for n, r in zip(class_names, self.val_recall, strict=True) if not r >= floor]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "val_recall": list(self.val_recall), "balanced_accuracy": self.balanced_accuracy}


def judge_info(dataset: LabDataset, *, seed: int = 0) -> JudgeInfo | None:
    """The stored judge's per-class validation recall for ``dataset``; None until it has been trained."""
    path = _reference_files(dataset, seed)[0].with_name("judge.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return JudgeInfo(str(data["judge"]), tuple(float(r) for r in data["val_recall"]), float(data["balanced_accuracy"]))


def _reference_files(dataset: LabDataset, seed: int) -> tuple[Path, Path]:
    folder = store.subdir("reference") / f"{hashlib.sha256(dataset.key.encode()).hexdigest()[:20]}-{seed}"
    return folder / "model.json", folder / "model.safetensors"


def _val_recall(model: nn.Module, dataset: LabDataset) -> list[float]:
    """Per class, the share of real validation images ``model`` assigns to their class (nan without any)."""
    y = dataset.val.labels.numpy()
    pred = predict_proba(model, dataset.val.images).argmax(1) if len(y) else y
    return [
        float(np.mean(pred[y == c] == c)) if np.any(y == c) else float("nan") for c in range(len(dataset.class_names))
    ]


class DuplicateIndex:
    """Judges synthetic candidates against the training images of their class and the images kept so far.

    A candidate is a near-duplicate when the cosine similarity of its signature (:func:`thumbnails`)
    to one of those images is at least ``threshold``; 1.0 or more turns the check off. A blank (flat)
    candidate is rejected as such whatever the threshold: it carries no content.
    """

    def __init__(
        self, train_images: np.ndarray | torch.Tensor, train_labels: np.ndarray, names: Sequence[str], threshold: float
    ) -> None:
        if not isinstance(threshold, (int, float)) or threshold <= 0:
            raise FilterError(f"duplicate threshold={threshold!r} is not accepted: a number in (0, 1], 1 = off")
        self.threshold = float(threshold)
        self.names = list(names)  # training image names (provenance), for the reasons
        self._train_labels = np.asarray(train_labels)
        n = len(self._train_labels)
        chunks = [thumbnails(train_images[i : i + 4096]) for i in range(0, n, 4096)] if self.threshold < 1 else []
        self._train = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
        self._kept: dict[int, np.ndarray] = {}  # per class: a growing matrix of kept signatures
        self._count: dict[int, int] = {}

    def judge(self, thumb: np.ndarray, label: int) -> str:
        """ "" when ``thumb`` (d,) is new for class ``label``, else why it is rejected."""
        if not thumb.any():
            return "blank image (no content)"
        if self.threshold >= 1:
            return ""
        where = np.flatnonzero(self._train_labels == label)
        if len(where):
            sims = self._train[where] @ thumb
            best = int(sims.argmax())
            if sims[best] >= self.threshold:
                return f"near-duplicate of training image {self.names[where[best]]!r} (similarity {sims[best]:.3f})"
        count = self._count.get(int(label), 0)
        if count:
            sims = self._kept[int(label)][:count] @ thumb
            best = int(sims.argmax())
            if sims[best] >= self.threshold:
                return f"near-duplicate of an image already kept in this set (similarity {sims[best]:.3f})"
        return ""

    def add(self, thumb: np.ndarray, label: int) -> None:
        """Remember a kept image, so later candidates are compared with it too."""
        if self.threshold >= 1:
            return
        label, count = int(label), self._count.get(int(label), 0)
        matrix = self._kept.get(label)
        if matrix is None or count == len(matrix):  # grow by doubling: adding stays cheap
            grown = np.zeros((max(64, 2 * count), len(thumb)), np.float32)
            if matrix is not None:
                grown[:count] = matrix
            self._kept[label] = matrix = grown
        matrix[count] = thumb
        self._count[label] = count + 1


def judge(
    images: np.ndarray,
    labels: np.ndarray,
    duplicates: DuplicateIndex,
    kept: np.ndarray,
    wanted: np.ndarray,
    *,
    verdict: FilterResult | None = None,
    flagged: Sequence[bool] = (),
) -> tuple[str, ...]:
    """Why each of N candidates is rejected ("" when it is kept): the judging step of every set recipe.

    ``images`` are uint8 (N, C, R, R) with ``labels`` (N,). The checks run in this order: the pipeline's
    safety checker (``flagged``, N bools), the real-data classifier (``verdict`` from
    :func:`confidence_filter`), the requested count (``kept`` against ``wanted``, both (num_classes,)),
    then near-duplicates under ``duplicates``. A kept image joins ``duplicates`` and is counted in ``kept``
    (in place) before the next one is judged, so one batch never keeps two copies or more than was asked.
    """
    thumbs = thumbnails(images)
    reasons = []
    for i, label in enumerate(int(y) for y in labels):
        reason = "blacked out by the pipeline's safety checker" if flagged and flagged[i] else ""
        reason = reason or (verdict.reasons[i] if verdict is not None else "")
        if not reason and kept[label] >= wanted[label]:
            reason = "surplus beyond the requested count"
        reason = reason or duplicates.judge(thumbs[i], label)
        if not reason:
            duplicates.add(thumbs[i], label)
            kept[label] += 1
        reasons.append(reason)
    return tuple(reasons)
