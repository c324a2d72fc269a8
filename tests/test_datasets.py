"""Dataset layer: the built-in digits, stratified splits, imbalance profiles and the disk cache."""

from __future__ import annotations

import dataclasses
import gc
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import sources, store
from engine.config import ConfigError, DatasetConfig, ImbalanceConfig, SourceConfig, SplitConfig
from engine.datasets import (
    DatasetError,
    ImageSet,
    Provenance,
    apply_imbalance,
    build_dataset,
    imbalance_targets,
    shared_dataset,
    split_real,
)
from tests.conftest import class_files


def toy_set(counts: list[int], *, test_counts: list[int] | None = None) -> ImageSet:
    """Images whose pixel value encodes their index, so subsets can be traced."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    splits = [""] * len(labels)
    if test_counts:
        test_labels = np.concatenate([np.full(n, c) for c, n in enumerate(test_counts)])
        labels = np.concatenate([labels, test_labels])
        splits = ["train"] * (len(labels) - len(test_labels)) + ["test"] * len(test_labels)
    n = len(labels)
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return ImageSet(
        images=images.contiguous(),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=tuple(f"c{i}" for i in range(len(counts))),
        provenance=Provenance.real("toy", [str(i) for i in range(n)], [(2, 2)] * n, splits),
    )


def origins(images: ImageSet) -> set[str]:
    return set(images.provenance.origin.tolist())


def test_digits_is_the_offline_default() -> None:
    data = build_dataset(DatasetConfig())
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == 1797
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 8, 8)
    assert int(data.train.images.max()) == 255  # 0..16 scaled to the full uint8 range
    prov = data.train.provenance
    assert set(prov.orig_width.tolist()) == {8} and not prov.synthetic.any() and set(prov.source) == {"digits"}


def test_digits_at_another_resolution_and_rgb() -> None:
    data = build_dataset(DatasetConfig(source=SourceConfig(resolution=16, color="rgb")))
    assert data.train.images.shape[1:] == (3, 16, 16)
    assert set(data.train.provenance.orig_width.tolist()) == {8}  # original size kept


def test_split_is_stratified_disjoint_and_reproducible() -> None:
    images = toy_set([50, 30, 20])
    cfg = SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=3)
    train, val, test = split_real(images, cfg)
    assert origins(train) | origins(val) | origins(test) == origins(images)
    assert (
        not (origins(train) & origins(val))
        and not (origins(train) & origins(test))
        and not (origins(val) & origins(test))
    )
    assert val.class_counts().tolist() == [5, 3, 2] and test.class_counts().tolist() == [10, 6, 4]
    again = split_real(images, cfg)
    assert [origins(s) for s in again] == [origins(train), origins(val), origins(test)]
    other = split_real(images, SplitConfig(val_fraction=0.1, test_fraction=0.2, seed=4))
    assert origins(other[2]) != origins(test)


def test_source_test_split_is_used_when_present() -> None:
    images = toy_set([40, 40], test_counts=[7, 9])
    train, val, test = split_real(images, SplitConfig(val_fraction=0.1))
    assert test.class_counts().tolist() == [7, 9]
    assert set(test.provenance.source_split) == {"test"}
    assert val.class_counts().tolist() == [4, 4] and len(train) == 72
    _, _, test2 = split_real(images, SplitConfig(val_fraction=0.1, test_fraction=0.25, use_source_test=False))
    assert set(test2.provenance.source_split) == {"train", "test"} and len(test2) == 24


def test_split_refuses_synthetic_images_and_tiny_classes() -> None:
    images = toy_set([10, 10])
    fake = Provenance(
        **{
            **{n: getattr(images.provenance, n) for n in Provenance.__dataclass_fields__},
            "synthetic": np.ones(20, dtype=bool),
        }
    )
    with pytest.raises(DatasetError, match="only real images"):
        split_real(ImageSet(images.images, images.labels, images.class_names, fake), SplitConfig())
    with pytest.raises(DatasetError, match="'c1' has 2 image"):
        split_real(toy_set([10, 2]), SplitConfig())


def test_step_profile_keeps_exact_fraction_of_minority_classes() -> None:
    train = toy_set([4500, 4500, 4500, 4500])
    cfg = ImbalanceConfig(kind="step", minority=("c1", "c2"), keep_fraction=0.1, seed=1)
    out = apply_imbalance(train, cfg)
    assert out.class_counts().tolist() == [4500, 450, 450, 4500]
    assert origins(out) <= origins(train)
    assert origins(apply_imbalance(train, cfg)) == origins(out)  # deterministic for a seed
    smaller = apply_imbalance(train, ImbalanceConfig(kind="step", minority=("c1", "c2"), keep_fraction=0.05, seed=1))
    assert origins(smaller) < origins(out)  # nested: 5% is a subset of 10%


def test_longtail_follows_the_cifar_lt_rule() -> None:
    counts = imbalance_targets([5000] * 10, [f"c{i}" for i in range(10)], ImbalanceConfig(kind="longtail", ratio=100))
    assert counts == [int(5000 * 100 ** (-i / 9)) for i in range(10)]
    assert counts[0] == 5000 and counts[-1] == 50 and counts[0] / counts[-1] == 100


def test_kshot_and_subsample_counts() -> None:
    names = ["a", "b", "c"]
    assert imbalance_targets([30, 5, 12], names, ImbalanceConfig(kind="kshot", k=10)) == [10, 5, 10]
    assert imbalance_targets([30, 5, 12], names, ImbalanceConfig(kind="subsample", fraction=0.5)) == [15, 3, 6]
    assert imbalance_targets([30, 1, 12], names, ImbalanceConfig(kind="subsample", fraction=0.1)) == [3, 1, 1]


def test_unknown_minority_class_names_the_choices() -> None:
    with pytest.raises(DatasetError, match=r"imbalance.minority='zebra'.*c0, c1"):
        imbalance_targets([5, 5], ["c0", "c1"], ImbalanceConfig(kind="step", minority=("zebra",)))


def test_imbalance_touches_only_the_training_split() -> None:
    plain = build_dataset(DatasetConfig())
    cut = build_dataset(
        DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0", "1", "2"), keep_fraction=0.1))
    )
    assert origins(cut.val) == origins(plain.val) and origins(cut.test) == origins(plain.test)
    before = cut.train_counts_before
    assert cut.train.class_counts().tolist()[:3] == [max(1, int(np.floor(n * 0.1 + 0.5))) for n in before[:3]]
    assert cut.train.class_counts().tolist()[3:] == list(before[3:])


def test_the_key_names_the_source_and_its_split_and_imbalance() -> None:
    plain = build_dataset(DatasetConfig())
    cut = build_dataset(DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0",), keep_fraction=0.1)))
    other_split = build_dataset(DatasetConfig(split=SplitConfig(seed=1)))
    assert plain.identity == cut.identity == other_split.identity  # the same source content
    assert len({plain.key, cut.key, other_split.key}) == 3  # synthetic data made for one is not for the others
    assert plain.key == f"{plain.identity}#{plain.config.cache_key()}"  # the format stored sets carry
    assert build_dataset(DatasetConfig()).key == plain.key


def test_second_load_reads_the_cache_and_a_changed_zip_does_not(make_zip) -> None:  # type: ignore[no-untyped-def]
    path = make_zip(class_files({"a": 6, "b": 6}))
    cfg = DatasetConfig(source=SourceConfig(kind="zip", path=str(path)))
    first = build_dataset(cfg)
    second = build_dataset(cfg)
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.train.images, second.train.images)
    assert first.identity == second.identity
    make_zip(class_files({"a": 6, "b": 7}))  # same path, new content
    third = build_dataset(cfg)
    assert not third.from_cache and third.identity != first.identity


def test_cache_does_not_evict_by_size() -> None:
    store.cache_set(("probe",), b"x")
    import diskcache

    with diskcache.Cache(str(store.subdir("cache"))) as cache:
        assert cache.eviction_policy == "none"


def test_configs_name_field_value_and_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match=r"source.resolution=2 .*from 8 to 512"):
        SourceConfig(resolution=2)
    with pytest.raises(ConfigError, match=r"source.path=5 is not accepted: expected a path as text"):
        SourceConfig(kind="zip", path=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"source.kind='s3'.*'digits'"):
        SourceConfig(kind="s3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"source.name='ImageNet'.*'CIFAR10'"):
        SourceConfig(kind="torchvision", name="ImageNet")
    with pytest.raises(ConfigError, match=r"imbalance.keep_fraction=1.5"):
        ImbalanceConfig(kind="step", minority=("a",), keep_fraction=1.5)
    with pytest.raises(ConfigError, match=r"split.val_fraction \+ split.test_fraction=0.9"):
        SplitConfig(val_fraction=0.45, test_fraction=0.45)
    with pytest.raises(ConfigError, match=r"source.path=''"):
        SourceConfig(kind="zip")


def test_config_round_trips_through_a_dict() -> None:
    cfg = DatasetConfig(
        source=SourceConfig(kind="zip", path="/x.zip", resolution=32),
        imbalance=ImbalanceConfig(kind="step", minority=("a", "b")),
    )
    assert DatasetConfig.from_dict(cfg.to_dict()) == cfg
    assert DatasetConfig.from_dict(cfg.to_dict()).cache_key() == cfg.cache_key()
    with pytest.raises(ConfigError, match=r"source\.colour"):
        DatasetConfig.from_dict({"source": {"colour": "rgb"}})


def test_sessions_share_one_built_dataset_while_they_hold_it_and_a_changed_zip_is_built_anew(
    make_zip: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_zip(class_files({"a": 6, "b": 6}))
    cfg = DatasetConfig(source=SourceConfig(kind="zip", path=str(path)))
    hashed: list[str] = []
    content_identity = sources.content_identity
    monkeypatch.setattr(sources, "content_identity", lambda c: hashed.append(c.path) or content_identity(c))
    first = shared_dataset(cfg)
    assert hashed == [str(path)]  # the zip is read whole once for the first build, not again to decode it
    assert shared_dataset(cfg) is first  # a second session gets the same object, not a second copy
    cut = dataclasses.replace(cfg, imbalance=ImbalanceConfig(kind="step", minority=("a",), keep_fraction=0.5))
    assert shared_dataset(cut) is not first and shared_dataset(cut).key != first.key
    make_zip(class_files({"a": 6, "b": 7}))  # same path, new content: never the old images
    changed = shared_dataset(cfg)
    assert changed is not first and changed.identity != first.identity
    assert len(changed.train) + len(changed.val) + len(changed.test) == 13
    kept = weakref.ref(changed)
    del changed
    gc.collect()
    assert kept() is None  # once no session holds it, it is not kept for them
