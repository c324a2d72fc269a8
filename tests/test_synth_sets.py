"""Synthetic sets on disk: round trips, listing, hand rejections, deletion, bad input, atomic creation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import store
from engine.synth import sets
from engine.synth.sets import ImageRecord, SetError

CLASSES = ("zero", "one", "two")


def make_records(labels: list[int], *, kept: list[bool] | None = None) -> list[ImageRecord]:
    kept = kept or [True] * len(labels)
    return [
        ImageRecord("", c, CLASSES[c], "cgan-abcd1234", "cfg123", 7, i, 0.5 + 0.01 * i, k, "" if k else "low")
        for i, (c, k) in enumerate(zip(labels, kept, strict=True))
    ]


def make_images(n: int, channels: int = 1, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, channels, side, side), dtype=np.uint8)


def create(
    labels: list[int], *, channels: int = 1, identity: str = "ds-a", kept: list[bool] | None = None
) -> tuple[sets.SetInfo, np.ndarray, list[ImageRecord]]:
    records = make_records(labels, kept=kept)
    images = make_images(len(labels), channels)
    info = sets.create_set(
        "test set", images, records, CLASSES, generator="cgan-abcd1234", dataset_key=identity, config={"steps": 10}
    )
    return info, images, records


@pytest.mark.parametrize("channels", [1, 3])
def test_create_and_load_round_trip(channels: int) -> None:
    info, images, _ = create([0, 1, 2, 2, 0], channels=channels)
    assert sets.load_info(info.id) == info
    assert info.counts_total == (2, 1, 2) and info.counts_kept == (2, 1, 2)
    assert (info.channels, info.resolution, info.quality) == (channels, 8, {})
    loaded = sets.load_set(info.id)
    assert np.array_equal(loaded.images.numpy(), images)
    assert loaded.labels.tolist() == [0, 1, 2, 2, 0]
    assert loaded.class_names == CLASSES
    prov = loaded.provenance
    assert prov.synthetic.all() and set(prov.generator) == {"cgan-abcd1234"}
    assert set(prov.source) == {f"synthetic:{info.id}"}
    assert prov.orig_width.tolist() == [8] * 5 and set(prov.source_split) == {""}
    assert prov.origin[0] == "images/0_zero/000000.png"
    assert (store.subdir("synthetic") / info.id / prov.origin[3]).is_file()


def test_manifest_round_trip() -> None:
    info, _, records = create([0, 1, 2], kept=[True, False, True])
    manifest = sets.load_manifest(info.id)
    assert [r.file for r in manifest] == [
        "images/0_zero/000000.png",
        "images/1_one/000001.png",
        "images/2_two/000002.png",
    ]
    assert manifest == [dataclasses.replace(r, file=m.file) for r, m in zip(records, manifest, strict=True)]
    assert manifest[1].reason == "low" and manifest[0].score == pytest.approx(0.5)
    assert info.counts_kept == (1, 0, 1)


def test_numpy_scalars_in_records_are_stored_as_plain_numbers() -> None:
    records = [dataclasses.replace(r, label=np.int64(r.label), score=np.float32(0.5)) for r in make_records([2, 0])]
    info = sets.create_set("np", make_images(2), records, CLASSES, generator="g", dataset_key="d", config={})
    manifest = sets.load_manifest(info.id)
    assert [(type(r.label), r.label, r.score) for r in manifest] == [(int, 2, 0.5), (int, 0, 0.5)]
    assert sets.load_set(info.id).labels.tolist() == [2, 0]


def test_list_sets_filters_by_dataset_and_puts_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([1000.0, 2000.0, 3000.0])
    monkeypatch.setattr(sets.time, "time", lambda: next(clock))
    first, _, _ = create([0, 1], identity="ds-a")
    other, _, _ = create([0, 1], identity="ds-b")
    newest, _, _ = create([0, 1], identity="ds-a")
    assert [i.id for i in sets.list_sets()] == [newest.id, other.id, first.id]
    assert [i.id for i in sets.list_sets("ds-a")] == [newest.id, first.id]
    assert sets.list_sets("ds-c") == []


def test_unreadable_set_is_skipped() -> None:
    info, _, _ = create([0, 1])
    broken = store.subdir("synthetic") / "20990101-000000-broken"
    broken.mkdir()
    (broken / "set.json").write_text("{not json")
    assert [i.id for i in sets.list_sets()] == [info.id]


def test_set_kept_rejects_and_restores() -> None:
    info, _, _ = create([0, 1, 2, 2])
    files = [r.file for r in sets.load_manifest(info.id)]
    rejected = sets.set_kept(info.id, files[2:4], False)
    assert rejected.counts_kept == (1, 1, 0) and rejected.counts_total == (1, 1, 2)
    assert sets.load_info(info.id).counts_kept == (1, 1, 0)
    manifest = sets.load_manifest(info.id)
    assert [(r.kept, r.reason) for r in manifest[2:]] == [(False, "rejected by hand")] * 2
    assert len(sets.load_set(info.id)) == 2
    assert len(sets.load_set(info.id, kept_only=False)) == 4
    assert sets.load_set(info.id).provenance.origin.tolist() == files[:2]
    restored = sets.set_kept(info.id, [files[3]], True)
    assert restored.counts_kept == (1, 1, 1)
    assert sets.load_manifest(info.id)[3].reason == ""
    with pytest.raises(SetError, match=r"images/9_x/000099\.png"):
        sets.set_kept(info.id, ["images/9_x/000099.png"], False)


def test_update_quality_and_delete() -> None:
    info, _, _ = create([0, 1])
    updated = sets.update_quality(info.id, {"label_fidelity": 0.9})
    assert sets.load_info(info.id).quality == {"label_fidelity": 0.9} == updated.quality
    sets.delete_set(info.id)
    assert sets.list_sets() == []
    assert list(store.subdir("synthetic").iterdir()) == []
    with pytest.raises(SetError, match=info.id):
        sets.load_info(info.id)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ""])
def test_bad_ids_are_refused(bad: str) -> None:
    for call in (sets.load_info, sets.load_manifest, sets.load_set, sets.delete_set):
        with pytest.raises(SetError, match=repr(bad).replace(".", r"\.")):
            call(bad)


def test_mismatched_input_is_refused() -> None:
    records = make_records([0, 1, 2])
    kwargs: dict[str, Any] = {"generator": "g", "dataset_key": "d", "config": {}}
    with pytest.raises(SetError, match="2 images and 3 records"):
        sets.create_set("s", make_images(2), records, CLASSES, **kwargs)
    with pytest.raises(SetError, match="label=5"):
        sets.create_set("s", make_images(1), [dataclasses.replace(records[0], label=5)], CLASSES, **kwargs)
    with pytest.raises(SetError, match=r"label=1\.0"):
        sets.create_set("s", make_images(1), [dataclasses.replace(records[1], label=1.0)], CLASSES, **kwargs)
    with pytest.raises(SetError, match="float32"):
        sets.create_set("s", make_images(3).astype(np.float32), records, CLASSES, **kwargs)
    with pytest.raises(SetError, match="config"):
        sets.create_set("s", make_images(3), records, CLASSES, generator="g", dataset_key="d", config={"x": {1}})
    assert not any(store.subdir("synthetic").iterdir())


def test_failed_creation_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = sets.save_png
    calls = []

    def failing_save(path: Path, image: np.ndarray) -> None:
        calls.append(path)
        if len(calls) > 3:
            raise OSError("disk full")
        real_save(path, image)

    monkeypatch.setattr(sets, "save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        create([0, 1, 2, 0, 1, 2])
    assert len(calls) == 4
    assert sets.list_sets() == []
    assert list(store.subdir("synthetic").iterdir()) == []
