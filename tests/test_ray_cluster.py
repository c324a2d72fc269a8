"""A real local Ray cluster: an experiment and a GAN run as Ray tasks on a worker node; a killed node's run resumes.

The cluster is ``ray start`` raylets on this machine: a head with no CPUs (it only schedules) and worker
nodes of 1 CPU, each with its own short temporary folder and its own process group, which the fixture
kills at the end (never a global ``ray stop``: other clusters may run here). The jobs go through the
engine's API with ``SYNTHLAB_RUNNER=ray``, as the app submits them; the workspace is this test's, shared
by every node because they all run here. Tens of seconds each on 2 cores, so marked slow.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from engine import experiments, jobs, runs, tasks  # after the skip: the Ray runner needs ray
from engine.config import DatasetConfig
from engine.datasets import LabDataset, build_dataset
from engine.synth import gan, generators
from engine.training import TrainConfig
from tests.ray_util import LocalCluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
NODE_ENV = {  # a short-lived private cluster: no token, no usage reports, one torch thread per task
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONPATH": str(ROOT),
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    """A head and one worker node of 1 CPU for this module's tests; this process joins it as the driver."""
    import ray

    saved = {k: os.environ.get(k) for k in NODE_ENV}
    os.environ.update({k: v for k, v in NODE_ENV.items() if k != "PYTHONPATH"})
    root = Path(tempfile.mkdtemp(prefix="ray-"))  # short: a node's Unix sockets live under it
    cluster = LocalCluster(root, {**os.environ, **NODE_ENV})
    try:
        cluster.start_head()
        cluster.add_worker("w1")
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def ray_runner(ray_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("SYNTHLAB_RUNNER", "ray")
    monkeypatch.setenv("SYNTHLAB_RAY_ADDRESS", ray_cluster.address)
    runner: Any = jobs.make_runner()  # a RayRunner (it has close())
    yield runner
    for snap in runner.list(events=False):  # a test that failed midway: nothing may outlive the cluster
        if snap.status not in jobs.FINISHED:
            runner.cancel(snap.id)
    for snap in runner.list(events=False):
        with contextlib.suppress(TimeoutError):
            runner.wait(snap.id, timeout=60)
    runner.close()


@pytest.fixture
def digits() -> LabDataset:
    return build_dataset(DatasetConfig())


def wait_group(runner: jobs.JobRunner, group: str, timeout: float) -> list[jobs.JobSnapshot]:
    deadline = time.monotonic() + timeout
    while True:
        snaps = runner.list(group=group, events=False)
        if all(s.status in jobs.FINISHED for s in snaps):
            return snaps
        assert time.monotonic() < deadline, [(s.title, s.status) for s in snaps]
        time.sleep(0.2)


def worker_ids(runner: jobs.JobRunner) -> set[str]:
    """The 8-hex-digit ids of the alive nodes that offer CPUs (the head offers none)."""
    info = runner.cluster()
    assert info is not None
    return {n.node_id[:8] for n in info.nodes if n.alive and n.cpus > 0}


def test_an_experiment_and_a_gan_run_as_ray_tasks_on_the_worker_node(
    ray_runner: jobs.JobRunner, digits: LabDataset
) -> None:
    # 1. The cluster as the runner sees it: the head (no CPUs) and one worker of 1 CPU.
    assert ray_runner.backend == "ray"
    info = ray_runner.cluster()
    assert info is not None and len(info.nodes) == 2 and all(n.alive for n in info.nodes)
    assert info.total_cpus == 1 and info.total_gpus == 0
    (worker,) = worker_ids(ray_runner)
    # 2. Two mixes × two seeds, as the Train page submits them.
    cfg = experiments.ExperimentConfig(
        dataset=digits.config,
        mixes=experiments.DEFAULT_MIXES[:2],
        train=TrainConfig(max_epochs=2, patience=0, device="cpu", precision="fp32"),
        seeds=(0, 1),
    )
    record = tasks.submit_experiment(ray_runner, cfg, digits, owner="me")
    snaps = wait_group(ray_runner, str(tasks.JobGroup(tasks.JobKind.EXPERIMENT, record.id)), timeout=600)
    assert [(s.status, s.error) for s in snaps] == [("done", "")] * 4
    assert all(re.fullmatch(rf"node [\d.]+ \({worker}\)", s.where) for s in snaps), [s.where for s in snaps]
    for snap in snaps:  # written by the worker process into the shared workspace, with the lab's writers
        rec = runs.load_record(snap.tag)
        assert rec.status == "done" and rec.epochs == 2 and rec.pid != os.getpid()
        assert runs.load_metrics(snap.tag) is not None and (runs.runs_dir() / snap.tag / "model.safetensors").is_file()
    summary = experiments.summarize(record.id, n_boot=200)
    assert {m.label for m in summary.mixes} == {"real", "oversample fill"}
    # 3. A conditional GAN for a few steps: trained on the worker, stored in the shared workspace.
    gan_cfg = gan.GanConfig(steps=12, width=8, batch_size=16, sample_every=6)
    job = tasks.submit_generator_training(ray_runner, gan_cfg, digits, owner="me")
    snap = ray_runner.wait(job, timeout=300)
    assert (snap.status, snap.error) == ("done", "")
    assert re.fullmatch(rf"node [\d.]+ \({worker}\)", snap.where), snap.where
    assert snap.result == generators.generator_id(gan_cfg, digits)
    assert [g["id"] for g in generators.list_generators(digits)] == [snap.result]
    assert any(getattr(e, "kind", "") == "step" for e in ray_runner.snapshot(job).events)  # its curve came back


def test_a_killed_worker_node_leaves_its_run_interrupted_and_resume_finishes_it(
    ray_cluster: LocalCluster, ray_runner: jobs.JobRunner, digits: LabDataset
) -> None:
    # 1. A second worker node, so the run has somewhere to resume once its node is killed.
    ray_cluster.add_worker("w2")
    deadline = time.monotonic() + 60
    while len(worker_ids(ray_runner)) < 2:
        assert time.monotonic() < deadline, "the second worker node did not join"
        time.sleep(0.5)
    epochs = 60
    cfg = experiments.ExperimentConfig(
        dataset=digits.config,
        mixes=experiments.DEFAULT_MIXES[:1],
        train=TrainConfig(max_epochs=epochs, patience=0, device="cpu", precision="fp32"),
        seeds=(0,),
    )
    # The runner's progress channel lives on the server's own node, never on a worker that may die.
    import ray

    channel_node = ray.get(ray_runner._channel.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()))
    assert channel_node == ray.get_runtime_context().get_node_id()
    record = tasks.submit_experiment(ray_runner, cfg, digits, owner="me")
    (_, _, run_id), job = record.run_ids[0], ray_runner.list(owner="me")[-1].id
    # 2. Once it has checkpointed two epochs and the panel knows its node, kill that node (raylet and workers).
    deadline = time.monotonic() + 300
    while runs.checkpoint_epoch(run_id) < 2 or not (snap := ray_runner.snapshot(job)).where:
        status = ray_runner.snapshot(job).status
        assert time.monotonic() < deadline and status in ("queued", "running"), f"no epoch checkpointed ({status})"
        time.sleep(0.05)
    where = snap.where
    assert re.fullmatch(r"node [\d.]+ \([0-9a-f]{8}\)", where), where
    victim = ray_cluster.node_named(where[-9:-1])
    assert victim in ("w1", "w2"), f"the run is on none of the worker nodes: {where}"
    ray_cluster.kill(victim, runs.load_record(run_id).pid)  # the node and the worker process running the run
    # 3. The run is interrupted, naming the node; at most one epoch of work is lost.
    snap = ray_runner.wait(job, timeout=180)
    assert snap.status == "interrupted" and where in snap.error, snap.error
    rec = runs.load_record(run_id)
    assert rec.status == "interrupted" and where in rec.error, rec.error
    trained, kept = len(runs.load_history(run_id)), runs.checkpoint_epoch(run_id)
    assert 2 <= kept <= trained <= kept + 1
    # 4. Resume continues from the checkpoint on the surviving node, to the end.
    again = tasks.submit_resume(ray_runner, run_id, digits, owner="me")
    assert ray_runner.snapshot(again).title.endswith(f"resumed after epoch {kept}")
    snap = ray_runner.wait(again, timeout=600)
    assert (snap.status, snap.error) == ("done", "")
    assert re.fullmatch(r"node [\d.]+ \([0-9a-f]{8}\)", snap.where) and snap.where != where
    rec = runs.load_record(run_id)
    assert rec.status == "done" and rec.epochs == epochs
    assert [int(row["epoch"]) for row in runs.load_history(run_id)] == list(range(1, epochs + 1))
