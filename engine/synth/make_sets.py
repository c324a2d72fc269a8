"""From a dataset and a generator to a judged, stored synthetic set: GAN, diffusion model or Stable Diffusion.

:func:`make_set` samples a stored generator (``generators.py``) in rounds until every class has its
count of kept images: N per class, or every class filled up to the largest (:func:`wanted_counts`).
:func:`make_sd_set` prompts Stable Diffusion (``stable_diffusion.py``) class by class, from text or from
real training images (img2img), and writes every image with its manifest record as it comes: a stopped
request continues where it stopped, and a fulfilled one is served from the cache (``sd_requests.py``).
Both judge every batch with :func:`~engine.synth.filters.judge` (real-data classifier, requested count,
near-duplicates of training images and of kept images) and store through one step: quality per class
first, then the set, whole. When ``should_stop`` turns true they raise :class:`~engine.jobs.Cancelled`
and store no set (what a Stable Diffusion request wrote stays, for its next run). Where this stops: no
generator training (``generators.py``), no threads (``tasks.py`` runs these as jobs), no classifiers
trained on the sets.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import signatures
from engine.datasets import LabDataset
from engine.jobs import Cancelled
from engine.synth import filters, generators, quality, realism, sd_requests, sets, stable_diffusion
from engine.synth.stable_diffusion import SDConfig
from engine.training import predict_proba

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]
MAX_ROUNDS = 12  # generation rounds to replace rejected images before giving up on a count
GIVE_UP = 2_000  # candidates of a class with none passing the filter, after which the class is given up
MAX_ASK = 50  # at most this many candidates per image still needed, whatever the keep rate
CLASS_STRIDE = 1_000_000  # noise indices of class c start at c * CLASS_STRIDE: classes never share a latent


class GenerateError(ValueError):
    """A request for a synthetic set cannot be carried out; the message names the field and the value."""


@dataclass(frozen=True)
class GenerateConfig:
    """How many synthetic images to make per class from a stored generator, and how to filter them."""

    generator: str  # id of a stored generator
    per_class: int = 0  # images per class; 0 = fill every class up to the largest
    classes: tuple[str, ...] = ()  # only these classes (default: all, or all below the largest when filling)
    threshold: float = 0.95  # keep images whose real-classifier confidence for their label is at least this (0 = off)
    seed: int = 0  # noise seed: the same seed gives the same images
    name: str = ""
    duplicate_threshold: float = 0.99  # reject near-duplicates at this thumbnail similarity (1 = off)
    sample_steps: int = 50  # diffusion model only: DDIM steps
    guidance: float = 2.0  # diffusion model only: classifier-free guidance scale (1 = none)
    candidates_per_image: int = 20  # a class gets at most this many candidates per image wanted (memory is finite)

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
        if not isinstance(self.candidates_per_image, int) or not 1 <= self.candidates_per_image <= 200:
            raise GenerateError(
                f"generate.candidates_per_image={self.candidates_per_image!r} is not accepted: a whole number, 1 to 200"
            )
        object.__setattr__(self, "classes", tuple(self.classes))


def wanted_counts(dataset: LabDataset, per_class: int, classes: tuple[str, ...]) -> np.ndarray:
    """(num_classes,) images wanted per class: ``per_class`` each, or up to the largest class when 0.

    The rule of every recipe; ``classes`` (names) limits it to those classes.
    """
    unknown = [c for c in classes if c not in dataset.class_names]
    if unknown:
        raise GenerateError(f"classes={unknown[0]!r} is not accepted: classes are {', '.join(dataset.class_names)}")
    counts = dataset.train.class_counts()
    chosen = np.array([not classes or n in classes for n in dataset.class_names])
    wanted = np.full_like(counts, per_class) if per_class else counts.max() - counts
    return np.where(chosen, wanted, 0)


def target_counts(dataset: LabDataset, cfg: GenerateConfig) -> np.ndarray:
    """(num_classes,) synthetic images a :class:`GenerateConfig` asks for (see :func:`wanted_counts`)."""
    try:
        return wanted_counts(dataset, cfg.per_class, cfg.classes)
    except GenerateError as err:
        raise GenerateError(f"generate.{err}") from None


# Shared steps ----------------------------------------------------------------------------------------


def _duplicate_index(dataset: LabDataset, threshold: float) -> filters.DuplicateIndex:
    train = dataset.train
    names = [Path(o).name for o in train.provenance.origin]
    return filters.DuplicateIndex(train.images, train.labels.numpy(), names, threshold)


def _store(
    name: str,
    images: np.ndarray,
    records: Sequence[sets.ImageRecord],
    dataset: LabDataset,
    *,
    generator: str,
    config: dict[str, Any],
    reference: torch.nn.Module | None,
    report: ProgressFn,
    stop: StopFn,
) -> sets.SetInfo:
    """Measure quality per class on the kept images (when a real-data classifier judged them), then store the set.

    Quality comes first because it trains a classifier, which a cancel stops: a cancelled job stores no set.
    """
    measured: dict[str, Any] = {}
    kept = [i for i, r in enumerate(records) if r.kept]
    if reference is not None and kept:
        report(0.9, "measuring quality per class (train on synthetic, test on real)")
        synthetic = sets.as_image_set(images[kept], [records[i] for i in kept], dataset.class_names, source="new")
        measured = quality.quality_report(synthetic, dataset, reference, seed=0, should_stop=stop).to_dict()
        if dataset.resolution >= realism.MIN_SIDE:  # ImageNet features say little about tiny images such as digits
            report(0.95, "measuring realism and coverage in a pretrained backbone's features")
            measured["realism"] = realism.realism(synthetic, dataset, should_stop=stop).to_dict()
    judged_by = filters.judge_info(dataset) if reference is not None else None
    if judged_by is not None:  # how well the judge knows each class on real images, beside its keep rates
        config = {**config, "judge": judged_by.to_dict()}
    return sets.create_set(
        name,
        images,
        records,
        dataset.class_names,
        generator=generator,
        dataset_key=dataset.key,
        config=config,
        quality=measured,
    )


# From a stored generator -----------------------------------------------------------------------------


def make_set(
    cfg: GenerateConfig,
    dataset: LabDataset,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> sets.SetInfo:
    """Generate, judge and store a synthetic set for ``dataset`` from a stored generator; returns its info.

    Raises :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true; no set is stored then.
    """
    report = on_progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    # 1. Check the request against the stored generator.
    origin = generators.load_origin(cfg.generator)
    if origin is None:
        raise GenerateError(f"generate.generator={cfg.generator!r} is not a stored generator of this workspace")
    if tuple(origin["class_names"]) != dataset.class_names:
        raise GenerateError(f"generator {cfg.generator!r} was trained on other classes: {origin['class_names']}")
    draw = generators.sampler(
        origin, seed=cfg.seed, sample_steps=cfg.sample_steps, guidance=cfg.guidance, should_stop=stop
    )
    config_hash = generators.config_hash(origin)
    wanted = target_counts(dataset, cfg)
    # 2. A classifier trained on real data only judges the labels.
    report(0.02, "training the real-data classifier that filters labels")
    reference = filters.reference_classifier(dataset, seed=0, should_stop=stop)
    duplicates = _duplicate_index(dataset, cfg.duplicate_threshold)
    # 3. Generate in rounds until every class has its count of kept images (or the rounds run out).
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
        budget_left = (
            np.maximum(_budget(wanted, cfg.candidates_per_image) - next_index, 0)
            if conditional
            else np.full_like(wanted, 1 << 40)
        )
        hopeless = _hopeless(conditional, passed, next_index, wanted, cfg.candidates_per_image)
        need = np.where(hopeless | (budget_left == 0), 0, np.maximum(wanted - kept, 0))
        if not need.any():
            break
        if stop():
            raise Cancelled(f"making the set was cancelled in round {round_ + 1}; nothing was stored")
        if conditional:  # ask for each class, as many as its keep rate so far suggests; the filter verifies
            rate = np.where(next_index > 0, passed / np.maximum(next_index, 1), 0.8)
            ask = np.ceil(need * np.minimum(1.2 / np.maximum(rate, 1e-9), MAX_ASK)).astype(np.int64)
            ask = np.minimum(ask, budget_left)
            labels = np.repeat(np.arange(len(wanted)), ask)
            offsets = np.concatenate([c * CLASS_STRIDE + next_index[c] + np.arange(k) for c, k in enumerate(ask)])
            batch = _working_side(draw(labels, offsets.astype(np.int64)), dataset.resolution)
            next_index += ask
            probs = predict_proba(reference, torch.from_numpy(batch))
            verdict = filters.confidence_filter(probs, labels, dataset.class_names, threshold=cfg.threshold)
        else:  # an unconditional generator: the real-data classifier assigns the label (pseudo-labelling)
            total = int(max(64, 3 * need.sum()))
            offsets = (int(next_index[0]) + np.arange(total)).astype(np.int64)
            next_index[0] += total
            batch = _working_side(draw(np.zeros(total, dtype=np.int64), offsets), dataset.resolution)
            probs = predict_proba(reference, torch.from_numpy(batch))
            verdict = filters.confidence_filter(
                probs, None, dataset.class_names, threshold=cfg.threshold, mode="assign"
            )
            labels = verdict.labels
        np.add.at(passed, labels, verdict.keep.astype(np.int64))
        reasons = filters.judge(batch, labels, duplicates, kept, wanted, verdict=verdict)
        for i, label in enumerate(int(y) for y in labels):
            name, score, reason = dataset.class_names[label], float(verdict.scores[i]), reasons[i]
            record = sets.ImageRecord(
                "", label, name, cfg.generator, config_hash, cfg.seed, int(offsets[i]), score, not reason, reason
            )
            records.append(record)
        images.append(batch)
        report(0.1 + 0.7 * (round_ + 1) / rounds, f"round {round_ + 1}: kept {int(kept.sum())} of {int(wanted.sum())}")
    if not images:
        raise GenerateError("nothing to generate: every chosen class already has the requested count")
    # 4. Measure the quality per class, then store the set.
    given_up = np.flatnonzero(_hopeless(conditional, passed, next_index, wanted, cfg.candidates_per_image))
    settings = {
        "generate": asdict(cfg),
        "generator": origin["config"],
        "generator_steps_done": origin.get("steps_done", origin["config"].get("steps")),  # fewer: drawn when stopped
        "kind": origin["kind"],
        "wanted": wanted.tolist(),
        "given_up": [dataset.class_names[c] for c in given_up],
        # classes whose budget of candidates ran out with some passing: fewer images than asked
        "short": [
            f"{dataset.class_names[c]!r}: {int(kept[c])} of {int(wanted[c])}"
            for c in np.flatnonzero((kept > 0) & (kept < wanted))
        ],
    }
    name = cfg.name or f"{origin['kind']} {cfg.generator[-6:]}"
    info = _store(
        name,
        np.concatenate(images),
        records,
        dataset,
        generator=cfg.generator,
        config=settings,
        reference=reference,
        report=report,
        stop=stop,
    )
    report(1.0, f"stored set {info.id}")
    return info


def _working_side(batch: np.ndarray, side: int) -> np.ndarray:
    """Generated uint8 images (N, C, s, s) at the dataset's working side: generators draw at most 64 px."""
    if batch.shape[-1] == side:
        return batch
    up = F.interpolate(torch.from_numpy(batch).float(), size=(side, side), mode="bilinear", align_corners=False)
    return up.round().clamp(0, 255).to(torch.uint8).numpy()


def _budget(wanted: np.ndarray, per_image: int) -> np.ndarray:
    """(num_classes,) most candidates a class may get: ``per_image`` per image wanted, at least GIVE_UP."""
    return np.where(wanted > 0, np.maximum(GIVE_UP, per_image * wanted), 0)


def _hopeless(
    conditional: bool, passed: np.ndarray, asked: np.ndarray, wanted: np.ndarray, per_image: int
) -> np.ndarray:
    """(num_classes,) classes given up: none of their whole budget of candidates (see _budget) passed."""
    return conditional & (wanted > 0) & (passed == 0) & (asked >= _budget(wanted, per_image))


# From Stable Diffusion, resumable --------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """One rendered batch of a class, at the working resolution, with what made each image."""

    indices: list[int]  # image numbers within the class (noise index)
    seeds: list[int]
    prompts: list[str]
    sources: list[int]  # img2img: the training image each started from (empty for text2img)
    images: np.ndarray  # uint8 (n, C, R, R)
    flagged: list[bool]  # blacked out by the pipeline's safety checker


def make_sd_set(
    cfg: SDConfig,
    dataset: LabDataset,
    *,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> sets.SetInfo:
    """Generate, judge and store a Stable Diffusion set for ``dataset``; resumes an interrupted request.

    Raises :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true (what was written is kept for
    the next run of the same request), :class:`~engine.synth.stable_diffusion.ModelUnavailable` when the
    model cannot be loaded here.
    """
    report = on_progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    # 1. Check the request; a request already fulfilled is served from the cache.
    wanted = wanted_counts(dataset, cfg.per_class, cfg.classes)
    if not wanted.any():
        raise GenerateError("nothing to generate: every chosen class already has the requested count")
    cached = sd_requests.cached_set(cfg, dataset)
    if cached is not None:
        report(1.0, f"served from the cache: set {cached.id}")
        return cached
    # 2. The pipeline (a model that cannot be loaded leaves nothing behind), then what an interrupted run wrote.
    report(0.01, "loading the pipeline")
    pipe, lock = stable_diffusion.load_pipeline(cfg.model, cfg.mode, device=cfg.device)
    folder, records = sd_requests.open_partial(cfg, dataset)
    # 3. The judges, told what the interrupted run kept.
    reference = None
    if cfg.threshold > 0:
        report(0.02, "training the real-data classifier that filters labels")
        reference = filters.reference_classifier(dataset, seed=0, should_stop=stop)
    duplicates = _duplicate_index(dataset, cfg.duplicate_threshold)
    kept = np.zeros(len(wanted), dtype=np.int64)
    tried = np.zeros(len(wanted), dtype=np.int64)
    for r in records:
        tried[r.label] = max(tried[r.label], r.noise_index + 1)
        if r.kept:
            kept[r.label] += 1
            duplicates.add(signatures.thumbnails(sets.read_png(folder / r.file, dataset.channels)[None])[0], r.label)
    limit = np.ceil(wanted * cfg.max_factor).astype(np.int64)
    total = int(wanted.sum())
    # 4. Generate class by class, batch by batch, writing each image and its record as it comes.
    started, made = time.perf_counter(), 0
    with open(folder / "manifest.jsonl", "a") as manifest:
        for label in (int(c) for c in np.flatnonzero(wanted)):
            order = _source_order(cfg, dataset, label)
            while kept[label] < wanted[label] and tried[label] < limit[label]:
                if stop():
                    raise Cancelled(_interrupted(int(kept.sum()), total))
                n = int(min(cfg.batch_size, wanted[label] - kept[label], limit[label] - tried[label]))
                indices = [int(tried[label]) + i for i in range(n)]
                on_step = _step_progress(report, cfg, int(kept.sum()), n, total)
                try:
                    batch = _render_batch(cfg, dataset, pipe, lock, label, indices, order, stop, on_step)
                except Cancelled:
                    raise Cancelled(_interrupted(int(kept.sum()), total)) from None
                labels, verdict = np.full(n, label), None
                if reference is not None:
                    probs = predict_proba(reference, torch.from_numpy(batch.images))
                    verdict = filters.confidence_filter(probs, labels, dataset.class_names, threshold=cfg.threshold)
                reasons = filters.judge(
                    batch.images, labels, duplicates, kept, wanted, verdict=verdict, flagged=batch.flagged
                )
                records += _write_batch(folder, manifest, cfg, dataset, label, batch, verdict, reasons)
                tried[label] += n
                made += n
                left = int(np.maximum(wanted - kept, 0).sum())
                rate = (time.perf_counter() - started) / made
                report(
                    0.05 + 0.8 * kept.sum() / max(1, total),
                    f"{int(kept.sum())} of {total} images kept · about {_clock(rate * left)} left",
                )
    # 5. Measure the quality per class, store the set, remember it under the request's key.
    info = _store(
        cfg.name or f"SD {Path(cfg.model).name} {cfg.mode}",
        np.stack([sets.read_png(folder / r.file, dataset.channels) for r in records]),
        records,
        dataset,
        generator=cfg.model,
        config={"stable_diffusion": asdict(cfg), "kind": "stable-diffusion", "wanted": wanted.tolist()},
        reference=reference,
        report=report,
        stop=stop,
    )
    sd_requests.finish(cfg, dataset, info.id)
    report(1.0, f"stored set {info.id}: kept {sum(info.counts_kept)} of {sum(info.counts_total)}")
    return info


def _source_order(cfg: SDConfig, dataset: LabDataset, label: int) -> torch.Tensor:
    """img2img: the class's training images in the request's seeded order; image i starts from order[i % n]."""
    pool = (dataset.train.labels == label).nonzero().flatten()
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed))]
    if cfg.mode == "img2img" and not len(order):
        raise GenerateError(f"img2img needs real training images of class {dataset.class_names[label]!r}; it has none")
    return order


def _step_progress(report: ProgressFn, cfg: SDConfig, done: int, n: int, total: int) -> Callable[[int], None]:
    """Progress inside a batch of ``n`` images: its denoising steps (img2img runs strength x steps of them)."""
    steps = max(1, int(cfg.steps * cfg.strength)) if cfg.mode == "img2img" else cfg.steps

    def within(step: int) -> None:
        now = done + n * min(step, steps) / steps
        report(0.05 + 0.8 * now / max(1, total), f"{now:.1f} of {total} images (step {step} of {steps})")

    return within


def _render_batch(
    cfg: SDConfig,
    dataset: LabDataset,
    pipe: Any,
    lock: threading.Lock,
    label: int,
    indices: list[int],
    order: torch.Tensor,
    stop: StopFn,
    on_step: Callable[[int], None],
) -> _Batch:
    """Images ``indices`` of class ``label``, rendered while holding the pipeline's lock."""
    name = dataset.class_names[label]
    seeds = [stable_diffusion.image_seed(cfg.seed, label, i) for i in indices]
    prompts = [stable_diffusion.prompt_for(cfg, name, s) for s in seeds]
    picks = [int(order[i % len(order)]) for i in indices] if cfg.mode == "img2img" else []
    sources = [stable_diffusion.source_image(dataset.train.images[p], cfg.size) for p in picks]
    with lock:
        raw, flagged = stable_diffusion.render(pipe, cfg, prompts, seeds, sources, stop, on_step=on_step)
    images = stable_diffusion.to_working(raw, dataset.resolution, dataset.channels)
    return _Batch(indices, seeds, prompts, picks, images, flagged)


def _write_batch(
    folder: Path,
    manifest: IO[str],
    cfg: SDConfig,
    dataset: LabDataset,
    label: int,
    batch: _Batch,
    verdict: filters.FilterResult | None,
    reasons: Sequence[str],
) -> list[sets.ImageRecord]:
    """Each image as a PNG and its record as a manifest line, flushed to disk before the next batch."""
    records = []
    for j, index in enumerate(batch.indices):
        rel = f"images/{label}_{index:06d}.png"
        sets.save_png(folder / rel, batch.images[j])
        details = {
            "prompt": batch.prompts[j],
            "negative_prompt": cfg.negative_prompt if cfg.guidance > 1 else "",
            "image_seed": batch.seeds[j],
            "steps": cfg.steps,
            "guidance": cfg.guidance,
            "size": cfg.size,
            "model": cfg.model,
            "mode": cfg.mode,
        }
        if batch.sources:
            details.update(strength=cfg.strength, source=dataset.train.provenance.origin[batch.sources[j]])
        score = None if verdict is None else float(verdict.scores[j])
        record = sets.ImageRecord(
            rel,
            label,
            dataset.class_names[label],
            cfg.model,
            cfg.cache_key(),
            cfg.seed,
            index,
            score,
            not reasons[j],
            reasons[j],
            details,
        )
        manifest.write(sd_requests.record_line(record))
        records.append(record)
    manifest.flush()
    os.fsync(manifest.fileno())
    return records


def _interrupted(kept: int, total: int) -> str:
    return (
        f"stopped after {kept} of {total} images; what was made is kept: "
        "run the same request again to continue where it stopped"
    )


def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
