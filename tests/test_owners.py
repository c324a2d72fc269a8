"""Ownership in the engine: who sees and who may change experiments, runs, sets, requests, uploads, cache entries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from engine import experiments, owners, records, runs, store, user_state
from engine.config import DatasetConfig, ImbalanceConfig, SourceConfig
from engine.datasets import LabDataset, build_dataset
from engine.mixes import MixConfig
from engine.owners import OwnershipError, acting_as
from engine.synth import sd_requests, sets
from engine.synth.stable_diffusion import SDConfig
from engine.training import TrainConfig
from tests.test_synth_sets import create, make_images, make_records


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory: pytest.TempPathFactory) -> LabDataset:
    return build_dataset(DatasetConfig(source=SourceConfig(resolution=8)))


def plan(name: str) -> experiments.ExperimentRecord:
    cfg = experiments.ExperimentConfig(
        dataset=DatasetConfig(),
        mixes=(MixConfig("oversample"),),
        train=TrainConfig(max_epochs=1, device="cpu", precision="fp32"),
        seeds=(0,),
        name=name,
    )
    return experiments.plan_experiment(cfg, "key")


def test_experiments_and_runs_are_private_until_shared() -> None:
    with acting_as("alice"):
        record = plan("alice-private-experiment")
        assert [r.id for r in experiments.list_experiments()] == [record.id]
        assert {r.owner for r in runs.visible_records()} == {"alice"}
    with acting_as("bob"):
        assert experiments.list_experiments() == []
        assert runs.visible_records() == []
        with pytest.raises(OwnershipError, match="belongs to another user"):
            experiments.set_shared(record.id, True)
    with acting_as("alice"):
        experiments.set_shared(record.id, True)
    with acting_as("bob"):
        assert [r.id for r in experiments.list_experiments()] == [record.id]
        shared = frozenset(e.id for e in experiments.list_experiments() if e.shared)
        assert len(runs.visible_records(shared)) == 2
        with pytest.raises(OwnershipError):
            experiments.set_shared(record.id, False)  # shared is read-only for everyone else
    with acting_as("admin", admin=True):
        assert [r.id for r in experiments.list_experiments()] == [record.id]
        experiments.set_shared(record.id, False)
    with acting_as("bob"):
        assert experiments.list_experiments() == []


def test_sets_are_private_shared_read_only_and_only_the_owner_deletes_them() -> None:
    with acting_as("alice"):
        info, _, _ = create([0, 1, 2])
        assert info.owner == "alice" and not info.shared
    with acting_as("bob"):
        assert sets.list_sets() == []
        with pytest.raises(sets.SetError, match="its owner has not shared it"):
            sets.load_set(info.id)  # not even by its id (a TOML for the CLI, say)
        with pytest.raises(OwnershipError, match="only its owner or an administrator can delete it"):
            sets.delete_set(info.id)
        with pytest.raises(OwnershipError):
            sets.set_kept(info.id, [sets.load_manifest(info.id)[0].file], False)
        with pytest.raises(OwnershipError):
            sets.set_shared(info.id, True)
    with acting_as("alice"):
        sets.set_shared(info.id, True)
    with acting_as("bob"):
        assert [s.id for s in sets.list_sets()] == [info.id]
        assert len(sets.load_set(info.id)) == 3  # can train on it
        with pytest.raises(OwnershipError):
            sets.delete_set(info.id)
    with acting_as("alice"):
        sets.delete_set(info.id)
        assert sets.list_sets() == []


def test_unfinished_stable_diffusion_requests_are_private(digits_dataset: LabDataset) -> None:
    cfg = SDConfig(model="some/model", per_class=1)
    with acting_as("alice"):
        alice_key = sd_requests.request_key(cfg, digits_dataset)
        sd_requests.open_partial(cfg, digits_dataset)
        assert [r["owner"] for r in sd_requests.partial_requests()] == ["alice"]
    with acting_as("bob"):
        assert sd_requests.request_key(cfg, digits_dataset) != alice_key  # never continues another user's request
        assert sd_requests.partial_requests() == []
        with pytest.raises(OwnershipError, match="discard"):
            sd_requests.discard_partial(alice_key)
    assert sd_requests.partial_folder(alice_key).exists()
    with acting_as("alice"):
        sd_requests.discard_partial(alice_key)
    assert not sd_requests.partial_folder(alice_key).exists()


def test_the_local_user_keeps_the_request_keys_it_had_before_accounts(digits_dataset: LabDataset) -> None:
    cfg = SDConfig(model="some/model", per_class=1)
    with acting_as(owners.LOCAL):
        local = sd_requests.request_key(cfg, digits_dataset)
    old = hashlib.sha256(f"{cfg.cache_key()}-{digits_dataset.key.replace('#', '-')}".encode()).hexdigest()[:20]
    assert local == old


def test_cache_entries_are_shared_but_each_user_clears_only_their_own() -> None:
    with acting_as("alice"):
        store.cache_set(("source", "a"), b"alice's decode")
    with acting_as("bob"):
        store.cache_set(("source", "b"), b"bob's decode")
        assert store.cache_get(("source", "a")) == b"alice's decode"  # read-only reuse of the same data
        assert store.clear_cache() == 1
        assert store.cache_get(("source", "a")) == b"alice's decode"
        assert store.cache_get(("source", "b")) is None
    with acting_as("root", admin=True):
        assert store.clear_cache() == 1
        assert store.cache_get(("source", "a")) is None


def test_uploads_live_per_user_count_against_their_limit_and_stay_private() -> None:
    from engine import limits

    with acting_as("alice"):
        path = store.save_upload("data.zip", b"x" * 1000)
        assert path.parent == store.home() / "uploads" / "alice"
        assert store.is_readable_location(path)
    with acting_as("bob"):
        assert not store.is_readable_location(path)  # another user's upload, even by its exact path
    limits.set_limit("upload_mb", 1, user="carol")
    with acting_as("carol"):
        store.save_upload("small.zip", b"y" * 2**19)
        with pytest.raises(store.UploadRefused, match=r"'big.zip' .* upload limit of 1 MiB"):
            store.save_upload("big.zip", b"z" * 2**19 + b"!")
        assert not (store.uploads_dir() / "big.zip").exists()


def test_records_older_than_owners_are_migrated_on_read() -> None:
    old = {"id": "r", "dataset_identity": "abc", "status": "done"}
    migrated = records.migrate("run", dict(old))
    assert migrated["dataset_key"] == "abc" and migrated["owner"] == "" and migrated["shared"] is False
    assert migrated["schema"] == records.SCHEMA
    assert owners.owner_of(migrated["owner"]) == owners.LOCAL
    with pytest.raises(ValueError, match="newer version of the lab"):
        records.migrate("run", {"schema": records.SCHEMA + 1})
    with acting_as("alice"):
        record = plan("legacy")
    path = experiments.experiments_dir() / f"{record.id}.json"
    data = json.loads(path.read_text())
    for field in ("owner", "shared", "schema"):
        del data[field]
    path.write_text(json.dumps(data))
    assert experiments.load_experiment(record.id).owner == owners.LOCAL
    with acting_as("alice"):
        assert experiments.list_experiments() == []
    with acting_as(owners.LOCAL):
        assert [r.id for r in experiments.list_experiments()] == [record.id]


def test_exported_bundles_carry_no_server_paths(tmp_path: Path) -> None:
    cfg = experiments.ExperimentConfig(
        dataset=DatasetConfig(
            source=SourceConfig(kind="zip", path=str(tmp_path / "secret" / "photos.zip")),
            imbalance=ImbalanceConfig(),
        ),
        mixes=(MixConfig("oversample"),),
        seeds=(0,),
    )
    record = experiments.plan_experiment(cfg, "key")
    bundle = experiments.export_bundle(experiments.summarize(record.id, n_boot=10))
    text = json.dumps(bundle)
    assert str(tmp_path) not in text
    assert bundle["config"]["dataset"]["source"]["path"] == "photos.zip"


def test_user_state_keeps_the_dataset_and_plain_settings_per_user() -> None:
    cfg = DatasetConfig(imbalance=ImbalanceConfig(kind="step", minority=("0",), keep_fraction=0.1))
    with acting_as("alice"):
        user_state.save(cfg, {"gen_family": "gan", "pp_real_size": 32, "blob": np.zeros(2), "pair": (1, 2)})
        assert user_state.load() == (cfg, {"gen_family": "gan", "pp_real_size": 32, "pair": [1, 2]})
    with acting_as("bob"):
        assert user_state.load() == (None, {})
    (store.home() / "user_state" / "bob.json").write_text("{not json")
    assert user_state.load("bob") == (None, {})


def test_the_cli_lists_what_a_user_may_see_when_acting_as_them(capsys: pytest.CaptureFixture[str]) -> None:
    from engine import cli

    with acting_as("alice"):
        info, _, _ = create([0, 1])
    with acting_as("bob"):
        theirs, _, _ = create([0, 2])
    assert cli.main(["--as-user", "bob", "sets"]) == 0
    out = capsys.readouterr().out
    assert theirs.id in out and info.id not in out
    assert cli.main(["sets"]) == 0  # the server's local administrator sees every user's
    out = capsys.readouterr().out
    assert theirs.id in out and info.id in out and "alice" in out
    assert cli.main(["--as-user", "bad name!", "sets"]) == 2
    assert "user='bad name!' is not accepted" in capsys.readouterr().err


def test_a_user_past_their_disk_limit_starts_no_new_work(digits_dataset: LabDataset) -> None:
    from engine import limits, tasks, usage
    from engine.jobs import JobRunner
    from engine.synth import gan

    with acting_as("alice"):
        create([0, 1, 2, 0, 1, 2])
        store.save_upload("photos.zip", b"p" * 5000)
    used = usage.disk_by_user()["alice"]
    assert used["sets"] > 0 and used["uploads"] == 5000 and used["runs"] == 0
    limits.set_limit("disk_gb", 1e-6, user="alice")  # 1 kB
    with pytest.raises(usage.DiskLimitReached, match=r"the most this server allows you \(1e-06 GB\)"):
        tasks.submit_generator_training(JobRunner(), gan.GanConfig(steps=2), digits_dataset, owner="alice")
    usage.check_disk("bob")  # others are not held back


def test_the_server_page_shows_every_users_jobs_and_usage_to_an_admin() -> None:
    import threading

    from streamlit.testing.v1 import AppTest

    from engine.jobs import JobContext
    from ui.jobs_panel import get_runner

    gate = threading.Event()

    def long_job(ctx: JobContext) -> None:
        while not ctx.should_stop() and not gate.wait(0.05):
            pass

    job = get_runner().submit("alice's long job", long_job, owner="alice", lane="server-test")
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app_pages" / "server.py"))
        at.run(timeout=60)
        assert not at.exception
        assert any("alice's long job" in m.value for m in at.markdown)
        usage_table = at.dataframe[0].value
        assert "alice" in list(usage_table["user"])
        at.button(key=f"admin-cancel-{job}").click().run(timeout=60)
        assert get_runner().wait(job, timeout=30).status == "cancelled"
    finally:
        gate.set()


def test_owner_folders_are_safe_for_any_identity() -> None:
    assert owners.folder_name("alice") == "alice"
    assert owners.folder_name("ada@school.org") == "ada@school.org"
    for odd in ("../etc", "a/b", ".hidden", "x" * 80, "名前"):
        name = owners.folder_name(odd)
        assert name.startswith("user-") and "/" not in name
    with acting_as("../../etc"):
        path = store.save_upload("x.zip", b"1")
    assert path.parent.parent == store.home() / "uploads"


def test_a_downloaded_set_names_no_server_folder(tmp_path: Path) -> None:
    import io
    import zipfile

    from engine import exports

    info = sets.create_set(
        "sd",
        make_images(2),
        make_records([0, 1]),
        ("zero", "one", "two"),
        generator="sd",
        dataset_key="k",
        config={"model": str(tmp_path / "models" / "sd-local"), "steps": 2},
    )
    with zipfile.ZipFile(io.BytesIO(exports.set_zip(info.id))) as archive:
        about = json.loads(archive.read("manifest.json"))
    assert about["config"]["model"] == "sd-local" and str(tmp_path) not in json.dumps(about)
    assert owners.without_server_paths({"a": ["/srv/x/y.zip", "plain", 3]}) == {"a": ["y.zip", "plain", 3]}


def test_a_record_from_a_newer_lab_is_named_and_left_out_of_listings_generators_too() -> None:
    from engine.synth import generators

    with pytest.raises(ValueError, match=r"the run record 20261201-x has layout \d+, written by a newer version"):
        records.migrate("run", {"schema": records.SCHEMA + 1}, "20261201-x")
    folder = generators.generators_dir() / "cgan-0123456789ab"
    folder.mkdir(parents=True)
    (folder / "origin.json").write_text(json.dumps({"id": folder.name, "schema": records.SCHEMA + 1}))
    assert generators.list_generators() == []
    with pytest.raises(ValueError, match="the generator record cgan-0123456789ab has layout"):
        generators.load_origin(folder.name)


def test_training_a_generator_a_newer_lab_stored_is_refused_in_one_line(digits_dataset: LabDataset) -> None:
    from engine import tasks
    from engine.jobs import JobError, JobRunner
    from engine.synth import gan, generators

    cfg = gan.GanConfig(steps=2)
    folder = generators.generators_dir() / generators.generator_id(cfg, digits_dataset)
    folder.mkdir(parents=True)
    (folder / "origin.json").write_text(json.dumps({"schema": records.SCHEMA + 1}))
    with pytest.raises(JobError, match="written by a newer version of the lab"):  # the Generate page shows JobError
        tasks.submit_generator_training(JobRunner(), cfg, digits_dataset, owner="me")
