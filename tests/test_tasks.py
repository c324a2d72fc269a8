"""Background jobs the lab submits: groups, lanes, results, and what a cancel leaves behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import owners, runs, tasks
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import LabDataset, build_dataset
from engine.experiments import ExperimentConfig
from engine.jobs import JobRunner
from engine.mixes import MixConfig
from engine.synth import filters, gan, generators, make_sets, sd_requests, sets
from engine.synth import stable_diffusion as sd
from engine.training import TrainConfig

TINY = gan.GanConfig(steps=12, width=8, batch_size=16, sample_every=6)


@pytest.fixture(scope="module")
def digits() -> LabDataset:
    imbalance = ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.1)
    return build_dataset(DatasetConfig(imbalance=imbalance))


def test_groups_are_typed_and_read_back_from_the_runner() -> None:
    experiment = tasks.JobGroup(tasks.JobKind.EXPERIMENT, "20260101-120000-ab12")
    for group in (tasks.GENERATE, tasks.GAP, experiment):
        assert tasks.JobGroup.parse(str(group)) == group
    assert str(tasks.GENERATE) == "generate" and str(experiment) == "experiment:20260101-120000-ab12"
    assert tasks.JobGroup.parse("") is None and tasks.JobGroup.parse("experiment") is None
    assert tasks.JobGroup.parse("20260101-120000-ab12") is None  # a bare id is no group of ours
    assert tasks.is_experiment(str(experiment)) and not tasks.is_experiment("generate")


def test_generator_training_and_a_set_run_as_jobs(digits: LabDataset) -> None:
    runner = JobRunner()
    job = tasks.submit_generator_training(runner, TINY, digits, owner="me")
    done = runner.wait(job, timeout=120)
    assert done.status == "done" and done.result == generators.generator_id(TINY, digits)
    assert done.group == "generate" and done.tag == done.result
    assert {"step", "samples", "done"} <= {e.kind for e in done.events}
    request = make_sets.GenerateConfig(generator=done.result, per_class=3)
    made = runner.wait(tasks.submit_generation(runner, request, digits, owner="me"), timeout=120)
    assert made.status == "done", made.error
    assert isinstance(made.result, sets.SetInfo) and sets.list_sets(digits.key)[0].id == made.result.id
    assert [s.id for s in tasks.list_jobs(runner, tasks.JobKind.GENERATE, owner="me")] == [job, made.id]
    assert tasks.list_jobs(runner, tasks.JobKind.GAP) == []


def test_a_cancelled_set_job_is_recorded_cancelled_and_stores_nothing(
    digits: LabDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen_id = generators.train_generator(TINY, digits)
    judging, cancelled = threading.Event(), threading.Event()

    def reject_after_cancel(probs, labels, class_names, *, threshold=0.95, mode="verify"):  # type: ignore[no-untyped-def]
        judging.set()
        cancelled.wait(60)  # the user presses Cancel while the first round is judged
        n = len(labels)
        return filters.FilterResult(np.asarray(labels), np.zeros(n), np.zeros(n, bool), ("confidence 0 below 1",) * n)

    monkeypatch.setattr(filters, "confidence_filter", reject_after_cancel)
    runner = JobRunner()
    job = tasks.submit_generation(runner, make_sets.GenerateConfig(generator=gen_id, per_class=3), digits, owner="me")
    assert judging.wait(120)
    tasks.cancel_job(runner, job, owner="me")
    cancelled.set()
    snap = runner.wait(job, timeout=120)
    assert snap.status == "cancelled" and "nothing was stored" in snap.error and snap.result is None
    assert sets.list_sets() == [] and list(sets.sets_dir().iterdir()) == []


def test_a_cancelled_generator_job_stores_no_generator(digits: LabDataset) -> None:
    runner = JobRunner()
    job = tasks.submit_generator_training(
        runner, gan.GanConfig(steps=100_000, width=8, batch_size=16), digits, owner="me"
    )
    deadline = time.monotonic() + 60
    while not runner.snapshot(job).events:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    tasks.cancel_job(runner, job, owner="me")
    snap = runner.wait(job, timeout=60)
    assert snap.status == "cancelled" and "nothing was stored" in snap.error
    assert generators.list_generators() == [] and list(generators.generators_dir().iterdir()) == []


def test_stop_and_keep_stores_the_generator_and_the_same_request_resumes_it(digits: LabDataset) -> None:
    runner = JobRunner()
    cfg = gan.GanConfig(steps=100_000, width=8, batch_size=16, sample_every=50)
    job = tasks.submit_generator_training(runner, cfg, digits, owner="me")
    deadline = time.monotonic() + 60
    while runner.snapshot(job).progress < 30 / 100_000:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert tasks.keeps_on_stop(runner.snapshot(job))
    tasks.cancel_job(runner, job, owner="me", keep=True)
    snap = runner.wait(job, timeout=60)
    assert snap.status == "stopped" and snap.result == generators.generator_id(cfg, digits) and not snap.error
    origin = generators.load_origin(snap.result)
    assert origin is not None and generators.is_stopped(origin) and origin["steps_done"] >= 30
    again = tasks.submit_generator_training(runner, cfg, digits, owner="me")  # Resume: the same config
    assert runner.snapshot(again).title == f"resume cgan from step {origin['steps_done']:,} of 100,000"
    first = origin["steps_done"] + 1
    deadline = time.monotonic() + 60
    while not any(getattr(e, "kind", "") == "step" for e in runner.snapshot(again).events):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    tasks.cancel_job(runner, again, owner="me")  # Cancel: the resumed steps are thrown away, not the generator
    stopped = runner.wait(again, timeout=60)
    assert stopped.status == "cancelled" and "it stays as stopped at step" in stopped.error
    assert min(e.step for e in stopped.events if e.kind == "step") >= first
    assert generators.load_origin(snap.result)["steps_done"] == origin["steps_done"]  # type: ignore[index]
    request = make_sets.GenerateConfig(generator=snap.result, per_class=2, threshold=0.0)
    made = runner.wait(tasks.submit_generation(runner, request, digits, owner="me"), timeout=120)
    assert made.status == "done", made.error  # a stopped generator makes sets, which say at which step
    assert made.result.config["generator_steps_done"] == origin["steps_done"]


def test_the_progress_line_tells_the_time_left_from_the_pace_of_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    now = {"t": 100.0}
    monkeypatch.setattr(tasks.time, "perf_counter", lambda: now["t"])
    clock = tasks.StepClock()
    assert clock.tick(1, 3000) == "step 1 of 3,000"  # no pace yet
    for step in range(2, 118):
        now["t"] += 0.05
        line = clock.tick(step, 3000)
    assert line == "step 117 of 3,000 · about 2 min 20 s left"  # 2,883 steps at 0.05 s
    runner = JobRunner()
    other = runner.submit("train of another kind", lambda ctx: 0, owner="o", group=str(tasks.GAP))
    assert not tasks.keeps_on_stop(runner.snapshot(other))  # only generator training keeps on a stop


def test_cancelling_a_stable_diffusion_job_keeps_what_it_wrote_for_resume(tiny_sd: Path) -> None:
    digits = build_dataset(DatasetConfig())
    runner = JobRunner()
    cfg = sd.SDConfig(str(tiny_sd), steps=2, size=32, per_class=40, classes=("0",), batch_size=1)
    job = tasks.submit_sd_generation(runner, cfg, digits, owner="me")
    with owners.acting_as("me"):  # requests are keyed per user
        key = sd_requests.request_key(cfg, digits)
    assert runner.snapshot(job).tag == key
    deadline = time.monotonic() + 60
    partial = sd_requests.partial_folder(key)
    while not sd_requests.read_partial(partial) and runner.snapshot(job).status not in ("failed", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    tasks.cancel_job(runner, job, owner="me")
    snap = runner.wait(job, timeout=60)
    assert snap.status == "cancelled" and "run the same request again" in snap.error
    assert 0 < len(sd_requests.read_partial(partial)) < 40 and sets.list_sets() == []


def test_an_unavailable_model_fails_its_job_with_one_line() -> None:
    digits = build_dataset(DatasetConfig())
    runner = JobRunner()
    job = tasks.submit_sd_generation(runner, sd.SDConfig("someone/missing-model"), digits, owner="me")
    snap = runner.wait(job, timeout=60)
    assert snap.status == "failed" and "not available on this machine" in snap.error and "\n" not in snap.error


def test_a_gap_job_scores_both_sides_in_its_own_group() -> None:
    digits = build_dataset(DatasetConfig())
    images = digits.train.images
    sides = {"before": (images[:60], 255 - images[60:120]), "after": (images[:60], images[60:120])}
    runner = JobRunner()
    snap = runner.wait(tasks.submit_gap_score(runner, digits, sides, owner="me", presets="x"), timeout=180)
    assert snap.status == "done", snap.error
    assert snap.title == "domain gap (x)" and [s.id for s in tasks.list_jobs(runner, tasks.JobKind.GAP)] == [snap.id]
    assert set(snap.result) == {"before", "after"}
    assert snap.result["before"]["domain-gap accuracy"] > snap.result["after"]["domain-gap accuracy"]
    assert snap.result["before"]["frechet"] > snap.result["after"]["frechet"]


def one_epoch_experiment(dataset: LabDataset) -> ExperimentConfig:
    """The real baseline and oversampling on ``dataset``, one seed, one epoch each."""
    return ExperimentConfig(
        dataset=dataset.config,
        mixes=(MixConfig("oversample"),),
        train=TrainConfig(max_epochs=1, device="cpu", precision="fp32"),
        seeds=(0,),
    )


def test_an_experiment_queues_one_job_per_run_and_a_cancel_in_the_queue_marks_the_run() -> None:
    digits = build_dataset(DatasetConfig())
    cfg = one_epoch_experiment(digits)
    runner, gate = JobRunner(), threading.Event()
    runner.submit("another user's job", lambda ctx: gate.wait(60), owner="other")  # the runs queue behind it
    record = tasks.submit_experiment(runner, cfg, digits, owner="me", synthetic=sets.load_set)
    jobs = tasks.list_jobs(runner, tasks.JobKind.EXPERIMENT, owner="me")
    assert [j.tag for j in jobs] == [run_id for _, _, run_id in record.run_ids]
    assert {tasks.JobGroup.parse(j.group) for j in jobs} == {tasks.JobGroup(tasks.JobKind.EXPERIMENT, record.id)}
    tasks.cancel_job(runner, jobs[0].id, owner="me")
    gate.set()
    runner.wait(jobs[1].id, timeout=120)
    assert runs.load_record(jobs[0].tag).status == "cancelled" and runs.load_record(jobs[1].tag).status == "done"


def test_cancelling_a_job_that_is_not_a_run_touches_no_run_record() -> None:
    runner, gate = JobRunner(), threading.Event()
    runner.submit("another user's job", lambda ctx: gate.wait(60), owner="other")
    job = runner.submit("train cgan", lambda ctx: None, owner="me", group="generate", tag="cgan-0123456789ab")
    tasks.cancel_job(runner, job, owner="me")  # still queued: cancelled at once, no run.json to read
    gate.set()
    assert runner.snapshot(job).status == "cancelled"
