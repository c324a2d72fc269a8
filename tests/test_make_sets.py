"""From a dataset and a generator to a judged, stored set: counts, filters, seeds, resuming, cancelling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import Cancelled
from engine.mixes import MixConfig, build_mix
from engine.synth import filters, gan, generators, make_sets, quality, sd_requests, sets
from engine.synth import stable_diffusion as sd
from engine.training import predict_proba
from tests.conftest import class_files

TINY = gan.GanConfig(steps=12, width=8, batch_size=16, sample_every=6)
TWO = ("0", "1")


@pytest.fixture
def digits() -> LabDataset:
    imbalance = ImbalanceConfig(kind="step", minority=TWO, keep_fraction=0.1)
    return build_dataset(DatasetConfig(imbalance=imbalance))


@pytest.fixture(scope="module")
def balanced() -> LabDataset:
    return build_dataset(DatasetConfig())


def keep_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub filter that keeps every image, so counts are exact whatever a tiny GAN draws."""

    def keep_all(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        n = len(labels)
        return filters.FilterResult(labels, np.ones(n), np.ones(n, bool), ("",) * n)

    monkeypatch.setattr(filters, "confidence_filter", keep_all)


def nothing_stored() -> bool:
    """No set listed, and nothing else in the sets folder either (no half-written or hidden set)."""
    return sets.list_sets() == [] and list(sets.sets_dir().iterdir()) == []


# From a stored generator -----------------------------------------------------------------------------


def test_fill_to_balance_gives_exact_counts_and_full_manifests(
    digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_everything(monkeypatch)
    gen_id = generators.train_generator(TINY, digits)
    info = make_sets.make_set(make_sets.GenerateConfig(generator=gen_id), digits)
    counts = digits.train.class_counts()
    assert list(info.counts_kept) == list(counts.max() - counts)
    records = sets.load_manifest(info.id)
    assert {r.generator for r in records} == {gen_id} and all(r.config_hash == TINY.cache_key() for r in records)
    assert len({(r.label, r.noise_index) for r in records}) == len(records)
    mix = build_mix(MixConfig("add", synthetic_set=info.id), digits.train, sets.load_set(info.id))
    assert (np.bincount(mix.train.labels.numpy()) == counts.max()).all()  # balanced by synthetic images
    assert info.dataset_key == digits.key and [s.id for s in sets.list_sets(digits.key)] == [info.id]
    assert len(info.quality["per_class"]) == 10  # measured before the set was stored
    judge = filters.judge_info(digits)
    assert judge is not None and info.config["judge"] == judge.to_dict()  # how well the judge knows each class


def test_the_same_seed_gives_the_same_images(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_everything(monkeypatch)
    gen_id = generators.train_generator(TINY, digits)
    request = make_sets.GenerateConfig(generator=gen_id, per_class=5, classes=("0", "3"), seed=4)
    first, second = (sets.load_set(make_sets.make_set(request, digits).id) for _ in range(2))
    assert np.array_equal(first.images.numpy(), second.images.numpy())
    assert np.bincount(first.labels.numpy(), minlength=10).tolist() == [5, 0, 0, 5, 0, 0, 0, 0, 0, 0]
    other_request = make_sets.GenerateConfig(generator=gen_id, per_class=5, classes=("0", "3"), seed=5)
    other = sets.load_set(make_sets.make_set(other_request, digits).id)
    assert not np.array_equal(first.images.numpy(), other.images.numpy())


def test_the_real_filter_rejects_with_reasons_and_never_over_fills(digits: LabDataset) -> None:
    gen_id = generators.train_generator(TINY, digits)
    info = make_sets.make_set(make_sets.GenerateConfig(generator=gen_id, per_class=10, classes=TWO), digits)
    records = sets.load_manifest(info.id)
    assert all(k <= 10 for k in info.counts_kept)
    assert all(r.reason for r in records if not r.kept) and all(not r.reason for r in records if r.kept)
    assert all(r.score is not None and 0 <= r.score <= 1 for r in records)


def test_requests_are_validated(digits: LabDataset) -> None:
    with pytest.raises(make_sets.GenerateError, match=r"generate.per_class=-1"):
        make_sets.GenerateConfig(generator="x", per_class=-1)
    with pytest.raises(make_sets.GenerateError, match=r"generate.generator='nope' is not a stored generator"):
        make_sets.make_set(make_sets.GenerateConfig(generator="nope"), digits)
    with pytest.raises(make_sets.GenerateError, match=r"generate.classes='cat' is not accepted: classes are 0, 1"):
        make_sets.target_counts(digits, make_sets.GenerateConfig(generator="x", classes=("cat",)))
    counts = digits.train.class_counts()
    assert make_sets.wanted_counts(digits, 0, ()).tolist() == (counts.max() - counts).tolist()
    assert make_sets.wanted_counts(digits, 7, ("1",)).tolist() == [0, 7] + [0] * 8


def test_an_unconditional_wgan_gets_its_labels_from_the_real_data_classifier(digits: LabDataset) -> None:
    cfg = gan.GanConfig(kind="wgan-gp", conditional=False, steps=6, width=8, batch_size=16, sample_every=3)
    gen_id = generators.train_generator(cfg, digits)
    info = make_sets.make_set(make_sets.GenerateConfig(generator=gen_id, per_class=2, threshold=0.0), digits)
    records = sets.load_manifest(info.id)
    assert all(k <= 2 for k in info.counts_kept) and sum(info.counts_kept) > 0
    reference = filters.reference_classifier(digits)
    kept = sets.load_set(info.id)
    assigned = predict_proba(reference, kept.images).argmax(1)
    assert np.array_equal(assigned, kept.labels.numpy())  # each kept image carries the label the classifier gave
    assert len({r.noise_index for r in records}) == len(records)


def test_a_class_no_candidate_of_which_passes_is_given_up(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject_zeros(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        keep = np.asarray(labels) != 0  # class "0" never passes, as CIFAR cats from a short CPU-trained GAN
        reasons = tuple("" if k else "confidence 0.01 below 0.95" for k in keep)
        return filters.FilterResult(np.asarray(labels), np.where(keep, 1.0, 0.01), keep, reasons)

    monkeypatch.setattr(filters, "confidence_filter", reject_zeros)
    monkeypatch.setattr(make_sets, "GIVE_UP", 50)
    gen_id = generators.train_generator(TINY, digits)
    info = make_sets.make_set(make_sets.GenerateConfig(generator=gen_id, per_class=3, classes=TWO), digits)
    assert info.config["given_up"] == ["0"] and info.counts_kept[:2] == (0, 3)
    assert 50 <= info.counts_total[0] < 3 * make_sets.MAX_ASK * 3  # stopped asking once hopeless, not after 12 rounds


def test_a_class_that_rarely_passes_stops_at_its_budget_and_is_reported_short(
    digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {"zeros": 0}

    def first_zero_only(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        labels = np.asarray(labels)
        keep = np.ones(len(labels), dtype=bool)
        for i in np.flatnonzero(labels == 0):  # of class "0", only the very first candidate passes
            keep[i] = seen["zeros"] == 0
            seen["zeros"] += 1
        reasons = tuple("" if k else "confidence 0.01 below 0.95" for k in keep)
        return filters.FilterResult(labels, np.where(keep, 1.0, 0.01), keep, reasons)

    monkeypatch.setattr(filters, "confidence_filter", first_zero_only)
    monkeypatch.setattr(make_sets, "GIVE_UP", 50)
    gen_id = generators.train_generator(TINY, digits)
    cfg = make_sets.GenerateConfig(generator=gen_id, per_class=3, classes=TWO, candidates_per_image=30)
    info = make_sets.make_set(cfg, digits)
    assert info.counts_kept[:2] == (1, 3) and info.config["short"] == ["'0': 1 of 3"] and info.config["given_up"] == []
    assert info.counts_total[0] == 90  # 30 candidates per image wanted, every one held until stored


def test_a_set_cancelled_between_rounds_stores_nothing(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    gen_id = generators.train_generator(TINY, digits)
    judged = threading.Event()

    def reject_all(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        judged.set()  # the cancel arrives while the first round is judged: more rounds are needed
        n = len(labels)
        return filters.FilterResult(np.asarray(labels), np.zeros(n), np.zeros(n, bool), ("confidence 0 below 1",) * n)

    monkeypatch.setattr(filters, "confidence_filter", reject_all)
    request = make_sets.GenerateConfig(generator=gen_id, per_class=3, classes=TWO)
    with pytest.raises(Cancelled, match="nothing was stored"):
        make_sets.make_set(request, digits, should_stop=judged.is_set)
    assert nothing_stored()


def test_a_set_cancelled_while_its_quality_is_measured_stores_nothing(
    digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_everything(monkeypatch)
    gen_id = generators.train_generator(TINY, digits)
    measuring = threading.Event()
    real_report = quality.quality_report

    def measured_then_cancelled(*args, **kwargs):  # type: ignore[no-untyped-def]
        measuring.set()  # from here on should_stop is true: the TSTR classifier stops at its first check
        return real_report(*args, **kwargs)

    monkeypatch.setattr(quality, "quality_report", measured_then_cancelled)
    request = make_sets.GenerateConfig(generator=gen_id, per_class=3, classes=TWO)
    with pytest.raises(Cancelled, match="quality report was cancelled"):
        make_sets.make_set(request, digits, should_stop=measuring.is_set)
    assert nothing_stored()


# From Stable Diffusion -------------------------------------------------------------------------------


def sd_request(folder: Path, **changes: object) -> sd.SDConfig:
    settings: dict[str, object] = {"model": str(folder), "steps": 2, "size": 32, "per_class": 3, "classes": TWO}
    settings["batch_size"] = 2
    settings.update(changes)
    return sd.SDConfig(**settings)  # type: ignore[arg-type]


def test_text2img_gives_the_requested_count_size_and_manifest(tiny_sd: Path, balanced: LabDataset) -> None:
    messages: list[str] = []
    info = make_sets.make_sd_set(sd_request(tiny_sd), balanced, on_progress=lambda f, m: messages.append(m))
    assert info.counts_kept[:2] == (3, 3) and sum(info.counts_total) == 6
    images = sets.load_set(info.id)
    assert tuple(images.images.shape) == (6, 1, 8, 8)  # resized to the working resolution, grayscale like digits
    record = sets.load_manifest(info.id)[0]
    assert record.details["prompt"] in [t.replace("{class}", "0") for t in sd.SDConfig("a/b").templates]
    assert record.details["model"] == str(tiny_sd) and record.details["steps"] == 2
    assert record.details["negative_prompt"] == sd_request(tiny_sd).negative_prompt
    assert any("left" in m for m in messages)  # progress carries an estimate of the time left
    assert any("step 2 of 2" in m for m in messages)  # and moves within a batch, step by step
    assert info.dataset_key == balanced.key


def test_img2img_starts_from_training_images_of_the_same_class(tiny_sd: Path, balanced: LabDataset) -> None:
    info = make_sets.make_sd_set(sd_request(tiny_sd, mode="img2img", strength=0.5, steps=4), balanced)
    records = sets.load_manifest(info.id)
    origins = set(balanced.train.provenance.origin)
    labels = {o: int(y) for o, y in zip(balanced.train.provenance.origin, balanced.train.labels, strict=True)}
    assert len(records) == 6 and all(r.details["source"] in origins for r in records)
    assert all(labels[r.details["source"]] == r.label and r.details["strength"] == 0.5 for r in records)


def test_the_same_seed_gives_the_same_image_at_any_batch_size(tiny_sd: Path, balanced: LabDataset) -> None:
    one = make_sets.make_sd_set(sd_request(tiny_sd, batch_size=1, per_class=4, classes=("0",)), balanced)
    first = sets.load_set(one.id).images
    sets.delete_set(one.id)  # otherwise the next request is served from the cache: batch size is not in its key
    three = make_sets.make_sd_set(sd_request(tiny_sd, batch_size=3, per_class=4, classes=("0",)), balanced)
    assert one.id != three.id and torch.equal(first, sets.load_set(three.id).images)
    other_seed = make_sets.make_sd_set(sd_request(tiny_sd, batch_size=3, per_class=4, classes=("0",), seed=1), balanced)
    assert not torch.equal(first, sets.load_set(other_seed.id).images)


def test_a_fulfilled_request_is_served_from_the_cache(
    tiny_sd: Path, balanced: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_sets.make_sd_set(sd_request(tiny_sd), balanced)

    def no_rendering(*args: object, **kwargs: object) -> None:
        raise AssertionError("a fulfilled request must not generate again")

    monkeypatch.setattr(sd, "render", no_rendering)
    assert make_sets.make_sd_set(sd_request(tiny_sd, name="another name"), balanced).id == first.id
    sets.delete_set(first.id)  # a deleted set is generated again, not served
    with pytest.raises(AssertionError, match="must not generate"):
        make_sets.make_sd_set(sd_request(tiny_sd), balanced)


def test_an_interrupted_request_continues_where_it_stopped(
    tiny_sd: Path, balanced: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = sd_request(tiny_sd)
    batches: list[int] = []
    real_render = sd.render

    def counting(pipe, cfg_, prompts, seeds, sources, stop, **kwargs):  # type: ignore[no-untyped-def]
        out = real_render(pipe, cfg_, prompts, seeds, sources, stop, **kwargs)
        batches.append(len(prompts))  # counted once finished: the stop below comes between batches
        return out

    monkeypatch.setattr(sd, "render", counting)
    with pytest.raises(Cancelled, match="continue where it stopped"):
        make_sets.make_sd_set(cfg, balanced, should_stop=lambda: len(batches) >= 2)
    partial = sd_requests.partial_folder(sd_requests.request_key(cfg, balanced))
    written = sd_requests.read_partial(partial)
    assert len(written) == 3 and sets.list_sets() == []  # class 0's two batches on disk, no half set visible
    before = {r.noise_index: sets.read_png(partial / r.file, 1) for r in written if r.label == 0}
    with open(partial / "manifest.jsonl", "a") as manifest:
        manifest.write('{"file": "images/1_0000')  # a torn last line, as after a crash, is ignored
    batches.clear()
    info = make_sets.make_sd_set(cfg, balanced)
    assert batches == [2, 1] and info.counts_kept[:2] == (3, 3)  # only class 1's missing images were made
    final = {r.noise_index: r for r in sets.load_manifest(info.id) if r.label == 0}
    stored = sets.load_set(info.id)
    for index, pixels in before.items():
        where = list(stored.provenance.origin).index(final[index].file)
        assert np.array_equal(stored.images[where].numpy(), pixels)
    assert not partial.exists() and sd_requests.partial_requests() == []


def test_an_unfinished_request_is_listed_and_can_be_discarded(tiny_sd: Path, balanced: LabDataset) -> None:
    cfg = sd_request(tiny_sd, per_class=4, classes=("0",))
    folder = sd_requests.partial_folder(sd_requests.request_key(cfg, balanced))
    with pytest.raises(Cancelled, match="stopped after"):  # stops once one batch is on disk
        make_sets.make_sd_set(cfg, balanced, should_stop=lambda: len(sd_requests.read_partial(folder)) >= 2)
    pending = sd_requests.partial_requests()
    assert [(p["mode"], p["images"], p["dataset"]) for p in pending] == [("text2img", 2, balanced.key)]
    sd_requests.discard_partial(pending[0]["key"])
    assert sd_requests.partial_requests() == []
    with pytest.raises(sets.SetError, match="request key"):
        sd_requests.discard_partial("../workspace")


def test_request_keys_are_the_ones_older_workspaces_stored(balanced: LabDataset) -> None:
    import hashlib

    cfg = sd.SDConfig("a/b")
    before = f"{cfg.cache_key()}-{balanced.identity}-{balanced.config.cache_key()}"  # the pre-LabDataset.key input
    assert sd_requests.request_key(cfg, balanced) == hashlib.sha256(before.encode()).hexdigest()[:20]


def test_copies_of_training_images_are_rejected_as_near_duplicates(
    tiny_sd: Path, balanced: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def copy_source(pipe, cfg, prompts, seeds, sources, stop, **kwargs):  # type: ignore[no-untyped-def]
        copies = np.stack([np.asarray(s, dtype=np.float32) / 255 for s in sources])  # img2img that copies its source
        return copies, [False] * len(sources)

    monkeypatch.setattr(sd, "render", copy_source)
    request = sd_request(tiny_sd, mode="img2img", strength=0.5, steps=4, max_factor=1.0)
    info = make_sets.make_sd_set(request, balanced)
    records = sets.load_manifest(info.id)
    assert sum(info.counts_kept) == 0 and len(records) == 6
    assert all(r.reason.startswith("near-duplicate of training image") for r in records)


def test_blank_and_safety_checked_images_are_rejected_with_the_reason(
    tiny_sd: Path, balanced: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blank_then_flagged(pipe, cfg, prompts, seeds, sources, stop, **kwargs):  # type: ignore[no-untyped-def]
        images = np.random.default_rng(seeds[0] % 1000).random((len(prompts), 32, 32, 3)).astype(np.float32)
        images[0] = 0.0  # what a safety checker's black image, or a broken model, gives
        return images, [False] + [True] * (len(prompts) - 1)

    monkeypatch.setattr(sd, "render", blank_then_flagged)
    info = make_sets.make_sd_set(sd_request(tiny_sd, per_class=2, classes=("0",), max_factor=1.0), balanced)
    reasons = [r.reason for r in sets.load_manifest(info.id)]
    assert reasons == ["blank image (no content)", "blacked out by the pipeline's safety checker"]
    assert info.counts_kept[0] == 0


def test_photos_kept_at_128_px_are_learnt_at_64_and_the_set_comes_back_at_128(
    make_folder: Callable[[dict[str, bytes]], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_everything(monkeypatch)
    monkeypatch.setattr(
        filters, "train_reference_classifier", partial(filters.train_reference_classifier, max_epochs=1)
    )
    folder = make_folder(class_files({"a": 12, "b": 12}, size=(150, 100)))
    photos = build_dataset(DatasetConfig(source=SourceConfig(kind="folder", path=str(folder))))
    assert photos.resolution == 128
    assert generators.training_copy(photos.train).images.shape[-1] == generators.MAX_SIDE == 64
    gen_id = generators.train_generator(gan.GanConfig(steps=2, width=8, batch_size=8, sample_every=1), photos)
    info = make_sets.make_set(make_sets.GenerateConfig(generator=gen_id, per_class=2), photos)
    assert info.resolution == 128 and sets.load_set(info.id).images.shape[1:] == (3, 128, 128)
