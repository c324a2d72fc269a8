"""The Ray job backend: settings, an experiment's runs as Ray tasks, cancel, failures and a worker that dies.

One local Ray (1 CPU, no dashboard) serves the whole module; its temporary folder is short (/tmp/r-XXXX)
because Ray's Unix sockets live there. Job functions are module-level, so workers import them by name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from engine import experiments, heartbeat, jobs, runs, store, tasks  # noqa: E402
from engine.cli import main  # noqa: E402
from engine.config import DatasetConfig  # noqa: E402
from engine.datasets import LabDataset, build_dataset  # noqa: E402
from engine.jobs import Cancelled, JobContext, JobRunner, Work  # noqa: E402
from engine.ray_backend import ADDRESS_ENV, ClusterInfo, RayRunner, check_address, connect  # noqa: E402
from engine.training import TrainConfig, TrainEvent  # noqa: E402

ONE_EPOCH = TrainConfig(max_epochs=1, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray for this module, started once (a start costs seconds) and always shut down."""
    temp = tempfile.mkdtemp(prefix="r-", dir="/tmp")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        yield connect()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def runner(cluster: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayRunner]:
    monkeypatch.setenv(jobs.RUNNER_ENV, "ray")
    made = jobs.make_runner()
    assert isinstance(made, RayRunner)
    made._force_after = 30.0
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def digits() -> LabDataset:
    return build_dataset(DatasetConfig())


# Settings ------------------------------------------------------------------------------------------------


def test_the_settings_choose_the_backend_and_name_a_bad_value_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jobs.RUNNER_ENV, raising=False)
    default = jobs.make_runner()
    assert type(default) is JobRunner and default.backend == "threads" and default.cluster() is None
    monkeypatch.setenv(jobs.RUNNER_ENV, "rays")
    with pytest.raises(ValueError, match=r"^SYNTHLAB_RUNNER='rays' is not accepted: expected one of threads, ray$"):
        jobs.make_runner()
    for good in ("auto", "local", "", "ray://head:10001", "10.0.0.5:6379"):
        assert check_address(good) == good
    with pytest.raises(ValueError, match=r"^SYNTHLAB_RAY_ADDRESS='head' is not accepted: expected auto, local, "):
        check_address("head")
    monkeypatch.setenv(ADDRESS_ENV, "ray:/head")
    with pytest.raises(ValueError, match="SYNTHLAB_RAY_ADDRESS='ray:/head'"):
        connect()


def test_choosing_ray_without_the_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jobs.RUNNER_ENV, "ray")
    real = jobs.importlib.util.find_spec
    monkeypatch.setattr(jobs.importlib.util, "find_spec", lambda name: None if name == "ray" else real(name))
    with pytest.raises(RuntimeError, match=r"^SYNTHLAB_RUNNER=ray needs the ray package: install it with `pip"):
        jobs.make_runner()


# An experiment on the cluster ------------------------------------------------------------------------------


def test_an_experiments_runs_are_ray_tasks_with_progress_in_their_snapshots(
    runner: RayRunner, digits: LabDataset
) -> None:
    info = runner.cluster()
    assert isinstance(info, ClusterInfo) and info.total_cpus == 1 and all(n.alive for n in info.nodes)
    cfg = experiments.ExperimentConfig(
        dataset=digits.config,
        mixes=(experiments.BASELINE,),
        train=dataclasses.replace(ONE_EPOCH, max_epochs=2),
        seeds=(0, 1),
    )
    record = tasks.submit_experiment(runner, cfg, digits, owner="me")
    assert len(record.run_ids) == 2
    ids = [s.id for s in runner.list(group=f"experiment:{record.id}")]
    seen_running = set()
    deadline = time.monotonic() + 240
    while any((snap := runner.snapshot(i)).status not in jobs.FINISHED for i in ids):
        assert time.monotonic() < deadline, f"still {snap.status}: {snap.message}"
        seen_running |= {s.id for s in runner.list(events=False) if s.status == "running"}
        time.sleep(0.1)
    snaps = [runner.snapshot(i) for i in ids]
    assert [s.status for s in snaps] == ["done", "done"], [s.error for s in snaps]
    for snap in snaps:
        assert snap.where.startswith("node ") and snap.progress == 1.0
        assert snap.message.startswith("epoch 2: val acc")  # the worker's progress reached the server's snapshot
        assert [e.epoch for e in snap.events if isinstance(e, TrainEvent) and e.kind == "epoch"] == [1, 2]
        run = runs.load_record(snap.tag)
        assert run.status == "done" and runs.load_metrics(run.id) is not None
        assert run.pid != os.getpid() and run.owner == "me"  # run in a Ray worker process, as its owner
    assert seen_running  # the pages saw them run (the runs take about 0.3 s each: their progress is read at the end)


# Cancel, failure, a dead worker ------------------------------------------------------------------------------


def _count_until_stopped(ctx: JobContext, folder: str) -> dict[str, Any]:
    """Writes a checkpoint file every step until asked to stop; keeps it on a stop either way."""
    step = 0
    while not ctx.should_stop():
        step += 1
        store.write_json(Path(folder) / "checkpoint.json", {"step": step})
        ctx.set_progress(min(0.9, step / 1000), f"step {step}")
        time.sleep(0.02)
        if step > 50_000:
            raise RuntimeError("never asked to stop")
    if ctx.keep_on_stop():
        return {"kept": step}
    raise Cancelled(f"cancelled after step {step}: its checkpoint is kept")


def _wait_for(runner: RayRunner, job_id: str, predicate: Any, timeout: float = 120) -> jobs.JobSnapshot:
    deadline = time.monotonic() + timeout
    while not predicate(snap := runner.snapshot(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} still {snap.status}: {snap.message} {snap.error}"
        time.sleep(0.05)
    return snap


def test_cancel_is_a_stop_the_task_sees_so_it_keeps_its_checkpoint(runner: RayRunner, tmp_path: Path) -> None:
    for keep in (False, True):
        folder = tmp_path / f"keep-{keep}"
        job_id = runner.submit("count", Work(_count_until_stopped, {"folder": str(folder)}), owner="me")
        _wait_for(runner, job_id, lambda s: s.message.startswith("step"))
        asked = time.monotonic()
        runner.cancel(job_id, owner="me", keep=keep)
        snap = runner.wait(job_id, timeout=60)
        assert time.monotonic() - asked < 20  # the task stopped itself: nothing was ended by force
        step = json.loads((folder / "checkpoint.json").read_text())["step"]
        assert step > 0
        if keep:
            assert snap.status == "stopped" and snap.result == {"kept": step}
        else:
            assert snap.status == "cancelled" and snap.error == f"cancelled after step {step}: its checkpoint is kept"


def _deaf(ctx: JobContext) -> None:
    """Never asks whether to stop (as a stuck library call would)."""
    ctx.set_progress(0.1, "stuck")
    time.sleep(600)


def test_a_task_that_does_not_stop_is_ended_by_force_as_a_last_resort(runner: RayRunner) -> None:
    runner._force_after = 1.0
    job_id = runner.submit("deaf", Work(_deaf, {}), owner="me")
    _wait_for(runner, job_id, lambda s: s.message == "stuck")
    runner.cancel(job_id, owner="me")
    snap = runner.wait(job_id, timeout=60)
    assert snap.status == "cancelled"
    assert snap.error == "cancelled: it did not stop within 1 s and was ended (a run resumes from its checkpoint)"


def _fail(ctx: JobContext, epochs: int) -> None:
    ctx.set_progress(0.1, "checking")
    raise ValueError(f"train.max_epochs={epochs!r} is not accepted: expected a whole number from 1 to 10000")


def test_a_task_that_raises_fails_its_job_with_the_message(runner: RayRunner) -> None:
    job_id = runner.submit("fails", Work(_fail, {"epochs": 0}), owner="me")
    snap = runner.wait(job_id, timeout=120)
    assert snap.status == "failed" and snap.where.startswith("node ")
    assert snap.error == "train.max_epochs=0 is not accepted: expected a whole number from 1 to 10000"


def _start_then_die(ctx: JobContext, run_id: str) -> None:
    """Takes the run over as execute_run does (its record names this worker), then the worker dies."""
    heartbeat.start()
    record = runs.load_record(run_id)
    runs.save_record(dataclasses.replace(record, status="running", pid=os.getpid(), host=heartbeat.host()))
    ctx.flush()  # type: ignore[attr-defined]  # the server learns where it runs before the worker dies
    os._exit(1)


def test_a_worker_that_dies_marks_its_run_interrupted_naming_the_node_and_resume_finishes_it(
    runner: RayRunner, digits: LabDataset
) -> None:
    cfg = experiments.ExperimentConfig(
        dataset=digits.config, mixes=(experiments.BASELINE,), train=ONE_EPOCH, seeds=(0,)
    )
    (_, _, run_id), *_ = experiments.plan_experiment(cfg, digits.key).run_ids
    dies = Work(_start_then_die, {"run_id": run_id}, lost=functools.partial(runs.mark_lost, run_id))
    group = f"experiment:{runs.load_record(run_id).experiment}"
    snap = runner.wait(runner.submit("dies", dies, owner="me", group=group, tag=run_id), timeout=120)
    assert snap.status == "interrupted" and snap.where.startswith("node ")
    assert snap.error == f"the cluster worker running it stopped on {snap.where}"
    record = runs.load_record(run_id)
    assert record.status == "interrupted" and record.error == snap.error
    resumed = runner.wait(tasks.submit_resume(runner, run_id, digits, owner="me"), timeout=180)
    assert resumed.status == "done", resumed.error
    assert runs.load_record(run_id).status == "done" and runs.load_metrics(run_id) is not None


# The CLI ---------------------------------------------------------------------------------------------------

EXPERIMENT = """
name = "digits on the cluster"
seeds = [0]

[dataset.source]
kind = "digits"

[train]
max_epochs = 1
device = "cpu"
precision = "fp32"

[[mixes]]
kind = "real"

[[mixes]]
kind = "oversample"
"""


def test_the_cli_runs_an_experiment_on_the_cluster_and_prints_the_same_table(
    cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "experiment.toml"
    config.write_text(EXPERIMENT)
    assert main(["experiment", str(config), "--runner", "ray", "--n-boot", "50"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^real\s+1/1", out, re.M) and re.search(r"^oversample fill\s+1/1", out, re.M)
    assert "2 runs of experiment" in err and "on the cluster" in err
    records = runs.list_records()
    assert len(records) == 2 and {r.status for r in records} == {"done"}
    assert all(r.pid != os.getpid() for r in records)  # each ran in a Ray worker
    assert ray.is_initialized()  # the command left the cluster it found as it was


def test_the_cli_loop_trains_its_generator_and_makes_its_set_on_the_cluster(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.synth import generators, make_sets, sets
    from tests.test_cli import LOOP, tiny_zip

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("ran in the command's own process, not on the cluster")

    # Patched in this process only: the workers import their own, unpatched modules.
    monkeypatch.setattr(make_sets, "make_set", not_here)
    monkeypatch.setattr(generators, "train_generator", not_here)
    config = tmp_path / "loop.toml"
    config.write_text(LOOP.format(zip=tiny_zip(tmp_path / "tiny.zip")))
    assert main(["loop", str(config), "--runner", "ray", "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    [made] = sets.list_sets()
    assert f"set {made.id}: kept" in out and re.search(r"^add\b.*\s2/2", out, re.M)
    assert {r.status for r in runs.list_records()} == {"done"} and len(runs.list_records()) == 4
    assert main(["make-set", str(config), "--runner", "ray", "--new", "--per-class", "2"]) == 0  # make-set too
    assert len(sets.list_sets()) == 2


def test_the_sweep_names_the_node_of_a_worker_whose_heartbeat_went_stale() -> None:
    """A server restarted while a task ran: the worker's heartbeat stops, and the sweep marks its run honestly."""
    heartbeat.start()
    folder = heartbeat._folder
    assert folder is not None
    where = "node 10.0.0.7 (3f2a9c1d)"
    beat = {"host": "gpu-7", "pid": 4321, "role": "worker", "where": where, "started": 0.0, "time": time.time()}
    (folder / "gpu-7-4321.json").write_text(json.dumps(beat))
    cfg = runs.RunConfig(DatasetConfig(), train=ONE_EPOCH)
    runs.save_record(runs.RunRecord("on-gpu-7", cfg, "running", pid=4321, host="gpu-7"))
    assert runs.sweep() == []  # its worker still beats: the run goes on, whatever the server did meanwhile
    (folder / "gpu-7-4321.json").write_text(json.dumps({**beat, "time": time.time() - 61}))
    assert runs.sweep() == ["on-gpu-7"]
    record = runs.load_record("on-gpu-7")
    assert record.status == "interrupted" and record.error == f"the cluster worker running it stopped on {where}"
