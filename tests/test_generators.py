"""Stored generators: trained once and reused, listed per dataset (old records too), nothing left by a cancel."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from engine import heartbeat, runs
from engine.config import DatasetConfig, ImbalanceConfig, SplitConfig
from engine.datasets import LabDataset, build_dataset
from engine.jobs import Cancelled
from engine.synth import ddpm, gan, generators
from engine.synth.events import GeneratorEvent

TINY = gan.GanConfig(steps=12, width=8, batch_size=16, sample_every=6)


@pytest.fixture(scope="module")
def digits() -> LabDataset:
    imbalance = ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1)
    return build_dataset(DatasetConfig(imbalance=imbalance))


def test_a_generator_is_trained_once_and_reused(digits: LabDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    gen_id = generators.train_generator(TINY, digits)
    assert [g["id"] for g in generators.list_generators(digits)] == [gen_id]
    assert (generators.generators_dir() / gen_id / "generator.safetensors").is_file()
    assert not (generators.generators_dir() / gen_id / "checkpoint").exists()
    assert generators.load_origin(gen_id)["dataset"] == digits.key  # type: ignore[index]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored generator must be reused")

    monkeypatch.setattr(gan, "train_gan", no_training)
    assert generators.train_generator(TINY, digits) == gen_id
    assert generators.generator_id(gan.GanConfig(steps=13, width=8, batch_size=16), digits) != gen_id


def test_ids_are_the_ones_older_workspaces_stored(digits: LabDataset) -> None:
    before = f"{TINY.cache_key()}-{digits.identity}-{digits.config.cache_key()}"  # the pre-LabDataset.key input
    assert generators.generator_id(TINY, digits) == f"cgan-{hashlib.sha256(before.encode()).hexdigest()[:12]}"


def test_generators_are_listed_for_their_dataset_only_old_records_too(digits: LabDataset) -> None:
    other = build_dataset(DatasetConfig(split=SplitConfig(seed=1)))  # same files, another split
    for name, origin in {
        "new-one": {"id": "new-one", "kind": "cgan", "dataset": digits.key},
        "old-one": {
            "id": "old-one",
            "kind": "cgan",
            "dataset_identity": digits.identity,  # stored before origin.json held the dataset key
            "dataset_key": digits.config.cache_key(),
        },
        "other-split": {"id": "other-split", "kind": "cgan", "dataset": other.key},
    }.items():
        (generators.generators_dir() / name).mkdir()
        (generators.generators_dir() / name / "origin.json").write_text(json.dumps(origin))
    assert sorted(g["id"] for g in generators.list_generators(digits)) == ["new-one", "old-one"]
    assert [g["id"] for g in generators.list_generators(other)] == ["other-split"]
    assert len(generators.list_generators()) == 3


@pytest.mark.parametrize("cfg", [TINY, ddpm.DdpmConfig(width=8, steps=12, batch_size=8, sample_every=6, timesteps=50)])
def test_a_cancelled_training_raises_and_stores_no_generator(
    digits: LabDataset, cfg: generators.GeneratorConfig
) -> None:
    events: list[GeneratorEvent] = []
    with pytest.raises(Cancelled, match=r"training of generator .* was cancelled at step 7 of 12; nothing was stored"):
        generators.train_generator(
            cfg, digits, on_event=events.append, should_stop=lambda: sum(e.kind == "step" for e in events) >= 7
        )
    assert generators.list_generators() == [] and list(generators.generators_dir().iterdir()) == []
    assert sum(e.kind == "samples" for e in events) == 1  # it was cancelled after its first checkpoint was written


def test_stop_and_keep_stores_the_generator_and_resume_trains_it_to_its_planned_steps(digits: LabDataset) -> None:
    events: list[GeneratorEvent] = []

    def steps_seen() -> int:
        return sum(e.kind == "step" for e in events)

    gen_id = generators.train_generator(
        TINY, digits, on_event=events.append, should_stop=lambda: steps_seen() >= 8, keep_on_stop=lambda: True
    )
    origin = generators.load_origin(gen_id)
    assert origin is not None and origin["steps_done"] == 8 and generators.is_stopped(origin)
    folder = generators.generators_dir() / gen_id
    _, meta = gan.load_generator(folder)  # usable for sets as it is
    assert meta["steps_done"] == 8 and (folder / "checkpoint" / "checkpoint.json").is_file()
    assert generators.list_generators(digits)[0]["id"] == gen_id

    events.clear()  # a cancel while resuming leaves the stopped generator as it was
    with pytest.raises(Cancelled, match=r"resuming generator .* was cancelled at step 10 of 12; it stays as stopped"):
        generators.train_generator(TINY, digits, on_event=events.append, should_stop=lambda: steps_seen() >= 2)
    assert generators.load_origin(gen_id)["steps_done"] == 8  # type: ignore[index]

    events.clear()
    assert generators.train_generator(TINY, digits, on_event=events.append) == gen_id  # Resume: the same request
    assert [e.step for e in events if e.kind == "step"] == [11, 12]  # from the last checkpoint (step 10) on
    origin = generators.load_origin(gen_id)
    assert origin is not None and origin["steps_done"] == 12 and not generators.is_stopped(origin)
    assert not (folder / "checkpoint").exists()
    straight = gan.train_gan(TINY, digits.train)  # stopping and resuming changed nothing
    resumed, _ = gan.load_generator(folder)
    expected = straight.generator.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.state_dict().items())


def test_a_stop_before_the_first_step_keeps_nothing(digits: LabDataset) -> None:
    with pytest.raises(Cancelled, match="cancelled at step 0 of 12; nothing was stored"):
        generators.train_generator(TINY, digits, should_stop=lambda: True, keep_on_stop=lambda: True)
    assert generators.list_generators() == []


def test_seconds_per_step_is_measured_once_per_setting(digits: LabDataset) -> None:
    rate = generators.seconds_per_step(TINY, digits)
    assert 0 < rate < 5
    assert generators.seconds_per_step(dataclasses.replace(TINY, steps=500), digits) == rate  # remembered
    assert generators.estimate_seconds(dataclasses.replace(TINY, steps=500), digits) == pytest.approx(500 * rate * 1.05)
    assert generators.list_generators() == []  # timing stores nothing


def test_a_training_killed_with_its_process_is_swept_listed_and_resumed(digits: LabDataset) -> None:
    def stop_at_step_8(event: GeneratorEvent) -> None:
        if event.kind == "step" and event.step == 8:
            raise KeyboardInterrupt  # the process stops after the checkpoint of step 6

    gen_id = generators.generator_id(TINY, digits)
    status_path = generators.generators_dir() / gen_id / generators.STATUS
    seen: list[dict[str, object]] = []

    def look(event: GeneratorEvent) -> None:
        if not seen and status_path.is_file():
            seen.append(json.loads(status_path.read_text()))
        stop_at_step_8(event)

    with pytest.raises(KeyboardInterrupt):
        generators.train_generator(TINY, digits, on_event=look)
    assert seen[0]["status"] == "running" and seen[0]["pid"] == os.getpid() and seen[0]["owner"] == "local"
    [cut] = generators.list_interrupted(digits)
    assert (cut["id"], cut["step"], cut["reason"]) == (gen_id, 6, generators.PROCESS_STOPPED)
    assert generators.list_generators(digits) == []  # not usable for sets: there is no generator yet
    # as if its process had been killed (no chance to say so): the sweep finds it by its dead pid
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status_path.write_text(json.dumps({**cut, "status": "running", "pid": dead.pid, "host": heartbeat.host()}))
    assert generators.list_interrupted(digits) == []
    runs.sweep()
    [swept] = generators.list_interrupted(digits)
    assert swept["step"] == 6 and swept["reason"] == generators.PROCESS_STOPPED
    steps: list[int] = []
    config = generators.config_from_origin(swept)
    generators.train_generator(config, digits, on_event=lambda e: steps.append(e.step) if e.kind == "step" else None)
    assert steps[0] == 7 and steps[-1] == TINY.steps  # on from the checkpoint, not from the start
    assert generators.list_interrupted(digits) == [] and not status_path.exists()
    assert [g["id"] for g in generators.list_generators(digits)] == [gen_id]


def test_re_run_of_an_interrupted_training_discards_its_checkpoint(digits: LabDataset) -> None:
    def stop(event: GeneratorEvent) -> None:
        if event.kind == "step" and event.step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generators.train_generator(TINY, digits, on_event=stop)
    gen_id = generators.generator_id(TINY, digits)
    generators.discard_interrupted(gen_id)
    assert generators.list_interrupted(digits) == [] and not (generators.generators_dir() / gen_id).exists()
    steps: list[int] = []
    generators.train_generator(TINY, digits, on_event=lambda e: steps.append(e.step) if e.kind == "step" else None)
    assert steps[0] == 1
