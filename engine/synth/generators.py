"""Generators trained on the user's training split (GAN, small diffusion model): train or reuse, list, sample.

A generator lives in ``<workspace>/generators/<id>/``: its weights in the family's format (``gan.py``,
``ddpm.py``) and ``origin.json`` (config, class names, the :attr:`~engine.datasets.LabDataset.key` of the
dataset it learnt from, steps done), written last: its presence marks a usable generator. The id is a hash
of the generator config and the dataset key, so the same request reuses the stored generator. While it
trains, ``checkpoint/`` holds the whole training state (:mod:`engine.checkpoints`). A training stopped
with *Stop and keep* stores the generator as it is at its last step, marked stopped at step k of N
(usable for sets), and keeps the checkpoint: asking for the same generator again (*Resume*) continues it
to its planned steps, as does asking again after an interrupted one. A cancelled training raises
:class:`~engine.jobs.Cancelled` and leaves no generator (a cancelled resume leaves the stopped one as it
was). While a generator trains, ``training.json`` in its folder says who trains it, where (host and
pid) and since when; :func:`sweep` marks it interrupted once that process has stopped, and
:func:`list_interrupted` lists those, which asking for the same generator again continues from their
checkpoint. Where this stops: no sets (``make_sets.py`` samples through :func:`sampler`), no threads
(``tasks.py`` runs training as a job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import checkpoints, heartbeat, owners, store, threads
from engine.datasets import ImageSet, LabDataset
from engine.device import pick_device
from engine.jobs import Cancelled
from engine.records import SCHEMA, migrate
from engine.synth import ddpm, gan
from engine.synth.events import GeneratorEvent

log = logging.getLogger(__name__)
MAX_SIDE = 64  # generators learn and draw at most this side; larger working resolutions get a downscaled copy
GeneratorConfig = gan.GanConfig | ddpm.DdpmConfig
Sampler = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (labels (N,), noise indices (N,)) -> uint8 (N, C, R, R)


def generators_dir() -> Path:
    return store.subdir("generators")


def generator_id(cfg: GeneratorConfig, dataset: LabDataset) -> str:
    """``<kind>-<12 hex>``: the same generator config on the same dataset gives the same id."""
    # "-" where the dataset key has "#": the hash input ids had before LabDataset.key, so generators
    # stored by older workspaces are still found and reused
    key = f"{cfg.cache_key()}-{dataset.key.replace('#', '-')}"
    return f"{cfg.kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def made_for(origin: dict[str, Any]) -> str:
    """The key of the dataset a stored generator learnt from.

    Generators stored before ``origin.json`` held the key kept its two parts in separate fields.
    """
    if "dataset" in origin:
        return str(origin["dataset"])
    return f"{origin['dataset_identity']}#{origin['dataset_key']}"


def list_generators(dataset: LabDataset | None = None) -> list[dict[str, Any]]:
    """Stored generators' origins (newest first), optionally only those trained on ``dataset``; unreadable ones
    (e.g. from a newer lab) are logged and left out."""
    out = []
    for meta_path in sorted(generators_dir().glob("*/origin.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            meta = migrate("generator", json.loads(meta_path.read_text()), meta_path.parent.name)
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable generator %s: %s", meta_path.parent.name, err)
            continue
        if dataset is None or made_for(meta) == dataset.key:
            out.append(meta)
    return out


def load_origin(gen_id: str) -> dict[str, Any] | None:
    """What ``origin.json`` says about generator ``gen_id``, or None when no such generator is stored."""
    path = generators_dir() / Path(gen_id).name / "origin.json"
    return migrate("generator", json.loads(path.read_text()), Path(gen_id).name) if path.is_file() else None


def training_copy(images: ImageSet) -> ImageSet:
    """What a generator learns from: the training images, downscaled (area) to MAX_SIDE px when larger.

    Generators draw small images well and large ones slowly; photos kept at 128 px for the classifiers
    are learnt at 64 px, and the sets' images are brought back to the working resolution (make_sets).
    """
    side = images.images.shape[-1]
    if side <= MAX_SIDE:
        return images
    small = F.interpolate(images.images.float(), size=(MAX_SIDE, MAX_SIDE), mode="area")
    return replace(images, images=small.round().clamp(0, 255).to(torch.uint8))


def is_stopped(origin: dict[str, Any]) -> bool:
    """Whether a stored generator was stopped before its planned steps (and can be resumed)."""
    return int(origin.get("steps_done", origin["config"].get("steps", 0))) < int(origin["config"].get("steps", 0))


def train_generator(
    cfg: GeneratorConfig,
    dataset: LabDataset,
    *,
    on_event: Callable[[GeneratorEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    keep_on_stop: Callable[[], bool] | None = None,
) -> str:
    """Train a generator on the training split, resume a stopped one, or reuse the stored one; returns its id.

    A checkpoint in the generator's folder (a stopped or interrupted training) is resumed from, up to
    ``cfg.steps``. When ``should_stop`` turns true and ``keep_on_stop()`` is true, the generator as it is
    at its last step is stored, marked stopped, and its id returned. Otherwise raises
    :class:`~engine.jobs.Cancelled`: a new training stores nothing; a resumed one leaves the stopped
    generator as it was.
    """
    gen_id = generator_id(cfg, dataset)
    folder = generators_dir() / gen_id
    origin = load_origin(gen_id)
    if origin is not None and not is_stopped(origin):
        log.info("reusing generator %s", gen_id)
        return gen_id
    heartbeat.start()  # a sweep in the app tells when this process stops
    status = {
        "id": gen_id,
        "kind": cfg.kind,
        "config": asdict(cfg),
        "dataset": dataset.key,
        "owner": owners.owner_name(),
        "status": "running",
        "pid": os.getpid(),
        "host": heartbeat.host(),
        "started": time.time(),
        "step": 0,
        "reason": "",
    }
    store.write_json(folder / STATUS, status)
    interrupted = False
    try:
        return _train(cfg, dataset, gen_id, folder, origin, on_event, should_stop, keep_on_stop)
    except (KeyboardInterrupt, SystemExit):  # the process is stopping: Resume continues from the checkpoint
        interrupted = True
        step = checkpoint_step(gen_id)
        store.write_json(folder / STATUS, {**status, "status": "interrupted", "reason": PROCESS_STOPPED, "step": step})
        raise
    finally:
        if not interrupted:  # stored, stopped and kept, cancelled or failed: not training any more
            (folder / STATUS).unlink(missing_ok=True)


def _train(
    cfg: GeneratorConfig,
    dataset: LabDataset,
    gen_id: str,
    folder: Path,
    origin: dict[str, Any] | None,
    on_event: Callable[[GeneratorEvent], None] | None,
    should_stop: Callable[[], bool] | None,
    keep_on_stop: Callable[[], bool] | None,
) -> str:
    checkpoint = folder / "checkpoint"
    family: Any = ddpm if isinstance(cfg, ddpm.DdpmConfig) else gan
    train = ddpm.train_ddpm if isinstance(cfg, ddpm.DdpmConfig) else gan.train_gan
    try:
        result = train(
            cfg,  # type: ignore[arg-type]  # the family matches the config's type
            training_copy(dataset.train),
            on_event=on_event,
            should_stop=should_stop,
            checkpoint_dir=checkpoint,
            resume=True,
        )
    except Cancelled as err:
        if keep_on_stop is not None and keep_on_stop() and checkpoints.has_checkpoint(checkpoint):
            partial = family.result_from_checkpoint(checkpoint)
            if partial.steps_done > 0:
                _store(partial, cfg, dataset, gen_id, folder)
                log.info("generator %s stopped and kept at step %d of %d", gen_id, partial.steps_done, cfg.steps)
                return gen_id
        if origin is None:
            shutil.rmtree(folder, ignore_errors=True)  # checkpoints only: origin.json was not there
            raise Cancelled(f"training of generator {gen_id} was {err}; nothing was stored") from None
        done = f"step {origin.get('steps_done', 0)} of {cfg.steps}"
        raise Cancelled(f"resuming generator {gen_id} was {err}; it stays as stopped at {done}") from None
    _store(result, cfg, dataset, gen_id, folder)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return gen_id


def _store(
    result: gan.GanResult | ddpm.DdpmResult, cfg: GeneratorConfig, dataset: LabDataset, gen_id: str, folder: Path
) -> None:
    if isinstance(result, ddpm.DdpmResult):
        ddpm.save_model(result, folder)
    else:
        gan.save_generator(result, folder)
    origin = {
        "id": gen_id,
        "kind": cfg.kind,
        "config": asdict(cfg),
        "dataset": dataset.key,
        "class_names": list(dataset.class_names),
        "seconds": result.seconds,
        "warnings": result.warnings,
        "steps_done": result.steps_done,
        "owner": owners.owner_name(),  # who trained it; others with the same data reuse it read-only
        "schema": SCHEMA,
    }
    store.write_json(folder / "origin.json", origin)  # written last: its presence marks a usable generator


STATUS = "training.json"  # in a generator's folder while it trains, and after an interrupted training
APP_STOPPED = "the app stopped while it trained"
PROCESS_STOPPED = "the process training it stopped"


def checkpoint_step(gen_id: str) -> int:
    """The step of the checkpoint a resume of ``gen_id`` starts from; 0 without one."""
    try:
        index = json.loads((generators_dir() / gen_id / "checkpoint" / checkpoints.INDEX).read_text())
        return int(index["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _statuses() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in generators_dir().glob(f"*/{STATUS}"):
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return out


def sweep() -> list[str]:
    """Mark the generator trainings whose process stopped as interrupted, with the reason; returns their ids."""
    changed = []
    for path, status in _statuses():
        host, pid = str(status.get("host", "")), int(status.get("pid", 0))
        if status.get("status") != "running" or not heartbeat.has_stopped(host, pid):
            continue
        reason = APP_STOPPED if heartbeat.stopped_role(host, pid) == "app" else PROCESS_STOPPED
        step = checkpoint_step(path.parent.name)
        store.write_json(path, {**status, "status": "interrupted", "reason": reason, "step": step})
        changed.append(path.parent.name)
    return changed


def list_interrupted(dataset: LabDataset | None = None) -> list[dict[str, Any]]:
    """Generator trainings that stopped with their process (newest first), optionally those on ``dataset``.

    Each is its status record: id, kind, config, dataset, owner, pid, host, started, reason, and ``step``,
    the last checkpoint's step (0: Resume starts over).
    """
    found = [s for _, s in _statuses() if s.get("status") == "interrupted"]
    found = [s for s in found if dataset is None or s.get("dataset") == dataset.key]
    return sorted(found, key=lambda s: float(s.get("started", 0.0)), reverse=True)


def discard_interrupted(gen_id: str) -> None:
    """Forget an interrupted training and its checkpoint (Re-run then starts from step 0)."""
    folder = generators_dir() / Path(gen_id).name
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    (folder / STATUS).unlink(missing_ok=True)
    if not (folder / "origin.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)


_rates: dict[tuple[str, str, int], float] = {}  # (settings that cost time, dataset key, threads) -> s/step
_rates_lock = threading.Lock()
FREE_FIELDS = ("steps", "seed", "preset", "lr", "lr_g", "lr_d", "sample_every", "p_uncond")  # no cost per step


def seconds_per_step(cfg: GeneratorConfig, dataset: LabDataset, *, steps: int = 3) -> float:
    """Seconds one training step of ``cfg`` takes on ``dataset`` on this machine, measured now and remembered.

    Times ``steps`` steps after one warm-up step (no checkpoint, no sample grid), with the threads one more
    heavy job would get; measured once per setting, dataset and thread count in this process.
    """
    share = threads.per_job(threads.running() + 1)
    costly = {k: v for k, v in asdict(cfg).items() if k not in FREE_FIELDS}
    key = (json.dumps(costly, sort_keys=True), dataset.key, share)
    with _rates_lock:
        if key in _rates:
            return _rates[key]
    stamps: list[float] = []

    def on_event(event: GeneratorEvent) -> None:
        if event.kind == "step":
            stamps.append(time.perf_counter())

    before = torch.get_num_threads()
    torch.set_num_threads(share)
    try:
        probe = replace(cfg, steps=steps + 2, sample_every=10_000_000)
        train = ddpm.train_ddpm if isinstance(probe, ddpm.DdpmConfig) else gan.train_gan
        train(probe, training_copy(dataset.train), on_event=on_event, should_stop=lambda: len(stamps) > steps)  # type: ignore[arg-type]
    except Cancelled:
        pass  # stopped before the last step's sample grid: only the steps were wanted
    finally:
        torch.set_num_threads(before)
    rate = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    with _rates_lock:
        _rates[key] = rate
    return rate


def estimate_seconds(cfg: GeneratorConfig, dataset: LabDataset) -> float:
    """About how long training ``cfg`` on ``dataset`` takes here: the steps at :func:`seconds_per_step`.

    Sample grids and checkpoints add a few percent; the diffusion model's grids (DDIM sampling) more.
    """
    extra = 1.15 if isinstance(cfg, ddpm.DdpmConfig) else 1.05
    return cfg.steps * seconds_per_step(cfg, dataset) * extra


def config_from_origin(origin: dict[str, Any]) -> GeneratorConfig:
    """The config a stored generator was trained with (asking for it again resumes a stopped one)."""
    if origin["kind"] == "ddpm":
        return ddpm.DdpmConfig(**origin["config"])
    return gan.GanConfig(**origin["config"])


def config_hash(origin: dict[str, Any]) -> str:
    """The cache key of a stored generator's config (what its images' records name)."""
    return config_from_origin(origin).cache_key()


def sampler(
    origin: dict[str, Any],
    *,
    seed: int,
    sample_steps: int,
    guidance: float,
    should_stop: Callable[[], bool] | None = None,
) -> Sampler:
    """A function drawing images from the stored generator ``origin`` describes, on the job's device.

    Image i gets the noise of index ``indices[i]``, which depends on (seed, index) only: the same seed and
    indices give the same images in any batch. ``sample_steps`` and ``guidance`` apply to the diffusion
    model (DDIM), whose sampling raises :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true.
    """
    folder = generators_dir() / origin["id"]
    if origin["kind"] == "ddpm":
        unet, _ = ddpm.load_model(folder)
        unet = unet.to(pick_device().device)
        timesteps = int(origin["config"]["timesteps"])

        def draw_ddpm(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
            return ddpm.sample(
                unet,
                labels,
                seed=seed,
                noise_indices=indices,
                steps=sample_steps,
                guidance=guidance,
                timesteps=timesteps,
                should_stop=should_stop,
            )

        return draw_ddpm
    net, meta = gan.load_generator(folder)
    z_dim = int(meta["config"]["z_dim"])

    def draw_gan(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
        return _generate_indexed(net, labels, indices, z_dim=z_dim, seed=seed)

    return draw_gan


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
