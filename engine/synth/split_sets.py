"""Synthetic sets for repeated splits: the same recipe, made again on each further split.

A generator learns from the training split, so a set drawn by a generator trained on one split may
hold the likeness of another split's test images: every split of an experiment needs its own
generator and set. :func:`recipe_key` names how a stored set was made (generator kind and settings,
generation and filter settings; not the generator's id, which depends on the split);
:func:`find_split_set` finds the set made that way for a split, :func:`make_split_set` trains the
generator (or reuses the stored one) and makes the set, and :func:`split_sets` says, for an
experiment, which sets exist and which are still to make. Stable Diffusion sets are made again too:
their judge and any image-to-image sources come from the split's training images.
Where this stops: no threads (``tasks.py`` runs :func:`make_split_set` as a job), no experiments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.synth import ddpm, gan, generators, make_sets, sets
from engine.synth.events import GeneratorEvent
from engine.synth.stable_diffusion import SDConfig

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


class SplitSetError(ValueError):
    """A set cannot be made again for another split; the message says why and what to do."""


def recipe(info: sets.SetInfo) -> dict[str, Any] | None:
    """How the set was made, without what depends on the split (the generator's id, the name); None if unknown."""
    config = info.config
    if "stable_diffusion" in config:
        sd = {k: v for k, v in config["stable_diffusion"].items() if k != "name"}
        return {"kind": "stable-diffusion", "stable_diffusion": sd}
    if "generate" in config and "generator" in config:
        generate = {k: v for k, v in config["generate"].items() if k not in ("generator", "name")}
        return {"kind": config.get("kind", ""), "generator": config["generator"], "generate": generate}
    return None


def recipe_key(info: sets.SetInfo) -> str | None:
    """A short hash of :func:`recipe`; None for a set the lab did not make (imported, or stored by code)."""
    made = recipe(info)
    if made is None:
        return None
    return hashlib.sha256(json.dumps(made, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_split_set(set_id: str, dataset: LabDataset) -> str | None:
    """The set made like ``set_id`` for ``dataset`` (``set_id`` itself when it was made for it), or None."""
    info = sets.load_info(set_id)
    if info.dataset_key == dataset.key:
        return set_id
    key = recipe_key(info)
    if key is None:
        return None
    return next((other.id for other in sets.list_sets(dataset.key) if recipe_key(other) == key), None)


def split_sets(
    set_ids: Sequence[str], first: DatasetConfig, splits: int
) -> tuple[tuple[tuple[str, int, str], ...], list[tuple[str, int]]]:
    """For sets made on the first split: (set, split seed, its twin) found for each further split, and the missing.

    The missing ones are (set, split seed) pairs to make with :func:`make_split_set`.
    """
    found, missing = [], []
    for k in range(1, splits):
        split_seed = first.split.seed + k
        dataset = build_dataset(dataclasses.replace(first, split=dataclasses.replace(first.split, seed=split_seed)))
        for set_id in dict.fromkeys(set_ids):
            twin = find_split_set(set_id, dataset)
            if twin is None:
                missing.append((set_id, split_seed))
            else:
                found.append((set_id, split_seed, twin))
    return tuple(found), missing


def cost_words(set_id: str, count: int) -> str:
    """What making ``count`` more sets like ``set_id`` costs, in words, from what the first one took."""
    info = sets.load_info(set_id)
    try:
        origin = generators.load_origin(info.generator) if info.generator else None
    except ValueError:  # stored by a newer lab: its training time is not known here
        origin = None
    if origin is not None and origin.get("seconds"):
        minutes = count * float(origin["seconds"]) / 60
        return (
            f"{count} more generator training(s) and set(s) like {info.name!r}: about {minutes:.0f} min of generator "
            "training on this machine (as long as the first one took), plus making the sets"
        )
    return f"{count} more set(s) like {info.name!r}, one per further split"


def make_split_set(
    set_id: str,
    dataset: LabDataset,
    *,
    on_progress: ProgressFn | None = None,
    on_event: Callable[[GeneratorEvent], None] | None = None,
    should_stop: StopFn | None = None,
) -> str:
    """The set made like ``set_id`` for ``dataset``: found, or made (generator trained or reused, then the set).

    Raises :class:`SplitSetError` for a set the lab did not make, and
    :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true (nothing is stored then).
    """
    found = find_split_set(set_id, dataset)
    if found is not None:
        return found
    info = sets.load_info(set_id)
    made = recipe(info)
    if made is None:
        raise SplitSetError(
            f"set {set_id!r} cannot be made again for another split: it was not drawn by one of the lab's generators "
            "(imported or stored by code); use one split, or make a set with a generator"
        )
    report = on_progress or (lambda fraction, message: None)
    name = f"{info.name} · split seed {dataset.config.split.seed}"
    if made["kind"] == "stable-diffusion":
        sd = SDConfig(**{**made["stable_diffusion"], "name": name})
        return make_sets.make_sd_set(sd, dataset, on_progress=report, should_stop=should_stop).id
    config_class = ddpm.DdpmConfig if made["kind"] == "ddpm" else gan.GanConfig
    gen_cfg = config_class(**made["generator"])
    report(0.0, f"training the generator for split seed {dataset.config.split.seed}")
    gen_id = generators.train_generator(gen_cfg, dataset, on_event=on_event, should_stop=should_stop)
    generate: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in made["generate"].items()}
    cfg = make_sets.GenerateConfig(**{**generate, "generator": gen_id, "name": name})
    return make_sets.make_set(cfg, dataset, on_progress=report, should_stop=should_stop).id
