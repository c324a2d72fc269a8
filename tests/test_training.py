"""Models, device choice and the training loop on tiny seeded data."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from engine import device
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import LabDataset, build_dataset
from engine.device import pick_device
from engine.models import MODEL_NAMES, build_model
from engine.training import (
    TrainConfig,
    TrainConfigError,
    TrainEvent,
    augment_batch,
    channel_stats,
    class_weights,
    evaluate,
    train,
)

FAST = TrainConfig(max_epochs=4, batch_size=32, lr=5e-3, patience=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> LabDataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHLAB_HOME", str(tmp_path_factory.mktemp("home")))
        return build_dataset(DatasetConfig(imbalance=ImbalanceConfig(kind="subsample", fraction=0.3)))


def fresh(data: LabDataset, name: str = "simple_cnn", seed: int = 0) -> torch.nn.Module:
    mean, std = channel_stats(data.train.images)
    return build_model(name, channels=1, num_classes=10, resolution=8, mean=mean, std=std, seed=seed)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(("channels", "resolution", "classes"), [(1, 8, 10), (3, 32, 3), (3, 5, 2), (1, 64, 37)])
def test_models_take_any_size_channels_and_classes(name: str, channels: int, resolution: int, classes: int) -> None:
    model = build_model(name, channels=channels, num_classes=classes, resolution=resolution).eval()
    out = model(torch.rand(2, channels, resolution, resolution))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_model_and_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"model='vgg'.*simple_cnn, cnn, resnet"):
        build_model("vgg", channels=1, num_classes=2, resolution=8)
    with pytest.raises(TrainConfigError, match=r"train.batch_size=0 is not accepted"):
        TrainConfig(batch_size=0)
    with pytest.raises(TrainConfigError, match=r"train.device='tpu' is not accepted: expected one of auto, cpu, cuda"):
        TrainConfig(device="tpu")
    with pytest.raises(TrainConfigError, match=r"train.precision='fp8' is not accepted: expected one of auto, fp32"):
        TrainConfig(precision="fp8")
    with pytest.raises(TrainConfigError, match=r"train.precision='fp16' is not accepted: .* with train.device='cpu'"):
        TrainConfig(device="cpu", precision="fp16")


def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this machine a CPU-only one, whatever it really is."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_a_config_checks_values_and_never_asks_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe() -> bool:
        raise AssertionError("a config asked the hardware")

    for target in (torch.cuda, torch.backends.mps):
        monkeypatch.setattr(target, "is_available", probe)
    monkeypatch.setattr(device, "cpu_has_bf16", probe)
    for dev, precision in [("cuda", "fp16"), ("cuda", "bf16"), ("mps", "auto"), ("auto", "fp16"), ("cpu", "bf16")]:
        cfg = TrainConfig(device=dev, precision=precision)
        assert (cfg.device, cfg.precision) == (dev, precision)


def test_a_device_this_machine_lacks_fails_when_training_starts(
    digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_gpu(monkeypatch)
    cfg = TrainConfig(max_epochs=1, device="cuda", precision="fp16")  # as recorded on a GPU machine
    events: list[TrainEvent] = []
    expected = r"train.device='cuda' is not available on this machine, which offers cpu: use one of those or 'auto'"
    with pytest.raises(TrainConfigError, match=expected):
        train(fresh(digits), digits.train, digits.val, cfg, seed=0, on_event=events.append)
    assert events == []
    auto = TrainConfig(max_epochs=1, device="auto", precision="fp16")
    with pytest.raises(TrainConfigError, match=r"train.precision='fp16' is not supported on the CPU, the only"):
        train(fresh(digits), digits.train, digits.val, auto, seed=0)
    assert device.available_devices() == ("cpu",)


def test_cpu_fp32_is_always_available() -> None:
    setup = pick_device("cpu", "fp32")
    assert setup.device.type == "cpu" and setup.amp_dtype is None and setup.label.startswith("cpu fp32")


def test_training_reduces_the_loss_and_repeats_bit_for_bit(digits: LabDataset) -> None:
    events: list[TrainEvent] = []
    first = train(fresh(digits, seed=7), digits.train, digits.val, FAST, seed=7, on_event=events.append)
    second = train(fresh(digits, seed=7), digits.train, digits.val, FAST, seed=7)
    other = train(fresh(digits, seed=8), digits.train, digits.val, FAST, seed=8)
    losses = [row["train_loss"] for row in first.history]
    assert losses[-1] < losses[0] * 0.7
    assert [r["val_loss"] for r in first.history] == [r["val_loss"] for r in second.history]
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert first.history[0]["train_loss"] != other.history[0]["train_loss"]
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("epoch") == 4 and kinds.index("epoch") > 0
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"} <= set(first.history[0])


def test_early_stopping_restores_the_best_epoch(digits: LabDataset) -> None:
    cfg = TrainConfig(max_epochs=40, batch_size=32, patience=2, lr=0.02, device="cpu", precision="fp32")
    result = train(fresh(digits, "cnn"), digits.train, digits.val, cfg, seed=0)
    val_losses = [row["val_loss"] for row in result.history]
    assert result.stopped_early and len(val_losses) == result.best_epoch + 2
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    loss, _ = evaluate(result.model, digits.val, pick_device("cpu", "fp32"))
    assert loss == pytest.approx(val_losses[result.best_epoch - 1], abs=1e-5)


def test_a_stop_request_is_honoured_within_one_step(digits: LabDataset) -> None:
    steps: list[int] = []

    def on_event(event: TrainEvent) -> None:
        if event.kind == "step":
            steps.append(event.step)

    result = train(
        fresh(digits), digits.train, digits.val, FAST, seed=0, on_event=on_event, should_stop=lambda: len(steps) >= 3
    )
    assert result.cancelled and steps == [1, 2, 3]


def test_class_weights_are_inverse_frequency() -> None:
    weights = class_weights(np.array([0] * 8 + [1] * 2), 3)
    assert weights[0] * 8 == pytest.approx(weights[1] * 2) and weights[2] == 0
    assert weights[:2].mean() == pytest.approx(1.0 * 10 / 2 / 2 * (1 / 8 + 1 / 2))


def test_augment_batch_crops_a_window_of_the_padded_image_and_flips() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(x, 2, False, gen)
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for b in range(2):
        windows = [padded[b, :, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    flipped = augment_batch(x, 0, True, torch.Generator().manual_seed(1))
    assert all(torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(-1)) for b in range(2))
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_training_resumed_from_an_epoch_state_ends_with_the_same_weights(digits: LabDataset) -> None:
    cfg = dataclasses.replace(FAST, max_epochs=3, patience=1, flip=True, crop_padding=2)
    states: list[dict[str, object]] = []

    def keep(state: dict[str, object]) -> None:  # the loop's live tensors: copied before the loop goes on
        states.append(copy.deepcopy(state))

    whole = train(fresh(digits), digits.train, digits.val, cfg, seed=4, on_checkpoint=keep)
    assert [s["epoch"] for s in states] == list(range(1, len(whole.history)))[: cfg.max_epochs - 1]
    again = train(fresh(digits, seed=9), digits.train, digits.val, cfg, seed=4, start=states[0])
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert [r["val_loss"] for r in again.history] == [r["val_loss"] for r in whole.history]
    assert (again.best_epoch, again.stopped_early) == (whole.best_epoch, whole.stopped_early)
