"""Generate page helpers: the live job panel and the set browser (the forms are in ``ui/generator_forms.py``).

The panel polls job snapshots from a fragment; the browser shows a stored synthetic set per class with
filter scores and lets images be rejected or restored by hand.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import exports, owners, tasks
from engine.datasets import LabDataset
from engine.jobs import FINISHED, JobError, JobSnapshot
from engine.synth import gan, quality, sets
from engine.synth.events import GeneratorEvent
from engine.synth.filters import WEAK_RECALL
from ui.figures import grid_figure, split_grid, tile
from ui.jobs_panel import (
    STATUS_ICONS,
    get_runner,
    live_figure,
    poll_interval,
    progress_text,
    redraw_when_pace_changes,
)
from ui.state import DATASET_KEY

LOSS_WORDS = {
    "d_loss": "discriminator loss",
    "g_loss": "generator loss",
    "gp": "gradient penalty",
    "loss": "denoising loss",
}


def _samples_figure(grid: np.ndarray, step: int) -> go.Figure:
    """A generator's samples at ``step`` (one row per class, the same noise each time) as a labelled grid."""
    rows = split_grid(grid, gan.SAMPLES_PER_CLASS)
    return grid_figure(rows, _row_names(len(rows)), f"Samples at step {step:,} (the same noise each time)")


def _loss_figure(rows: list[dict[str, float]]) -> go.Figure:
    fig = go.Figure()
    for key, words in LOSS_WORDS.items():
        if rows and key in rows[0]:
            fig.add_scatter(x=[r["step"] for r in rows], y=[r[key] for r in rows], name=words, mode="lines")
    fig.update_layout(
        height=300,
        title="Generator training losses",
        xaxis_title="training step",
        yaxis_title="loss (no unit)",
        legend={"orientation": "h", "y": -0.3},
        margin={"t": 40, "b": 10},
    )
    return fig


def _row_names(rows: int) -> list[str]:
    """The session dataset's class names for a sample grid of ``rows`` rows (one per class), else row numbers."""
    dataset = st.session_state.get(DATASET_KEY)
    names = list(dataset.class_names) if dataset is not None else []
    return names if len(names) == rows else [f"row {i + 1}" for i in range(rows)]


def _stop_buttons(column: Any, snap: JobSnapshot, owner: str) -> None:
    """Cancel (throw the job's work away) and, for generator training, Stop and keep."""
    keep = snap.status == "running" and tasks.keeps_on_stop(snap)
    if keep and column.button(
        "Stop and keep",
        key=f"keep-{snap.id}",
        help="Stop at the next step and store the generator as it is: usable for sets, and Resume continues it",
    ):
        _cancel(snap.id, owner, keep=True)
    if column.button("Cancel", key=f"cancel-{snap.id}", help="Stop and throw this job's work away"):
        _cancel(snap.id, owner, keep=False)


def _cancel(job_id: str, owner: str, *, keep: bool) -> None:
    try:
        tasks.cancel_job(get_runner(), job_id, owner=owner, keep=keep)
    except JobError as err:
        st.error(str(err))


def generate_panel(owner: str) -> None:
    """The live panel of the Generate page, polled at the pace its jobs need (every 2 s while one runs)."""
    every = poll_interval(owner, tasks.JobKind.GENERATE)
    st.fragment(_generate_panel, run_every=every)(owner, every)


def _generate_panel(owner: str, every: float | None) -> None:
    """This user's generator jobs: progress, cancel, live losses, the latest sample grid, warnings."""
    redraw_when_pace_changes(owner, tasks.JobKind.GENERATE, every)
    runner = get_runner()
    jobs = tasks.list_jobs(runner, tasks.JobKind.GENERATE, owner=owner)[-4:]
    if not jobs:
        st.caption("No generator jobs yet.")
        return
    done = {j.id for j in jobs if j.status in ("done", "stopped")}
    seen = st.session_state.get("generate_done")
    st.session_state["generate_done"] = done
    if seen is not None and done - seen:  # a new generator or set: redraw the forms and the set browser
        st.rerun(scope="app")
    for snap in reversed(jobs):
        cols = st.columns([4, 6, 2])
        cols[0].write(f"{STATUS_ICONS.get(snap.status, '')} {snap.title}")
        cols[1].progress(snap.progress, text=progress_text(snap))
        if snap.status not in FINISHED:
            _stop_buttons(cols[2], snap, owner)
        if snap.status == "stopped" and isinstance(snap.result, str):
            st.info(
                f"Stopped and kept: generator {snap.result} is stored as it was at its last step and can make "
                "sets now; Resume (above) trains it on to its planned steps."
            )
        events = [e for e in snap.events if isinstance(e, GeneratorEvent)]
        if events and (snap is jobs[-1] or snap.status == "running"):
            rows = [{"step": e.step, **e.values} for e in events if e.kind == "step"]
            grids = [e for e in events if e.kind == "samples" and e.grid is not None]
            left, right = st.columns([3, 2])
            settled = snap.status in FINISHED
            losses = live_figure(f"_loss-{snap.id}", (snap.id, len(rows)), partial(_loss_figure, rows), settled=settled)
            left.plotly_chart(losses, key=f"loss-{snap.id}")
            if grids and (latest := grids[-1].grid) is not None:
                step = grids[-1].step
                samples = partial(_samples_figure, latest, step)
                grid = live_figure(f"_grid-{snap.id}", (snap.id, step), samples, settled=settled)
                right.plotly_chart(grid, key=f"grid-{snap.id}")
            for warning in {e.message for e in events if e.kind == "warning"}:
                st.warning(warning)
        if isinstance(snap.result, dict) and snap.result:  # a Stable Diffusion preview: one image per class
            st.image([tile(im) for im in snap.result.values()], caption=list(snap.result))
        if isinstance(snap.result, sets.SetInfo):
            st.success(
                f"Stored set {snap.result.id}: kept {sum(snap.result.counts_kept):,} of "
                f"{sum(snap.result.counts_total):,} images. Choose it on the Train page."
            )


def short_set_notice(info: sets.SetInfo, records: list[sets.ImageRecord]) -> None:
    """For a set with fewer images than asked: which classes, the honest ways out, and what a lower filter costs."""
    wanted = info.config.get("wanted") or []
    short = [c for c, n in enumerate(wanted) if n and info.counts_kept[c] < n]
    if not short:
        return
    names = "; ".join(f"class {info.class_names[c]!r}: {info.counts_kept[c]} of {wanted[c]} images" for c in short)
    st.warning(
        f"This set has fewer images than asked for ({names}). It still feeds every mix on the Train page: "
        "a mix takes what the set has, and the controls are matched to the same counts. For a fuller set, "
        "train the generator for more steps, generate again with more candidates per image, or ask for fewer "
        "images per class."
    )
    if info.config.get("given_up"):
        st.warning(
            f"No candidate of class {', '.join(map(repr, info.config['given_up']))} passed the filter among the first "
            "thousands: the generator does not draw it recognisably yet. Training longer is the way out."
        )
    settings = info.config.get("generate") or info.config.get("stable_diffusion") or {}
    threshold = float(settings.get("threshold", 0.0))
    options = quality.lower_filter_options(records, wanted, threshold)
    if not options:
        return
    rows = {"filter": [f"{threshold:g} (this set)"] + [f"{o.threshold:g}" for o in options]}
    for c in short:
        name = info.class_names[c]
        rows[f"{name}: images"] = [info.counts_kept[c]] + [o.kept[c] for o in options]
        rows[f"{name}: labels right (expected)"] = ["—"] + [
            "—" if o.confidence[c] is None else f"{o.confidence[c]:.0%}" for o in options
        ]
    st.caption(
        "A lower filter keeps more of the candidates already drawn, at a price: the real-data classifier is less "
        "sure their labels are right. Expected right labels = its mean confidence in the intended class; a wrong "
        "label teaches the classifier the wrong thing."
    )
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def _share(value: float | None) -> str:
    """A share in [0, 1] as a whole percentage for a table; a dash when it was not measured."""
    return "—" if value is None or value != value else f"{value:.0%}"


def set_browser(dataset: LabDataset) -> None:
    """Choose a stored set: counts, quality per class, a gallery with scores, reject/restore, delete."""
    stored = sets.list_sets(dataset.key)
    if not stored:
        st.caption("No synthetic sets for this dataset yet.")
        return
    # Keyed, with labels that do not change as images are rejected: the choice stays put after a save.
    labels = {s.id: f"{s.name} · {s.id}" for s in stored}
    set_id = st.selectbox("Synthetic set", list(labels), format_func=labels.__getitem__, key="browse_set")
    info = sets.load_info(set_id)
    records = sets.load_manifest(set_id)
    short_set_notice(info, records)
    table = pd.DataFrame({"class": info.class_names, "generated": info.counts_total, "kept": info.counts_kept})
    judge = info.config.get("judge")
    if judge:  # the filter's decisions on a class mean only as much as the judge knows that class
        table["judge recall on real images"] = [f"{r:.0%}" if r == r else "—" for r in judge["val_recall"]]
        st.caption(
            f"Judge: {judge['name']}, balanced accuracy {judge['balanced_accuracy']:.0%} on real validation images."
        )
        weak = [n for n, r in zip(info.class_names, judge["val_recall"], strict=True) if not r >= WEAK_RECALL]
        if weak:
            st.warning(
                f"The filter's judge recognises fewer than {WEAK_RECALL:.0%} of the real validation images of class "
                f"{', '.join(map(repr, weak))}: its keep or reject decisions on that class mean little."
            )
    per_class = {q["name"]: q for q in info.quality.get("per_class", [])}
    table["label fidelity"] = [_share(per_class.get(n, {}).get("label_fidelity")) for n in info.class_names]
    table["learns-from-synthetic recall"] = [_share(per_class.get(n, {}).get("tstr_recall")) for n in info.class_names]
    realism = info.quality.get("realism")
    if realism:
        table["looks real (precision)"] = [_share(v) for v in realism["precision"]]
        table["covers the real variety (recall)"] = [_share(v) for v in realism["recall"]]
    st.dataframe(table, hide_index=True)
    if realism and realism.get("frechet") is not None:
        st.caption(
            f"In the features of a pretrained network: precision = share of a class's synthetic images that lie "
            f"among its real ones, recall = share of its real images that the synthetic ones reach. Fréchet "
            f"distance of the whole set to the real training images: {realism['frechet']:,.1f} (0 = the same "
            "distribution; compare sets of similar size only)."
        )
    st.caption(
        "Judge recall: share of a class's real validation images that the filter's classifier (trained "
        "class-balanced on real images only) recognises. Label fidelity: share of a class's synthetic images it "
        "assigns to that class. Learns-from-synthetic recall: recall on the real test images of a classifier "
        "trained on the synthetic set alone (does the set teach the class?)."
    )
    present = sorted({r.class_name for r in records}, key=info.class_names.index)
    name = st.selectbox("Gallery class", present)
    chosen = [r for r in records if r.class_name == name][:48]
    folder = sets.sets_dir() / set_id  # only the images on show are read, not the whole set
    st.image(
        [tile(sets.read_png(folder / r.file, info.channels)) for r in chosen],
        caption=[f"{'✓' if r.kept else '✗'} {r.score:.2f}" if r.score is not None else "" for r in chosen],
    )
    edited = st.data_editor(
        pd.DataFrame(
            {
                "file": [r.file for r in chosen],
                "score": [r.score for r in chosen],
                "kept": [r.kept for r in chosen],
                "reason": [r.reason for r in chosen],
                "prompt": [r.details.get("prompt", "") for r in chosen],
                "source": [r.details.get("source", "") for r in chosen],
            }
        ),
        disabled=["file", "score", "reason", "prompt", "source"],
        hide_index=True,
        key=f"edit-{set_id}-{name}",
    )
    changed = [(f, k) for f, k, r in zip(edited["file"], edited["kept"], chosen, strict=True) if bool(k) != r.kept]
    info = sets.load_info(set_id)
    mine = owners.current().admin or owners.owner_of(info.owner) == owners.owner_name()
    if changed and mine and st.button("Save the kept / rejected choices", key="save_kept"):
        for keep in (True, False):
            files = [f for f, k in changed if bool(k) == keep]
            if files:
                sets.set_kept(set_id, files, keep, reason="" if keep else "rejected by hand")
        st.rerun()
    if not mine:
        st.caption(f"Shared by {info.owner}: you can train on it and download it; only its owner can change it.")
    elif (
        st.toggle(
            "Share with everyone on this server",
            info.shared,
            key=f"share_set-{set_id}",
            help="Every user then sees this set and can train on it (read-only). Off by default.",
        )
        != info.shared
    ):
        sets.set_shared(set_id, not info.shared)
        st.rerun()
    st.download_button(
        "Download the set (zip of class folders with its manifest)",
        lambda: exports.set_zip(set_id),  # built when clicked, not on every rerun
        f"synthetic-{set_id}.zip",
        "application/zip",
        key=f"download_set-{set_id}",
    )
    if (
        mine
        and st.checkbox(f"Delete set {set_id}", key=f"confirm_delete-{set_id}")
        and st.button("Delete now", key="delete_set")
    ):
        sets.delete_set(set_id)
        st.rerun()
