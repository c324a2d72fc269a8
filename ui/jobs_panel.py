"""The process-wide job runner, who owns which jobs, and the live job panel.

The runner lives behind ``st.cache_resource`` (one per server process, shared by all sessions);
creating it marks runs a previous process left running as interrupted. A session's jobs are found
by an owner token kept in the URL (``?lab=...``), so they are found again after a page switch or a
browser reload. The panel is a fragment that polls job snapshots about once a second; no worker
thread ever calls Streamlit.
"""

from __future__ import annotations

import re
import uuid

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from engine import runs, tasks
from engine.jobs import FINISHED, JobError, JobRunner, JobSnapshot, format_eta
from engine.training import TrainEvent

TOKEN = re.compile(r"[0-9a-f]{12}")
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
    runs.mark_interrupted()
    return JobRunner()


def owner_token() -> str:
    """This browser's owner token: from the session, else the URL, else a new one (put in the URL)."""
    token = st.session_state.get("owner") or st.query_params.get("lab", "")
    if not TOKEN.fullmatch(str(token)):
        token = uuid.uuid4().hex[:12]
    st.session_state["owner"] = token
    if st.query_params.get("lab") != token:
        st.query_params["lab"] = token
    return str(token)


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


@st.fragment(run_every=1.0)
def job_panel(owner: str) -> None:
    """Progress, ETA, cancel buttons and live curves for this session's latest experiment."""
    runner = get_runner()
    mine = tasks.list_jobs(runner, tasks.JobKind.EXPERIMENT, owner=owner)  # not generator or gap jobs
    if not mine:
        st.caption("No training jobs from this browser yet. Start an experiment above.")
        return
    group = mine[-1].group
    parsed = tasks.JobGroup.parse(group)
    snaps = [s for s in mine if s.group == group]
    active = sum(s.status not in FINISHED for s in snaps)
    others = sum(s.status not in FINISHED for s in runner.list() if s.owner != owner)
    st.markdown(
        f"**Experiment {parsed.id if parsed else group}** · {len(snaps) - active}/{len(snaps)} runs finished"
        + (f" · {others} job(s) from other users on this server" if others else "")
    )
    for snap in snaps:
        cols = st.columns([3, 6, 1])
        cols[0].write(f"{STATUS_ICONS.get(snap.status, '')} {snap.title}")
        cols[1].progress(snap.progress, text=progress_text(snap))
        if snap.status not in FINISHED and cols[2].button("Cancel", key=f"cancel-{snap.id}"):
            try:
                tasks.cancel_job(runner, snap.id, owner=owner)
            except JobError as err:
                st.error(str(err))
    st.plotly_chart(curves_figure(snaps), key=f"curves-{group}")
    if not active:
        st.success("All runs of this experiment have finished: see the Compare page.")
