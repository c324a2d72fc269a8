"""The CLI's heavy work on a Ray cluster (``--runner ray``): submit it through the job runner, follow it.

``python -m engine experiment|loop|generate|make-set ... --runner ray`` runs an experiment's runs, a
generator's training and the making of sets (a loop's too, on every split) as Ray tasks through
:class:`~engine.ray_backend.RayRunner`, as many at once as the cluster has CPUs for, and follows them here
with a progress line; the table printed afterwards is the one the threads give, read from the run records
the tasks wrote. One person's command is not held to a shared server's per-user job limit. Ctrl-C asks every
job to stop (a run keeps nothing, as with threads) and waits a little for them. Where this stops: which
cluster is joined is :func:`engine.ray_backend.connect`'s; what is printed is :mod:`engine.cli_output`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine import experiments, owners, tasks
from engine.cli_output import Progress
from engine.datasets import ImageSet, LabDataset
from engine.jobs import FINISHED, Cancelled, JobRunner, JobSnapshot
from engine.synth import generators, make_sets, sets

POLL_S = 0.5
STOP_WAIT_S = 30.0  # after Ctrl-C, how long the jobs get to stop before the command exits
_runner: JobRunner | None = None
_joined = False  # whether this command joined the cluster (else the process had joined it before)


def runner() -> JobRunner:
    """The CLI's Ray runner, made once per command (``SYNTHLAB_RAY_ADDRESS``; unset: a local Ray)."""
    global _runner, _joined
    if _runner is None:
        import ray

        from engine.ray_backend import RayRunner

        _joined = not ray.is_initialized()
        _runner = RayRunner(per_user_cap=False)  # one person's command: a whole experiment at once, as with threads
    return _runner


def close() -> None:
    """End the command's runner; leave the cluster when this command joined it (a local Ray it started stops)."""
    global _runner
    if _runner is None:
        return
    from engine.ray_backend import RayRunner, disconnect

    done, _runner = _runner, None
    if isinstance(done, RayRunner):
        done.close()
    if _joined:
        disconnect()


def _follow(run: JobRunner, ids: list[str], on_poll: Callable[[list[JobSnapshot]], None]) -> list[JobSnapshot]:
    """Poll the jobs until all have finished; on Ctrl-C ask them to stop and wait up to STOP_WAIT_S for them."""
    try:
        while True:
            snaps = [run.snapshot(i) for i in ids]
            on_poll(snaps)
            if all(s.status in FINISHED for s in snaps):
                return snaps
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for job_id in ids:
            tasks.cancel_job(run, job_id, owner=owners.owner_name(), admin=True)
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and any(run.snapshot(i).status not in FINISHED for i in ids):
            time.sleep(POLL_S)
        raise


def experiment(
    cfg: experiments.ExperimentConfig, dataset: LabDataset, synthetic: Callable[[str], ImageSet]
) -> experiments.ExperimentRecord:
    """Run an experiment's runs as cluster tasks; returns its record once every run has ended."""
    run = runner()
    record = tasks.submit_experiment(run, cfg, dataset, owner=owners.owner_name(), synthetic=synthetic)
    ids = [s.id for s in run.list(group=str(tasks.JobGroup(tasks.JobKind.EXPERIMENT, record.id)), events=False)]
    progress = Progress("runs")

    def on_poll(snaps: list[JobSnapshot]) -> None:
        done = sum(s.status in FINISHED for s in snaps)
        running = [s for s in snaps if s.status == "running"]
        nodes = len({s.where for s in running if s.where})
        where = f" on {nodes} node{'s' * (nodes != 1)}" if nodes else ""
        detail = f"[{done}/{len(snaps)} ended] {len(running)} running{where}"
        progress.update(sum(s.progress if s.status != "queued" else 0.0 for s in snaps) / len(snaps), detail)

    _follow(run, ids, on_poll)
    progress.finish(f"{len(record.run_ids)} runs of experiment {record.id} on the cluster")
    return record


def generator(cfg: generators.GeneratorConfig, dataset: LabDataset) -> tuple[str, bool]:
    """Train (or reuse) a generator as a cluster task: (its id, whether it was reused)."""
    reused = generators.load_origin(generators.generator_id(cfg, dataset)) is not None
    job_id = tasks.submit_generator_training(runner(), cfg, dataset, owner=owners.owner_name())
    return str(_one(job_id, "generator training")), reused


def _one(job_id: str, title: str) -> object:
    """Follow one job with a progress line; its result, or the reason it did not finish as an error."""
    run = runner()
    progress = Progress(title)
    (snap,) = _follow(run, [job_id], lambda snaps: progress.update(snaps[0].progress, snaps[0].message))
    if snap.status == "cancelled":
        raise Cancelled(snap.error or f"the {title} was cancelled")
    if snap.status != "done":
        raise RuntimeError(snap.error or f"the {title} ended {snap.status}")
    return snap.result


def make_set(request: make_sets.GenerateConfig, dataset: LabDataset) -> sets.SetInfo:
    """Make a judged synthetic set as a cluster task; returns its info."""
    job_id = tasks.submit_generation(runner(), request, dataset, owner=owners.owner_name())
    info = _one(job_id, "set")
    assert isinstance(info, sets.SetInfo)
    return info


def split_set(set_id: str, dataset: LabDataset) -> str:
    """Make the set like ``set_id`` for another split (``dataset``) as a cluster task; returns the new set's id."""
    job_id = tasks.submit_split_set(runner(), set_id, dataset, owner=owners.owner_name())
    return str(_one(job_id, f"set for split seed {dataset.config.split.seed}"))
