"""Generate page helpers: generator and generation forms, the live job panel, and the set browser.

Forms return engine configs; the panel polls job snapshots from a fragment; the browser shows a
stored synthetic set per class with filter scores and lets images be rejected or restored by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import tasks
from engine.datasets import LabDataset
from engine.jobs import FINISHED, JobError
from engine.synth import ddpm, gan, make_sets, quality, sets
from engine.synth.events import GeneratorEvent
from engine.synth.filters import WEAK_RECALL
from ui.figures import tile
from ui.jobs_panel import STATUS_ICONS, get_runner

KIND_LABELS = {"cgan": "Conditional GAN (projection discriminator)", "wgan-gp": "WGAN-GP (gradient penalty)"}


def ddpm_form(dataset: LabDataset) -> ddpm.DdpmConfig | None:
    """Small diffusion model settings; returns a config when Train is pressed."""
    d = ddpm.DdpmConfig()
    with st.form("ddpm_form"):
        st.caption(
            "A class-conditional UNet (diffusers UNet2DModel) trained with the DDPM loss on this training split "
            f"({dataset.resolution} px; the side must be a multiple of 4), sampled with DDIM and classifier-free "
            "guidance."
        )
        cols = st.columns(4)
        steps = cols[0].number_input("Steps", 1, 1_000_000, d.steps, step=500, key="ddpm_steps")
        width = cols[1].number_input("Width (multiple of 8)", 8, 256, d.width, step=8, key="ddpm_width")
        batch = cols[2].number_input("Batch size", 2, 4096, d.batch_size, key="ddpm_batch")
        seed = cols[3].number_input("Seed", 0, 2**31 - 1, d.seed, key="ddpm_seed")
        cols = st.columns(4)
        lr = cols[0].number_input("Learning rate", 1e-6, 1e-2, d.lr, format="%.5f")
        p_uncond = cols[1].number_input("Label dropout (for guidance)", 0.0, 0.9, d.p_uncond)
        sample_steps = cols[2].number_input("DDIM steps for the sample grids", 1, 1000, d.sample_steps)
        guidance = cols[3].number_input("Guidance for the sample grids", 0.0, 20.0, d.guidance)
        if not st.form_submit_button("Train diffusion model", type="primary"):
            return None
    return ddpm.DdpmConfig(
        width=int(width),
        steps=int(steps),
        batch_size=int(batch),
        lr=float(lr),
        p_uncond=float(p_uncond),
        sample_steps=int(sample_steps),
        guidance=float(guidance),
        seed=int(seed),
    )


def gan_form(dataset: LabDataset) -> gan.GanConfig | None:
    """Generator settings; returns a config when Train is pressed."""
    d = gan.GanConfig()
    with st.form("gan_form"):
        kind = st.selectbox("Generator", gan.GAN_KINDS, format_func=KIND_LABELS.__getitem__)
        cols = st.columns(4)
        steps = cols[0].number_input("Steps", 10, 200_000, d.steps, step=500, key="gan_steps")
        width = cols[1].number_input("Width", 8, 256, d.width, key="gan_width", help="Base channels of G and D")
        batch = cols[2].number_input("Batch size", 8, 1024, d.batch_size, key="gan_batch")
        seed = cols[3].number_input("Seed", 0, 2**31 - 1, d.seed)
        cols = st.columns(4)
        lr_g = cols[0].number_input("G learning rate", 1e-6, 1e-2, d.lr_g, format="%.5f")
        lr_d = cols[1].number_input("D learning rate", 1e-6, 1e-2, d.lr_d, format="%.5f")
        critic = cols[2].number_input("D steps per G step (0 = default)", 0, 20, d.critic_steps)
        gp = cols[3].number_input("Gradient penalty λ (WGAN-GP)", 0.0, 100.0, d.gp_lambda)
        policy = st.multiselect(
            "DiffAugment on D's inputs",
            ["translation", "cutout", "color"],
            default=[p for p in d.diffaugment.split(",") if p],
        )
        cols = st.columns(3)
        ema = cols[0].checkbox("EMA of G weights (0.999)", d.ema > 0)
        sn = cols[1].checkbox("Spectral norm in D", d.spectral_norm)
        conditional = cols[2].checkbox("Conditional (WGAN-GP may be unconditional)", True)
        if not st.form_submit_button("Train generator", type="primary"):
            return None
    return gan.GanConfig(
        kind=kind,
        conditional=conditional or kind == "cgan",
        z_dim=d.z_dim,
        width=int(width),
        steps=int(steps),
        batch_size=int(batch),
        lr_g=float(lr_g),
        lr_d=float(lr_d),
        critic_steps=int(critic),
        gp_lambda=float(gp),
        diffaugment=",".join(policy),
        ema=0.999 if ema else 0.0,
        spectral_norm=sn,
        sample_every=d.sample_every,
        seed=int(seed),
    )


def generate_form(dataset: LabDataset, generators: list[dict[str, object]]) -> make_sets.GenerateConfig | None:
    """Which generator, how many images per class, and the filter threshold."""
    labels = {str(g["id"]): f"{g['id']} · {g['kind']} · {g.get('seconds', 0):.0f} s of training" for g in generators}
    with st.form("generate_form"):
        generator = st.selectbox("Generator", list(labels), format_func=labels.__getitem__)
        fill = st.radio(
            "How many", ["Fill every class up to the largest", "N per class"], horizontal=True, key="gen_mode"
        )
        cols = st.columns(3)
        per_class = cols[0].number_input("N per class", 1, 100_000, 100, key="gen_n")
        threshold = cols[1].slider(
            "Keep when the real-data classifier is at least this sure (0 = off)", 0.0, 1.0, 0.95, key="gen_threshold"
        )
        seed = cols[2].number_input("Noise seed", 0, 2**31 - 1, 0)
        cols = st.columns(3)
        dup = cols[0].slider("Reject near-duplicates above this similarity", 0.5, 1.0, 0.99, key="gen_dup")
        sample_steps = cols[1].number_input("DDIM steps (diffusion model)", 1, 1000, 50, key="gen_ddim_steps")
        guidance = cols[2].number_input("Guidance (diffusion model)", 0.0, 20.0, 2.0, key="gen_guidance")
        cols = st.columns(2)
        classes = cols[0].multiselect("Only these classes (empty = all)", dataset.class_names)
        candidates = cols[1].number_input(
            "Candidates per image wanted",
            1,
            200,
            20,
            key="gen_candidates",
            help="At most this many images are drawn per image the set should hold; raise it when the filter "
            "keeps few of a class (it costs time and memory).",
        )
        name = st.text_input("Set name (optional)")
        if not st.form_submit_button("Generate set", type="primary"):
            return None
    return make_sets.GenerateConfig(
        generator=generator,
        per_class=0 if fill.startswith("Fill") else int(per_class),
        classes=tuple(classes),
        threshold=float(threshold),
        seed=int(seed),
        name=name,
        duplicate_threshold=float(dup),
        sample_steps=int(sample_steps),
        guidance=float(guidance),
        candidates_per_image=int(candidates),
    )


def _loss_figure(rows: list[dict[str, float]]) -> go.Figure:
    fig = go.Figure()
    for key in ("d_loss", "g_loss", "gp", "loss"):
        if rows and key in rows[0]:
            fig.add_scatter(x=[r["step"] for r in rows], y=[r[key] for r in rows], name=key, mode="lines")
    fig.update_layout(height=280, title="Generator training losses", xaxis_title="step", margin={"t": 40, "b": 10})
    return fig


@st.fragment(run_every=1.0)
def generate_panel(owner: str) -> None:
    """This browser's generator jobs: progress, cancel, live losses, the latest sample grid, warnings."""
    runner = get_runner()
    jobs = tasks.list_jobs(runner, tasks.JobKind.GENERATE, owner=owner)[-4:]
    if not jobs:
        st.caption("No generator jobs from this browser yet.")
        return
    done = {j.id for j in jobs if j.status == "done"}
    seen = st.session_state.get("generate_done")
    st.session_state["generate_done"] = done
    if seen is not None and done - seen:  # a new generator or set: redraw the forms and the set browser
        st.rerun(scope="app")
    for snap in reversed(jobs):
        cols = st.columns([4, 6, 1])
        cols[0].write(f"{STATUS_ICONS.get(snap.status, '')} {snap.title}")
        text = snap.error or snap.message or snap.status
        cols[1].progress(snap.progress, text=f"{text} · place {snap.queue_position}" if snap.queue_position else text)
        if snap.status not in FINISHED and cols[2].button("Cancel", key=f"cancel-{snap.id}"):
            try:
                runner.cancel(snap.id, owner=owner)
            except JobError as err:
                st.error(str(err))
        events = [e for e in snap.events if isinstance(e, GeneratorEvent)]
        if events and (snap is jobs[-1] or snap.status == "running"):
            rows = [{"step": e.step, **e.values} for e in events if e.kind == "step"]
            grids = [e for e in events if e.kind == "samples" and e.grid is not None]
            left, right = st.columns([3, 2])
            left.plotly_chart(_loss_figure(rows), key=f"loss-{snap.id}")
            if grids:
                right.image(_upscale(grids[-1].grid), caption=f"step {grids[-1].step}: fixed noise, one row per class")
            for warning in {e.message for e in events if e.kind == "warning"}:
                st.warning(warning)
        if isinstance(snap.result, dict) and snap.result:  # a Stable Diffusion preview: one image per class
            st.image([tile(im) for im in snap.result.values()], caption=list(snap.result))
        if isinstance(snap.result, sets.SetInfo):
            st.success(
                f"Stored set {snap.result.id}: kept {sum(snap.result.counts_kept):,} of "
                f"{sum(snap.result.counts_total):,} images. Choose it on the Train page."
            )


def _upscale(grid: np.ndarray, factor: int = 4) -> np.ndarray:
    small = grid.shape[0] < 256
    return np.repeat(np.repeat(grid, factor, 0), factor, 1) if small else grid


def short_set_notice(info: sets.SetInfo, records: list[sets.ImageRecord]) -> None:
    """For a set with fewer images than asked: which classes, the honest ways out, and what a lower filter costs."""
    wanted = info.config.get("wanted") or []
    short = [c for c, n in enumerate(wanted) if n and info.counts_kept[c] < n]
    if not short:
        return
    names = ", ".join(f"{info.class_names[c]!r} ({info.counts_kept[c]} of {wanted[c]})" for c in short)
    st.warning(
        f"This set has fewer images than asked for class {names}. It still feeds every mix on the Train page: "
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
    table["label fidelity"] = [per_class.get(n, {}).get("label_fidelity") for n in info.class_names]
    table["learns-from-synthetic recall"] = [per_class.get(n, {}).get("tstr_recall") for n in info.class_names]
    realism = info.quality.get("realism")
    if realism:
        table["looks real (precision)"] = realism["precision"]
        table["covers the real variety (recall)"] = realism["recall"]
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
    if changed and st.button("Save the kept / rejected choices", key="save_kept"):
        for keep in (True, False):
            files = [f for f, k in changed if bool(k) == keep]
            if files:
                sets.set_kept(set_id, files, keep, reason="" if keep else "rejected by hand")
        st.rerun()
    if st.checkbox(f"Delete set {set_id}", key=f"confirm_delete-{set_id}") and st.button(
        "Delete now", key="delete_set"
    ):
        sets.delete_set(set_id)
        st.rerun()
