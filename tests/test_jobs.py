"""The job runner and runs on disk: order, queueing, cancel, failures, restarts."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from engine import runs
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import ImageSet, LabDataset, Provenance, build_dataset
from engine.jobs import Cancelled, JobContext, JobError, JobRunner, format_duration, format_eta
from engine.mixes import MixConfig, build_mix
from engine.training import TrainConfig, TrainEvent, predict_proba

TINY = TrainConfig(max_epochs=2, batch_size=64, patience=0, device="cpu", precision="fp32")


def test_events_arrive_in_order_and_the_result_is_kept() -> None:
    runner = JobRunner()

    def job(ctx: JobContext) -> str:
        for i in range(5):
            ctx.emit(i)
            ctx.set_progress((i + 1) / 5, f"step {i}")
        return "ok"

    snap = runner.wait(runner.submit("count", job, owner="alice"))
    assert snap.status == "done" and snap.events == (0, 1, 2, 3, 4) and snap.result == "ok"
    assert snap.progress == 1.0 and snap.message == "step 4" and snap.finished >= snap.started > 0


def test_heavy_jobs_queue_one_at_a_time_and_a_queued_job_cancels_at_once() -> None:
    runner, gate = JobRunner(), threading.Event()
    first = runner.submit("first", lambda ctx: gate.wait(10), owner="a")
    second = runner.submit("second", lambda ctx: "second ran", owner="b")
    third = runner.submit("third", lambda ctx: "third ran", owner="b")
    deadline = time.monotonic() + 5
    while runner.snapshot(first).status != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [runner.snapshot(j).queue_position for j in (first, second, third)] == [0, 1, 2]
    runner.cancel(second, owner="b")
    assert runner.snapshot(second).status == "cancelled" and runner.snapshot(third).queue_position == 1
    gate.set()
    assert runner.wait(third).result == "third ran"
    assert runner.snapshot(second).result is None
    assert [j.id for j in runner.list(owner="b")] == [second, third]


def test_a_job_that_raises_cancelled_is_recorded_cancelled_with_its_message() -> None:
    runner = JobRunner()

    def stops(ctx: JobContext) -> None:
        raise Cancelled("stopped after 3 of 9 images")

    snap = runner.wait(runner.submit("stops", stops, owner="a"))
    assert snap.status == "cancelled" and snap.error == "stopped after 3 of 9 images"
    assert not issubclass(Cancelled, ValueError)  # not a rejected request: callers catching ValueError let it pass


def test_stop_and_keep_records_a_job_that_returns_as_stopped_with_its_result() -> None:
    runner, started = JobRunner(), threading.Event()

    def keeps(ctx: JobContext) -> str:
        started.set()
        while not ctx.should_stop():
            time.sleep(0.01)
        if not ctx.keep_on_stop():
            raise Cancelled("cancelled: nothing kept")
        return "what it had"

    kept = runner.submit("keeps", keeps, owner="a")
    assert started.wait(10)
    runner.cancel(kept, owner="a", keep=True)
    runner.cancel(kept, owner="a", keep=True)  # pressed twice: still a keep
    snap = runner.wait(kept)
    assert snap.status == "stopped" and snap.result == "what it had" and snap.error == ""
    started.clear()
    thrown = runner.submit("keeps", keeps, owner="a")
    assert started.wait(10)
    runner.cancel(thrown, owner="a")
    runner.cancel(thrown, owner="a", keep=True)  # a keep after a cancel does not undo the cancel
    snap = runner.wait(thrown)
    assert snap.status == "cancelled" and snap.error == "cancelled: nothing kept" and snap.result is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3, "about 5 s left"), (42, "about 40 s left"), (80, "about 1 min 20 s left"), (119, "about 2 min left")],
)
def test_times_left_read_as_people_say_them(seconds: float, text: str) -> None:
    assert format_eta(seconds) == text
    assert format_duration(3600 * 2 + 300) == "2 h 5 min" and format_duration(1500) == "25 min"


def test_a_failure_is_captured_with_its_message_and_the_worker_goes_on() -> None:
    runner = JobRunner()

    def boom(ctx: JobContext) -> None:
        raise RuntimeError("the GPU caught fire")

    failed = runner.wait(runner.submit("boom", boom, owner="a"))
    assert failed.status == "failed" and failed.error == "the GPU caught fire"  # no class names in what people read
    assert runner.wait(runner.submit("after", lambda ctx: 42, owner="a")).result == 42


def test_cancel_of_a_running_job_and_ownership_checks() -> None:
    runner, started = JobRunner(), threading.Event()

    def loop(ctx: JobContext) -> int:
        steps = 0
        started.set()
        while not ctx.should_stop():
            steps += 1
            time.sleep(0.001)
        return steps

    job = runner.submit("loop", loop, owner="alice")
    started.wait(5)
    with pytest.raises(JobError, match="belongs to another session"):
        runner.cancel(job, owner="mallory")
    runner.cancel(job, owner="alice")
    assert runner.wait(job).status == "cancelled"
    with pytest.raises(JobError, match=r"job_id='nope' is not a job"):
        runner.snapshot("nope")


@pytest.fixture
def imbalanced() -> LabDataset:
    cfg = ImbalanceConfig(kind="step", minority=("0", "1"), keep_fraction=0.2)
    return build_dataset(DatasetConfig(imbalance=cfg))


def synthetic_digits(data: LabDataset) -> ImageSet:
    """A stand-in synthetic set: real training images, marked synthetic (tests only)."""
    labels = data.train.labels.numpy()
    index = np.concatenate([np.resize(np.flatnonzero(labels == c), 150) for c in range(len(data.class_names))])
    real = data.train.subset(index)
    prov = Provenance(
        **{
            **real.provenance.__dict__,
            "synthetic": np.ones(len(real), bool),
            "generator": np.full(len(real), "stub", object),
        }
    )
    return ImageSet(real.images.flip(-1).contiguous(), real.labels, real.class_names, prov)


def test_a_run_saves_everything_atomically_and_the_model_reloads(imbalanced: LabDataset) -> None:
    cfg = runs.RunConfig(imbalanced.config, MixConfig("oversample"), "simple_cnn", TINY, seed=1)
    events: list[TrainEvent] = []
    record = runs.execute_run("r1", cfg, imbalanced, on_event=events.append)
    folder = runs.runs_dir() / "r1"
    assert record.status == "done" and record.epochs == 2 and record.headline["accuracy"] is not None
    assert {p.name for p in folder.iterdir()} == {
        "run.json",
        "history.json",
        "metrics.json",
        "predictions.npz",
        "model.json",
        "model.safetensors",
    }
    assert runs.load_record("r1") == record
    assert len(runs.load_history("r1")) == 2 and [e.kind for e in events].count("epoch") == 2
    y_true, probs = runs.load_predictions("r1")
    assert np.array_equal(y_true, imbalanced.test.labels.numpy())
    reloaded = predict_proba(runs.load_model("r1"), imbalanced.test.images)
    assert np.allclose(reloaded, probs, atol=1e-6)
    metrics = runs.load_metrics("r1")
    assert metrics is not None and metrics.accuracy == pytest.approx(float((probs.argmax(1) == y_true).mean()))
    assert record.real_counts[0] == record.real_counts[5]  # oversampled up to the largest class


def test_synthetic_images_train_but_never_reach_validation_or_test(imbalanced: LabDataset) -> None:
    synthetic = synthetic_digits(imbalanced)
    mix = build_mix(MixConfig("add", synthetic_set="stub"), imbalanced.train, synthetic, seed=0)
    held_out = set(imbalanced.val.provenance.origin) | set(imbalanced.test.provenance.origin)
    assert mix.train.provenance.synthetic.sum() == sum(mix.synthetic_counts) > 0
    assert not held_out & set(mix.train.provenance.origin)  # nothing held out is trained on, real or not
    cfg = runs.RunConfig(imbalanced.config, MixConfig("add", synthetic_set="stub"), "simple_cnn", TINY)
    record = runs.execute_run("r2", cfg, imbalanced, synthetic=synthetic)
    assert record.synthetic_counts == mix.synthetic_counts
    y_true, probs = runs.load_predictions("r2")  # scored on the real test split, image for image
    assert np.array_equal(y_true, imbalanced.test.labels.numpy()) and len(probs) == len(imbalanced.test)
    reloaded = predict_proba(runs.load_model("r2"), imbalanced.test.images)
    assert np.allclose(reloaded, probs, atol=1e-6)


def test_a_failed_run_is_recorded_with_its_message(imbalanced: LabDataset) -> None:
    cfg = runs.RunConfig(imbalanced.config, MixConfig("add", synthetic_set="missing"), "simple_cnn", TINY)
    with pytest.raises(ValueError, match="needs the synthetic set 'missing'"):
        runs.execute_run("r3", cfg, imbalanced)
    record = runs.load_record("r3")
    assert record.status == "failed" and "needs the synthetic set 'missing'" in record.error


def test_a_restart_marks_runs_of_dead_processes_interrupted(imbalanced: LabDataset) -> None:
    cfg = runs.RunConfig(imbalanced.config)
    dead = runs.RunRecord("dead", cfg, "running", pid=2**22 + 12345)
    alive_cli = runs.RunRecord("cli", cfg, "running", pid=1)  # pid 1 is always alive
    finished = runs.RunRecord("fine", cfg, "done", pid=2**22 + 12345)
    for record in (dead, alive_cli, finished):
        runs.save_record(record)
    assert runs.mark_interrupted() == ["dead"]
    assert runs.load_record("dead").status == "interrupted" and "stopped" in runs.load_record("dead").error
    assert runs.load_record("cli").status == "running" and runs.load_record("fine").status == "done"


def test_unreadable_run_folders_are_skipped(imbalanced: LabDataset) -> None:
    runs.save_record(runs.RunRecord("ok", runs.RunConfig(imbalanced.config), "done"))
    (runs.runs_dir() / "broken").mkdir()
    (runs.runs_dir() / "broken" / "run.json").write_text("{not json")
    assert [r.id for r in runs.list_records()] == ["ok"]
    data = json.loads((runs.runs_dir() / "ok" / "run.json").read_text())
    assert data["config"]["mix"]["kind"] == "real" and data["status"] == "done"


def test_a_finished_job_lets_go_of_what_its_function_held() -> None:
    import gc
    import weakref

    class Big:
        pass

    runner, big = JobRunner(), Big()
    ref = weakref.ref(big)
    job = runner.submit("holds", lambda ctx, b=big: id(b), owner="a")
    del big
    runner.wait(job)
    gc.collect()
    assert ref() is None  # a session's dataset is not pinned by its finished jobs


def test_a_bug_is_named_as_unexpected_without_its_class_name() -> None:
    from engine.jobs import user_message

    assert user_message(KeyError("weights")) == "unexpected error: 'weights' (details are in the server log)"
    assert user_message(ValueError("mix.kind='x' is not accepted")) == "mix.kind='x' is not accepted"
