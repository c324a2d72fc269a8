"""From a dataset to a filtered synthetic set: train (or reuse) a generator, generate, filter, store.

:func:`train_generator` trains a GAN or the small diffusion model on the training split (the
imbalanced one) and keeps it under ``<workspace>/generators/<id>/``; the id is a hash of the generator
config and the dataset, so the same request reuses the stored generator. :func:`make_set` generates N
images per class, or fills every class up to the largest, filters them with a classifier trained on
real data only and for near-duplicates (of training images and within the set), stores the set with
one manifest record per image, and attaches a first quality report. Where this stops: no
widgets, no threads (the pages run these as jobs), no training of classifiers on the sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import store
from engine.datasets import LabDataset
from engine.device import pick_device
from engine.jobs import JobContext, JobRunner
from engine.synth import ddpm, diffusion, filters, gan, quality, sets
from engine.training import predict_proba

log = logging.getLogger(__name__)
MAX_ROUNDS = 12  # generation rounds to replace rejected images before giving up on a count
GIVE_UP = 2_000  # candidates of a class with none passing the filter, after which the class is given up
MAX_ASK = 50  # at most this many candidates per image still needed, whatever the keep rate
MAX_PER_IMAGE = 20  # a class gets at most this many candidates per image wanted (at least GIVE_UP): memory is finite
CLASS_STRIDE = 1_000_000  # noise indices of class c start at c * CLASS_STRIDE: classes never share a latent


class GenerateError(ValueError):
    """A generation request cannot be carried out; the message names the field and the value."""


@dataclass(frozen=True)
class GenerateConfig:
    """How many synthetic images to make per class, and how to filter them."""

    generator: str  # id of a stored generator
    per_class: int = 0  # images per class; 0 = fill every class up to the largest
    classes: tuple[str, ...] = ()  # only these classes (default: all, or all below the largest when filling)
    threshold: float = 0.95  # keep images whose real-classifier confidence for their label is at least this (0 = off)
    seed: int = 0  # noise seed: the same seed gives the same images
    name: str = ""
    duplicate_threshold: float = 0.99  # reject near-duplicates at this thumbnail similarity (1 = off)
    sample_steps: int = 50  # diffusion model only: DDIM steps
    guidance: float = 2.0  # diffusion model only: classifier-free guidance scale (1 = none)

    def __post_init__(self) -> None:
        if not self.generator:
            raise GenerateError("generate.generator='' is not accepted: choose a trained generator")
        if not isinstance(self.per_class, int) or not 0 <= self.per_class <= 100_000:
            raise GenerateError(f"generate.per_class={self.per_class!r} is not accepted: 0 (fill) to 100,000")
        if not 0 <= self.threshold <= 1:
            raise GenerateError(f"generate.threshold={self.threshold!r} is not accepted: a number in [0, 1]")
        if not 0.5 <= self.duplicate_threshold <= 1:
            raise GenerateError(
                f"generate.duplicate_threshold={self.duplicate_threshold!r} is not accepted: a number in [0.5, 1]"
            )
        if not isinstance(self.sample_steps, int) or not 1 <= self.sample_steps <= 1000:
            raise GenerateError(f"generate.sample_steps={self.sample_steps!r} is not accepted: 1 to 1000")
        if not 0 <= self.guidance <= 20:
            raise GenerateError(f"generate.guidance={self.guidance!r} is not accepted: a number from 0 to 20")
        object.__setattr__(self, "classes", tuple(self.classes))


GeneratorConfig = gan.GanConfig | ddpm.DdpmConfig


def generators_dir() -> Path:
    return store.subdir("generators")


def generator_id(cfg: GeneratorConfig, dataset: LabDataset) -> str:
    key = f"{cfg.cache_key()}-{dataset.identity}-{dataset.config.cache_key()}"
    return f"{cfg.kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def list_generators(dataset: LabDataset | None = None) -> list[dict[str, Any]]:
    """Stored generators (newest first), optionally only those trained on ``dataset``."""
    out = []
    for meta_path in sorted(generators_dir().glob("*/origin.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        meta = json.loads(meta_path.read_text())
        if dataset is None or (meta["dataset_identity"], meta["dataset_key"]) == (
            dataset.identity,
            dataset.config.cache_key(),
        ):
            out.append(meta)
    return out


def train_generator(
    cfg: GeneratorConfig,
    dataset: LabDataset,
    *,
    on_event: Callable[[gan.GanEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> str:
    """Train a generator on the training split, or reuse the stored one; returns its id."""
    gen_id = generator_id(cfg, dataset)
    folder = generators_dir() / gen_id
    if (folder / "origin.json").is_file():
        log.info("reusing generator %s", gen_id)
        return gen_id
    result: gan.GanResult | ddpm.DdpmResult
    if isinstance(cfg, ddpm.DdpmConfig):
        result = ddpm.train_ddpm(
            cfg, dataset.train, on_event=on_event, should_stop=should_stop, checkpoint_dir=folder / "checkpoint"
        )
    else:
        result = gan.train_gan(
            cfg, dataset.train, on_event=on_event, should_stop=should_stop, checkpoint_dir=folder / "checkpoint"
        )
    if result.cancelled:
        step = int(result.history[-1]["step"]) if result.history else 0
        raise GenerateError(f"training of generator {gen_id} was cancelled at step {step}; nothing was stored")
    if isinstance(result, ddpm.DdpmResult):
        ddpm.save_model(result, folder)
    else:
        gan.save_generator(result, folder)
    origin = {
        "id": gen_id,
        "kind": cfg.kind,
        "config": asdict(cfg),
        "dataset_identity": dataset.identity,
        "dataset_key": dataset.config.cache_key(),
        "class_names": list(dataset.class_names),
        "seconds": result.seconds,
        "warnings": result.warnings,
    }
    store.write_json(folder / "origin.json", origin)  # written last: its presence marks a complete generator
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    return gen_id


def target_counts(dataset: LabDataset, cfg: GenerateConfig) -> np.ndarray:
    """(num_classes,) synthetic images wanted per class (the rule Stable Diffusion requests use too)."""
    try:
        return diffusion.wanted_counts(dataset, cfg.per_class, cfg.classes)
    except diffusion.DiffusionError as err:
        raise GenerateError(f"generate.{err}") from None


def make_set(
    cfg: GenerateConfig,
    dataset: LabDataset,
    *,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> sets.SetInfo:
    """Generate, filter and store a synthetic set for ``dataset``; returns its info."""
    # 1. Check the request against the stored generator.
    folder = generators_dir() / cfg.generator
    if not (folder / "origin.json").is_file():
        raise GenerateError(f"generate.generator={cfg.generator!r} is not a stored generator of this workspace")
    origin = json.loads((folder / "origin.json").read_text())
    if tuple(origin["class_names"]) != dataset.class_names:
        raise GenerateError(f"generator {cfg.generator!r} was trained on other classes: {origin['class_names']}")
    is_diffusion = origin["kind"] == "ddpm"
    if is_diffusion:
        generator, meta = ddpm.load_model(folder)
        generator = generator.to(pick_device().device)  # sampling runs on the job's device
        config_hash = ddpm.DdpmConfig(**origin["config"]).cache_key()
    else:
        generator, meta = gan.load_generator(folder)
        config_hash = gan.GanConfig(**origin["config"]).cache_key()
    wanted = target_counts(dataset, cfg)
    report = on_progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    # 2. A classifier trained on real data only judges the labels.
    report(0.02, "training the real-data classifier that filters labels")
    reference = filters.reference_classifier(dataset, seed=0, should_stop=stop)
    train = dataset.train
    names = [Path(o).name for o in train.provenance.origin]
    duplicates = filters.DuplicateIndex(train.images, train.labels.numpy(), names, cfg.duplicate_threshold)
    # 3. Generate in rounds until every class has its count of kept images (or MAX_ROUNDS pass).
    images, records = [], []
    kept = np.zeros(len(wanted), dtype=np.int64)
    passed = np.zeros(len(wanted), dtype=np.int64)  # candidates the filter accepted, per class
    next_index = np.zeros(len(wanted), dtype=np.int64)
    conditional = bool(origin["config"].get("conditional", True))
    rounds = MAX_ROUNDS if conditional else 2 * MAX_ROUNDS  # unconditional: classes arrive by chance
    for round_ in range(rounds):
        # Every candidate is kept (pixels and record) until the set is stored, so each class has a budget
        # (_budget). A class none of whose budget passed is given up: its generator does not draw it
        # recognisably, and asking for more would run for hours.
        budget_left = np.maximum(_budget(wanted) - next_index, 0) if conditional else np.full_like(wanted, 1 << 40)
        hopeless = _hopeless(conditional, passed, next_index, wanted)
        need = np.where(hopeless | (budget_left == 0), 0, np.maximum(wanted - kept, 0))
        if not need.any() or stop():
            break
        if conditional:  # ask for each class, as many as its keep rate so far suggests; the filter verifies
            rate = np.where(next_index > 0, passed / np.maximum(next_index, 1), 0.8)
            ask = np.ceil(need * np.minimum(1.2 / np.maximum(rate, 1e-9), MAX_ASK)).astype(np.int64)
            ask = np.minimum(ask, budget_left)
            labels = np.repeat(np.arange(len(wanted)), ask)
            offsets = np.concatenate([c * CLASS_STRIDE + next_index[c] + np.arange(k) for c, k in enumerate(ask)])
            offsets = offsets.astype(np.int64)
            if is_diffusion:
                batch = ddpm.sample(
                    generator,
                    labels,
                    seed=cfg.seed,
                    noise_indices=offsets,
                    steps=cfg.sample_steps,
                    guidance=cfg.guidance,
                    timesteps=int(origin["config"]["timesteps"]),
                    should_stop=stop,
                )
            else:
                batch = _generate_indexed(generator, labels, offsets, z_dim=int(meta["config"]["z_dim"]), seed=cfg.seed)
            next_index += ask
            probs = predict_proba(reference, torch.from_numpy(batch))
            verdict = filters.confidence_filter(probs, labels, dataset.class_names, threshold=cfg.threshold)
        else:  # an unconditional generator: the real-data classifier assigns the label (pseudo-labelling)
            total = int(max(64, 3 * need.sum()))
            offsets = (int(next_index[0]) + np.arange(total)).astype(np.int64)
            next_index[0] += total
            batch = gan.generate(
                generator,
                np.zeros(total, dtype=np.int64),
                z_dim=int(meta["config"]["z_dim"]),
                seed=cfg.seed,
                noise_offset=int(offsets[0]),
            )
            probs = predict_proba(reference, torch.from_numpy(batch))
            verdict = filters.confidence_filter(
                probs, None, dataset.class_names, threshold=cfg.threshold, mode="assign"
            )
            labels = verdict.labels
        thumbs = filters.thumbnails(batch)
        for i, label in enumerate(labels):
            passed[label] += bool(verdict.keep[i])
            reason = verdict.reasons[i]
            if not reason and kept[label] >= wanted[label]:
                reason = "surplus beyond the requested count"
            reason = reason or duplicates.judge(thumbs[i], int(label))
            keep = not reason
            if keep:
                duplicates.add(thumbs[i], int(label))
            kept[label] += keep
            records.append(
                sets.ImageRecord(
                    "",
                    int(label),
                    dataset.class_names[label],
                    cfg.generator,
                    config_hash,
                    cfg.seed,
                    int(offsets[i]),
                    float(verdict.scores[i]),
                    keep,
                    reason,
                )
            )
        images.append(batch)
        report(0.1 + 0.7 * (round_ + 1) / rounds, f"round {round_ + 1}: kept {int(kept.sum())} of {int(wanted.sum())}")
    if not images:
        raise GenerateError("nothing to generate: every chosen class already has the requested count")
    # 4. Store the set, then measure its quality per class.
    settings = {
        "generate": asdict(cfg),
        "generator": origin["config"],
        "kind": origin["kind"],
        "wanted": wanted.tolist(),
        "given_up": [
            dataset.class_names[c] for c in np.flatnonzero(_hopeless(conditional, passed, next_index, wanted))
        ],
        # classes whose budget of candidates ran out with some passing: fewer images than asked
        "short": [
            f"{dataset.class_names[c]} ({int(kept[c])} of {int(wanted[c])})"
            for c in np.flatnonzero((kept > 0) & (kept < wanted))
        ],
    }
    info = sets.create_set(
        cfg.name or f"{origin['kind']} {cfg.generator[-6:]}",
        np.concatenate(images),
        records,
        dataset.class_names,
        generator=cfg.generator,
        dataset_identity=sets.dataset_key(dataset),
        config=settings,
    )
    report(0.85, "measuring quality per class (train on synthetic, test on real)")
    kept_set = sets.load_set(info.id)
    if len(kept_set):
        info = sets.update_quality(info.id, quality.quality_report(kept_set, dataset, reference, seed=0).to_dict())
    report(1.0, f"stored set {info.id}")
    return info


def _budget(wanted: np.ndarray) -> np.ndarray:
    """(num_classes,) most candidates a class may get: MAX_PER_IMAGE per image wanted, at least GIVE_UP."""
    return np.where(wanted > 0, np.maximum(GIVE_UP, MAX_PER_IMAGE * wanted), 0)


def _hopeless(conditional: bool, passed: np.ndarray, asked: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """(num_classes,) classes given up: none of their whole budget of candidates (see _budget) passed."""
    return conditional & (wanted > 0) & (passed == 0) & (asked >= _budget(wanted))


def _generate_indexed(generator: Any, labels: np.ndarray, indices: np.ndarray, *, z_dim: int, seed: int) -> np.ndarray:
    """Images for (label, noise index) pairs; each index's noise depends on the seed and the index only."""
    out = []
    for label in np.unique(labels):
        mask = labels == label
        idx = indices[mask]
        start = int(idx.min())
        block = gan.generate(
            generator, np.full(int(idx.max()) - start + 1, label), z_dim=z_dim, seed=seed, noise_offset=start
        )
        out.append((np.flatnonzero(mask), block[idx - start]))
    result = np.empty((len(labels), *out[0][1].shape[1:]), dtype=np.uint8)
    for where, block in out:
        result[where] = block
    return result


def submit_training(runner: JobRunner, cfg: GeneratorConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue generator training as a heavy job; its events are loss rows, sample grids and warnings."""

    def job(ctx: JobContext) -> str:
        def on_event(event: gan.GanEvent) -> None:
            if event.kind == "step":
                ctx.set_progress(event.step / max(1, event.total_steps), f"step {event.step} of {event.total_steps}")
                if event.step % 10 == 0:  # keep the curve, not every step
                    ctx.emit(event)
            else:
                ctx.emit(event)

        return train_generator(cfg, dataset, on_event=on_event, should_stop=ctx.should_stop)

    lane = pick_device().device.type
    return runner.submit(
        f"train {cfg.kind} ({cfg.steps:,} steps)",
        job,
        owner=owner,
        group="generate",
        tag=generator_id(cfg, dataset),
        lane=lane,
    )


def submit_generation(runner: JobRunner, cfg: GenerateConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue the making of a synthetic set as a heavy job; its result is the set's info."""

    def job(ctx: JobContext) -> sets.SetInfo:
        return make_set(cfg, dataset, on_progress=ctx.set_progress, should_stop=ctx.should_stop)

    amount = f"{cfg.per_class}/class" if cfg.per_class else "fill to balance"
    return runner.submit(
        f"generate {amount} with {cfg.generator}",
        job,
        owner=owner,
        group="generate",
        tag=cfg.generator,
        lane=pick_device().device.type,
    )
