"""Attributions through captum: where two classifiers look when they decide, on the same images.

:func:`attribute` returns one non-negative map per image at the input's spatial size for Grad-CAM
(captum ``LayerGradCam`` on the last convolution, upsampled bilinearly, ReLU), Integrated Gradients
(black baseline), Occlusion (a black patch of about 1/8 of the side) or Saliency (absolute input
gradients); channels are summed as absolute values. Everything is batched, runs on the chosen device
and is deterministic. :func:`select` picks test images (by class, where two models disagree, the most
confident mistakes, or at random); :func:`centre_share` and :func:`reading` turn two maps into a
plain-language sentence (object vs border, with the central region as a first proxy for the object);
:func:`prepare_upload` makes any uploaded image the model's input. Where this stops: no widgets.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import sources
from engine.device import pick_device
from engine.training import predict_proba

METHODS = ("gradcam", "integrated_gradients", "occlusion", "saliency")
METHOD_LABELS = {
    "gradcam": "Grad-CAM (last convolution)",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
    "saliency": "Saliency (input gradients)",
}
SELECTIONS = ("by class", "disagreements", "confident mistakes", "random")
CENTRE = 0.5  # the central square covering this fraction of the side is the "object" proxy


class ExplainError(ValueError):
    """An explanation request is not accepted; the message names the value and what would be."""


def _last_conv(model: nn.Module, sample: torch.Tensor) -> nn.Module:
    """The Grad-CAM layer: the module holding convolutions whose spatial output is produced last in a
    forward pass. That is the last convolution of a plain CNN, and the last residual block (body and
    shortcut summed) of a ResNet, whose 1x1 shortcut convolution is defined and run after its body."""
    holders = {m for m in model.modules() if any(isinstance(d, nn.Conv2d) for d in m.modules())}
    order: list[nn.Module] = []

    def record(module: nn.Module, args: object, out: object) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 1:
            order.append(module)

    hooks = [m.register_forward_hook(record) for m in holders]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise ExplainError("Grad-CAM needs a convolutional layer: this model has none")
    return order[-1]


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """The methods that mean something for ``model``, the preferred first.

    Grad-CAM reads the last convolutional feature map; a vision transformer's only convolution cuts the
    image into patches at its very start, so its Grad-CAM would show the input layer's gradients, not
    what the network attends to. For such models Integrated Gradients comes first and Grad-CAM is left out.
    """
    attention = any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    if attention:
        return tuple(m for m in METHODS if m != "gradcam")
    return METHODS


def _prepared(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy in eval mode with in-place ReLUs made out-of-place (captum's hooks need the outputs intact)."""
    net = copy.deepcopy(model).eval().to(device)
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return net


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    *,
    targets: np.ndarray | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> np.ndarray:
    """Attribution maps (N, H, W) float32 >= 0 for uint8 images (N, C, H, W) towards ``targets``.

    ``targets`` (N,) are class indices; by default each image's predicted class.
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    if method not in METHODS:
        raise ExplainError(f"method={method!r} is not accepted: expected one of {', '.join(METHODS)}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ExplainError(f"images of {images.dtype} {tuple(images.shape)} are not accepted: uint8 (N, C, H, W)")
    if method not in methods_for(model):
        raise ExplainError(
            f"method={method!r} is not accepted for this model: it ends in attention layers, not convolutions, so "
            f"Grad-CAM would only show its first layer; expected one of {', '.join(methods_for(model))}"
        )
    if not len(images):  # nothing to explain (e.g. a class without test images): no model call on an empty batch
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    if targets is None:
        targets = predict_proba(model, images).argmax(axis=1)
    dev = pick_device(device, "fp32").device
    net = _prepared(model, dev)
    n, c, h, w = images.shape
    window = max(2, h // 8)
    out = []
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size].to(dev).float().div(255)
        y = torch.as_tensor(np.asarray(targets[start : start + batch_size]), dtype=torch.long, device=dev)
        if method == "gradcam":
            layer = LayerGradCam(net, _last_conv(net, x[:1])).attribute(x, target=y, relu_attributions=True)
            maps = LayerAttribution.interpolate(layer, (h, w), interpolate_mode="bilinear")[:, 0]
        elif method == "integrated_gradients":
            attr = IntegratedGradients(net).attribute(x, baselines=0.0, target=y, n_steps=32, internal_batch_size=256)
            maps = attr.abs().sum(dim=1)
        elif method == "occlusion":
            attr = Occlusion(net).attribute(
                x,
                sliding_window_shapes=(c, window, window),
                strides=(c, max(1, window // 2), max(1, window // 2)),
                baselines=0.0,
                target=y,
                perturbations_per_eval=16,
            )
            maps = attr.clamp_min(0).sum(dim=1)  # where hiding the pixels lowers the score
        else:
            x.requires_grad_(True)  # Saliency differentiates with respect to the input
            maps = Saliency(net).attribute(x, target=y, abs=True).sum(dim=1)
        out.append(F.relu(maps.detach()).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, h, w), np.float32)


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1] (as Grad-CAM heat maps are drawn); flat maps become zero.

    Subtracting the minimum removes the even floor that biases leave on flat backgrounds.
    """
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1).reshape(-1, 1, 1) if len(maps) else np.zeros((0, 1, 1))
    span = flat.max(axis=1).reshape(-1, 1, 1) - low if len(maps) else np.zeros((0, 1, 1))
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0).astype(np.float32)


def centre_share(maps: np.ndarray, centre: float = CENTRE) -> np.ndarray:
    """(N,) share of each normalised map's mass inside the central square covering ``centre`` of the side.

    NaN for a flat map.
    """
    maps = normalise(maps)
    n, h, w = maps.shape
    top, left = round(h * (1 - centre) / 2), round(w * (1 - centre) / 2)
    inner = maps[:, top : h - top, left : w - left].reshape(n, -1).sum(axis=1)
    total = maps.reshape(n, -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inner / total, np.nan)


def reading(share_a: float, share_b: float, name_a: str, name_b: str) -> str:
    """A plain-language sentence on where two maps differ (the centre as a first proxy for the object)."""
    if np.isnan(share_a) or np.isnan(share_b):
        return "One of the models puts no attribution anywhere on this image (a flat map); nothing to compare."
    area = CENTRE**2
    where = lambda s: "mostly on the centre" if s >= 0.5 else "mostly on the border and background"  # noqa: E731
    text = (
        f"{name_a} puts {share_a:.0%} of its attribution on the central {area:.0%} of the image ({where(share_a)}); "
        f"{name_b} puts {share_b:.0%} ({where(share_b)})."
    )
    diff = share_b - share_a
    if abs(diff) < 0.1:
        return text + " They look at about the same regions."
    more = name_b if diff > 0 else name_a
    return text + f" {more} looks more at the centre, where the object usually is."


def select(
    how: str,
    y_true: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    *,
    label: int | None = None,
    count: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """Indices of up to ``count`` test images: by class, disagreements (one model right, the other wrong),
    the most confident mistakes (of either model) or at random."""
    if how not in SELECTIONS:
        raise ExplainError(f"selection={how!r} is not accepted: expected one of {', '.join(SELECTIONS)}")
    pred_a, pred_b = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    rng = np.random.default_rng(seed)
    if how == "by class":
        if label is None:
            raise ExplainError("selection 'by class' needs a class")
        pool = np.flatnonzero(y_true == label)
    elif how == "disagreements":
        pool = np.flatnonzero((pred_a == y_true) != (pred_b == y_true))
    elif how == "confident mistakes":
        wrong_a = np.where(pred_a != y_true, probs_a.max(axis=1), 0)
        wrong_b = np.where(pred_b != y_true, probs_b.max(axis=1), 0)
        worst = np.maximum(wrong_a, wrong_b)
        order = np.argsort(-worst, kind="stable")
        return order[worst[order] > 0][:count]
    else:
        pool = np.arange(len(y_true))
    return np.sort(rng.permutation(pool)[:count]) if len(pool) else pool


def class_mean_maps(maps: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, H, W) mean of the normalised maps of each class's images (zeros for a class without any)."""
    norm = normalise(maps)
    out = np.zeros((num_classes, *maps.shape[1:]), np.float32)
    for c in range(num_classes):
        if (labels == c).any():
            out[c] = norm[labels == c].mean(axis=0)
    return out


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3): the image (C, H, W) in grey-scale under a red-yellow heat map in [0, 1]."""
    gray = image.astype(np.float32).mean(axis=0) / 255
    base = np.stack([gray] * 3, axis=-1)
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=-1)
    mixed = (1 - alpha * heat[..., None]) * base + alpha * heat[..., None] * colour
    return (mixed.clip(0, 1) * 255).round().astype(np.uint8)


def prepare_upload(data: bytes, name: str, *, channels: int, resolution: int, fit: str = "crop") -> torch.Tensor:
    """An uploaded image file as the models' input: uint8 (1, channels, R, R), decoded as the dataset's images
    were (pixel limit, EXIF orientation, 16-bit and float images scaled, grey or RGB, made square by ``fit``)."""
    try:
        arr = sources.decode_one(data, name, side=resolution, fit=fit, gray=channels == 1)
    except sources.SourceError as err:
        raise ExplainError(str(err)) from None
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).unsqueeze(0)


class GrayInput(nn.Module):
    """Turns RGB input in [0, 1] into three equal grey channels, as a run's grayscale preset did to its test images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor((0.2989, 0.587, 0.114), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one model for one image."""

    classes: tuple[str, ...]
    probabilities: tuple[float, ...]


def top_k(model: nn.Module, image: torch.Tensor, class_names: tuple[str, ...], k: int = 3) -> Prediction:
    probs = predict_proba(model, image)[0]
    order = np.argsort(-probs)[:k]
    return Prediction(tuple(class_names[i] for i in order), tuple(float(probs[i]) for i in order))
