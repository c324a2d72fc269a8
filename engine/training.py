"""Train one classifier on in-memory uint8 images, top to bottom.

The training images live on the device as one uint8 tensor and are augmented there in batches
(padded random crop, optional flip), as in cifar10-airbench, never sample by sample in PIL.
Adam, cross-entropy (optional label smoothing and class weights), early stopping on validation
loss with the best epoch restored. Progress leaves through ``on_event``; ``should_stop`` is checked
every step. At the end of every epoch that another epoch follows, ``on_checkpoint`` receives the whole
loop state (:class:`TrainState`: weights, optimiser and scaler, best epoch, early-stopping counter,
history and every RNG the loop draws from); ``train(..., start=state)`` continues from it to the same
weights bit for bit on the CPU. Where this stops: no metrics beyond loss/accuracy (see
:mod:`engine.metrics`), no files (``runs.py`` writes the checkpoints).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import checkpoints
from engine.datasets import ImageSet
from engine.device import DEVICES, PRECISIONS, DeviceSetup, pick_device
from engine.preprocess import Preset, PresetError, apply_mixed, real_aspects

EventFn = Callable[["TrainEvent"], None]
StopFn = Callable[[], bool]
TrainState = dict[str, Any]  # the loop at the end of an epoch; a nest engine.checkpoints stores as it is


class TrainConfigError(ValueError):
    """A training setting is not accepted."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the model and the seed are chosen per run."""

    lr: float = 2e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam L2 penalty
    batch_size: int = 64
    # Runs train to convergence (early stopping decides), so a mix with more images does not win
    # merely by taking more optimiser steps than the baseline within a fixed epoch budget.
    max_epochs: int = 100
    patience: int = 10  # epochs without a better validation loss before stopping; 0 = never stop early
    label_smoothing: float = 0.0  # cross-entropy label smoothing in [0, 0.5)
    augment: bool = True  # padded random crop of the training batches
    crop_padding: int = 0  # pixels of padding for the random crop; 0 = resolution // 8 (at least 1)
    flip: bool = False  # random horizontal flips (off by default: wrong for digits and text)
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see engine.device)
    preprocess_real: str = ""  # preset spec for real training images ("" = none), see engine.preprocess
    preprocess_synthetic: str = ""  # preset spec for synthetic training images, e.g. "resize=margins"

    def __post_init__(self) -> None:
        checks: list[tuple[str, Any, bool, str]] = [
            ("train.lr", self.lr, isinstance(self.lr, (int, float)) and 0 < self.lr <= 1, "a number in (0, 1]"),
            ("train.weight_decay", self.weight_decay, 0 <= self.weight_decay <= 1, "a number in [0, 1]"),
            (
                "train.batch_size",
                self.batch_size,
                isinstance(self.batch_size, int) and 1 <= self.batch_size <= 8192,
                "a whole number from 1 to 8192",
            ),
            (
                "train.max_epochs",
                self.max_epochs,
                isinstance(self.max_epochs, int) and 1 <= self.max_epochs <= 1000,
                "a whole number from 1 to 1000",
            ),
            (
                "train.patience",
                self.patience,
                isinstance(self.patience, int) and self.patience >= 0,
                "a whole number >= 0",
            ),
            ("train.label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 0.5, "a number in [0, 0.5)"),
            (
                "train.crop_padding",
                self.crop_padding,
                isinstance(self.crop_padding, int) and self.crop_padding >= 0,
                "a whole number >= 0",
            ),
            ("train.device", self.device, self.device in DEVICES, "one of " + ", ".join(DEVICES)),
            ("train.precision", self.precision, self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
            (  # true on every machine, so it is a value rule; what this machine offers is checked in train()
                "train.precision",
                self.precision,
                not (self.device == "cpu" and self.precision == "fp16"),
                "'bf16', 'fp32' or 'auto' with train.device='cpu' (the CPU has no fp16 autocast)",
            ),
        ]
        for name, value, ok, accepted in checks:
            if not ok:
                raise TrainConfigError(f"{name}={value!r} is not accepted: expected {accepted}.")
        for name in ("preprocess_real", "preprocess_synthetic"):
            try:
                Preset.parse(getattr(self, name))
            except PresetError as err:
                raise TrainConfigError(f"train.{name}: {err}") from None


@dataclass(frozen=True)
class TrainEvent:
    """One progress report: kind is "step", "epoch" or "done"."""

    kind: str
    epoch: int
    step: int  # steps done in this run
    total_steps: int  # steps if no early stop
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """The trained model (best epoch restored) and what happened."""

    model: nn.Module
    history: list[dict[str, float]]  # one row per epoch
    best_epoch: int  # 1-based; 0 if no epoch finished
    stopped_early: bool
    cancelled: bool
    images_per_second: float
    device: str


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights, mean 1 over classes present (the `reweight` control)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return weights


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images, as fractions of 255."""
    x = images.double().div(255)
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def augment_batch(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Batched padded random crop (reflect padding) and optional flip of uint8 (B, C, H, W) images."""
    b, _, h, w = x.shape
    if padding:
        padded = F.pad(x.float(), (padding,) * 4, mode="reflect").to(x.dtype) if min(h, w) > padding else x
        pad = padding if padded is not x else 0
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(x.device)
        rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        mask = (torch.rand(b, generator=gen, device=gen.device) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(mask, x.flip(-1), x)
    return x


def _to_input(x: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    x = x.to(setup.device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if setup.channels_last else x


def _autocast(setup: DeviceSetup) -> contextlib.AbstractContextManager[Any]:
    if setup.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device.type, dtype=setup.amp_dtype)


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    yield from order.split(batch_size)


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 512, setup: DeviceSetup | None = None
) -> np.ndarray:
    """Class probabilities (N, num_classes) float32 for uint8 images (N, C, H, W)."""
    setup = setup or pick_device("cpu", "fp32")
    model.eval()
    out = []
    for idx in _batches(len(images), batch_size, None):
        with _autocast(setup):
            logits = model(_to_input(images[idx], setup))
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def evaluate(model: nn.Module, data: ImageSet, setup: DeviceSetup, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data``."""
    probs = torch.from_numpy(predict_proba(model, data.images, batch_size=batch_size, setup=setup))
    labels = data.labels
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels).item()
    return loss, (probs.argmax(1) == labels).float().mean().item()


def train(
    model: nn.Module,
    train_set: ImageSet,
    val_set: ImageSet,
    cfg: TrainConfig,
    *,
    seed: int,
    weights: np.ndarray | None = None,
    aspect_pool: torch.Tensor | None = None,
    on_event: EventFn | None = None,
    should_stop: StopFn | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    start: TrainState | None = None,
) -> TrainResult:
    """Train ``model`` in place and return it with the best validation epoch restored.

    ``weights`` (num_classes,) weights the training loss per class; validation loss is unweighted.
    ``aspect_pool`` holds the real images' aspects that the synthetic preset draws from (default: those
    of the real images in ``train_set``; a synthetic-only mix needs them passed in). ``on_checkpoint``
    gets the loop's state after each epoch that is not the last (its tensors are the loop's own: store
    or copy them before returning); ``start`` (such a state, from the same model architecture, data,
    config and seed) continues the run after that epoch.
    """
    # 1. Check inputs and set up the device, data and optimiser.
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(f"training needs images in both splits: got {len(train_set)} train, {len(val_set)} val")
    try:  # the config only checked values: this is where the machine is asked
        setup = pick_device(cfg.device, cfg.precision)
    except ValueError as err:
        raise TrainConfigError(f"train.{err}") from err
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    model.to(setup.device)
    if setup.channels_last:
        model.to(memory_format=torch.channels_last)
    images = train_set.images.to(setup.device)
    labels = train_set.labels.to(setup.device)
    real_preset, synthetic_preset = Preset.parse(cfg.preprocess_real), Preset.parse(cfg.preprocess_synthetic)
    preprocessing = not (real_preset.is_identity and synthetic_preset.is_identity)
    synthetic = torch.from_numpy(np.asarray(train_set.provenance.synthetic, dtype=bool))
    real_rows = ~synthetic.numpy()
    pool = aspect_pool
    if pool is None:
        pool = real_aspects(train_set.provenance.orig_width[real_rows], train_set.provenance.orig_height[real_rows])
    weight = torch.tensor(weights, dtype=torch.float32, device=setup.device) if weights is not None else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.use_scaler)
    padding = (cfg.crop_padding or max(1, train_set.images.shape[-1] // 8)) if cfg.augment else 0
    steps_per_epoch = -(-len(train_set) // cfg.batch_size)
    total = steps_per_epoch * cfg.max_epochs
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)

    # 2. Epochs of shuffled, augmented batches; early stopping on validation loss.
    history: list[dict[str, float]] = []
    best_loss, best_state, best_epoch, bad_epochs = float("inf"), None, 0, 0
    step, seen, train_time, cancelled, stopped_early = 0, 0, 0.0, False, False
    first_epoch = 1
    if start is not None:  # a resume: every part of the loop as it was after epoch start["epoch"]
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        scaler.load_state_dict(start["scaler"])
        best = start["best_state"]
        best_state = copy.deepcopy(model.state_dict()) if best is None and start["best_epoch"] else best
        best_loss, best_epoch, bad_epochs = start["best_loss"], start["best_epoch"], start["bad_epochs"]
        history = [dict(row) for row in start["history"]]
        step, seen, train_time = start["step"], start["seen"], start["train_time"]
        checkpoints.restore_rng(start["rng"], {"batches": gen})
        first_epoch = start["epoch"] + 1
    for epoch in range(first_epoch, cfg.max_epochs + 1):
        model.train()
        began, loss_sum, correct, count = time.perf_counter(), 0.0, 0, 0
        for idx in _batches(len(train_set), cfg.batch_size, gen):
            if stop():
                cancelled = True
                break
            idx = idx.to(setup.device)
            batch = images[idx]
            if preprocessing:  # the presets of the Preprocess preview, per image by its origin
                batch = apply_mixed(batch, synthetic[idx.cpu()], real_preset, synthetic_preset, pool=pool, gen=gen)
            x = _to_input(augment_batch(batch, padding, cfg.flip, gen), setup)
            y = labels[idx]
            with _autocast(setup):
                logits = model(x)
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            loss_value = loss.item()
            loss_sum += loss_value * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            count += len(idx)
            emit(TrainEvent("step", epoch, step, total, {"loss": loss_value}))
        elapsed = time.perf_counter() - began
        if cancelled and count == 0:
            break
        train_time += elapsed
        seen += count
        val_loss, val_acc = evaluate(model, val_set, setup)
        row = {
            "epoch": float(epoch),
            "train_loss": loss_sum / max(1, count),
            "train_acc": correct / max(1, count),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": count / max(elapsed, 1e-9),
        }
        history.append(row)
        emit(TrainEvent("epoch", epoch, step, total, row))
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if cancelled:
            break
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped_early = True
            break
        if on_checkpoint is not None and epoch < cfg.max_epochs:  # another epoch follows: a resume starts there
            on_checkpoint(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    # the best weights are the current ones when this epoch was the best: stored once
                    "best_state": None if best_epoch == epoch else best_state,
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "history": history,
                    "step": step,
                    "seen": seen,
                    "train_time": train_time,
                    "rng": checkpoints.capture_rng({"batches": gen}, global_rngs=("torch",)),
                }
            )

    # 3. Restore the best epoch.
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result = TrainResult(
        model, history, best_epoch, stopped_early, cancelled, seen / max(train_time, 1e-9), setup.label
    )
    emit(TrainEvent("done", len(history), step, total, {"best_epoch": float(best_epoch)}))
    return result
