"""Attributions through captum: shapes, determinism, a toy problem with a known answer, selection, uploads."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine import explain
from engine.datasets import ImageSet, Provenance
from engine.models import build_model
from engine.training import TrainConfig, channel_stats, predict_proba, train

SIDE, BOX = 32, 8


def quadrant_squares(n: int, seed: int) -> tuple[ImageSet, list[tuple[int, int]]]:
    """Dark noise with one bright 8x8 square; the class is the quadrant the square lies in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 8, (n, 1, SIDE, SIDE), generator=g).to(torch.uint8)
    y = torch.randint(0, 4, (n,), generator=g)
    boxes = []
    for i in range(n):
        half = SIDE // 2
        r = int(torch.randint(0, half - BOX + 1, (1,), generator=g)) + half * int(y[i] // 2)
        c = int(torch.randint(0, half - BOX + 1, (1,), generator=g)) + half * int(y[i] % 2)
        x[i, :, r : r + BOX, c : c + BOX] = 255
        boxes.append((r, c))
    provenance = Provenance.real("toy", [str(i) for i in range(n)], [(SIDE, SIDE)] * n, [""] * n)
    return ImageSet(x, y, ("top left", "top right", "bottom left", "bottom right"), provenance), boxes


@pytest.fixture(scope="module")
def toy() -> tuple[torch.nn.Module, ImageSet, list[tuple[int, int]]]:
    train_set, _ = quadrant_squares(400, 0)
    val_set, _ = quadrant_squares(100, 1)
    test_set, boxes = quadrant_squares(16, 2)
    mean, std = channel_stats(train_set.images)
    model = build_model("simple_cnn", channels=1, num_classes=4, resolution=SIDE, mean=mean, std=std, seed=0)
    train(model, train_set, val_set, TrainConfig(max_epochs=10, augment=False), seed=0)
    return model.cpu().eval(), test_set, boxes


@pytest.mark.parametrize("method", explain.METHODS)
def test_maps_have_the_input_size_and_repeat(toy, method: str) -> None:  # type: ignore[no-untyped-def]
    model, test_set, _ = toy
    images = test_set.images[:5]
    maps = explain.attribute(model, images, method, batch_size=2)
    again = explain.attribute(model, images, method, batch_size=5)
    assert maps.shape == (5, SIDE, SIDE) and maps.dtype == np.float32 and (maps >= 0).all()
    assert np.allclose(maps, again, atol=1e-5)  # deterministic, whatever the batch size
    assert maps.reshape(5, -1).max(axis=1).min() > 0


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients"])
def test_most_attribution_lies_on_the_square_that_decides_the_class(toy, method: str) -> None:  # type: ignore[no-untyped-def]
    model, test_set, boxes = toy
    assert (predict_proba(model, test_set.images).argmax(axis=1) == test_set.labels.numpy()).mean() == 1.0
    maps = explain.normalise(explain.attribute(model, test_set.images, method))
    shares = []
    for heat, (r, c) in zip(maps, boxes, strict=True):
        near = np.zeros_like(heat, dtype=bool)
        near[max(0, r - 2) : r + BOX + 2, max(0, c - 2) : c + BOX + 2] = True  # 14% of the image
        shares.append(heat[near].sum() / heat.sum())
    assert np.mean(shares) > 0.5 and min(shares) > 0.3


def test_selections_pick_the_images_they_name() -> None:
    y = np.array([0, 1, 0, 1, 2])
    a = np.eye(3)[[0, 1, 1, 1, 0]] * 0.9 + 0.03  # wrong on 2 and 4
    b = np.eye(3)[[0, 0, 0, 1, 2]] * 0.6 + 0.13  # wrong on 1
    assert list(explain.select("by class", y, a, b, label=1)) == [1, 3]
    assert list(explain.select("disagreements", y, a, b)) == [1, 2, 4]
    assert list(explain.select("confident mistakes", y, a, b)) == [2, 4, 1]  # a's 0.93 mistakes before b's 0.73
    assert len(explain.select("random", y, a, b, count=3, seed=1)) == 3
    with pytest.raises(explain.ExplainError, match="selection='best'"):
        explain.select("best", y, a, b)


def test_the_reading_names_where_the_maps_differ() -> None:
    centre = np.zeros((1, 16, 16), np.float32)
    centre[0, 6:10, 6:10] = 1
    border = np.zeros((1, 16, 16), np.float32)
    border[0, :2] = 1
    share_c, share_b = explain.centre_share(centre)[0], explain.centre_share(border)[0]
    assert share_c == pytest.approx(1.0) and share_b == pytest.approx(0.0)
    text = explain.reading(float(share_b), float(share_c), "real only", "real + synthetic")
    assert "real + synthetic looks more at the centre" in text and "border and background" in text
    assert "same regions" in explain.reading(0.6, 0.62, "a", "b")


@pytest.mark.parametrize(("mode", "size"), [("RGB", (40, 25)), ("L", (9, 30)), ("RGBA", (64, 64)), ("P", (20, 20))])
def test_uploads_of_any_size_and_mode_become_model_inputs(toy, mode: str, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    model, _, _ = toy
    buffer = io.BytesIO()
    Image.new(mode, size, color=200 if mode in ("L", "P") else (200, 10, 10, 255)[: len(mode)]).save(buffer, "PNG")
    image = explain.prepare_upload(buffer.getvalue(), "upload.png", channels=1, resolution=SIDE)
    assert image.shape == (1, 1, SIDE, SIDE) and image.dtype == torch.uint8
    top = explain.top_k(model, image, ("a", "b", "c", "d"), k=3)
    assert len(top.classes) == 3 and top.probabilities == tuple(sorted(top.probabilities, reverse=True))
    assert explain.attribute(model, image, "gradcam").shape == (1, SIDE, SIDE)


def test_a_file_that_is_not_an_image_or_too_large_is_refused_by_name() -> None:
    with pytest.raises(explain.ExplainError, match=r"file 'notes\.txt' is not accepted: corrupt or unreadable"):
        explain.prepare_upload(b"hello", "notes.txt", channels=3, resolution=8)
    buffer = io.BytesIO()
    Image.new("1", (8000, 7000)).save(buffer, "PNG")  # 56 Mpx in a few kB: a decompression bomb
    with pytest.raises(explain.ExplainError, match=r"'bomb\.png' is not accepted: too many pixels: 8000x7000"):
        explain.prepare_upload(buffer.getvalue(), "bomb.png", channels=3, resolution=8)


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_16_bit_and_float_uploads_are_scaled_like_the_datasets(mode: str) -> None:
    ramp = np.tile(np.linspace(0, 65535 if mode == "I;16" else 255, 32), (32, 1))
    buffer = io.BytesIO()
    picture = Image.fromarray(ramp.astype(np.uint16 if mode == "I;16" else np.float32))
    assert picture.mode == mode
    picture.save(buffer, "TIFF")
    image = explain.prepare_upload(buffer.getvalue(), "scan.tif", channels=1, resolution=16)
    assert 100 < float(image.float().mean()) < 155 and int(image.max()) > 240 and int(image.min()) < 15


@pytest.mark.parametrize("name", ["simple_cnn", "cnn", "resnet"])
def test_grad_cam_hooks_the_convolution_that_runs_last_in_every_model(name: str) -> None:
    from engine.models import build_model as build

    model = build(name, channels=3, num_classes=3, resolution=16, seed=0).eval()
    sample = torch.zeros(1, 3, 16, 16)
    layer = explain._last_conv(model, sample)
    if name == "resnet":  # the last residual block (body + shortcut), not its 1x1 shortcut convolution
        assert type(layer).__name__ == "_Block"
    else:
        assert isinstance(layer, torch.nn.Conv2d) and layer.kernel_size == (3, 3)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert explain.attribute(model, images, "gradcam").shape == (2, 16, 16)


class _TinyViT(torch.nn.Module):
    """Patch embedding by a strided convolution, then attention: the shape of a vision transformer."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = torch.nn.Conv2d(1, 8, kernel_size=4, stride=4)
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        mixed, _ = self.attention(tokens, tokens, tokens)
        return self.head(mixed.mean(dim=1))


def test_a_transformer_is_explained_by_integrated_gradients_not_grad_cam() -> None:
    vit = _TinyViT()
    assert explain.methods_for(vit)[0] == "integrated_gradients" and "gradcam" not in explain.methods_for(vit)
    assert explain.methods_for(build_model("simple_cnn", channels=1, num_classes=3, resolution=8))[0] == "gradcam"
    images = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    maps = explain.attribute(vit, images, "integrated_gradients")
    assert maps.shape == (2, 16, 16) and np.isfinite(maps).all()
    with pytest.raises(explain.ExplainError, match="ends in attention layers"):
        explain.attribute(vit, images, "gradcam")


class _Viewed(torch.nn.Module):
    """A classifier that flattens with ``view(batch, -1)``, as EfficientNet-Lite does: an empty batch breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1)
        return self.fc(x.view(x.shape[0], -1))


@pytest.mark.parametrize("method", explain.METHODS)
def test_no_images_give_no_maps_without_calling_the_model(method: str) -> None:
    maps = explain.attribute(_Viewed().eval(), torch.zeros((0, 1, 12, 10), dtype=torch.uint8), method)
    assert maps.shape == (0, 12, 10) and maps.dtype == np.float32
