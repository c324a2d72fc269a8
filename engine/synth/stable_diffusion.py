"""Stable Diffusion through diffusers: the config, loading, memory plan, prompts, and one batch rendered.

:func:`load_pipeline` loads any diffusers text-to-image pipeline by Hugging Face id or local folder
(``AutoPipelineForText2Image``; img2img through ``AutoPipelineForImage2Image.from_pipe`` on the same
components), once per process, with its own lock so that no two threads use it at once. A hub id that
is not on this machine while the hub cannot be reached raises :class:`ModelUnavailable` with one line.
Prompts are drawn per image from templates filled with a per-class description (for vague class
names); :func:`render` runs one batch and measures the rate that :func:`estimate_seconds` quotes;
:func:`preview` renders one unstored image per class. ``should_stop`` is checked at every denoising
step and raises :class:`~engine.jobs.Cancelled`. Where this stops: no filtering and no sets (a request
becomes a judged, resumable set in ``make_sets.py``), no widgets, no threads (``tasks.py`` submits jobs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
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
from engine.jobs import Cancelled, Unavailable

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {  # suggested settings per well-known model
    "stabilityai/sd-turbo": {"steps": 2, "guidance": 0.0, "size": 512, "note": "fastest: 1-4 steps, no guidance"},
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {
        "steps": 25,
        "guidance": 7.5,
        "size": 512,
        "note": "the classic SD 1.5: 25 steps, guidance 7.5",
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


class SDConfigError(ValueError):
    """A Stable Diffusion setting or model location is not accepted; the message names the field, the value
    and what would be."""


class ModelUnavailable(Unavailable):
    """The model is neither a local folder nor in this machine's Hugging Face cache, and the hub is out of reach."""


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
            raise SDConfigError(
                "model='' is not accepted: a Hugging Face id such as 'stabilityai/sd-turbo' or a folder"
            )
        if self.mode not in MODES:
            raise SDConfigError(f"mode={self.mode!r} is not accepted: expected one of {', '.join(MODES)}")
        templates = tuple(t.strip() for t in self.templates if t.strip())
        if not templates or any("{class}" not in t for t in templates):
            bad = next((t for t in templates if "{class}" not in t), "")
            raise SDConfigError(f"templates={bad!r} is not accepted: every template must contain {{class}}")
        object.__setattr__(self, "templates", templates)
        object.__setattr__(self, "class_prompts", tuple((str(c), str(p).strip()) for c, p in self.class_prompts))
        object.__setattr__(self, "classes", tuple(self.classes))
        whole = (("steps", self.steps), ("size", self.size), ("batch_size", self.batch_size), ("seed", self.seed))
        for name, count in (*whole, ("per_class", self.per_class)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SDConfigError(f"{name}={count!r} is not accepted: a whole number >= 0")
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
                raise SDConfigError(f"{field}={value!r} is not accepted: a number from {low} to {high}")
        if self.mode == "img2img" and int(self.steps * self.strength) < 1:
            raise SDConfigError(
                f"strength={self.strength} is not accepted with steps={self.steps}: img2img runs strength x steps "
                f"denoising steps, so strength must be at least {1 / self.steps:.2f} (or raise steps)"
            )
        if self.size % 8:
            raise SDConfigError(f"size={self.size} is not accepted: a multiple of 8 (e.g. {self.size // 8 * 8 or 16})")

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
    """(what to pass to ``from_pretrained``, whether it is a local folder); raises naming the value.

    A relative path starts in the workspace. Folders are looked at only inside the places the server may read
    (the workspace and ``$SYNTHLAB_FOLDER_ROOTS``): a path outside them gets the same answer whether or not it
    exists, so the field tells nothing about the server's other folders.
    """
    text = model.strip()
    path_like = text.startswith(("/", ".", "~")) or os.sep in text.replace("/", "") or not HUB_ID.fullmatch(text)
    if not text:
        raise SDConfigError("model='' is not accepted: a Hugging Face id such as 'stabilityai/sd-turbo' or a folder")
    path = Path(text).expanduser()
    path = path if path.is_absolute() else store.home() / path
    try:
        inside = store.is_readable_location(path)
    except (OSError, RuntimeError):  # a symbolic link loop: no folder we could read
        inside = False
    if inside and path.is_dir():
        if not (path / "model_index.json").is_file():
            raise SDConfigError(f"model={text!r} is not a diffusers pipeline folder: it has no model_index.json")
        return str(path.resolve()), True
    if not path_like:
        return text, False
    if inside:
        raise SDConfigError(
            f"model={text!r} is not accepted: no such folder, and not a Hugging Face id of the form 'owner/name'"
        )
    raise SDConfigError(
        f"model={text!r} is not accepted: it is not a Hugging Face id of the form 'owner/name', and folders must lie "
        f"inside the workspace or the folders the server's {store.FOLDER_ROOTS_ENV} names"
    )


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
        try:
            return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:  # named by the folder's own name: no server paths in the message
            name = Path(source).name
            lines = str(err).strip().splitlines()
            first = lines[0].replace(source, name) if lines else "it could not be read"
            raise SDConfigError(f"model folder {name!r} is not a pipeline diffusers can load: {first}") from err
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
        first = str(err).strip().splitlines()[0] if str(err).strip() else "no reason given"
        raise ModelUnavailable(f"{source} could not be loaded from the Hugging Face hub: {first}") from err


def load_pipeline(model: str, mode: str = "text2img", *, device: str = "auto") -> tuple[Any, threading.Lock]:
    """The pipeline for ``model`` in ``mode`` on ``device`` and the lock to hold while using it.

    Loaded once per process; the img2img pipeline shares the text-to-image pipeline's components,
    and both share one lock, so a pipeline is never used by two threads at once.
    """
    if mode not in MODES:
        raise SDConfigError(f"mode={mode!r} is not accepted: expected one of {', '.join(MODES)}")
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


# Timing, for estimates before a request starts -----------------------------------------------------

_seconds_per_image: dict[tuple[Any, ...], float] = {}


def _timing_key(cfg: SDConfig) -> tuple[Any, ...]:
    return (cfg.model, cfg.mode, cfg.size, cfg.steps, cfg.mode == "img2img" and cfg.strength, cfg.device)


def estimate_seconds(cfg: SDConfig, images: int) -> float | None:
    """Seconds ``images`` would take, from this process's last measured rate for these settings (None if unknown)."""
    rate = _seconds_per_image.get(_timing_key(cfg))
    return None if rate is None else rate * images


def to_working(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
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


def source_image(image: torch.Tensor, size: int) -> Image.Image:
    """A real training image (C, R, R) uint8 as the RGB starting point for img2img at the output size."""
    arr = image.numpy().transpose(1, 2, 0)
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    return pil.resize((size, size), Image.Resampling.BICUBIC)


def render(
    pipe: Any,
    cfg: SDConfig,
    prompts: list[str],
    seeds: list[int],
    sources: list[Image.Image],
    stop: Callable[[], bool],
    on_step: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[bool]]:
    """One batch through the pipeline: (N, size, size, 3) floats in [0, 1] and the safety checker's flags.

    Image i starts from ``seeds[i]`` (and, for img2img, from ``sources[i]``); the caller holds the
    pipeline's lock. ``on_step`` gets each finished denoising step (1-based). Raises
    :class:`~engine.jobs.Cancelled` within one denoising step once ``stop()`` turns true. The time per
    image is kept for :func:`estimate_seconds`.
    """

    def step_end(pipeline: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if stop():
            raise Cancelled("stopped within a denoising step")
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
    started = time.perf_counter()
    with torch.inference_mode():
        out = pipe(**args)
    _seconds_per_image[_timing_key(cfg)] = (time.perf_counter() - started) / len(prompts)
    flagged = getattr(out, "nsfw_content_detected", None) or [False] * len(prompts)
    return np.asarray(out.images, dtype=np.float32), [bool(f) for f in flagged]


def preview(
    cfg: SDConfig, dataset: LabDataset, *, should_stop: Callable[[], bool] | None = None
) -> dict[str, np.ndarray]:
    """One unfiltered image per chosen class (uint8 (C, R, R)), not stored; measures the rate for estimates.

    Raises :class:`~engine.jobs.Cancelled` when ``should_stop`` turns true.
    """
    unknown = [c for c in cfg.classes if c not in dataset.class_names]
    if unknown:
        raise SDConfigError(f"classes={unknown[0]!r} is not accepted: classes are {', '.join(dataset.class_names)}")
    pipe, lock = load_pipeline(cfg.model, cfg.mode, device=cfg.device)
    out = {}
    for label, name in enumerate(dataset.class_names):
        if cfg.classes and name not in cfg.classes:
            continue
        seed = image_seed(cfg.seed, label, 0)
        sources = []
        if cfg.mode == "img2img":
            pool = (dataset.train.labels == label).nonzero().flatten()
            if not len(pool):
                raise SDConfigError(f"img2img needs real training images of class {name!r}; it has none")
            sources = [source_image(dataset.train.images[int(pool[0])], cfg.size)]
        with lock:
            raw, _ = render(pipe, cfg, [prompt_for(cfg, name, seed)], [seed], sources, should_stop or (lambda: False))
        out[name] = to_working(raw, dataset.resolution, dataset.channels)[0]
    return out
