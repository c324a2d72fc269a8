"""Classifier builders: three nets trained from scratch, and pretrained backbones as probes or fine-tuned.

Every model takes float images in [0, 1], shape (N, C, H, W) for any H, W >= 4, and returns logits
(N, num_classes). The from-scratch nets (:data:`MODEL_NAMES`) normalise with per-channel statistics
stored as buffers (so a saved checkpoint carries them). The pretrained ones (:data:`PRETRAINED_NAMES`,
``"probe:<backbone>"`` or ``"finetune:<backbone>"``) are :class:`~engine.backbones.BackboneClassifier`:
a probe trains only its linear head on cached features (:mod:`engine.probe`), a fine-tuned one also
its backbone's last stages. Only builders live here; training is in :mod:`engine.training`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from engine.backbones import BACKBONES, BackboneClassifier, is_available
from engine.datasets import LabDataset

MODEL_NAMES = ("simple_cnn", "cnn", "resnet")  # trained from scratch
MODEL_LABELS = {
    "simple_cnn": "Simple CNN (two conv layers and a dense layer; fast)",
    "cnn": "Deeper CNN (conv/pool/dropout blocks)",
    "resnet": "Small ResNet (3 stages of residual blocks)",
}
PRETRAINED_MODES = {"probe": "linear probe on frozen features", "finetune": "fine-tuned last stages"}
PRETRAINED_NAMES = tuple(f"{mode}:{name}" for name in BACKBONES for mode in PRETRAINED_MODES)
ALL_MODELS = MODEL_NAMES + PRETRAINED_NAMES
PRETRAINED_SIZE = 128  # backbone input side on the CPU: 224 costs about three times as much for a few points
MODEL_LABELS.update(
    {
        f"{mode}:{name}": f"{spec.label.split(' (')[0]} pretrained, {PRETRAINED_MODES[mode]}"
        + (" (works offline)" if spec.offline else "")
        for name, spec in BACKBONES.items()
        for mode in PRETRAINED_MODES
    }
)


def available_models() -> list[str]:
    """The from-scratch nets and every pretrained model whose backbone weights are on this machine."""
    return [*MODEL_NAMES, *(name for name in PRETRAINED_NAMES if is_available(name.partition(":")[2]))]


def default_model(dataset: LabDataset) -> str:
    """A pretrained probe for photos (originals above 64 px), the simple CNN for small images like digits."""
    prov = dataset.train.provenance
    photos = float(np.median(np.maximum(prov.orig_width, prov.orig_height))) > 64
    return "probe:efficientnet_lite0" if photos and is_available("efficientnet_lite0") else "simple_cnn"


def pretrained_parts(name: str) -> tuple[str, str] | None:
    """(mode, backbone) of a pretrained model name, e.g. ("probe", "efficientnet_lite0"); None for the others."""
    mode, sep, backbone = name.partition(":")
    return (mode, backbone) if sep and name in PRETRAINED_NAMES else None


def pretrained_side(backbone: str) -> int:
    """The input side a backbone sees: :data:`PRETRAINED_SIZE`, or its own where it takes no other (ViT)."""
    spec = BACKBONES[backbone]
    return PRETRAINED_SIZE if spec.resizable else spec.input_size


def build_classifier(
    name: str,
    *,
    channels: int,
    num_classes: int,
    resolution: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Any model of :data:`ALL_MODELS`; a pretrained one loads its weights here (an error says how to get them)."""
    parts = pretrained_parts(name)
    if parts is None:
        return build_model(
            name, channels=channels, num_classes=num_classes, resolution=resolution, mean=mean, std=std, seed=seed
        )
    mode, backbone = parts
    model = BackboneClassifier(backbone, num_classes, size=pretrained_side(backbone), seed=seed)
    return model.set_trainable("head" if mode == "probe" else "last_stages")


class Classifier(nn.Module):
    """Normalisation buffers in front of a network: input is float in [0, 1]."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((x - self.mean) / self.std)
        return out


def _simple_cnn(channels: int, num_classes: int, resolution: int) -> nn.Module:
    side = min(8, -(-resolution // 4))  # after two ceil-mode pools; capped at 8 for big inputs
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(side),
        nn.Flatten(),
        nn.Linear(64 * side * side, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


def _conv_block(cin: int, cout: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
        layers.append(nn.ReLU(inplace=True))
    return [*layers, nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(0.25)]


def _cnn(channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_block(channels, 32, 2),
        *_conv_block(32, 64, 2),
        *_conv_block(64, 128, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(256, num_classes),
    )


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def _resnet(channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        _Block(32, 32, 1),
        _Block(32, 64, 2),
        _Block(64, 128, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def build_model(
    name: str,
    *,
    channels: int,
    num_classes: int,
    resolution: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int | None = None,
) -> Classifier:
    """A fresh classifier; ``mean``/``std`` are per-channel statistics of the training images.

    With ``seed`` the initial weights are a function of the seed alone (the global RNG is left as it was).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model={name!r} is not accepted: expected one of {', '.join(MODEL_NAMES)}")
    if channels not in (1, 3) or num_classes < 2 or resolution < 4:
        raise ValueError(
            f"channels={channels}, num_classes={num_classes}, resolution={resolution} are not accepted: "
            "expected 1 or 3 channels, at least 2 classes and at least 4 pixels"
        )
    nets = {
        "simple_cnn": lambda: _simple_cnn(channels, num_classes, resolution),
        "cnn": lambda: _cnn(channels, num_classes),
        "resnet": lambda: _resnet(channels, num_classes),
    }
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return Classifier(nets[name](), mean or [0.5] * channels, std or [0.25] * channels)
