"""The cleanup listing and deletes: each kind listed with size, owner and last use; owners' checks in the engine."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import numpy as np
import pytest

from engine import cleanup, owners, store
from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.owners import acting_as
from engine.synth import generators, sets
from tests.conftest import store_images_as_set


@pytest.fixture
def digits() -> LabDataset:
    return build_dataset(DatasetConfig())


def fake_generator(gen_id: str, owner: str, *, training: dict[str, Any] | None = None) -> None:
    """A generator folder as the trainer leaves it: weights and origin.json (or only training.json)."""
    folder = generators.generators_dir() / gen_id
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"w" * 5000)
    if training is None:
        store.write_json(folder / "origin.json", {"id": gen_id, "owner": owner})
    else:
        store.write_json(folder / generators.STATUS, {"owner": owner, **training})


def kinds(items: list[cleanup.Item]) -> list[tuple[str, str]]:
    return sorted((i.kind, i.owner) for i in items)


def test_each_kind_is_listed_with_its_size_owner_and_last_use(digits: LabDataset) -> None:
    with acting_as("alice"):
        store.save_upload("pets.zip", b"PK" * 500)
        store_images_as_set(digits, np.zeros((2, 1, 8, 8), np.uint8), [0, 1], name="alice-set")
        store.cache_set(("source", "alice-decode"), b"d" * 300)
    fake_generator("cgan-000000000001", "alice")
    with acting_as("alice"):
        items = cleanup.list_items()
    assert kinds(items) == [("cache", "alice"), ("generator", "alice"), ("set", "alice"), ("upload", "alice")]
    by_kind = {i.kind: i for i in items}
    assert by_kind["upload"].name == "pets.zip" and by_kind["upload"].size == 1000
    assert by_kind["cache"].name == "decoded dataset alice-decode" and by_kind["cache"].size == 300
    assert by_kind["set"].name == "alice-set" and by_kind["set"].size > 0
    assert by_kind["generator"].size == 5000
    assert all(i.last_used > 0 for i in items)


def test_users_see_and_delete_only_their_own_and_admins_everything(digits: LabDataset) -> None:
    with acting_as("alice"):
        store.save_upload("a.zip", b"a" * 10)
        alice_set = store_images_as_set(digits, np.zeros((1, 1, 8, 8), np.uint8), [0], name="a")
        store.cache_set(("source", "a"), b"a")
    fake_generator("cgan-00000000000a", "alice")
    with acting_as("bob"):
        store.save_upload("b.zip", b"b" * 10)
        mine = cleanup.list_items()
        assert [i.owner for i in mine] == ["bob"]  # the cache entry of digits is the local user's, alice's are hers
        for item in [i for i in cleanup.list_items() if i.kind == "upload"]:
            cleanup.delete(item.kind, item.id)
        assert cleanup.list_items() == []
        with pytest.raises(owners.OwnershipError, match="the upload 'x' belongs to another user"):
            cleanup.delete("upload", "alice/x")
        with pytest.raises(owners.OwnershipError, match="the synthetic set 'a' belongs to another user"):
            cleanup.delete("set", alice_set)
        with pytest.raises(owners.OwnershipError, match="the generator 'cgan-00000000000a' belongs to another user"):
            cleanup.delete("generator", "cgan-00000000000a")
    with acting_as("root", admin=True):
        everything = cleanup.list_items()
        assert {("upload", "alice"), ("set", "alice"), ("generator", "alice"), ("cache", "alice")} <= set(
            kinds(everything)
        )
        alice_cache = next(i for i in everything if i.kind == "cache" and i.owner == "alice")
    with acting_as("bob"), pytest.raises(owners.OwnershipError, match="this decoded dataset belongs to another user"):
        cleanup.delete("cache", alice_cache.id)
    with acting_as("alice"):
        for item in cleanup.list_items():
            cleanup.delete(item.kind, item.id)
        assert cleanup.list_items() == []
    assert store.cache_get(("source", "a")) is None
    assert not (generators.generators_dir() / "cgan-00000000000a").exists()
    with pytest.raises(sets.SetError):
        sets.load_info(alice_set)


def test_a_generator_training_now_is_not_deleted() -> None:
    fake_generator("cgan-00000000000b", owners.LOCAL, training={"status": "running", "host": "", "pid": os.getpid()})
    item = next(i for i in cleanup.list_items() if i.kind == "generator")
    assert item.name == "cgan-00000000000b (unfinished training)"
    with pytest.raises(cleanup.CleanupError, match="'cgan-00000000000b' is training now: stop its training first"):
        cleanup.delete("generator", item.id)
    json_path = generators.generators_dir() / item.id / generators.STATUS
    json_path.write_text(json.dumps({"owner": owners.LOCAL, "status": "interrupted"}))
    cleanup.delete("generator", item.id)
    assert [i for i in cleanup.list_items() if i.kind == "generator"] == []


def test_a_cache_entry_frees_its_space_even_when_the_index_cannot_change(monkeypatch: pytest.MonkeyPatch) -> None:
    store.cache_set(("source", "big"), b"x" * 100_000)
    entry = next(i for i in cleanup.list_items() if i.kind == "cache")
    assert len(list(store.cache_dir().rglob("*.val"))) == 1
    real_connect = sqlite3.connect

    class FullConnection(sqlite3.Connection):
        def __enter__(self) -> FullConnection:
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cleanup.sqlite3, "connect", lambda *a, **k: real_connect(*a, **k, factory=FullConnection))
    cleanup.delete("cache", entry.id)
    assert list(store.cache_dir().rglob("*.val")) == []  # the space is back
    monkeypatch.undo()
    assert store.cache_get(("source", "big")) is None  # its row reads as a miss


def test_an_old_format_entry_is_listed_and_deleted_without_being_read() -> None:
    import diskcache

    with diskcache.Cache(str(store.subdir("cache"))) as cache:
        cache.set(("source", "old"), {"images": 1}, tag=owners.LOCAL)
    item = next(i for i in cleanup.list_items() if i.kind == "cache")
    assert item.name == cleanup.OLD_CACHE_ENTRY
    cleanup.delete("cache", item.id)
    assert [i for i in cleanup.list_items() if i.kind == "cache"] == []


def test_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(cleanup.CleanupError, match=r"kind='runs' is not accepted: expected one of upload, cache"):
        cleanup.delete("runs", "x")
    free = cleanup.free_bytes()
    assert free is not None and free > 0  # the disk holding the workspace reports its space


def test_a_decoded_dataset_is_listed_by_its_source_and_size_not_its_hash(digits: LabDataset) -> None:
    listed = [i for i in cleanup.list_items() if i.kind == "cache"]
    assert [i.name for i in listed] == ["digits · 1,797 images at 8 px"]
    assert listed[0].size > 1797 * 64  # the images themselves, not the few bytes of its name
