"""Generators trained on the user's training split (GAN, small diffusion model): train or reuse, list, sample.

A generator lives in ``<workspace>/generators/<id>/``: its weights in the family's format (``gan.py``,
``ddpm.py``) and ``origin.json`` (config, class names, the :attr:`~engine.datasets.LabDataset.key` of the
dataset it learnt from), written last: its presence marks a complete generator. The id is a hash of the
generator config and the dataset key, so the same request reuses the stored generator. A cancelled
training raises :class:`~engine.jobs.Cancelled` and leaves no generator. Where this stops: no sets
(``make_sets.py`` samples through :func:`sampler`), no threads (``tasks.py`` runs training as a job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from engine import store
from engine.datasets import LabDataset
from engine.device import pick_device
from engine.jobs import Cancelled
from engine.synth import ddpm, gan
from engine.synth.events import GeneratorEvent

log = logging.getLogger(__name__)
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
    """Stored generators' origins (newest first), optionally only those trained on ``dataset``."""
    out = []
    for meta_path in sorted(generators_dir().glob("*/origin.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        meta = json.loads(meta_path.read_text())
        if dataset is None or made_for(meta) == dataset.key:
            out.append(meta)
    return out


def load_origin(gen_id: str) -> dict[str, Any] | None:
    """What ``origin.json`` says about generator ``gen_id``, or None when no such generator is stored."""
    path = generators_dir() / Path(gen_id).name / "origin.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_generator(
    cfg: GeneratorConfig,
    dataset: LabDataset,
    *,
    on_event: Callable[[GeneratorEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> str:
    """Train a generator on the training split, or reuse the stored one; returns its id.

    Raises :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true; nothing is stored then.
    """
    gen_id = generator_id(cfg, dataset)
    folder = generators_dir() / gen_id
    if (folder / "origin.json").is_file():
        log.info("reusing generator %s", gen_id)
        return gen_id
    result: gan.GanResult | ddpm.DdpmResult
    checkpoint = folder / "checkpoint"
    try:
        if isinstance(cfg, ddpm.DdpmConfig):
            result = ddpm.train_ddpm(
                cfg, dataset.train, on_event=on_event, should_stop=should_stop, checkpoint_dir=checkpoint
            )
        else:
            result = gan.train_gan(
                cfg, dataset.train, on_event=on_event, should_stop=should_stop, checkpoint_dir=checkpoint
            )
    except Cancelled as err:
        shutil.rmtree(folder, ignore_errors=True)  # only checkpoints: origin.json was not there
        raise Cancelled(f"training of generator {gen_id} was {err}; nothing was stored") from None
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
    }
    store.write_json(folder / "origin.json", origin)  # written last: its presence marks a complete generator
    shutil.rmtree(checkpoint, ignore_errors=True)
    return gen_id


def config_hash(origin: dict[str, Any]) -> str:
    """The cache key of a stored generator's config (what its images' records name)."""
    if origin["kind"] == "ddpm":
        return ddpm.DdpmConfig(**origin["config"]).cache_key()
    return gan.GanConfig(**origin["config"]).cache_key()


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
