"""The process-wide job runner, who owns which jobs, and the live job panel.

The runner lives behind ``st.cache_resource`` (one per server process, shared by all sessions); the
``SYNTHLAB_RUNNER`` setting chooses it (:func:`engine.jobs.make_runner`: this process's threads, or Ray
tasks on a cluster, whose rows also say on which node each job runs). Creating it marks runs a previous
process left running as interrupted and starts the sweep that does the same every 20 s for processes
that stop meanwhile (a killed CLI run) and for generator trainings.
A session's jobs are found by its user's name (the login, or the one local user without accounts), so
they are found again after a page switch, a browser reload or in a second tab; after a restart the
panel reads the user's latest experiment from disk. The panel is a fragment that polls job snapshots
every 2 s while a job runs (:func:`poll_interval`); no worker thread ever calls Streamlit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots
from streamlit.runtime.scriptrunner import get_script_run_ctx

from engine import experiments, heartbeat, owners, runs, tasks
from engine.jobs import FINISHED, JobError, JobRunner, JobSnapshot, format_eta, make_runner
from engine.synth import sets
from engine.training import TrainEvent
from ui import auth
from ui.state import DATASET_KEY

STATUS_ICONS = {  # Streamlit's own icon font, so they render without system emoji fonts
    "queued": ":material/schedule:",
    "running": ":material/play_circle:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
    "stopped": ":material/pause_circle:",
    "interrupted": ":material/warning:",
}


@st.cache_resource(show_spinner=False)
def get_runner() -> JobRunner:
    """The server's job runner (the backend ``SYNTHLAB_RUNNER`` names); creating it starts this process's heartbeat
    and the sweep every 20 s."""
    heartbeat.start("app")
    runs.mark_interrupted()  # a run that claims this process was left by an earlier one with the same pid
    runner = make_runner()
    runs.sweep()
    runner.every(20, runs.sweep, "sweep")  # runs and generator trainings of stopped processes: interrupted
    return runner


def _session_actor() -> owners.Actor | None:
    """The acting user of a page run or fragment rerun on this thread: its session's user (None elsewhere)."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return None  # a job's thread or the CLI: they name their user themselves
    try:
        found = auth.user()
    except RuntimeError:  # no one logged in yet (the login page): someone who owns and sees nothing
        return owners.Actor("(not logged in)", admin=False)
    return owners.Actor(found.name, admin=found.role == "admin")


owners.set_resolver(_session_actor)


def owner_token() -> str:
    """The name of this session's user, who owns what the session makes (the engine acts as them in its page runs).

    Without accounts every browser on the machine is the one local user, so a second tab sees the same work.
    """
    found = auth.user()
    st.session_state["owner"] = found.name
    return found.name


def curves_figure(snaps: list[JobSnapshot]) -> go.Figure:
    """Loss and accuracy per epoch, one line per run (validation solid, training dotted)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)  # axis titles, not subplot titles: no collision
    for i, snap in enumerate(snaps):
        rows = [e.values for e in snap.events if isinstance(e, TrainEvent) and e.kind == "epoch"]
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        color = f"hsl({(i * 67) % 360}, 55%, 45%)"
        for col, key in ((1, "loss"), (2, "acc")):
            fig.add_scatter(
                x=epochs,
                y=[r[f"val_{key}"] for r in rows],
                name=snap.title,
                legendgroup=snap.id,
                line={"color": color},
                showlegend=col == 1,
                row=1,
                col=col,
            )
            fig.add_scatter(
                x=epochs,
                y=[r[f"train_{key}"] for r in rows],
                name=f"{snap.title} (train)",
                legendgroup=snap.id,
                line={"color": color, "dash": "dot"},
                showlegend=False,
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="cross-entropy loss", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", row=1, col=2)
    fig.update_layout(
        height=360,
        margin={"t": 50, "b": 10},
        title_text="Training curves (validation solid, training dotted)",
        legend_title_text="run",
        font={"size": 13},
    )
    return fig


def progress_text(snap: JobSnapshot) -> str:
    """A job's progress line: its place in the queue, its message with the time left, or how it ended."""
    if snap.status == "queued":
        return f"queued, place {snap.queue_position}"
    if snap.status != "running":
        last = snap.message.partition(" · about")[0]  # a finished job has no time left
        return snap.error or (f"stopped at {last}" if snap.status == "stopped" and last else last) or snap.status
    eta = snap.eta_seconds
    if " left" in snap.message or eta is None:  # generator training puts its own, from the pace of its steps
        return snap.message or "starting"
    return f"{snap.message} · {format_eta(eta)}" if snap.message else format_eta(eta)


@st.cache_data(show_spinner=False, max_entries=64)
def _latest_experiment_id(owner: str, stamp: int) -> str:
    """The id of ``owner``'s newest experiment on disk ("" for none); ``stamp`` (the folder's mtime) keys the cache."""
    for path in sorted(experiments.experiments_dir().glob("*.json"), reverse=True):
        try:
            record = experiments.load_experiment(path.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if owners.owner_of(record.owner) == owner:
            return record.id
    return ""


@st.cache_data(show_spinner=False, max_entries=64)
def _run_records(run_ids: tuple[str, ...], stamps: tuple[int, ...]) -> list[runs.RunRecord]:
    """The records of ``run_ids``; ``stamps`` (their folders' mtimes, which every rewrite changes) key the cache."""
    out = []
    for run_id in run_ids:
        try:
            out.append(runs.load_record(run_id))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def experiment_runs(exp_id: str) -> list[runs.RunRecord]:
    """The run records of experiment ``exp_id``, read again only when a run's folder changed."""
    try:
        record = experiments.load_experiment(exp_id)
    except (OSError, ValueError, KeyError, TypeError):
        return []
    ids = tuple(run_id for _, _, run_id in record.run_ids)
    return _run_records(ids, tuple(_stamp(runs.runs_dir() / run_id) for run_id in ids))


def interrupted_runs(records: list[runs.RunRecord], owner: str) -> None:
    """Interrupted runs with the reason, each with Resume (from its last checkpoint) and Re-run (from scratch)."""
    stopped = [r for r in records if r.status == "interrupted"]
    if not stopped:
        return
    st.warning(
        f"{len(stopped)} of {len(records)} runs were interrupted. Resume continues a run from its last finished "
        "epoch, with the same result as an uninterrupted run; Re-run trains it again from the start."
    )
    for record in stopped:
        epoch = runs.checkpoint_epoch(record.id)
        cols = st.columns([6, 1, 1])
        where = f"after epoch {epoch}" if epoch else "before its first epoch ended"
        cols[0].write(
            f"{STATUS_ICONS['interrupted']} {record.config.mix.label} · {experiments.unit_name(record.config.seed)} "
            f"· stopped {where}: {record.error or 'its process stopped'}"
        )
        resume = cols[1].button("Resume", key=f"resume-run-{record.id}", help="Continue from the last finished epoch")
        rerun = cols[2].button("Re-run", key=f"rerun-run-{record.id}", help="Train this run again from the start")
        if resume or rerun:
            try:
                tasks.submit_resume(
                    get_runner(), record.id, st.session_state.get(DATASET_KEY), owner=owner, from_start=rerun
                )
                st.toast("Queued: it appears with the experiment's other runs.")
            except (ValueError, sets.SetError) as err:
                st.error(f"Nothing started: {err}")


RUNNING_EVERY_S = 2.0  # a panel's pace while one of its jobs runs
QUEUED_EVERY_S = 3.0  # ... while they only wait in the queue


def poll_interval(owner: str, kind: tasks.JobKind) -> float | None:
    """How often a panel of ``owner``'s jobs of ``kind`` redraws: every 2 s while one runs, every 3 s while they
    only wait in the queue, never when none is left (an open tab then costs the server nothing).

    Each redraw costs the browser work however little changed (Streamlit draws the panel's elements again):
    with many people's browsers on one machine, every second was too often (docs/measured.md)."""
    snaps = get_runner().list(owner=owner, events=False)
    mine = [s for s in snaps if (group := tasks.JobGroup.parse(s.group)) is not None and group.kind is kind]
    if any(s.status == "running" for s in mine):
        return RUNNING_EVERY_S
    return QUEUED_EVERY_S if any(s.status == "queued" for s in mine) else None


def redraw_when_pace_changes(owner: str, kind: tasks.JobKind, every: float | None) -> None:
    """From inside a polling fragment: a whole-page rerun when its pace should change (a queued job started,
    the last one ended), so the next panel polls at the new pace, or not at all."""
    if every is not None and poll_interval(owner, kind) != every:
        st.rerun(scope="app")


def job_panel(owner: str) -> None:
    """The live job panel of the Train page, polled at the pace its jobs need (:func:`poll_interval`)."""
    every = poll_interval(owner, tasks.JobKind.EXPERIMENT)
    st.fragment(_job_panel, run_every=every)(owner, every)


CURVES_EVERY_S = 5.0  # while runs go on, the live curves are drawn again at most this often


def _curves(snaps: list[JobSnapshot]) -> go.Figure:
    """:func:`curves_figure`, built again when a run reported a new epoch, but while runs go on at most every
    :data:`CURVES_EVERY_S` (:func:`redraw_due`): the browser draws a changed plotly chart again, an unchanged
    one not. With this and the 2 s pace, an open Train tab following its runs costs the browser 0.16-0.18
    CPU-s per second instead of 0.50 (``python bench/browser_cpu.py``, last line)."""
    epochs = tuple(sum(isinstance(e, TrainEvent) and e.kind == "epoch" for e in s.events) for s in snaps)
    key = (tuple(s.id for s in snaps), epochs)
    settled = all(s.status in FINISHED for s in snaps)
    return live_figure("_curves_figure", key, lambda: curves_figure(snaps), settled=settled)


LiveKey = tuple[object, object]  # (what a live chart is of: its jobs; how far they have got)


def live_figure(slot: str, key: LiveKey, build: Callable[[], go.Figure], *, settled: bool) -> go.Figure:
    """A live chart's figure, kept in the session under ``slot`` and built again by ``build`` only when
    :func:`redraw_due` says so for ``key``."""
    cached = st.session_state.get(slot)
    now = time.monotonic()
    if cached is None or redraw_due(cached[0], cached[2], key, now, settled=settled):
        cached = (key, build(), now)
        st.session_state[slot] = cached
    figure: go.Figure = cached[1]
    return figure


def redraw_due(drawn: LiveKey, drawn_at: float, key: LiveKey, now: float, *, settled: bool) -> bool:
    """Whether a live chart drawn for ``drawn`` at ``drawn_at`` is drawn again for ``key`` at ``now``. At once
    when it is of other jobs (another experiment) or when every job has ended (the final curves are never
    held back); for news from the same jobs, once :data:`CURVES_EVERY_S` has passed; never without news."""
    if drawn[0] != key[0]:
        return True
    return drawn[1] != key[1] and (settled or now - drawn_at >= CURVES_EVERY_S)


def _job_panel(owner: str, every: float | None) -> None:
    """Progress, ETA, cancel buttons and live curves for this user's latest experiment, and its interrupted runs.

    After a restart the runner holds no jobs: the latest experiment is then read from disk, so its finished
    and interrupted runs are still shown, the interrupted ones with Resume and Re-run.
    """
    redraw_when_pace_changes(owner, tasks.JobKind.EXPERIMENT, every)
    runner = get_runner()
    mine = tasks.list_jobs(runner, tasks.JobKind.EXPERIMENT, owner=owner)  # not generator or gap jobs
    on_disk = _latest_experiment_id(owner, _stamp(experiments.experiments_dir()))
    parsed = tasks.JobGroup.parse(mine[-1].group) if mine else None
    exp_id = parsed.id if parsed is not None and parsed.id >= on_disk else on_disk  # ids start with the time
    if not exp_id:
        st.caption("No training jobs yet. Start an experiment above.")
        return
    group = str(tasks.JobGroup(tasks.JobKind.EXPERIMENT, exp_id))
    snaps = [s for s in mine if s.group == group]
    latest = {s.tag: s for s in snaps}  # a resumed run's newest job stands for it
    snaps = [s for s in snaps if latest[s.tag] is s]
    records = experiment_runs(exp_id)
    from_disk = [r for r in records if r.id not in latest]
    done = sum(r.status in runs.ENDED for r in from_disk) + sum(s.status in FINISHED for s in snaps)
    active = len(snaps) - sum(s.status in FINISHED for s in snaps)
    total = max(len(records), len(snaps))
    others = sum(s.status not in FINISHED for s in runner.list(events=False) if s.owner != owner)
    st.markdown(
        f"**Experiment {exp_id}** · {done}/{total} runs finished"
        + (f" · {others} job(s) from other users on this server" if others else "")
    )
    for snap in snaps:
        cols = st.columns([3, 6, 1])
        cols[0].write(f"{STATUS_ICONS.get(snap.status, '')} {snap.title}" + (f" · {snap.where}" if snap.where else ""))
        cols[1].progress(snap.progress, text=progress_text(snap))
        if snap.status not in FINISHED and cols[2].button("Cancel", key=f"cancel-{snap.id}"):
            try:
                tasks.cancel_job(runner, snap.id, owner=owner)
            except JobError as err:
                st.error(str(err))
    for record in from_disk:
        if record.status not in ("done", "interrupted"):  # done: counted above; interrupted: below, with buttons
            label = f"{record.config.mix.label} · {experiments.unit_name(record.config.seed)}"
            text = record.error or record.status
            st.write(f"{STATUS_ICONS.get(record.status, '')} {label}: {text}")
    interrupted_runs([r for r in records if r.id not in latest or latest[r.id].status in FINISHED], owner)
    if snaps:
        st.plotly_chart(_curves(snaps), key=f"curves-{group}")
    if not active and not any(r.status in (*runs.ACTIVE, "interrupted") for r in from_disk):
        st.success("All runs of this experiment have finished: see the Compare page.")
