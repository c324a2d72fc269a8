"""Stable Diffusion through diffusers: load a pipeline, prompt per class, make a synthetic set resumably.

:func:`load_pipeline` loads any diffusers text-to-image pipeline by Hugging Face id or local folder
(``AutoPipelineForText2Image``; img2img through ``AutoPipelineForImage2Image.from_pipe`` on the same
components), once per process, with its own lock so that no two threads use it at once. A hub id that
is not on this machine while the hub cannot be reached raises :class:`ModelUnavailable` with one line.
:func:`make_sd_set` prompts per class (templates sampled per image, per-class descriptions for vague
class names), generates from text or from real training images of the same class (img2img), resizes
to the dataset's working resolution, filters (real-classifier confidence, near-duplicates) and writes
every image with its manifest record as it comes: an interrupted request continues where it stopped,
and a request already fulfilled is served from the cache. Where this stops: no training of generators
(see ``ddpm.py`` and ``gan.py``), no widgets, no threads (pages run this as a job).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image

from engine import store
from engine.datasets import LabDataset
from engine.device import pick_device, pipeline_dtype
from engine.jobs import JobContext, JobRunner
from engine.synth import filters, quality, sets
from engine.training import predict_proba

log = logging.getLogger(__name__)
PRESETS: dict[str, dict[str, Any]] = {  # suggested settings per well-known model
    "stabilityai/sd-turbo": {"steps": 2, "guidance": 0.0, "size": 512, "note": "fastest: 1-4 steps, no guidance"},
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {
        "steps": 25,
        "guidance": 7.5,
        "size": 512,
        "note": "as in the fruit report",
    },
    "stabilityai/stable-diffusion-2-1-base": {"steps": 25, "guidance": 7.5, "size": 512, "note": "SD 2.1 at 512 px"},
}
TEMPLATES = (
    "a photo of a {class}",
    "a close-up photo of a {class}",
    "a photo of the {class} in its usual surroundings",
    "a cropped photo of a {class}",
    "a bright photo of a {class}",
    "a dark photo of a {class}",
)
MODES = ("text2img", "img2img")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
UNAVAILABLE = (
    "{model} is not available on this machine: download it on a connected machine "
    "(hf download {model}) and copy the folder here, or point to a local folder"
)


class DiffusionError(ValueError):
    """A Stable Diffusion request is not accepted; the message names the field, the value and what would be."""


class ModelUnavailable(RuntimeError):
    """The model is neither a local folder nor in this machine's Hugging Face cache, and the hub is out of reach."""


class _Stopped(Exception):
    """Raised from the step callback when the job is cancelled: stops within one denoising step."""


@dataclass(frozen=True)
class SDConfig:
    """One Stable Diffusion request: which model, how to prompt, how many images per class, how to filter."""

    model: str  # Hugging Face id (e.g. "stabilityai/sd-turbo") or a local pipeline folder
    mode: str = "text2img"  # or "img2img": start from real training images of the same class
    templates: tuple[str, ...] = TEMPLATES[:3]  # one sampled per image; "{class}" becomes the class description
    class_prompts: tuple[tuple[str, str], ...] = ()  # (class, description) for vague names: ("Ginger", "ginger root")
    negative_prompt: str = "text, watermark, cartoon, drawing"
    guidance: float = 7.5  # classifier-free guidance scale (0 for sd-turbo)
    steps: int = 25  # denoising steps (img2img runs about strength * steps of them)
    strength: float = 0.6  # img2img: 0 copies the source, 1 ignores it
    size: int = 512  # output side in px before resizing to the working resolution (multiple of 8)
    batch_size: int = 4
    per_class: int = 20  # images kept per class; 0 = fill every class up to the largest
    classes: tuple[str, ...] = ()  # only these classes (default: all, or all below the largest when filling)
    threshold: float = 0.0  # keep when the real-data classifier's confidence for the class is at least this (0 = off)
    duplicate_threshold: float = 0.95  # reject near-duplicates at this thumbnail similarity (1 = off)
    max_factor: float = 1.5  # at most this many attempts per image wanted, when filters reject some
    seed: int = 0
    device: str = "auto"
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise DiffusionError(
                "model='' is not accepted: a Hugging Face id such as 'stabilityai/sd-turbo' or a folder"
            )
        if self.mode not in MODES:
            raise DiffusionError(f"mode={self.mode!r} is not accepted: expected one of {', '.join(MODES)}")
        templates = tuple(t.strip() for t in self.templates if t.strip())
        if not templates or any("{class}" not in t for t in templates):
            bad = next((t for t in templates if "{class}" not in t), "")
            raise DiffusionError(f"templates={bad!r} is not accepted: every template must contain {{class}}")
        object.__setattr__(self, "templates", templates)
        object.__setattr__(self, "class_prompts", tuple((str(c), str(p).strip()) for c, p in self.class_prompts))
        object.__setattr__(self, "classes", tuple(self.classes))
        whole = (("steps", self.steps), ("size", self.size), ("batch_size", self.batch_size), ("seed", self.seed))
        for name, count in (*whole, ("per_class", self.per_class)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise DiffusionError(f"{name}={count!r} is not accepted: a whole number >= 0")
        checks = [
            ("guidance", self.guidance, 0, 50),
            ("steps", self.steps, 1, 1000),
            ("strength", self.strength, 0.01, 1),
            ("size", self.size, 16, 2048),
            ("batch_size", self.batch_size, 1, 256),
            ("per_class", self.per_class, 0, 100_000),
            ("threshold", self.threshold, 0, 1),
            ("duplicate_threshold", self.duplicate_threshold, 0.5, 1),
            ("max_factor", self.max_factor, 1, 20),
        ]
        for field, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise DiffusionError(f"{field}={value!r} is not accepted: a number from {low} to {high}")
        if self.mode == "img2img" and int(self.steps * self.strength) < 1:
            raise DiffusionError(
                f"strength={self.strength} is not accepted with steps={self.steps}: img2img runs strength x steps "
                f"denoising steps, so strength must be at least {1 / self.steps:.2f} (or raise steps)"
            )
        if self.size % 8:
            raise DiffusionError(f"size={self.size} is not accepted: a multiple of 8 (e.g. {self.size // 8 * 8 or 16})")

    def description(self, class_name: str) -> str:
        """What "{class}" becomes in the prompts of ``class_name``."""
        return dict(self.class_prompts).get(class_name) or class_name

    def cache_key(self) -> str:
        """Hash of every setting that changes the images (not the name, the device or the batch size)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("name", "device", "batch_size")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


# Pipelines, cached process-wide ------------------------------------------------------------------

_pipes: dict[tuple[str, str, str], Any] = {}
_locks: dict[tuple[str, str], threading.Lock] = {}
_registry = threading.Lock()


def resolve_model(model: str) -> tuple[str, bool]:
    """(what to pass to ``from_pretrained``, whether it is a local folder); raises naming the value."""
    text = model.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not store.is_readable_location(path):
            raise DiffusionError(
                f"model={text!r} is not accepted: folders must lie inside the workspace or {store.FOLDER_ROOTS_ENV}"
            )
        if not (path / "model_index.json").is_file():
            raise DiffusionError(f"model={text!r} is not a diffusers pipeline folder: it has no model_index.json")
        return str(path.resolve()), True
    if text.startswith(("/", ".", "~")) or os.sep in text.replace("/", "") or not HUB_ID.fullmatch(text):
        raise DiffusionError(
            f"model={text!r} is not accepted: no such folder, and not a Hugging Face id of the form 'owner/name'"
        )
    return text, False


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub can be reached now (False when HF_HUB_OFFLINE is set)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def memory_plan(device: torch.device) -> tuple[str, ...]:
    """Memory savers to apply on ``device``: none with room to spare, more as memory gets short."""
    if device.type == "cuda":
        free_gib = torch.cuda.mem_get_info(device)[0] / 2**30
        if free_gib < 8:
            return ("attention_slicing", "vae_slicing", "vae_tiling", "model_cpu_offload")
        return ("vae_slicing",) if free_gib < 16 else ()
    return ("attention_slicing", "vae_slicing", "vae_tiling") if _available_ram_gib() < 8 else ("vae_slicing",)


def _available_ram_gib() -> float:
    """MemAvailable (free memory including reclaimable page cache); 16 when it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return 16.0


def _load_text2img(source: str, local: bool, dtype: torch.dtype) -> Any:
    from diffusers import AutoPipelineForText2Image

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False}
    if local:
        return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    try:  # the machine's Hugging Face cache first: no network needed
        with warnings.catch_warnings():  # diffusers passes an argument huggingface_hub has deprecated; not ours
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
            return AutoPipelineForText2Image.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        if not hub_reachable():
            raise ModelUnavailable(UNAVAILABLE.format(model=source)) from err
    try:
        return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelUnavailable(f"{source} could not be loaded from the Hugging Face hub: {first}") from err


def load_pipeline(model: str, mode: str = "text2img", *, device: str = "auto") -> tuple[Any, threading.Lock]:
    """The pipeline for ``model`` in ``mode`` on ``device`` and the lock to hold while using it.

    Loaded once per process; the img2img pipeline shares the text-to-image pipeline's components,
    and both share one lock, so a pipeline is never used by two threads at once.
    """
    if mode not in MODES:
        raise DiffusionError(f"mode={mode!r} is not accepted: expected one of {', '.join(MODES)}")
    source, local = resolve_model(model)
    dev = pick_device(device).device
    with _registry:
        lock = _locks.setdefault((source, dev.type), threading.Lock())
    with lock:
        base_key = (source, dev.type, "text2img")
        if base_key not in _pipes:
            with _registry:  # one model per device: drop the others (a thread still using one keeps it alive)
                for key in [k for k in _pipes if k[1] == dev.type and k[0] != source]:
                    del _pipes[key]
            pipe = _load_text2img(source, local, pipeline_dtype(dev))
            plan = memory_plan(dev)
            if "attention_slicing" in plan:
                pipe.enable_attention_slicing()
            if "vae_slicing" in plan and hasattr(pipe, "vae"):
                pipe.vae.enable_slicing()
            if "vae_tiling" in plan and hasattr(pipe, "vae"):
                pipe.vae.enable_tiling()
            if "model_cpu_offload" in plan:
                pipe.enable_model_cpu_offload()
            else:
                pipe.to(dev)
            pipe.set_progress_bar_config(disable=True)
            log.info("loaded pipeline %s on %s (%s), memory savers: %s", source, dev, type(pipe).__name__, plan)
            _pipes[base_key] = pipe
        if mode == "img2img" and (source, dev.type, mode) not in _pipes:
            from diffusers import AutoPipelineForImage2Image

            i2i = AutoPipelineForImage2Image.from_pipe(_pipes[base_key])
            if "model_cpu_offload" in memory_plan(dev):  # from_pipe does not carry the offload hooks over
                i2i.enable_model_cpu_offload()
            i2i.set_progress_bar_config(disable=True)
            _pipes[(source, dev.type, mode)] = i2i
        return _pipes[(source, dev.type, mode)], lock


def forget_pipelines() -> None:
    """Drop every cached pipeline (frees memory; tests use it to force a reload)."""
    with _registry:
        _pipes.clear()


# Per-image randomness ----------------------------------------------------------------------------


def image_seed(seed: int, label: int, index: int) -> int:
    """The seed of image ``index`` of class ``label``: the same request gives the same image at any batch size."""
    digest = hashlib.blake2b(f"{seed}:{label}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 1


def prompt_for(cfg: SDConfig, class_name: str, image_seed_: int) -> str:
    """The prompt of one image: a template drawn by the image's seed, filled with the class description."""
    template = cfg.templates[image_seed_ % len(cfg.templates)]
    return template.replace("{class}", cfg.description(class_name))


def _to_working(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """Pipeline output (N, H, W, 3) floats in [0, 1] -> uint8 (N, C, R, R) at the working resolution."""
    out = []
    for image in images:
        pil = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
        pil = pil.resize(
            (resolution, resolution), Image.Resampling.LANCZOS if resolution < pil.width else Image.Resampling.BICUBIC
        )
        if channels == 1:
            pil = pil.convert("L")
        arr = np.asarray(pil)
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out).astype(np.uint8)


def _source_image(image: torch.Tensor, size: int) -> Image.Image:
    """A real training image (C, R, R) uint8 as the RGB starting point for img2img at the output size."""
    arr = image.numpy().transpose(1, 2, 0)
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    return pil.resize((size, size), Image.Resampling.BICUBIC)


def _render(
    pipe: Any,
    cfg: SDConfig,
    prompts: list[str],
    seeds: list[int],
    sources: list[Image.Image],
    stop: Callable[[], bool],
    on_step: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[bool]]:
    """One batch through the pipeline: (N, size, size, 3) floats in [0, 1] and the safety checker's flags.

    Raises _Stopped on cancel, within one denoising step.
    """

    def step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if stop():
            raise _Stopped
        if on_step is not None:
            on_step(step + 1)
        return kwargs

    device = getattr(pipe, "_execution_device", None) or pipe.device
    gen_device = "cpu" if device.type == "mps" else device  # MPS generators are not reproducible
    args: dict[str, Any] = {
        "prompt": prompts,
        "negative_prompt": [cfg.negative_prompt] * len(prompts) if cfg.negative_prompt and cfg.guidance > 1 else None,
        "num_inference_steps": cfg.steps,
        "guidance_scale": cfg.guidance,
        "generator": [torch.Generator(gen_device).manual_seed(s) for s in seeds],
        "output_type": "np",
        "callback_on_step_end": step_end,
    }
    if sources:
        args.update(image=sources, strength=cfg.strength)
    else:
        args.update(height=cfg.size, width=cfg.size)
    with torch.inference_mode():
        out = pipe(**args)
    flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(prompts)
    return np.asarray(out.images, dtype=np.float32), [bool(f) for f in flagged]


# Timing, for estimates before a request starts -----------------------------------------------------

_seconds_per_image: dict[tuple[Any, ...], float] = {}


def _timing_key(cfg: SDConfig) -> tuple[Any, ...]:
    return (cfg.model, cfg.mode, cfg.size, cfg.steps, cfg.mode == "img2img" and cfg.strength, cfg.device)


def estimate_seconds(cfg: SDConfig, images: int) -> float | None:
    """Seconds ``images`` would take, from this process's last measured rate for these settings (None if unknown)."""
    rate = _seconds_per_image.get(_timing_key(cfg))
    return None if rate is None else rate * images


# The set, written as it comes ------------------------------------------------------------------------


def wanted_counts(dataset: LabDataset, per_class: int, classes: tuple[str, ...]) -> np.ndarray:
    """(num_classes,) images wanted per class: ``per_class`` each, or up to the largest class when 0."""
    unknown = [c for c in classes if c not in dataset.class_names]
    if unknown:
        raise DiffusionError(f"classes={unknown[0]!r} is not accepted: classes are {', '.join(dataset.class_names)}")
    counts = dataset.train.class_counts()
    chosen = np.array([not classes or n in classes for n in dataset.class_names])
    wanted = np.full_like(counts, per_class) if per_class else counts.max() - counts
    return np.where(chosen, wanted, 0)


def request_key(cfg: SDConfig, dataset: LabDataset) -> str:
    """The cache key of a request: every setting that changes the images, and the dataset."""
    key = f"{cfg.cache_key()}-{dataset.identity}-{dataset.config.cache_key()}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def cached_set(cfg: SDConfig, dataset: LabDataset) -> sets.SetInfo | None:
    """The stored set that already fulfils this request, if any (a deleted set is not served)."""
    set_id = store.cache_get(("sd-set", request_key(cfg, dataset)))
    if not set_id:
        return None
    try:
        return sets.load_info(set_id)
    except sets.SetError:
        return None


def _partial_folder(key: str) -> Path:
    return sets.sets_dir() / f".partial-{key}"


def partial_requests() -> list[dict[str, Any]]:
    """Unfinished requests of this workspace, newest first: key, model, mode, images written so far, the
    request's :class:`SDConfig` (``config``, to resume it) and the identity of the dataset it was made for."""
    out = []
    for folder in sorted(sets.sets_dir().glob(".partial-*"), key=lambda f: f.stat().st_mtime, reverse=True):
        try:
            request = json.loads((folder / "request.json").read_text())
            cfg = SDConfig(**request["config"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.append(
            {
                "key": folder.name.removeprefix(".partial-"),
                "model": cfg.model,
                "mode": cfg.mode,
                "images": len(_read_partial(folder)),
                "config": cfg,
                "dataset": request.get("dataset", ""),
            }
        )
    return out


def discard_partial(key: str) -> None:
    """Delete what an unfinished request wrote (its next run starts from scratch)."""
    if not re.fullmatch(r"[0-9a-f]{20}", key):
        raise DiffusionError(f"request key {key!r} is not accepted: 20 hexadecimal characters")
    shutil.rmtree(_partial_folder(key), ignore_errors=True)


def _read_partial(folder: Path) -> list[sets.ImageRecord]:
    """Records already written by an interrupted run; a torn last line or a missing image is dropped."""
    records = []
    path = folder / "manifest.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            record = sets.ImageRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue
        if (folder / record.file).is_file():
            records.append(record)
    return records


def make_sd_set(
    cfg: SDConfig,
    dataset: LabDataset,
    *,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> sets.SetInfo:
    """Generate, filter and store a Stable Diffusion set for ``dataset``; resumes an interrupted request.

    Raises :class:`DiffusionError` when cancelled (what was written is kept for the next run of the same
    request), :class:`ModelUnavailable` when the model cannot be loaded here.
    """
    report = on_progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    # 1. Check the request; a request already fulfilled is served from the cache.
    wanted = wanted_counts(dataset, cfg.per_class, cfg.classes)
    if not wanted.any():
        raise DiffusionError("nothing to generate: every chosen class already has the requested count")
    key = request_key(cfg, dataset)
    cached = cached_set(cfg, dataset)
    if cached is not None:
        report(1.0, f"served from the cache: set {cached.id}")
        return cached
    # 2. The pipeline (a model that cannot be loaded leaves nothing behind), then what an interrupted run wrote.
    report(0.01, "loading the pipeline")
    pipe, lock = load_pipeline(cfg.model, cfg.mode, device=cfg.device)
    folder = _partial_folder(key)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    store.write_json(folder / "request.json", {"config": dataclasses.asdict(cfg), "dataset": sets.dataset_key(dataset)})
    records = _read_partial(folder)
    store.write_atomic(folder / "manifest.jsonl", "".join(_line(r) for r in records).encode())
    # 3. The filters and the img2img sources.
    reference = None
    if cfg.threshold > 0:
        report(0.02, "training the real-data classifier that filters labels")
        reference = filters.reference_classifier(dataset, seed=0, should_stop=stop)
    train = dataset.train
    names = [Path(o).name for o in train.provenance.origin]
    duplicates = filters.DuplicateIndex(train.images, train.labels.numpy(), names, cfg.duplicate_threshold)
    kept = np.zeros(len(wanted), dtype=np.int64)
    tried = np.zeros(len(wanted), dtype=np.int64)
    for r in records:
        tried[r.label] = max(tried[r.label], r.noise_index + 1)
        if r.kept:
            kept[r.label] += 1
            duplicates.add(filters.thumbnails(_read(folder / r.file, dataset.channels)[None])[0], r.label)
    limit = np.ceil(wanted * cfg.max_factor).astype(np.int64)
    total = int(wanted.sum())
    # 4. Generate class by class, batch by batch, writing each image and its record as it comes.
    started, made = time.perf_counter(), 0
    with open(folder / "manifest.jsonl", "a") as manifest:
        for label in np.flatnonzero(wanted):
            name = dataset.class_names[label]
            pool = (train.labels == int(label)).nonzero().flatten()
            order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed))]
            if cfg.mode == "img2img" and not len(order):
                raise DiffusionError(f"img2img needs real training images of class {name!r}; it has none")
            while kept[label] < wanted[label] and tried[label] < limit[label]:
                if stop():
                    raise DiffusionError(_interrupted(int(kept.sum()), total))
                n = int(min(cfg.batch_size, wanted[label] - kept[label], limit[label] - tried[label]))
                indices = [int(tried[label]) + i for i in range(n)]
                seeds = [image_seed(cfg.seed, int(label), i) for i in indices]
                prompts = [prompt_for(cfg, name, s) for s in seeds]
                picks = [int(order[i % len(order)]) for i in indices] if cfg.mode == "img2img" else []
                sources = [_source_image(train.images[p], cfg.size) for p in picks]
                t0 = time.perf_counter()
                done = int(kept.sum())
                steps = max(1, int(cfg.steps * cfg.strength) if sources else cfg.steps)

                def within(step: int, done: int = done, n: int = n, steps: int = steps) -> None:
                    """Progress inside a batch: the denoising steps of its n images."""
                    now = done + n * min(step, steps) / steps
                    report(0.05 + 0.8 * now / max(1, total), f"{now:.1f} of {total} images (step {step} of {steps})")

                try:
                    with lock:
                        raw, flagged = _render(pipe, cfg, prompts, seeds, sources, stop, on_step=within)
                except _Stopped:
                    raise DiffusionError(_interrupted(int(kept.sum()), total)) from None
                _seconds_per_image[_timing_key(cfg)] = (time.perf_counter() - t0) / n
                images = _to_working(raw, dataset.resolution, dataset.channels)
                verdict = None
                if reference is not None:
                    probs = predict_proba(reference, torch.from_numpy(images))
                    labels = np.full(n, label)
                    verdict = filters.confidence_filter(probs, labels, dataset.class_names, threshold=cfg.threshold)
                thumbs = filters.thumbnails(images)
                for j in range(n):
                    reason = "blacked out by the pipeline's safety checker" if flagged[j] else ""
                    reason = reason or (verdict.reasons[j] if verdict is not None else "")
                    reason = reason or duplicates.judge(thumbs[j], int(label))
                    if not reason:
                        duplicates.add(thumbs[j], int(label))
                    rel = f"images/{int(label)}_{indices[j]:06d}.png"
                    sets.save_png(folder / rel, images[j])
                    details = {
                        "prompt": prompts[j],
                        "negative_prompt": cfg.negative_prompt if cfg.guidance > 1 else "",
                        "image_seed": seeds[j],
                        "steps": cfg.steps,
                        "guidance": cfg.guidance,
                        "size": cfg.size,
                        "model": cfg.model,
                        "mode": cfg.mode,
                        **({"strength": cfg.strength, "source": train.provenance.origin[picks[j]]} if picks else {}),
                    }
                    record = sets.ImageRecord(
                        rel,
                        int(label),
                        name,
                        cfg.model,
                        cfg.cache_key(),
                        cfg.seed,
                        indices[j],
                        None if verdict is None else float(verdict.scores[j]),
                        not reason,
                        reason,
                        details,
                    )
                    manifest.write(_line(record))
                    records.append(record)
                    kept[label] += not reason
                manifest.flush()
                os.fsync(manifest.fileno())
                tried[label] += n
                made += n
                rate = (time.perf_counter() - started) / made
                left = int(np.maximum(wanted - kept, 0).sum())
                report(
                    0.05 + 0.8 * kept.sum() / max(1, total),
                    f"{int(kept.sum())} of {total} images kept · about {_clock(rate * left)} left",
                )
    # 5. Store the set, remember it under the request's key, measure its quality.
    info = sets.create_set(
        cfg.name or f"SD {Path(cfg.model).name} {cfg.mode}",
        np.stack([_read(folder / r.file, dataset.channels) for r in records]),
        records,
        dataset.class_names,
        generator=cfg.model,
        dataset_identity=sets.dataset_key(dataset),
        config={"stable_diffusion": dataclasses.asdict(cfg), "kind": "stable-diffusion", "wanted": wanted.tolist()},
    )
    store.cache_set(("sd-set", key), info.id)
    shutil.rmtree(folder, ignore_errors=True)
    if reference is not None and any(info.counts_kept):
        report(0.9, "measuring quality per class (train on synthetic, test on real)")
        info = sets.update_quality(
            info.id, quality.quality_report(sets.load_set(info.id), dataset, reference, seed=0).to_dict()
        )
    report(1.0, f"stored set {info.id}: kept {sum(info.counts_kept)} of {sum(info.counts_total)}")
    return info


def _line(record: sets.ImageRecord) -> str:
    return json.dumps(dataclasses.asdict(record)) + "\n"


def _read(path: Path, channels: int) -> np.ndarray:
    return sets.read_png(path, channels)


def _interrupted(kept: int, total: int) -> str:
    return (
        f"stopped after {kept} of {total} images; what was made is kept: "
        "run the same request again to continue where it stopped"
    )


def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def preview(
    cfg: SDConfig, dataset: LabDataset, *, should_stop: Callable[[], bool] | None = None
) -> dict[str, np.ndarray]:
    """One unfiltered image per chosen class (uint8 (C, R, R)), not stored; measures the rate for estimates."""
    pipe, lock = load_pipeline(cfg.model, cfg.mode, device=cfg.device)
    wanted = wanted_counts(dataset, 1, cfg.classes)
    out = {}
    for label in np.flatnonzero(wanted):
        name = dataset.class_names[label]
        seed = image_seed(cfg.seed, int(label), 0)
        sources = []
        if cfg.mode == "img2img":
            pool = (dataset.train.labels == int(label)).nonzero().flatten()
            if not len(pool):
                raise DiffusionError(f"img2img needs real training images of class {name!r}; it has none")
            sources = [_source_image(dataset.train.images[int(pool[0])], cfg.size)]
        t0 = time.perf_counter()
        try:
            with lock:
                raw, _ = _render(
                    pipe, cfg, [prompt_for(cfg, name, seed)], [seed], sources, should_stop or (lambda: False)
                )
        except _Stopped:
            break
        _seconds_per_image[_timing_key(cfg)] = time.perf_counter() - t0
        out[name] = _to_working(raw, dataset.resolution, dataset.channels)[0]
    return out


def submit_sd_generation(runner: JobRunner, cfg: SDConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue a Stable Diffusion set as a heavy job; its result is the set's info."""

    def job(ctx: JobContext) -> sets.SetInfo:
        return make_sd_set(cfg, dataset, on_progress=ctx.set_progress, should_stop=ctx.should_stop)

    amount = f"{cfg.per_class}/class" if cfg.per_class else "fill to balance"
    cached = cached_set(cfg, dataset) is not None  # served at once, not queued behind heavy jobs
    return runner.submit(
        f"Stable Diffusion {cfg.mode}: {amount} with {Path(cfg.model).name}",
        job,
        owner=owner,
        group="generate",
        tag=request_key(cfg, dataset),
        lane=pick_device(cfg.device).device.type,
        heavy=not cached,
    )


def submit_preview(runner: JobRunner, cfg: SDConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue a one-image-per-class preview; its result is {class name: uint8 (C, R, R)}."""

    def job(ctx: JobContext) -> dict[str, np.ndarray]:
        return preview(cfg, dataset, should_stop=ctx.should_stop)

    return runner.submit(
        f"Stable Diffusion preview with {Path(cfg.model).name}",
        job,
        owner=owner,
        group="generate",
        tag="preview",
        lane=pick_device(cfg.device).device.type,
    )
