"""From a dataset to a stored synthetic set: generator reuse, counts, filtering, seeds, jobs."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import JobRunner
from engine.mixes import MixConfig, build_mix
from engine.synth import filters, gan, pipeline, sets

TINY = gan.GanConfig(steps=12, width=8, batch_size=16, sample_every=6)


@pytest.fixture
def digits() -> LabDataset:
    imbalance = ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1)
    return build_dataset(DatasetConfig(imbalance=imbalance))


def keep_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub filter that keeps every image, so counts are exact whatever a tiny GAN draws."""

    def keep_all(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        n = len(labels)
        return filters.FilterResult(labels, np.ones(n), np.ones(n, bool), ("",) * n)

    monkeypatch.setattr(filters, "confidence_filter", keep_all)


def test_a_generator_is_trained_once_and_reused(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    gen_id = pipeline.train_generator(TINY, digits)
    assert [g["id"] for g in pipeline.list_generators(digits)] == [gen_id]
    assert (pipeline.generators_dir() / gen_id / "generator.safetensors").is_file()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored generator must be reused")

    monkeypatch.setattr(gan, "train_gan", no_training)
    assert pipeline.train_generator(TINY, digits) == gen_id
    assert pipeline.generator_id(gan.GanConfig(steps=13, width=8, batch_size=16), digits) != gen_id


def test_fill_to_balance_gives_exact_counts_and_full_manifests(
    digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_everything(monkeypatch)
    gen_id = pipeline.train_generator(TINY, digits)
    info = pipeline.make_set(pipeline.GenerateConfig(generator=gen_id), digits)
    counts = digits.train.class_counts()
    assert list(info.counts_kept) == list(counts.max() - counts)
    records = sets.load_manifest(info.id)
    assert {r.generator for r in records} == {gen_id} and all(r.config_hash == TINY.cache_key() for r in records)
    assert len({(r.label, r.noise_index) for r in records}) == len(records)
    mix = build_mix(MixConfig("add", synthetic_set=info.id), digits.train, sets.load_set(info.id))
    assert (np.bincount(mix.train.labels.numpy()) == counts.max()).all()  # balanced by synthetic images
    assert "per_class" in info.quality or info.quality == {}


def test_the_same_seed_gives_the_same_images(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_everything(monkeypatch)
    gen_id = pipeline.train_generator(TINY, digits)
    request = pipeline.GenerateConfig(generator=gen_id, per_class=5, classes=("0", "3"), seed=4)
    first, second = (sets.load_set(pipeline.make_set(request, digits).id) for _ in range(2))
    assert np.array_equal(first.images.numpy(), second.images.numpy())
    assert np.bincount(first.labels.numpy(), minlength=10).tolist() == [5, 0, 0, 5, 0, 0, 0, 0, 0, 0]
    other = sets.load_set(
        pipeline.make_set(pipeline.GenerateConfig(generator=gen_id, per_class=5, classes=("0", "3"), seed=5), digits).id
    )
    assert not np.array_equal(first.images.numpy(), other.images.numpy())


def test_the_real_filter_rejects_with_reasons_and_never_over_fills(digits: LabDataset) -> None:
    gen_id = pipeline.train_generator(TINY, digits)
    info = pipeline.make_set(pipeline.GenerateConfig(generator=gen_id, per_class=10, classes=("0", "1")), digits)
    records = sets.load_manifest(info.id)
    assert all(k <= 10 for k in info.counts_kept)
    assert all(r.reason for r in records if not r.kept) and all(not r.reason for r in records if r.kept)
    assert all(r.score is not None and 0 <= r.score <= 1 for r in records)


def test_requests_are_validated_and_jobs_carry_the_work(digits: LabDataset) -> None:
    with pytest.raises(pipeline.GenerateError, match=r"generate.per_class=-1"):
        pipeline.GenerateConfig(generator="x", per_class=-1)
    with pytest.raises(pipeline.GenerateError, match=r"generate.generator='nope' is not a stored generator"):
        pipeline.make_set(pipeline.GenerateConfig(generator="nope"), digits)
    runner = JobRunner()
    job = pipeline.submit_training(runner, TINY, digits, owner="me")
    done = runner.wait(job, timeout=120)
    assert done.status == "done" and done.result == pipeline.generator_id(TINY, digits)
    kinds = {e.kind for e in done.events}
    assert {"step", "samples", "done"} <= kinds
    job = pipeline.submit_generation(
        runner, pipeline.GenerateConfig(generator=done.result, per_class=3), digits, owner="me"
    )
    made = runner.wait(job, timeout=120)
    assert made.status == "done", made.error
    assert isinstance(made.result, sets.SetInfo) and sets.list_sets(sets.dataset_key(digits))[0].id == made.result.id


def test_an_unconditional_wgan_gets_its_labels_from_the_real_data_classifier(digits: LabDataset) -> None:
    cfg = gan.GanConfig(kind="wgan-gp", conditional=False, steps=6, width=8, batch_size=16, sample_every=3)
    gen_id = pipeline.train_generator(cfg, digits)
    info = pipeline.make_set(pipeline.GenerateConfig(generator=gen_id, per_class=2, threshold=0.0), digits)
    records = sets.load_manifest(info.id)
    assert all(k <= 2 for k in info.counts_kept) and sum(info.counts_kept) > 0
    reference = filters.reference_classifier(digits)
    kept = sets.load_set(info.id)
    from engine.training import predict_proba

    assigned = predict_proba(reference, kept.images).argmax(1)
    assert np.array_equal(assigned, kept.labels.numpy())  # each kept image carries the label the classifier gave
    assert len({r.noise_index for r in records}) == len(records)


def test_a_class_no_candidate_of_which_passes_is_given_up(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject_zeros(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        keep = np.asarray(labels) != 0  # class "0" never passes, as CIFAR cats from a short CPU-trained GAN
        reasons = tuple("" if k else "confidence 0.01 below 0.95" for k in keep)
        return filters.FilterResult(np.asarray(labels), np.where(keep, 1.0, 0.01), keep, reasons)

    monkeypatch.setattr(filters, "confidence_filter", reject_zeros)
    monkeypatch.setattr(pipeline, "GIVE_UP", 50)
    gen_id = pipeline.train_generator(TINY, digits)
    info = pipeline.make_set(pipeline.GenerateConfig(generator=gen_id, per_class=3, classes=("0", "1")), digits)
    assert info.config["given_up"] == ["0"] and info.counts_kept[:2] == (0, 3)
    assert 50 <= info.counts_total[0] < 3 * pipeline.MAX_ASK * 3  # stopped asking once hopeless, not after 12 rounds


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
    monkeypatch.setattr(pipeline, "GIVE_UP", 50)
    gen_id = pipeline.train_generator(TINY, digits)
    info = pipeline.make_set(pipeline.GenerateConfig(generator=gen_id, per_class=3, classes=("0", "1")), digits)
    assert info.counts_kept[:2] == (1, 3) and info.config["short"] == ["0 (1 of 3)"] and info.config["given_up"] == []
    assert info.counts_total[0] == max(
        50, pipeline.MAX_PER_IMAGE * 3
    )  # every candidate is held until the set is stored
