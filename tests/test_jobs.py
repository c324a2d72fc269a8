"""The job runner and runs on disk: order, queueing, cancel, failures, restarts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from engine import limits, runs
from engine.config import DatasetConfig, ImbalanceConfig
from engine.datasets import ImageSet, LabDataset, Provenance, build_dataset
from engine.jobs import Cancelled, JobContext, JobError, JobRunner, LimitReached, Work, format_duration, format_eta
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


def test_the_end_hook_runs_after_every_end_and_its_failure_leaves_the_job_as_it_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner, ended = JobRunner(), threading.Semaphore(0)
    seen: dict[str, str] = {}  # each job's status as its hook saw it: already its end

    def hook(title: str, fails: bool = False) -> Callable[[], None]:
        def ended_hook() -> None:
            seen[title] = next(j.status for j in runner.list(events=False) if j.title == title)
            ended.release()
            if fails:
                raise OSError("the hook's disk is full")

        return ended_hook

    def boom(ctx: JobContext) -> None:
        raise RuntimeError("the GPU caught fire")

    first = runner.submit("ok", Work(lambda ctx: 7, {}, ended=hook("ok")), owner="a")
    second = runner.submit("boom", Work(lambda ctx: boom(ctx), {}, ended=hook("boom")), owner="a")
    third = runner.submit("hook fails", Work(lambda ctx: 8, {}, ended=hook("hook fails", fails=True)), owner="a")
    assert [ended.acquire(timeout=10) for _ in range(3)] == [True] * 3
    assert seen == {"ok": "done", "boom": "failed", "hook fails": "done"}
    assert runner.wait(first).result == 7 and runner.wait(second).status == "failed"
    assert runner.wait(third).status == "done" and runner.wait(third).result == 8
    deadline = time.monotonic() + 5
    while "its end hook failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "its end hook failed" in caplog.text


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
    with pytest.raises(JobError, match="belongs to another user"):
        runner.cancel(job, owner="mallory")
    runner.cancel(job, owner="alice")
    assert runner.wait(job).status == "cancelled"
    with pytest.raises(JobError, match=r"job_id='nope' is not a job"):
        runner.snapshot("nope")


def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_owners_take_turns_and_queue_positions_are_the_start_order() -> None:
    runner, gate, started = JobRunner(), threading.Event(), []

    def job(name: str) -> Callable[[JobContext], None]:
        return lambda ctx: (started.append(name), gate.wait(10) if name == "a1" else None)[1]

    ids = {"a1": runner.submit("a1", job("a1"), owner="a")}
    wait_until(lambda: started == ["a1"])  # a's first job runs; a's next four queue behind it
    ids |= {f"a{i}": runner.submit(f"a{i}", job(f"a{i}"), owner="a") for i in range(2, 6)}
    ids |= {name: runner.submit(name, job(name), owner=name[0]) for name in ("b1", "c1")}
    positions = {name: runner.snapshot(job_id).queue_position for name, job_id in ids.items()}
    assert positions == {"a1": 0, "b1": 1, "c1": 2, "a2": 3, "a3": 4, "a4": 5, "a5": 6}
    runner.cancel(ids["a3"], owner="a")  # a cancel in the queue: the places behind it move up
    assert [runner.snapshot(ids[n]).queue_position for n in ("b1", "c1", "a2", "a4", "a5")] == [1, 2, 3, 4, 5]
    light = runner.submit("light", lambda ctx: "at once", owner="a", heavy=False)
    assert runner.wait(light).result == "at once"  # light jobs do not wait in the queue
    gate.set()
    for job_id in ids.values():
        runner.wait(job_id)
    assert started == ["a1", "b1", "c1", "a2", "a4", "a5"]  # the order the positions promised


def test_a_newcomer_waits_one_turn_not_behind_everyone() -> None:
    runner, gate, started = JobRunner(), threading.Event(), []
    blocker = runner.submit("blocker", lambda ctx: gate.wait(10), owner="z")
    wait_until(lambda: runner.snapshot(blocker).status == "running")
    ids = {}
    for name in ("a1", "a2", "b1", "a3", "b2", "c1"):  # submitted in this order while the lane is busy
        ids[name] = runner.submit(name, lambda ctx, n=name: started.append(n), owner=name[0])
    order = sorted(ids, key=lambda n: runner.snapshot(ids[n]).queue_position)
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
    gate.set()
    for job_id in ids.values():
        runner.wait(job_id)
    assert started == order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_job_in_place_one_is_the_next_to_start_whatever_comes_and_goes(seed: int) -> None:
    rng, runner = np.random.default_rng(seed), JobRunner()
    gates: dict[str, threading.Event] = {}

    def submit(owner: str) -> None:
        gate = threading.Event()
        job_id = runner.submit(owner, lambda ctx: gate.wait(10), owner=owner)
        gates[job_id] = gate

    def running() -> str:
        return next((s.id for s in runner.list(events=False) if s.status == "running"), "")

    submit("a")
    wait_until(lambda: running() != "")
    for _ in range(40):  # while one job runs: some users submit, some cancel, then the job ends
        waiting = any(s.status == "queued" for s in runner.list(events=False))
        for owner in rng.choice(list("abcd"), size=rng.integers(0 if waiting else 1, 4)):
            submit(str(owner))
        queued = [s for s in runner.list(events=False) if s.status == "queued"]
        if len(queued) > 1 and rng.random() < 0.3:  # one stays, to be the next
            runner.cancel(queued[rng.integers(len(queued))].id)
        queued = sorted((s for s in runner.list(events=False) if s.status == "queued"), key=lambda s: s.queue_position)
        assert [s.queue_position for s in queued] == list(range(1, len(queued) + 1))
        current = running()
        gates[current].set()
        wait_until(lambda c=current: running() not in ("", c))
        assert running() == queued[0].id
    for gate in gates.values():
        gate.set()


def test_a_user_at_their_limit_is_refused_and_others_are_not() -> None:
    limits.set_limit("max_jobs", 2, user="alice")
    runner, gate = JobRunner(), threading.Event()
    runner.submit("1", lambda ctx: gate.wait(10), owner="alice")
    second = runner.submit("2", lambda ctx: gate.wait(10), owner="alice")
    assert runner.room("alice") == 0 and runner.room("bob") == 24
    with pytest.raises(LimitReached) as refused:
        runner.submit("3", lambda ctx: None, owner="alice")
    assert str(refused.value) == (
        "you already have 2 jobs queued or running, the most this server allows per user: "
        "wait for some to finish or cancel some (an admin can raise the limit)"
    )
    assert isinstance(refused.value, ValueError) and len(runner.list(owner="alice")) == 2
    with pytest.raises(LimitReached, match=r"^this batch needs 3 jobs and you have room for 1 more \(at most 3 jobs"):
        limits.set_limit("max_jobs", 3, user="alice")
        runner.check_room("alice", 3, what="this batch")
    assert runner.wait(runner.submit("light", lambda ctx: 1, owner="alice", heavy=False)).result == 1
    runner.cancel(second, owner="alice")  # still queued: cancelled at once, its place freed
    assert runner.room("alice") == 2
    gate.set()


def test_an_admin_may_cancel_any_job_and_sees_everyones_usage() -> None:
    runner, gate = JobRunner(), threading.Event()
    running = runner.submit("runs", lambda ctx: gate.wait(10), owner="alice")
    queued = runner.submit("waits", lambda ctx: None, owner="bob")
    wait_until(lambda: runner.snapshot(running).status == "running")
    with pytest.raises(JobError, match=r"^job 'job-\S+' belongs to another user$"):
        runner.cancel(queued, owner="alice")
    runner.cancel(queued, owner="alice", admin=True)
    assert runner.snapshot(queued).status == "cancelled"
    time.sleep(0.05)
    usage = runner.usage()
    assert usage["alice"]["running"] == 1 and usage["alice"]["queued"] == 0 and usage["alice"]["seconds"] >= 0.05
    assert usage["bob"] == {"queued": 0, "running": 0, "finished": 1, "seconds": 0.0}
    gate.set()
    runner.wait(running)
    assert runner.usage()["alice"]["finished"] == 1 and runner.usage()["alice"]["running"] == 0


def test_a_periodic_function_runs_again_after_a_failure_and_registers_once() -> None:
    runner, calls, other = JobRunner(), [], []

    def sweep() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("disk full")  # logged; the next round still runs

    runner.every(0.02, sweep, "sweep")
    runner.every(0.02, lambda: other.append(1), "sweep")  # the same name again: nothing
    wait_until(lambda: len(calls) >= 3)
    runner.stop_every("sweep")
    time.sleep(0.05)
    settled = len(calls)
    time.sleep(0.1)
    assert len(calls) == settled and other == []
    with pytest.raises(ValueError, match=r"seconds=0 is not accepted"):
        runner.every(0, sweep, "again")


def test_list_can_leave_the_events_out_and_snapshot_keeps_them() -> None:
    runner = JobRunner()
    job = runner.wait(runner.submit("emits", lambda ctx: [ctx.emit(i) for i in range(3)], owner="a")).id
    assert runner.list(events=False)[0].events == () and runner.list()[0].events == (0, 1, 2)
    assert runner.snapshot(job).events == (0, 1, 2)


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
