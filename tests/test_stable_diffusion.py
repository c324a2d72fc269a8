"""Stable Diffusion through diffusers, on a tiny pipeline the tests build and save themselves (offline)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import Cancelled
from engine.synth import stable_diffusion as sd


@pytest.fixture(scope="module")
def digits() -> LabDataset:
    return build_dataset(DatasetConfig())


def test_the_real_loading_path_offline_shares_components_and_one_lock(tiny_sd: Path) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    assert os.environ["HF_HUB_OFFLINE"] == "1" and not sd.hub_reachable()
    text2img, lock = sd.load_pipeline(str(tiny_sd), "text2img")
    img2img, lock2 = sd.load_pipeline(str(tiny_sd), "img2img")
    assert isinstance(text2img, StableDiffusionPipeline) and isinstance(img2img, StableDiffusionImg2ImgPipeline)
    assert img2img.unet is text2img.unet and lock is lock2  # one set of weights, never used by two threads at once
    assert sd.load_pipeline(str(tiny_sd))[0] is text2img  # cached process-wide


def test_a_batch_repeats_for_its_seeds_and_measures_the_rate(tiny_sd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd, "_seconds_per_image", {})
    cfg = sd.SDConfig(str(tiny_sd), steps=2, size=32)
    pipe, lock = sd.load_pipeline(cfg.model)
    assert sd.estimate_seconds(cfg, 10) is None
    steps: list[int] = []
    with lock:
        first, flagged = sd.render(pipe, cfg, ["a photo of a 0"] * 2, [1, 2], [], lambda: False, on_step=steps.append)
        again, _ = sd.render(pipe, cfg, ["a photo of a 0"], [2], [], lambda: False)
    assert first.shape == (2, 32, 32, 3) and flagged == [False, False] and steps == [1, 2]
    assert np.allclose(first[1], again[0], atol=1e-5)  # image i depends on its seed, not on its batch
    assert (sd.estimate_seconds(cfg, 10) or 0) > 0
    working = sd.to_working(first, 8, 1)
    assert working.shape == (2, 1, 8, 8) and working.dtype == np.uint8


def test_a_cancel_stops_a_batch_within_one_denoising_step(tiny_sd: Path, digits: LabDataset) -> None:
    cfg = sd.SDConfig(str(tiny_sd), steps=4, size=32, classes=("0", "1"))
    pipe, lock = sd.load_pipeline(cfg.model)
    steps: list[int] = []
    with lock, pytest.raises(Cancelled):
        sd.render(pipe, cfg, ["a photo of a 0"], [0], [], lambda: len(steps) >= 2, on_step=steps.append)
    assert steps == [1, 2]
    with pytest.raises(Cancelled):
        sd.preview(cfg, digits, should_stop=lambda: True)


def test_a_preview_gives_one_image_per_chosen_class(tiny_sd: Path, digits: LabDataset) -> None:
    images = sd.preview(sd.SDConfig(str(tiny_sd), steps=2, size=32, classes=("3", "1")), digits)
    assert list(images) == ["1", "3"] and all(im.shape == (1, 8, 8) and im.dtype == np.uint8 for im in images.values())
    with pytest.raises(sd.SDConfigError, match=r"classes='cat' is not accepted"):
        sd.preview(sd.SDConfig(str(tiny_sd), classes=("cat",)), digits)


def test_an_unavailable_hub_id_gives_one_clear_line() -> None:
    with pytest.raises(sd.ModelUnavailable) as caught:
        sd.load_pipeline("stabilityai/sd-turbo")
    message = str(caught.value)
    assert message == sd.UNAVAILABLE.format(model="stabilityai/sd-turbo") and "\n" not in message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"templates": ("a photo",)}, "templates"),
        ({"size": 30}, "size"),
        ({"mode": "inpaint"}, "mode"),
        ({"guidance": -1}, "guidance"),
        ({"mode": "img2img", "strength": 0.1, "steps": 4}, "strength"),
        ({"per_class": -2}, "per_class"),
    ],
)
def test_bad_settings_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(sd.SDConfigError, match=field):
        sd.SDConfig("a/b", **changes)  # type: ignore[arg-type]


def test_model_locations_are_checked(tmp_path: Path, tiny_sd_folder: Path) -> None:
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(sd.SDConfigError, match=r"no model_index\.json"):
        sd.resolve_model(str(tmp_path / "not-a-pipeline"))
    with pytest.raises(sd.SDConfigError, match="not a Hugging Face id"):
        sd.resolve_model("../elsewhere/model")
    with pytest.raises(sd.SDConfigError, match="must lie inside"):  # outside this test's folder roots
        sd.resolve_model(str(tiny_sd_folder))
    assert sd.resolve_model("stabilityai/sd-turbo") == ("stabilityai/sd-turbo", False)


def test_prompts_use_class_descriptions_and_sample_every_template() -> None:
    cfg = sd.SDConfig("a/b", templates=sd.TEMPLATES, class_prompts=(("Ginger", "ginger root"),))
    prompts = {sd.prompt_for(cfg, "Ginger", sd.image_seed(0, 3, i)) for i in range(60)}
    assert prompts == {t.replace("{class}", "ginger root") for t in sd.TEMPLATES}
    assert sd.prompt_for(cfg, "Apple", 0) == "a photo of a Apple"


def test_memory_savers_follow_the_memory_left(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sd._available_ram_gib() > 0.1  # read from /proc/meminfo on this machine
    monkeypatch.setattr(sd, "_available_ram_gib", lambda: 64.0)
    assert sd.memory_plan(torch.device("cpu")) == ("vae_slicing",)
    monkeypatch.setattr(sd, "_available_ram_gib", lambda: 3.0)
    assert sd.memory_plan(torch.device("cpu")) == ("attention_slicing", "vae_slicing", "vae_tiling")


def test_whole_number_settings_refuse_fractions() -> None:
    with pytest.raises(sd.SDConfigError, match=r"steps=2\.5 is not accepted: a whole number"):
        sd.SDConfig("a/b", steps=2.5)  # type: ignore[arg-type]
