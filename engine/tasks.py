"""Every background job the lab submits: what it runs, its group, its lane.

Generator training, synthetic sets (from a stored generator or from Stable Diffusion), Stable
Diffusion previews, domain-gap scores and the runs of an experiment all go through the functions here;
each returns at once with the job's id (an experiment: its record). A job's group is a typed
:class:`JobGroup`, kept on the runner as a string (``"generate"``, ``"gap"``, ``"experiment:<id>"``)
that :meth:`JobGroup.parse` reads back. Heavy jobs queue on the lane of the device they run on. A job
stopped by a cancel raises :class:`~engine.jobs.Cancelled` and is recorded as cancelled: it creates no
set and no generator (a Stable Diffusion request keeps what it wrote, for Resume). Where this stops:
this is the only engine module that knows the job runner besides the runner itself (``jobs.py``); the
work is in ``synth/``, ``gap.py`` and ``runs.py``; pages submit and poll, they never run jobs.
Every heavy job is a :class:`~engine.jobs.Work`: a module-level function and its arguments, so that a
cluster backend (:mod:`engine.ray_backend`) can ship it to a worker with its dataset passed by reference;
a run's job also says how to mark the run when the process running it dies.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import gap, heartbeat, owners, runs, summaries, usage
from engine.datasets import ImageSet, LabDataset, build_dataset
from engine.device import pick_device
from engine.experiments import ExperimentConfig, ExperimentRecord, plan_experiment, split_inputs, unit_name
from engine.jobs import JobContext, JobError, JobRunner, JobSnapshot, Work, format_eta
from engine.synth import filters, generators, make_sets, sd_requests, sets, split_sets, stable_diffusion
from engine.synth.events import GeneratorEvent
from engine.training import TrainEvent


class JobKind(enum.StrEnum):
    """What a job is for; the panels show one kind each."""

    GENERATE = "generate"  # generator training, synthetic sets, Stable Diffusion requests and previews
    GAP = "gap"  # domain-gap scores of the Preprocess page
    EXPERIMENT = "experiment"  # the runs of one experiment


@dataclass(frozen=True)
class JobGroup:
    """A job's group: its kind and, for an experiment, the experiment's id."""

    kind: JobKind
    id: str = ""  # the experiment id; "" for the other kinds

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" if self.kind is JobKind.EXPERIMENT else str(self.kind)

    @classmethod
    def parse(cls, group: str) -> JobGroup | None:
        """The group a runner's group string stands for; None when no job of this module has it."""
        kind, _, group_id = group.partition(":")
        if kind not in tuple(JobKind) or (kind == JobKind.EXPERIMENT) != bool(group_id):
            return None
        return cls(JobKind(kind), group_id)


GENERATE, GAP = JobGroup(JobKind.GENERATE), JobGroup(JobKind.GAP)


def list_jobs(runner: JobRunner, kind: JobKind, *, owner: str | None = None) -> list[JobSnapshot]:
    """Jobs of ``kind`` (optionally of one owner), oldest first."""
    return [s for s in runner.list(owner=owner) if (g := JobGroup.parse(s.group)) is not None and g.kind is kind]


def is_experiment(group: str) -> bool:
    """Whether a runner's group string is an experiment's (other jobs: generators, sets, gap scores)."""
    parsed = JobGroup.parse(group)
    return parsed is not None and parsed.kind is JobKind.EXPERIMENT


def cancel_job(runner: JobRunner, job_id: str, *, owner: str, keep: bool = False, admin: bool = False) -> None:
    """Cancel a job (with ``keep``: stop it and keep what it has, where it can); an experiment's run that
    never started is recorded as cancelled on disk too. Only the job's owner may, or an ``admin``."""
    runner.cancel(job_id, owner=owner, admin=admin, keep=keep)
    snap = runner.snapshot(job_id)
    if snap.status == "cancelled" and snap.tag and is_experiment(snap.group):
        record = runs.load_record(snap.tag)
        if record.status == "queued":
            runs.save_record(dataclasses.replace(record, status="cancelled", finished=time.time()))


def _lane(device: str = "auto", precision: str = "auto") -> str:
    """The queue a heavy job waits in: one per device type ("auto" and "cpu" share one on a CPU machine).

    A device this machine lacks is no error here: the job fails when it starts, with a message naming it.
    """
    if device != "auto":
        return device
    return pick_device("auto", "fp32").device.type  # the device type alone decides the queue


# Generators and sets ---------------------------------------------------------------------------------


TRAINING_TITLES = ("train ", "resume ")  # how generator-training jobs' titles begin


def keeps_on_stop(snap: JobSnapshot) -> bool:
    """Whether a job can stop and keep what it has: generator training (the generator as it is at its last step)."""
    parsed = JobGroup.parse(snap.group)
    return parsed is not None and parsed.kind is JobKind.GENERATE and snap.title.startswith(TRAINING_TITLES)


class StepClock:
    """Time left from the pace of the last steps: "step 117 of 3000 · about 1 min 20 s left"."""

    WINDOW = 200  # steps the pace is measured over: recent enough to follow a change of load

    def __init__(self) -> None:
        self._seen: collections.deque[tuple[float, int]] = collections.deque(maxlen=self.WINDOW)

    def tick(self, step: int, total: int) -> str:
        """The progress line for ``step`` of ``total``, with the time left once a few steps are timed."""
        now = time.perf_counter()
        self._seen.append((now, step))
        (then, first), text = self._seen[0], f"step {step:,} of {total:,}"
        if step - first < 5 or now - then < 1.0:
            return text
        return f"{text} · {format_eta((now - then) / (step - first) * (total - step))}"


def submit_generator_training(
    runner: JobRunner, cfg: generators.GeneratorConfig, dataset: LabDataset, *, owner: str
) -> str:
    """Queue generator training (GAN or diffusion model), or the resume of a stopped one (same config);
    its events are loss rows, sample grids and warnings, its result the generator's id. *Stop and keep*
    (``cancel_job(..., keep=True)``) stores the generator as it is; *Cancel* throws the training away."""
    usage.check_disk(owner)
    job = Work(_train_generator, {"cfg": cfg, "dataset": dataset})
    tag = generators.generator_id(cfg, dataset)
    try:
        origin = generators.load_origin(tag)
    except ValueError as err:  # stored by a newer lab: refused in one line on the page, not a traceback
        raise JobError(str(err)) from err
    if origin is not None and generators.is_stopped(origin):
        title = f"resume {cfg.kind} from step {origin['steps_done']:,} of {cfg.steps:,}"
    else:
        title = f"train {cfg.kind} ({cfg.steps:,} steps)"
    return runner.submit(title, job, owner=owner, group=str(GENERATE), tag=tag, lane=_lane())


def _train_generator(ctx: JobContext, cfg: generators.GeneratorConfig, dataset: LabDataset) -> str:
    clock = StepClock()

    def on_event(event: GeneratorEvent) -> None:
        if event.kind == "step":
            ctx.set_progress(event.step / max(1, event.total_steps), clock.tick(event.step, event.total_steps))
            if event.step % 10 == 0:  # keep the curve, not every step
                ctx.emit(event)
        else:
            ctx.emit(event)

    return generators.train_generator(
        cfg, dataset, on_event=on_event, should_stop=ctx.should_stop, keep_on_stop=ctx.keep_on_stop
    )


def submit_generation(runner: JobRunner, cfg: make_sets.GenerateConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue the making of a synthetic set from a stored generator; its result is the set's info."""
    usage.check_disk(owner)
    job = Work(_make_set, {"cfg": cfg, "dataset": dataset})
    amount = f"{cfg.per_class}/class" if cfg.per_class else "fill to balance"
    title = f"generate {amount} with {cfg.generator}"
    return runner.submit(title, job, owner=owner, group=str(GENERATE), tag=cfg.generator, lane=_lane())


def _make_set(ctx: JobContext, cfg: make_sets.GenerateConfig, dataset: LabDataset) -> sets.SetInfo:
    return make_sets.make_set(cfg, dataset, on_progress=ctx.set_progress, should_stop=ctx.should_stop)


def submit_split_set(runner: JobRunner, set_id: str, dataset: LabDataset, *, owner: str) -> str:
    """Queue the making of a set like ``set_id`` for another split (``dataset``); its result is the new set's id."""
    usage.check_disk(owner)
    job = Work(_split_set, {"set_id": set_id, "dataset": dataset})
    title = f"set like {set_id} for split seed {dataset.config.split.seed}"
    return runner.submit(title, job, owner=owner, group=str(GENERATE), tag=set_id, lane=_lane())


def _split_set(ctx: JobContext, set_id: str, dataset: LabDataset) -> str:
    def on_event(event: GeneratorEvent) -> None:
        if event.kind == "step":
            ctx.set_progress(
                event.step / max(1, event.total_steps), f"generator step {event.step} of {event.total_steps}"
            )

    return split_sets.make_split_set(
        set_id, dataset, on_progress=ctx.set_progress, on_event=on_event, should_stop=ctx.should_stop
    )


def submit_sd_generation(runner: JobRunner, cfg: stable_diffusion.SDConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue a Stable Diffusion set; its result is the set's info. A fulfilled request is served at once."""
    usage.check_disk(owner)
    job = Work(_sd_set, {"cfg": cfg, "dataset": dataset})
    amount = f"{cfg.per_class}/class" if cfg.per_class else "fill to balance"
    with owners.acting_as(owner):  # requests are keyed per user: the key the job itself will use
        cached = sd_requests.cached_set(cfg, dataset) is not None  # served at once, not queued behind heavy jobs
        key = sd_requests.request_key(cfg, dataset)
    return runner.submit(
        f"Stable Diffusion {cfg.mode}: {amount} with {Path(cfg.model).name}",
        job,
        owner=owner,
        group=str(GENERATE),
        tag=key,  # the unfinished-requests list keeps its buttons off meanwhile
        lane=_lane(cfg.device),
        heavy=not cached,
    )


def _sd_set(ctx: JobContext, cfg: stable_diffusion.SDConfig, dataset: LabDataset) -> sets.SetInfo:
    return make_sets.make_sd_set(cfg, dataset, on_progress=ctx.set_progress, should_stop=ctx.should_stop)


def submit_sd_preview(runner: JobRunner, cfg: stable_diffusion.SDConfig, dataset: LabDataset, *, owner: str) -> str:
    """Queue a one-image-per-class preview; its result is {class name: uint8 (C, R, R)}."""
    job = Work(_sd_preview, {"cfg": cfg, "dataset": dataset})
    title = f"Stable Diffusion preview with {Path(cfg.model).name}"
    return runner.submit(title, job, owner=owner, group=str(GENERATE), tag="preview", lane=_lane(cfg.device))


def _sd_preview(ctx: JobContext, cfg: stable_diffusion.SDConfig, dataset: LabDataset) -> dict[str, np.ndarray]:
    return stable_diffusion.preview(cfg, dataset, should_stop=ctx.should_stop)


# Gap scores ------------------------------------------------------------------------------------------


def submit_gap_score(
    runner: JobRunner,
    dataset: LabDataset,
    sides: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    owner: str,
    presets: str = "",
) -> str:
    """Queue the domain-gap scores and feature distances; ``sides`` maps "before"/"after" to uint8 (real,
    synthetic) images. Its result is :func:`~engine.gap.gap_report`'s table."""
    job = Work(_gap_score, {"dataset": dataset, "sides": sides})
    title = f"domain gap ({presets})" if presets else "domain gap"
    return runner.submit(title, job, owner=owner, group=str(GAP), tag="gap", lane=_lane())


def _gap_score(
    ctx: JobContext, dataset: LabDataset, sides: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, dict[str, float]]:
    ctx.set_progress(0.05, "training the real-data classifier for features")
    reference = filters.reference_classifier(dataset, seed=0, should_stop=ctx.should_stop)
    return gap.gap_report(reference, sides, seed=0, on_progress=ctx.set_progress, should_stop=ctx.should_stop)


# Experiments -----------------------------------------------------------------------------------------


def submit_experiment(
    runner: JobRunner,
    cfg: ExperimentConfig,
    dataset: LabDataset,
    *,
    owner: str,
    synthetic: Callable[[str], ImageSet] | None = None,
) -> ExperimentRecord:
    """Plan the experiment and queue one heavy job per run; returns the record at once.

    The synthetic sets the mixes name are loaded first, once (a set made for another split is refused
    before anything is planned). Each job reports every training event and its progress (steps done /
    steps if no early stop). An experiment with more runs than ``owner`` has room for on the runner is
    refused whole (:class:`~engine.jobs.LimitReached`) before anything is loaded or saved.
    """
    runner.check_room(owner, len(cfg.run_configs()), what="this experiment", fewer="choose fewer mixes or seeds")
    usage.check_disk(owner)
    inputs = split_inputs(cfg, dataset, synthetic)  # with repeated splits, every split's dataset and sets
    record = plan_experiment(cfg, dataset.key)
    group = str(JobGroup(JobKind.EXPERIMENT, record.id))
    lane = _lane(cfg.train.device, cfg.train.precision)
    for label, seed, run_id in record.run_ids:
        run_cfg = runs.load_record(run_id).config
        data, pools = inputs[run_cfg.dataset.split.seed]
        job = _run_job(run_id, run_cfg, data, pools.get(run_cfg.mix.synthetic_set), record.id)
        runner.submit(f"{label} · {unit_name(seed)}", job, owner=owner, group=group, tag=run_id, lane=lane)
    return record


def _run_job(
    run_id: str,
    run_cfg: runs.RunConfig,
    dataset: LabDataset,
    pool: ImageSet | None,
    experiment: str,
    *,
    resume: bool = False,
) -> Work:
    """One run as a job; when the process running it dies, the server marks the run interrupted, and when it
    ends, the server computes its experiment's results for the Compare page a moment later."""
    kwargs = {"run_id": run_id, "cfg": run_cfg, "dataset": dataset, "pool": pool, "experiment": experiment}
    lost = functools.partial(runs.mark_lost, run_id)
    ended = functools.partial(summaries.refresh_soon, experiment) if experiment else None
    return Work(_execute_run, {**kwargs, "resume": resume}, lost=lost, ended=ended)


def _execute_run(
    ctx: JobContext,
    run_id: str,
    cfg: runs.RunConfig,
    dataset: LabDataset,
    pool: ImageSet | None,
    experiment: str,
    resume: bool,
) -> runs.RunRecord:
    return runs.execute_run(
        run_id,
        cfg,
        dataset,
        synthetic=pool,
        experiment=experiment,
        on_event=_training_reporter(ctx),
        should_stop=ctx.should_stop,
        resume=resume,
    )


def _training_reporter(ctx: JobContext) -> Callable[[TrainEvent], None]:
    """A run's training events to its job: progress on every step, the rest kept for the live curves."""

    def on_event(event: TrainEvent) -> None:
        if event.kind == "step":  # progress only: a long run has hundreds of thousands of steps
            ctx.set_progress(event.step / max(1, event.total_steps))
            return
        ctx.emit(event)
        if event.kind == "epoch":
            ctx.set_progress(
                event.step / max(1, event.total_steps),
                f"epoch {event.epoch}: val acc {event.values['val_acc']:.3f}",
            )

    return on_event


def submit_resume(
    runner: JobRunner, run_id: str, dataset: LabDataset | None, *, owner: str, from_start: bool = False
) -> str:
    """Queue an interrupted run again in its experiment's group: from its last checkpoint (Resume), or with
    ``from_start`` from the beginning (Re-run); returns the job id.

    ``dataset`` is the session's; a run on another split (repeated splits) builds its own. The synthetic
    set its mix names is loaded now, so a deleted set is refused before anything is queued. The record
    reads ``queued`` until the job starts, so a second Resume is not offered meanwhile.
    """
    record = runs.load_record(run_id)
    owners.check_can_change(record.owner, f"the run {run_id!r}", "resume or re-run")
    if record.status != "interrupted" or not record.experiment:
        raise ValueError(f"run={run_id!r} is {record.status}: only an interrupted run of an experiment is resumed")
    cfg = record.config
    runner.check_room(owner, 1, what="this run", fewer="resume it later")
    data = dataset if dataset is not None and dataset.config == cfg.dataset else build_dataset(cfg.dataset)
    pool = sets.load_set(cfg.mix.synthetic_set) if cfg.mix.synthetic_set else None
    epoch = 0 if from_start else runs.checkpoint_epoch(run_id)
    runs.save_record(dataclasses.replace(record, status="queued", pid=os.getpid(), host=heartbeat.host()))
    job = _run_job(run_id, cfg, data, pool, record.experiment, resume=not from_start)

    how = "again from the start" if from_start else (f"resumed after epoch {epoch}" if epoch else "resumed")
    title = f"{cfg.mix.label} · {unit_name(cfg.seed)} · {how}"
    group = str(JobGroup(JobKind.EXPERIMENT, record.experiment))
    lane = _lane(cfg.train.device, cfg.train.precision)
    return runner.submit(title, job, owner=owner, group=group, tag=run_id, lane=lane)
