"""Stable Diffusion through diffusers, on a tiny pipeline the tests build and save themselves (offline)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import JobRunner
from engine.synth import diffusion, filters, sets

TWO = ("0", "1")


@pytest.fixture(scope="module")
def digits() -> LabDataset:
    return build_dataset(DatasetConfig())


def request(folder: Path, **changes: object) -> diffusion.SDConfig:
    settings: dict[str, object] = {"model": str(folder), "steps": 2, "size": 32, "per_class": 3, "classes": TWO}
    settings["batch_size"] = 2
    settings.update(changes)
    return diffusion.SDConfig(**settings)  # type: ignore[arg-type]


def test_the_real_loading_path_offline_shares_components_and_one_lock(tiny_sd: Path) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    assert os.environ["HF_HUB_OFFLINE"] == "1" and not diffusion.hub_reachable()
    text2img, lock = diffusion.load_pipeline(str(tiny_sd), "text2img")
    img2img, lock2 = diffusion.load_pipeline(str(tiny_sd), "img2img")
    assert isinstance(text2img, StableDiffusionPipeline) and isinstance(img2img, StableDiffusionImg2ImgPipeline)
    assert img2img.unet is text2img.unet and lock is lock2  # one set of weights, never used by two threads at once
    assert diffusion.load_pipeline(str(tiny_sd))[0] is text2img  # cached process-wide


def test_text2img_gives_the_requested_count_size_and_manifest(tiny_sd: Path, digits: LabDataset) -> None:
    messages: list[str] = []
    info = diffusion.make_sd_set(request(tiny_sd), digits, on_progress=lambda f, m: messages.append(m))
    assert info.counts_kept[:2] == (3, 3) and sum(info.counts_total) == 6
    images = sets.load_set(info.id)
    assert tuple(images.images.shape) == (6, 1, 8, 8)  # resized to the working resolution, grayscale like digits
    record = sets.load_manifest(info.id)[0]
    assert record.details["prompt"] in [t.replace("{class}", "0") for t in diffusion.SDConfig("a/b").templates]
    assert record.details["model"] == str(tiny_sd) and record.details["steps"] == 2
    assert record.details["negative_prompt"] == request(tiny_sd).negative_prompt
    assert any("left" in m for m in messages)  # progress carries an estimate of the time left
    assert any("step 2 of 2" in m for m in messages)  # and moves within a batch, step by step


def test_img2img_starts_from_training_images_of_the_same_class(tiny_sd: Path, digits: LabDataset) -> None:
    info = diffusion.make_sd_set(request(tiny_sd, mode="img2img", strength=0.5, steps=4), digits)
    records = sets.load_manifest(info.id)
    origins = set(digits.train.provenance.origin)
    labels = {o: int(y) for o, y in zip(digits.train.provenance.origin, digits.train.labels, strict=True)}
    assert len(records) == 6 and all(r.details["source"] in origins for r in records)
    assert all(labels[r.details["source"]] == r.label and r.details["strength"] == 0.5 for r in records)


def test_the_same_seed_gives_the_same_image_at_any_batch_size(tiny_sd: Path, digits: LabDataset) -> None:
    one = diffusion.make_sd_set(request(tiny_sd, batch_size=1, per_class=4, classes=("0",)), digits)
    first = sets.load_set(one.id).images
    sets.delete_set(one.id)  # otherwise the next request is served from the cache: batch size is not in its key
    three = diffusion.make_sd_set(request(tiny_sd, batch_size=3, per_class=4, classes=("0",)), digits)
    assert one.id != three.id and torch.equal(first, sets.load_set(three.id).images)
    other_seed = diffusion.make_sd_set(request(tiny_sd, batch_size=3, per_class=4, classes=("0",), seed=1), digits)
    assert not torch.equal(first, sets.load_set(other_seed.id).images)


def test_a_fulfilled_request_is_served_from_the_cache(
    tiny_sd: Path, digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = diffusion.make_sd_set(request(tiny_sd), digits)

    def no_rendering(*args: object, **kwargs: object) -> None:
        raise AssertionError("a fulfilled request must not generate again")

    monkeypatch.setattr(diffusion, "_render", no_rendering)
    assert diffusion.make_sd_set(request(tiny_sd, name="another name"), digits).id == first.id
    sets.delete_set(first.id)  # a deleted set is generated again, not served
    with pytest.raises(AssertionError, match="must not generate"):
        diffusion.make_sd_set(request(tiny_sd), digits)


def test_an_interrupted_request_continues_where_it_stopped(
    tiny_sd: Path, digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = request(tiny_sd)
    batches: list[int] = []
    real_render = diffusion._render

    def counting(pipe, cfg_, prompts, seeds, sources, stop, **kwargs):  # type: ignore[no-untyped-def]
        out = real_render(pipe, cfg_, prompts, seeds, sources, stop, **kwargs)
        batches.append(len(prompts))  # counted once finished: the stop below comes between batches
        return out

    monkeypatch.setattr(diffusion, "_render", counting)
    with pytest.raises(diffusion.DiffusionError, match="continue where it stopped"):
        diffusion.make_sd_set(cfg, digits, should_stop=lambda: len(batches) >= 2)
    partial = diffusion._partial_folder(diffusion.request_key(cfg, digits))
    written = diffusion._read_partial(partial)
    assert len(written) == 3 and sets.list_sets() == []  # class 0's two batches on disk, no half set visible
    before = {r.noise_index: sets.read_png(partial / r.file, 1) for r in written if r.label == 0}
    with open(partial / "manifest.jsonl", "a") as manifest:
        manifest.write('{"file": "images/1_0000')  # a torn last line, as after a crash, is ignored
    batches.clear()
    info = diffusion.make_sd_set(cfg, digits)
    assert batches == [2, 1] and info.counts_kept[:2] == (3, 3)  # only class 1's missing images were made
    final = {r.noise_index: r for r in sets.load_manifest(info.id) if r.label == 0}
    stored = sets.load_set(info.id)
    for index, pixels in before.items():
        where = list(stored.provenance.origin).index(final[index].file)
        assert np.array_equal(stored.images[where].numpy(), pixels)
    assert not partial.exists() and diffusion.partial_requests() == []


def test_an_unfinished_request_is_listed_and_can_be_discarded(tiny_sd: Path, digits: LabDataset) -> None:
    cfg = request(tiny_sd, per_class=4, classes=("0",))
    folder = diffusion._partial_folder(diffusion.request_key(cfg, digits))
    with pytest.raises(diffusion.DiffusionError, match="stopped after"):  # stops once one batch is on disk
        diffusion.make_sd_set(cfg, digits, should_stop=lambda: len(diffusion._read_partial(folder)) >= 2)
    pending = diffusion.partial_requests()
    assert [(p["mode"], p["images"]) for p in pending] == [("text2img", 2)]
    diffusion.discard_partial(pending[0]["key"])
    assert diffusion.partial_requests() == []
    with pytest.raises(diffusion.DiffusionError, match="request key"):
        diffusion.discard_partial("../workspace")


def test_cancelling_the_job_stops_it_as_cancelled_with_a_resume_message(tiny_sd: Path, digits: LabDataset) -> None:
    runner = JobRunner()
    cfg = request(tiny_sd, per_class=40, classes=("0",), batch_size=1)
    job = diffusion.submit_sd_generation(runner, cfg, digits, owner="me")
    deadline = time.monotonic() + 60
    partial = diffusion._partial_folder(diffusion.request_key(cfg, digits))
    while not diffusion._read_partial(partial) and runner.snapshot(job).status not in ("failed", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    runner.cancel(job, owner="me")
    runner.wait(job, timeout=60)
    snap = runner.snapshot(job)
    assert snap.status == "cancelled" and "run the same request again" in snap.error
    assert 0 < len(diffusion._read_partial(partial)) < 40


def test_an_unavailable_hub_id_gives_one_clear_line(digits: LabDataset) -> None:
    with pytest.raises(diffusion.ModelUnavailable) as caught:
        diffusion.load_pipeline("stabilityai/sd-turbo")
    message = str(caught.value)
    assert message == diffusion.UNAVAILABLE.format(model="stabilityai/sd-turbo") and "\n" not in message
    runner = JobRunner()
    job = diffusion.submit_sd_generation(runner, diffusion.SDConfig("someone/missing-model"), digits, owner="me")
    runner.wait(job, timeout=60)
    snap = runner.snapshot(job)
    assert snap.status == "failed" and "not available on this machine" in snap.error and "\n" not in snap.error


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
    with pytest.raises(diffusion.DiffusionError, match=field):
        diffusion.SDConfig("a/b", **changes)  # type: ignore[arg-type]


def test_model_locations_are_checked(tmp_path: Path, tiny_sd_folder: Path) -> None:
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(diffusion.DiffusionError, match=r"no model_index\.json"):
        diffusion.resolve_model(str(tmp_path / "not-a-pipeline"))
    with pytest.raises(diffusion.DiffusionError, match="not a Hugging Face id"):
        diffusion.resolve_model("../elsewhere/model")
    with pytest.raises(diffusion.DiffusionError, match="must lie inside"):  # outside this test's folder roots
        diffusion.resolve_model(str(tiny_sd_folder))
    assert diffusion.resolve_model("stabilityai/sd-turbo") == ("stabilityai/sd-turbo", False)


def test_prompts_use_class_descriptions_and_sample_every_template() -> None:
    cfg = diffusion.SDConfig("a/b", templates=diffusion.TEMPLATES, class_prompts=(("Ginger", "ginger root"),))
    prompts = {diffusion.prompt_for(cfg, "Ginger", diffusion.image_seed(0, 3, i)) for i in range(60)}
    assert prompts == {t.replace("{class}", "ginger root") for t in diffusion.TEMPLATES}
    assert diffusion.prompt_for(cfg, "Apple", 0) == "a photo of a Apple"


def test_copies_of_training_images_are_rejected_as_near_duplicates(
    tiny_sd: Path, digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def copy_source(pipe, cfg, prompts, seeds, sources, stop, **kwargs):  # type: ignore[no-untyped-def]
        copies = np.stack([np.asarray(s, dtype=np.float32) / 255 for s in sources])  # img2img that copies its source
        return copies, [False] * len(sources)

    monkeypatch.setattr(diffusion, "_render", copy_source)
    info = diffusion.make_sd_set(request(tiny_sd, mode="img2img", strength=0.5, steps=4, max_factor=1.0), digits)
    records = sets.load_manifest(info.id)
    assert sum(info.counts_kept) == 0 and len(records) == 6
    assert all(r.reason.startswith("near-duplicate of training image") for r in records)


def test_blank_and_safety_checked_images_are_rejected_with_the_reason(
    tiny_sd: Path, digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blank_then_flagged(pipe, cfg, prompts, seeds, sources, stop, **kwargs):  # type: ignore[no-untyped-def]
        images = np.random.default_rng(seeds[0] % 1000).random((len(prompts), 32, 32, 3)).astype(np.float32)
        images[0] = 0.0  # what a safety checker's black image, or a broken model, gives
        return images, [False] + [True] * (len(prompts) - 1)

    monkeypatch.setattr(diffusion, "_render", blank_then_flagged)
    info = diffusion.make_sd_set(request(tiny_sd, per_class=2, classes=("0",), max_factor=1.0), digits)
    reasons = [r.reason for r in sets.load_manifest(info.id)]
    assert reasons == ["blank image (no content)", "blacked out by the pipeline's safety checker"]
    assert info.counts_kept[0] == 0


def test_duplicate_index_catches_copies_within_a_set_and_passes_new_images() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0] * 5 + [1] * 5)
    index = filters.DuplicateIndex(train, labels, [f"t{i}.png" for i in range(10)], threshold=0.95)
    fresh = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    thumbs = filters.thumbnails(np.concatenate([train[:1], train[6:7], fresh, fresh[:1]]))
    assert "'t0.png'" in index.judge(thumbs[0], 0)
    assert index.judge(thumbs[1], 0) == ""  # a training image of another class is not this class's duplicate
    assert index.judge(thumbs[2], 0) == ""
    index.add(thumbs[2], 0)
    assert "already kept" in index.judge(thumbs[4], 0) and index.judge(thumbs[3], 0) == ""
    off = filters.DuplicateIndex(train, labels, ["x"] * 10, threshold=1.0)
    assert off.judge(thumbs[0], 0) == ""


def test_memory_savers_follow_the_memory_left(monkeypatch: pytest.MonkeyPatch) -> None:
    assert diffusion._available_ram_gib() > 0.1  # read from /proc/meminfo on this machine
    monkeypatch.setattr(diffusion, "_available_ram_gib", lambda: 64.0)
    assert diffusion.memory_plan(torch.device("cpu")) == ("vae_slicing",)
    monkeypatch.setattr(diffusion, "_available_ram_gib", lambda: 3.0)
    assert diffusion.memory_plan(torch.device("cpu")) == ("attention_slicing", "vae_slicing", "vae_tiling")


def test_whole_number_settings_refuse_fractions() -> None:
    with pytest.raises(diffusion.DiffusionError, match=r"steps=2\.5 is not accepted: a whole number"):
        diffusion.SDConfig("a/b", steps=2.5)  # type: ignore[arg-type]
